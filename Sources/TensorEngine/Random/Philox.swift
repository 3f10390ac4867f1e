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

public enum RandomDistribution { case uniform(Double, Double), normal(Double, Double), truncatedNormal(Double, Double) }

/// Samples `shape` values of a float `dtype` as a pure function of `seed`.
public func random(_ dist: RandomDistribution, shape: [Int], dtype: DType = .float32, seed: [Int]) throws -> Tensor {
    guard dtype.isFloatingPoint else { throw EngineError.type("random sampling needs a float dtype, got \(dtype)") }
    let s = try Seed(seed)
    let out64 = try Tensor(zeros: shape, dtype: .float64)
    let p = out64.pointer(Double.self)
    let n = out64.count
    switch dist {
    case .uniform(let lo, let hi):
        parallelFor((n + 3) / 4, cost: 16) { r in
            for b in r {
                let w = s.block(b)
                for j in 0..<4 where b * 4 + j < n {
                    let word = lane(w, j)
                    // 24 bits keep float32 results strictly below `hi`.
                    let u = dtype == .float64 ? Double(word) / 4294967296.0 : Double(word >> 8) / 16777216.0
                    p[b * 4 + j] = lo + (hi - lo) * u
                }
            }
        }
    case .normal(let mean, let std):
        parallelFor((n + 3) / 4, cost: 64) { r in
            for b in r {
                let w = s.block(b, tag: 1)
                let r0 = (-2 * Glibc.log(unitOpen(w.0))).squareRoot(), t0 = 2 * Double.pi * unitOpen(w.1)
                let r1 = (-2 * Glibc.log(unitOpen(w.2))).squareRoot(), t1 = 2 * Double.pi * unitOpen(w.3)
                let z = (r0 * Glibc.cos(t0), r0 * Glibc.sin(t0), r1 * Glibc.cos(t1), r1 * Glibc.sin(t1))
                for j in 0..<4 where b * 4 + j < n { p[b * 4 + j] = mean + std * lane(z, j) }
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
                p[i] = mean + std * z
            }
        }
    }
    return try cast(out64, to: dtype)
}

let randomOps: [OpDef] = [
    OpDef("random_uniform", arity: 0) { _, a in
        try random(.uniform(a.float("minval", default: 0), a.float("maxval", default: 1)), shape: a.requiredInts("shape"),
                   dtype: a.dtype("dtype", default: .float32), seed: a.requiredInts("seed"))
    },
    OpDef("random_normal", arity: 0) { _, a in
        try random(.normal(a.float("mean", default: 0), a.float("stddev", default: 1)), shape: a.requiredInts("shape"),
                   dtype: a.dtype("dtype", default: .float32), seed: a.requiredInts("seed"))
    },
    OpDef("random_truncated_normal", arity: 0) { _, a in
        try random(.truncatedNormal(a.float("mean", default: 0), a.float("stddev", default: 1)), shape: a.requiredInts("shape"),
                   dtype: a.dtype("dtype", default: .float32), seed: a.requiredInts("seed"))
    },
]
