#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Philox-4x32-10 (Salmon et al., 2011): a counter-based generator, so every random op is a
/// pure function of (seed, element index) and runs in parallel with no shared state.
@inline(__always)
func philox(_ c0: UInt32, _ c1: UInt32, _ c2: UInt32, _ c3: UInt32, _ k0: UInt32, _ k1: UInt32)
    -> (UInt32, UInt32, UInt32, UInt32) {
    var (x0, x1, x2, x3, a, b) = (c0, c1, c2, c3, k0, k1)
    for _ in 0..<10 {
        let p0 = UInt64(0xD251_1F53) &* UInt64(x0)
        let p1 = UInt64(0xCD9E_8D57) &* UInt64(x2)
        (x0, x1, x2, x3) = (UInt32(truncatingIfNeeded: p1 >> 32) ^ x1 ^ a, UInt32(truncatingIfNeeded: p1),
                            UInt32(truncatingIfNeeded: p0 >> 32) ^ x3 ^ b, UInt32(truncatingIfNeeded: p0))
        a = a &+ 0x9E37_79B9
        b = b &+ 0xBB67_AE85
    }
    return (x0, x1, x2, x3)
}

/// Keras's 2-element seed: seed[0] is the key, seed[1] the stream (counter high word).
public struct Seed {
    let k0, k1, s0, s1: UInt32
    public init(_ seed: [Int]) throws {
        guard seed.count == 2 else { throw EngineError.value("a seed has 2 elements, got \(seed.count)") }
        let a = UInt64(bitPattern: Int64(seed[0])), b = UInt64(bitPattern: Int64(seed[1]))
        (k0, k1) = (UInt32(truncatingIfNeeded: a), UInt32(truncatingIfNeeded: a >> 32))
        (s0, s1) = (UInt32(truncatingIfNeeded: b), UInt32(truncatingIfNeeded: b >> 32))
    }

    /// Four random words for block `i` of stream `tag` (different ops use different tags).
    @inline(__always)
    func block(_ i: Int, tag: UInt32 = 0) -> (UInt32, UInt32, UInt32, UInt32) {
        philox(UInt32(truncatingIfNeeded: i), UInt32(truncatingIfNeeded: i >> 32) ^ (tag << 24), s0, s1, k0, k1)
    }
}

/// Eight Philox blocks at once, one block per SIMD lane: LLVM turns the widened 32x32->64-bit
/// multiplies into pmuludq, about twice the scalar rate. Same rounds and constants as `philox`.
@inline(__always)
private func philox8(_ c0: SIMD8<UInt32>, _ c1: SIMD8<UInt32>, _ c2: UInt32, _ c3: UInt32, _ k0: UInt32, _ k1: UInt32)
    -> (SIMD8<UInt32>, SIMD8<UInt32>, SIMD8<UInt32>, SIMD8<UInt32>) {
    typealias W = SIMD8<UInt64>
    var (x0, x1, x2, x3) = (c0, c1, SIMD8<UInt32>(repeating: c2), SIMD8<UInt32>(repeating: c3))
    var a = k0, b = k1
    for _ in 0..<10 {
        let p0 = W(truncatingIfNeeded: x0) &* W(repeating: 0xD251_1F53)
        let p1 = W(truncatingIfNeeded: x2) &* W(repeating: 0xCD9E_8D57)
        x0 = SIMD8<UInt32>(truncatingIfNeeded: p1 &>> 32) ^ x1 ^ SIMD8<UInt32>(repeating: a)
        x1 = SIMD8<UInt32>(truncatingIfNeeded: p1)
        x2 = SIMD8<UInt32>(truncatingIfNeeded: p0 &>> 32) ^ x3 ^ SIMD8<UInt32>(repeating: b)
        x3 = SIMD8<UInt32>(truncatingIfNeeded: p0)
        a = a &+ 0x9E37_79B9
        b = b &+ 0xBB67_AE85
    }
    return (x0, x1, x2, x3)
}

