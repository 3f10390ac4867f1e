#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// Fused optimizer updates. Keras's per-variable Adam is a dozen small ops, each a full pass
/// over the variable plus an allocation; one pass that reads (variable, grad, m, v) once and
/// writes their successors is what makes the update cost memory bandwidth only. Updates are
/// never recorded on the tape.

/// One Adam step: m' = m + (g - m)(1 - β1), v' = v + (g² - v)(1 - β2),
/// x' = x - α·m' / (√v' + ε), with α = lr·√(1 - β2^t) / (1 - β1^t) computed once per step by
/// the caller (it is shared by every variable). Returns (x', m', v').
public func adamUpdate(variable x: Tensor, grad g: Tensor, m: Tensor, v: Tensor, alpha: Double,
                       beta1: Double, beta2: Double, epsilon: Double) throws -> (Tensor, Tensor, Tensor) {
    for (name, t) in [("grad", g), ("m", m), ("v", v)] {
        guard t.shape == x.shape, t.dtype == x.dtype else {
            throw EngineError.value("adam_update: \(name) has shape \(t.shape) and dtype \(t.dtype); the variable has \(x.shape) and \(x.dtype)")
        }
    }
    guard x.dtype == .float32 || x.dtype == .float64 else {
        throw EngineError.type("adam_update needs float32 or float64 variables, got \(x.dtype)")
    }
    // Each element of x, m and v is read before its successor is written, so in a compiled
    // step the successors may take their buffers (`InPlace`).
    let nx = try Tensor.output(shape: x.shape, dtype: x.dtype, reusing: x)
    let nm = try Tensor.output(shape: x.shape, dtype: x.dtype, reusing: m)
    let nv = try Tensor.output(shape: x.shape, dtype: x.dtype, reusing: v)
    if x.dtype == .float32 {
        adamF32(x, g, m, v, nx, nm, nv, alpha: Float(alpha), beta1: Float(beta1), beta2: Float(beta2),
                epsilon: Float(epsilon))
        return (nx, nm, nv)
    }
    struct K: FloatVisitor {
        let x: Tensor, g: Tensor, m: Tensor, v: Tensor, nx: Tensor, nm: Tensor, nv: Tensor
        let alpha: Double, beta1: Double, beta2: Double, epsilon: Double
        func visit<T: FloatElem>(_: T.Type) throws {
            let (px, pg, pm, pv) = (x.pointer(T.self), g.pointer(T.self), m.pointer(T.self), v.pointer(T.self))
            let (ox, om, ov) = (nx.pointer(T.self), nm.pointer(T.self), nv.pointer(T.self))
            let a = T(alpha), c1 = T(1 - beta1), c2 = T(1 - beta2), eps = T(epsilon)
            parallelFor(x.count, cost: 8) { range in
                for i in range {
                    let gi = pg[i]
                    let mi = pm[i] + (gi - pm[i]) * c1
                    let vi = pv[i] + (gi * gi - pv[i]) * c2
                    om[i] = mi
                    ov[i] = vi
                    ox[i] = px[i] - (mi * a) / (T.sqrt(vi) + eps)
                }
            }
        }
    }
    try dispatchFloat(x.dtype, K(x: x, g: g, m: m, v: v, nx: nx, nm: nm, nv: nv,
                                 alpha: alpha, beta1: beta1, beta2: beta2, epsilon: epsilon))
    return (nx, nm, nv)
}

/// The float32 Adam step in SSE lanes: written out because the generic loop stays scalar (seven
/// pointers LLVM cannot prove apart, and a square root that lowers to libm's errno-setting call),
/// which made it 10x slower than the memory it streams. (`SIMD8<Float>.squareRoot()` lowers to
/// the same call, lane by lane.) The divide and square root make it compute-bound: it is
/// threaded from a few thousand elements, where as a streaming loop a 512x512 kernel's update
/// ran on one thread.
private func adamF32(_ x: Tensor, _ g: Tensor, _ m: Tensor, _ v: Tensor, _ nx: Tensor, _ nm: Tensor, _ nv: Tensor,
                     alpha a: Float, beta1: Float, beta2: Float, epsilon eps: Float) {
    let (px, pg, pm, pv) = (x.pointer(Float.self), g.pointer(Float.self), m.pointer(Float.self), v.pointer(Float.self))
    let (ox, om, ov) = (nx.pointer(Float.self), nm.pointer(Float.self), nv.pointer(Float.self))
    let c1 = 1 - beta1, c2 = 1 - beta2
    parallelFor(x.count, cost: 8) { r in
        var i = r.lowerBound
        #if arch(x86_64)
        let (va, vc1, vc2, veps) = (_mm_set1_ps(a), _mm_set1_ps(c1), _mm_set1_ps(c2), _mm_set1_ps(eps))
        while i + 4 <= r.upperBound {
            let gi = _mm_loadu_ps(pg + i), mi0 = _mm_loadu_ps(pm + i), vi0 = _mm_loadu_ps(pv + i)
            let mi = _mm_add_ps(mi0, _mm_mul_ps(_mm_sub_ps(gi, mi0), vc1))
            let vi = _mm_add_ps(vi0, _mm_mul_ps(_mm_sub_ps(_mm_mul_ps(gi, gi), vi0), vc2))
            _mm_storeu_ps(om + i, mi)
            _mm_storeu_ps(ov + i, vi)
            let step = _mm_div_ps(_mm_mul_ps(mi, va), _mm_add_ps(_mm_sqrt_ps(vi), veps))
            _mm_storeu_ps(ox + i, _mm_sub_ps(_mm_loadu_ps(px + i), step))
            i += 4
        }
        #endif
        while i < r.upperBound {
            let gi = pg[i]
            let mi = pm[i] + (gi - pm[i]) * c1
            let vi = pv[i] + (gi * gi - pv[i]) * c2
            om[i] = mi
            ov[i] = vi
            ox[i] = px[i] - (mi * a) / (vi.squareRoot() + eps)
            i += 1
        }
    }
}

/// The one number a scalar (or one-element) tensor holds: a step-dependent hyperparameter
/// given as a tensor, so that a compiled step reads this step's value.
func scalarInput(_ t: Tensor, _ op: String, _ name: String) throws -> Double {
    guard t.count == 1 else { throw EngineError.value("\(op): \(name) must hold one number, got shape \(t.shape)") }
    return try t.double(at: 0)
}

let optimizerOps: [OpDef] = [
    OpDef("adam_update", inputs: ["variable", "grad", "m", "v", "alpha_t?"], outputs: ["variable", "m", "v"],
          attrs: [.float("alpha", absent: "the alpha_t input"), .float("beta1"), .float("beta2"), .float("epsilon")], grad: .no,
          inPlace: .pairs([(0, 0), (1, 2), (2, 3)]), doc: "One fused Adam step; alpha = lr * sqrt(1 - beta2^t) / (1 - beta1^t), computed by the caller "
            + "(an attribute, or the alpha_t input when it changes per step in a compiled graph)") { t, a in
        let alpha: Double
        if t.count == 5 { alpha = try scalarInput(t[4], "adam_update", "alpha_t") }
        else if a.has("alpha") { alpha = try a.float("alpha") }
        else { throw EngineError.value("adam_update needs the alpha attribute or the alpha_t input") }
        let r = try adamUpdate(variable: t[0], grad: t[1], m: t[2], v: t[3], alpha: alpha,
                               beta1: a.float("beta1"), beta2: a.float("beta2"), epsilon: a.float("epsilon"))
        return [r.0, r.1, r.2]
    },
]
