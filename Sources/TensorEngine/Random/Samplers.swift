#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Gamma, beta and binomial samplers. They use rejection, so each element draws from its own
/// Philox sub-stream (counter = element index, draw number) and stays a pure function of
/// (seed, index) however many draws it needs.

/// The random words of element `i`: every `next()` is a fresh Philox block.
private struct ElementStream {
    let s: Seed, i: Int, tag: UInt32
    var draw: UInt32 = 0
    var buffered: (UInt32, UInt32, UInt32, UInt32) = (0, 0, 0, 0)
    var used = 4

    init(_ s: Seed, _ i: Int, tag: UInt32) { (self.s, self.i, self.tag) = (s, i, tag) }

    mutating func word() -> UInt32 {
        if used == 4 {
            // 24 bits of draw number beside an 8-bit op tag; a stream needing more wraps around.
            buffered = philox(UInt32(truncatingIfNeeded: i), UInt32(truncatingIfNeeded: i >> 32) ^ (tag << 24) ^ (draw & 0xFF_FFFF),
                              s.s0, s.s1, s.k0, s.k1)
            draw &+= 1
            used = 0
        }
        used += 1
        switch used {
        case 1: return buffered.0
        case 2: return buffered.1
        case 3: return buffered.2
        default: return buffered.3
        }
    }

    /// Uniform in (0, 1] with 53 random bits (never 0, so log() is safe).
    mutating func uniform() -> Double {
        let hi = UInt64(word() >> 5), lo = UInt64(word() >> 6)
        return (Double(hi << 26 | lo) + 1) * (1.0 / 9007199254740992.0)
    }

    mutating func normal() -> Double {
        let r = (-2 * Glibc.log(uniform())).squareRoot(), t = 2 * Double.pi * uniform()
        return r * Glibc.cos(t)
    }

    /// log of a Gamma(alpha, 1) sample (Marsaglia & Tsang, 2000). For alpha < 1 it samples
    /// Gamma(alpha + 1) and multiplies by U^(1/alpha), in log space so tiny alphas do not
    /// underflow to log(0).
    mutating func logGamma(_ alpha: Double) -> Double {
        if !(alpha > 0) { return .nan }
        if alpha < 1 { return logGamma(alpha + 1) + Glibc.log(uniform()) / alpha }
        let d = alpha - 1.0 / 3.0, c = 1 / (9 * d).squareRoot()
        while true {
            var x = 0.0, v = 0.0
            repeat { x = normal(); v = 1 + c * x } while v <= 0
            v = v * v * v
            let u = uniform(), x2 = x * x
            if u < 1 - 0.0331 * x2 * x2 { return Glibc.log(d * v) }
            if Glibc.log(u) < 0.5 * x2 + d * (1 - v + Glibc.log(v)) { return Glibc.log(d * v) }
        }
    }

    /// Beta(a, b) as X / (X + Y) with X ~ Gamma(a), Y ~ Gamma(b), computed from the logs.
    mutating func beta(_ a: Double, _ b: Double) -> Double {
        let lx = logGamma(a), ly = logGamma(b)
        if lx.isNaN || ly.isNaN { return .nan }
        return 1 / (1 + Glibc.exp(ly - lx))
    }

    /// Binomial(n, p), exact. Large n is split recursively with a beta-distributed order
    /// statistic (Knuth, TAOCP 3.4.1 F): the a-th smallest of n uniforms is Beta(a, n + 1 - a),
    /// and the count below p is then binomial on the side p falls. Small n sums Bernoulli trials.
    mutating func binomial(_ n0: Int64, _ p0: Double) -> Double {
        if !(p0 >= 0 && p0 <= 1) || n0 < 0 { return .nan }
        var n = n0, p = p0, k: Int64 = 0
        while n > 64 {
            if p == 0 { return Double(k) }
            if p == 1 { return Double(k + n) }
            let a = 1 + n / 2, b = n + 1 - a
            let x = beta(Double(a), Double(b))
            if x >= p {
                n = a - 1
                p = p / x
            } else {
                k += a
                n = b - 1
                p = (p - x) / (1 - x)
            }
        }
        for _ in 0..<n where uniform() <= p { k += 1 }
        return Double(k)
    }
}

public enum ParamDistribution { case gamma, beta, binomial }

/// Samples `shape` values of float `dtype`; `params` (gamma: alpha; beta: alpha, beta;
/// binomial: counts, probabilities) broadcast to `shape`. Invalid parameters give NaN.
public func randomSample(_ dist: ParamDistribution, _ params: [Tensor], shape: [Int], dtype: DType = .float32, seed: [Int]) throws -> Tensor {
    guard dtype.isFloatingPoint else { throw EngineError.type("random sampling needs a float dtype, got \(dtype)") }
    let arity = dist == .gamma ? 1 : 2
    guard params.count == arity else { throw EngineError.value("\(dist) sampling takes \(arity) parameter tensor(s), got \(params.count)") }
    let s = try Seed(seed)
    var ps: [Tensor] = []
    for t in params {
        guard try broadcastShapes(t.shape, shape) == shape else {
            throw EngineError.value("a parameter of shape \(t.shape) does not broadcast to the sample shape \(shape)")
        }
        ps.append(try materialize(try cast(t, to: .float64), shape))
    }
    let out64 = try Tensor(zeros: shape, dtype: .float64)
    let p = out64.pointer(Double.self), n = out64.count
    let a = ps[0].pointer(Double.self), b = ps.count > 1 ? ps[1].pointer(Double.self) : a
    switch dist {
    case .gamma:
        parallelFor(n, cost: 200) { r in
            for i in r { var st = ElementStream(s, i, tag: 3); p[i] = Glibc.exp(st.logGamma(a[i])) }
        }
    case .beta:
        parallelFor(n, cost: 400) { r in
            for i in r { var st = ElementStream(s, i, tag: 4); p[i] = st.beta(a[i], b[i]) }
        }
    case .binomial:
        parallelFor(n, cost: 2000) { r in
            for i in r {
                var st = ElementStream(s, i, tag: 5)
                let c = a[i].rounded(.down)
                // Counts beyond 2^53 are not exact integers in float64 anyway.
                p[i] = c.isFinite && c <= 9.0e15 ? st.binomial(Int64(c), b[i]) : .nan
            }
        }
    }
    return try cast(out64, to: dtype)
}

private let sampleAttrs: [AttrSpec] = [.ints("shape"), .dtype("dtype", default: .float32), seedAttr]

private func sampler(_ name: String, _ dist: ParamDistribution, _ params: [String], doc: String) -> OpDef {
    let n = params.count
    return OpDef(name, inputs: params.map { InputSpec($0) } + [.index("seed_t?")], attrs: sampleAttrs, grad: .no, doc: doc) { t, a in
        try randomSample(dist, Array(t.prefix(n)), shape: a.requiredInts("shape"), dtype: a.dtype("dtype"), seed: seedOf(t, at: n, a))
    }
}

let samplerOps: [OpDef] = [
    sampler("random_gamma", .gamma, ["alpha"], doc: "Gamma(alpha) samples of shape (alpha broadcast), a pure function of seed"),
    sampler("random_beta", .beta, ["alpha", "beta"], doc: "Beta(alpha, beta) samples of shape, a pure function of seed"),
    sampler("random_binomial", .binomial, ["counts", "probabilities"],
            doc: "Binomial(counts, probabilities) samples of shape, a pure function of seed"),
]