extension Seed {
    /// The words of blocks b0 ..< b0 + count of stream `tag`, in element order (word j of block b
    /// at 4 * (b - b0) + j): exactly what `block` gives, eight blocks per step.
    @inline(__always)
    func words(from b0: Int, count: Int, tag: UInt32 = 0, into dst: UnsafeMutablePointer<UInt32>) {
        let lanes = SIMD8<UInt32>(0, 1, 2, 3, 4, 5, 6, 7)
        var b = 0
        // A group whose low counter word would wrap takes the scalar path (its high word differs).
        while b + 8 <= count && UInt32(truncatingIfNeeded: b0 + b) <= UInt32.max - 7 {
            let i = b0 + b
            let c0 = SIMD8<UInt32>(repeating: UInt32(truncatingIfNeeded: i)) &+ lanes
            let c1 = SIMD8<UInt32>(repeating: UInt32(truncatingIfNeeded: i >> 32) ^ (tag << 24))
            let w = philox8(c0, c1, s0, s1, k0, k1)
            let d = dst + 4 * b
            for l in 0..<8 {
                d[4 * l] = w.0[l]; d[4 * l + 1] = w.1[l]; d[4 * l + 2] = w.2[l]; d[4 * l + 3] = w.3[l]
            }
            b += 8
        }
        while b < count {
            let w = block(b0 + b, tag: tag)
            (dst[4 * b], dst[4 * b + 1], dst[4 * b + 2], dst[4 * b + 3]) = w
            b += 1
        }
    }

    /// Runs `body(firstElement, words, count)` over the random words of elements 0 ..< n (four per
    /// block), in cache-sized pieces spread over threads; each call sees whole blocks.
    @inline(__always)
    func forEachWords(_ n: Int, tag: UInt32 = 0, cost: Int, _ body: (Int, UnsafePointer<UInt32>, Int) -> Void) {
        let piece = 256  // blocks per stack buffer: 4 KB of words
        let blocks = (n + 3) / 4
        parallelFor((blocks + piece - 1) / piece, cost: piece * 4 * cost) { r in
            withUnsafeTemporaryAllocation(of: UInt32.self, capacity: piece * 4) { buf in
                let w = buf.baseAddress!
                for p in r {
                    let b0 = p * piece, nb = Swift.min(piece, blocks - b0)
                    words(from: b0, count: nb, tag: tag, into: w)
                    body(b0 * 4, UnsafePointer(w), Swift.min(nb * 4, n - b0 * 4))
                }
            }
        }
    }
}

@inline(__always) private func lane<T>(_ w: (T, T, T, T), _ j: Int) -> T {
    switch j {
    case 0: return w.0
    case 1: return w.1
    case 2: return w.2
    default: return w.3
    }
}

/// Uniform in (0, 1] from 32 random bits (never 0, so log() is safe).
@inline(__always) private func unitOpen(_ u: UInt32) -> Double { (Double(u) + 1) * (1.0 / 4294967296.0) }

/// The float32 uniform [0, 1) of a random word: its top 24 bits, exact in float32.
@inline(__always) private func unit24(_ word: UInt32) -> Float { Float(Int32(bitPattern: word >> 8)) * 0x1p-24 }

public enum RandomDistribution { case uniform(Double, Double), normal(Double, Double), truncatedNormal(Double, Double) }

/// Samples `shape` values of a float `dtype` as a pure function of `seed`.
public func random(_ dist: RandomDistribution, shape: [Int], dtype: DType = .float32, seed: [Int]) throws -> Tensor {
    guard dtype.isFloatingPoint else { throw EngineError.type("random sampling needs a float dtype, got \(dtype)") }
    let s = try Seed(seed)
    // Samples are computed in float64 and rounded once to the target dtype: float32 and float64
    // are written directly, the half types go through a float64 buffer and one cast.
    let direct = dtype == .float32 || dtype == .float64
    let out = try Tensor(empty: shape, dtype: direct ? dtype : .float64)
    struct Fill: FloatVisitor {
        let dist: RandomDistribution, s: Seed, out: Tensor, wide: Bool
        func visit<T: FloatElem>(_: T.Type) throws {
            let p = out.pointer(T.self), n = out.count
            switch dist {
            case .uniform(let lo, let hi):
                let span = hi - lo
                s.forEachWords(n, cost: 4) { first, w, count in
                    let dst = p + first
                    if wide {
                        for j in 0..<count { dst[j] = T(fromDouble: lo + span * (Double(w[j]) * (1.0 / 4294967296.0))) }
                    } else {
                        // 24 bits keep float32 results strictly below `hi`.
                        for j in 0..<count { dst[j] = T(fromDouble: lo + span * Double(unit24(w[j]))) }
                    }
                }
            case .normal(let mean, let std):
                s.forEachWords(n, tag: 1, cost: 64) { first, w, count in
                    var j = 0
                    while j < count {
                        let r0 = (-2 * Glibc.log(unitOpen(w[j]))).squareRoot(), t0 = 2 * Double.pi * unitOpen(w[j + 1])
                        let r1 = (-2 * Glibc.log(unitOpen(w[j + 2]))).squareRoot(), t1 = 2 * Double.pi * unitOpen(w[j + 3])
                        let z = (r0 * Glibc.cos(t0), r0 * Glibc.sin(t0), r1 * Glibc.cos(t1), r1 * Glibc.sin(t1))
                        for k in 0..<Swift.min(4, count - j) { p[first + j + k] = T(fromDouble: mean + std * lane(z, k)) }
                        j += 4
                    }
                }
            case .truncatedNormal(let mean, let std):
                // Each element redraws from its own sub-stream until |z| <= 2 (Keras's definition).
                parallelFor(n, cost: 64) { r in
                    for i in r {
                        var z = 0.0
                        for attempt in 0..<64 {
                            let w = philox(UInt32(truncatingIfNeeded: i), UInt32(truncatingIfNeeded: i >> 32) ^ (2 << 24) ^ UInt32(attempt),
                                           s.s0, s.s1, s.k0, s.k1)
                            let rr = (-2 * Glibc.log(unitOpen(w.0))).squareRoot(), t = 2 * Double.pi * unitOpen(w.1)
                            let a = rr * Glibc.cos(t), b = rr * Glibc.sin(t)
                            if Swift.abs(a) <= 2 { z = a; break }
                            if Swift.abs(b) <= 2 { z = b; break }
                        }
                        p[i] = T(fromDouble: mean + std * z)
                    }
                }
            }
        }
    }
    try dispatchFloat(out.dtype, Fill(dist: dist, s: s, out: out, wide: dtype == .float64))
    return direct ? out : try cast(out, to: dtype)
}

/// Inverted dropout: keeps x where the float32 uniform sample of `seed` (the `random_uniform` of
/// `noiseShape`, so the same draw) is below 1 - rate, scaled by 1 / (1 - rate); zero elsewhere.
/// Float32/float64 inputs of the noise's own shape take one fused pass (random bits, mask and
/// scale without temporaries); other dtypes and broadcast noise compose uniform, less and where.
/// Linear in x, so its gradient is the same dropout of the incoming gradient.
public func dropout(_ x: Tensor, rate: Double, noiseShape: [Int]? = nil, seed: [Int]) throws -> Tensor {
    guard x.dtype.isFloatingPoint else { throw EngineError.type("dropout needs a float input, got \(x.dtype)") }
    guard rate >= 0 && rate < 1 else { throw EngineError.value("dropout rate must be in [0, 1), got \(rate)") }
    let keepProb = 1 - rate
    let noise = noiseShape ?? x.shape
    guard (x.dtype == .float32 || x.dtype == .float64) && noise == x.shape else {
        let u = try random(.uniform(0, 1), shape: noise, dtype: .float32, seed: seed)
        let keep = try binary(.less, u, try scalar(keepProb, .float32))
        let scaled = try binary(.divide, x, try scalar(keepProb, x.dtype))
        return try `where`(keep, scaled, try scalar(0, x.dtype))
    }
    let s = try Seed(seed)
    let out = try Tensor(empty: x.shape, dtype: x.dtype)
    // The kept value is and-ed with an all-ones/zero mask: `keep ? x / kp : 0` reads x
    // conditionally and stays a branch, mispredicted on half the elements at rate 0.5.
    func fused<F: BinaryFloatingPoint, B: FixedWidthInteger>(_: F.Type, _: B.Type) {
        let px = x.pointer(F.self), po = out.pointer(F.self)
        let threshold = Float(keepProb), kp = F(keepProb)
        s.forEachWords(x.count, cost: 4) { first, w, count in
            let src = px + first, dst = po + first
            for j in 0..<count {
                let keep: B = unit24(w[j]) < threshold ? ~0 : 0
                dst[j] = unsafeBitCast(unsafeBitCast(src[j] / kp, to: B.self) & keep, to: F.self)
            }
        }
    }
    if x.dtype == .float32 { fused(Float.self, UInt32.self) } else { fused(Double.self, UInt64.self) }
    Tape.record(out, [x]) { g in [try dropout(try cast(g, to: x.dtype), rate: rate, noiseShape: noiseShape, seed: seed)] }
    return out
}

/// The seed of a random op: its `seed_t` input (two integers, a tensor a compiled graph
/// feeds anew each step) when given, else its `seed` attribute.
func seedOf(_ t: [Tensor], at i: Int, _ a: Attrs) throws -> [Int] {
    guard t.count > i else {
        guard let s = try a.ints("seed") else { throw EngineError.value("a random op needs the seed attribute or the seed_t input") }
        return s
    }
    let s = t[i]
    guard s.dtype.isInteger, s.count == 2 else {
        throw EngineError.value("seed_t must hold two integers, got \(s.dtype) of shape \(s.shape)")
    }
    // Exact integers: a double would round near 2**63 and trap on the way back to Int.
    let exact = try cast(s, to: .int64).pointer(Int64.self)
    return [Int(exact[0]), Int(exact[1])]
}

let seedAttr = AttrSpec.ints("seed", absent: "the seed_t input")
private let randomAttrs: [AttrSpec] = [.ints("shape"), .dtype("dtype", default: .float32), seedAttr]

let randomOps: [OpDef] = [
    OpDef("random_uniform", inputs: [.index("seed_t?")], attrs: randomAttrs + [.float("minval", default: 0), .float("maxval", default: 1)],
          grad: .no, doc: "Uniform samples in [minval, maxval), a pure function of the 2-int seed (Philox)") { t, a in
        try random(.uniform(a.float("minval"), a.float("maxval")), shape: a.requiredInts("shape"),
                   dtype: a.dtype("dtype"), seed: seedOf(t, at: 0, a))
    },
    OpDef("random_normal", inputs: [.index("seed_t?")], attrs: randomAttrs + [.float("mean", default: 0), .float("stddev", default: 1)],
          grad: .no, doc: "Normal samples, a pure function of the 2-int seed") { t, a in
        try random(.normal(a.float("mean"), a.float("stddev")), shape: a.requiredInts("shape"),
                   dtype: a.dtype("dtype"), seed: seedOf(t, at: 0, a))
    },
    OpDef("random_truncated_normal", inputs: [.index("seed_t?")],
          attrs: randomAttrs + [.float("mean", default: 0), .float("stddev", default: 1)],
          grad: .no, doc: "Normal samples redrawn beyond two standard deviations, a pure function of the seed") { t, a in
        try random(.truncatedNormal(a.float("mean"), a.float("stddev")), shape: a.requiredInts("shape"),
                   dtype: a.dtype("dtype"), seed: seedOf(t, at: 0, a))
    },
    OpDef("dropout", inputs: ["x", .index("seed_t?")], attrs: [.float("rate"), .ints("noise_shape", absent: "the shape of x"), seedAttr],
          grad: .wrt(["x"]), doc: "x with elements zeroed with probability rate and the rest scaled by 1 / (1 - rate); "
            + "the gradient is the same mask") { t, a in
        try dropout(t[0], rate: a.float("rate"), noiseShape: a.ints("noise_shape"), seed: seedOf(t, at: 1, a))
    },
]
