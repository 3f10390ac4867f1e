#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Fused recurrent layers: a whole sequence in one op, the way cuDNN serves Keras's LSTM on
/// TensorFlow. Run step by step through Keras's generic loop, an LSTM costs a dozen op calls
/// per time step forward and as many tape nodes backward; here it is one GEMM for the input
/// projections, one small GEMM and one fused gate loop per step, and one tape node per output.

/// Gate activations of the fused kernels: the engine's branch-free float32 forms (so the
/// gate loop vectorises), libm for float64.
protocol RNNFloat: BLASFloat {
    static func sigmoidGate(_ x: Self) -> Self
    static func tanhGate(_ x: Self) -> Self
}

extension Float: RNNFloat {
    @inline(__always) static func sigmoidGate(_ x: Float) -> Float { VecMath.sigmoid(x) }
    @inline(__always) static func tanhGate(_ x: Float) -> Float { VecMath.tanh(x) }
}

extension Double: RNNFloat {
    @inline(__always) static func sigmoidGate(_ x: Double) -> Double { 1 / (1 + Double.exp(-x)) }
    @inline(__always) static func tanhGate(_ x: Double) -> Double { Double.tanh(x) }
}

/// A GEMM that skips empty products: BLAS rejects a leading dimension of 0.
@inline(__always)
private func gemmUnlessEmpty<T: BLASFloat>(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                                           a: UnsafePointer<T>, lda: Int, b: UnsafePointer<T>, ldb: Int,
                                           beta: T, c: UnsafeMutablePointer<T>, ldc: Int) {
    guard m > 0, n > 0, k > 0 else { return }
    T.gemm(transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
}

/// The shapes of one fused LSTM call; buffers are batch-major (B, T, ·) in input-time order.
private struct LSTMGeometry {
    let batch: Int, steps: Int, features: Int, units: Int, goBackwards: Bool

    /// The input time step processed at step `s`.
    @inline(__always) func time(_ s: Int) -> Int { goBackwards ? steps - 1 - s : s }
}

/// Everything the backward pass reads, from one forward run.
private struct LSTMRun {
    let g: LSTMGeometry
    let x: Tensor, h0: Tensor, c0: Tensor, kernel: Tensor, recurrent: Tensor, bias: Tensor?
    /// Post-activation gates i, f, g, o (B, T, 4U), cell states (B, T, U), outputs (B, T, U).
    let gates: Tensor, cells: Tensor, hidden: Tensor
}

private func lstmForward<E: RNNFloat>(_: E.Type, _ r: LSTMRun) {
    let g = r.g, (B, T, F, U) = (g.batch, g.steps, g.features, g.units), U4 = 4 * U
    let z = r.gates.pointer(E.self), cs = r.cells.pointer(E.self), hs = r.hidden.pointer(E.self)
    let uk = r.recurrent.pointer(E.self), h0 = r.h0.pointer(E.self), c0 = r.c0.pointer(E.self)
    // Every step's input projection at once: z = x @ W + b.
    gemmUnlessEmpty(m: B * T, n: U4, k: F, a: r.x.pointer(E.self), lda: F, b: r.kernel.pointer(E.self), ldb: U4,
                    beta: 0, c: z, ldc: U4)
    if F == 0 { z.update(repeating: 0, count: B * T * U4) }
    if let bias = r.bias {
        let pb = bias.pointer(E.self)
        for row in 0..<(B * T) {
            let zr = z + row * U4
            for j in 0..<U4 { zr[j] += pb[j] }
        }
    }
    for s in 0..<T {
        let t = g.time(s)
        let (hp, cp, ld) = s == 0 ? (h0, c0, U) : (hs + g.time(s - 1) * U, cs + g.time(s - 1) * U, T * U)
        // z_t += h_{t-1} @ U
        gemmUnlessEmpty(m: B, n: U4, k: U, a: hp, lda: ld, b: uk, ldb: U4, beta: 1, c: z + t * U4, ldc: T * U4)
        // One loop per output stream: a loop that writes several pointers Swift cannot
        // prove apart stays scalar.
        for b in 0..<B {
            let zb = z + (b * T + t) * U4, cb = cs + (b * T + t) * U, hb = hs + (b * T + t) * U
            let cpb = cp + b * ld
            for j in 0..<(2 * U) { zb[j] = E.sigmoidGate(zb[j]) }
            for j in (2 * U)..<(3 * U) { zb[j] = E.tanhGate(zb[j]) }
            for j in (3 * U)..<U4 { zb[j] = E.sigmoidGate(zb[j]) }
            let gi = UnsafePointer(zb), gf = gi + U, gg = gi + 2 * U, go = gi + 3 * U
            for j in 0..<U { cb[j] = gf[j] * cpb[j] + gi[j] * gg[j] }
            for j in 0..<U { hb[j] = go[j] * E.tanhGate(cb[j]) }
        }
    }
}

/// Gradients of one forward run for the given cotangents (outputs in processing order,
/// final h, final c; nil = zero), in input order: x, h0, c0, kernel, recurrent kernel, bias.
private func lstmBackward<E: RNNFloat>(_: E.Type, _ r: LSTMRun, gOut: Tensor?, gh: Tensor?, gc: Tensor?) throws -> [Tensor?] {
    let g = r.g, (B, T, F, U) = (g.batch, g.steps, g.features, g.units), U4 = 4 * U
    let dt = r.x.dtype
    let dz = try Tensor(empty: [B, T, U4], dtype: dt)
    // dh and dc are updated in place, so a cotangent is copied rather than cast (which may
    // return the caller's tensor itself).
    func owned(_ g: Tensor?) throws -> Tensor {
        guard let g = try g.map({ try cast($0, to: dt) }) else { return try Tensor(zeros: [B, U], dtype: dt) }
        return try Tensor(bytes: g.rawPointer, byteCount: g.nbytes, shape: [B, U], dtype: dt)
    }
    let dh = try owned(gh), dc = try owned(gc)
    let dU = try Tensor(zeros: [U, U4], dtype: dt)
    let gOutT = try gOut.map { try cast($0, to: dt) }
    let z = r.gates.pointer(E.self), cs = r.cells.pointer(E.self), hs = r.hidden.pointer(E.self)
    let pdz = dz.pointer(E.self), pdh = dh.pointer(E.self), pdc = dc.pointer(E.self)
    let h0 = r.h0.pointer(E.self), c0 = r.c0.pointer(E.self), uk = r.recurrent.pointer(E.self)
    for s in stride(from: T - 1, through: 0, by: -1) {
        let t = g.time(s)
        let (hp, cp, ld) = s == 0 ? (h0, c0, U) : (hs + g.time(s - 1) * U, cs + g.time(s - 1) * U, T * U)
        let pgo = gOutT?.pointer(E.self)
        for b in 0..<B {
            let zb = z + (b * T + t) * U4, dzb = pdz + (b * T + t) * U4, cb = cs + (b * T + t) * U
            let cpb = cp + b * ld, dhb = pdh + b * U, dcb = pdc + b * U
            if let gob = pgo.map({ $0 + (b * T + s) * U }) {
                for j in 0..<U { dhb[j] += gob[j] }
            }
            let gi = UnsafePointer(zb), gf = gi + U, gg = gi + 2 * U, go = gi + 3 * U
            let dzi = dzb, dzf = dzb + U, dzg = dzb + 2 * U, dzo = dzb + 3 * U
            // dc_t = dc_{t+1} f_{t+1} (already in dcb) + dh_t o_t tanh'(c_t)
            for j in 0..<U {
                let tc = E.tanhGate(cb[j])
                dcb[j] += dhb[j] * go[j] * (1 - tc * tc)
            }
            for j in 0..<U {
                let tc = E.tanhGate(cb[j])
                dzo[j] = dhb[j] * tc * go[j] * (1 - go[j])
            }
            for j in 0..<U { dzi[j] = dcb[j] * gg[j] * gi[j] * (1 - gi[j]) }
            for j in 0..<U { dzf[j] = dcb[j] * cpb[j] * gf[j] * (1 - gf[j]) }
            for j in 0..<U { dzg[j] = dcb[j] * gi[j] * (1 - gg[j] * gg[j]) }
            for j in 0..<U { dcb[j] *= gf[j] }
        }
        // dU += h_{t-1}^T dz_t, then dh_{t-1} = dz_t U^T
        gemmUnlessEmpty(transA: true, m: U, n: U4, k: B, a: hp, lda: ld, b: pdz + t * U4, ldb: T * U4,
                        beta: 1, c: dU.pointer(E.self), ldc: U4)
        if U > 0 {
            gemmUnlessEmpty(transB: true, m: B, n: U, k: U4, a: pdz + t * U4, lda: T * U4, b: uk, ldb: U4,
                            beta: 0, c: pdh, ldc: U)
        }
    }
    let dx = try Tensor(zeros: [B, T, F], dtype: dt), dW = try Tensor(zeros: [F, U4], dtype: dt)
    gemmUnlessEmpty(transB: true, m: B * T, n: F, k: U4, a: pdz, lda: U4, b: r.kernel.pointer(E.self), ldb: U4,
                    beta: 0, c: dx.pointer(E.self), ldc: F)
    gemmUnlessEmpty(transA: true, m: F, n: U4, k: B * T, a: r.x.pointer(E.self), lda: F, b: pdz, ldb: U4,
                    beta: 0, c: dW.pointer(E.self), ldc: U4)
    var grads: [Tensor?] = [dx, dh, dc, dW, dU]
    if r.bias != nil {
        let db = try Tensor(zeros: [U4], dtype: dt), pdb = db.pointer(E.self)
        for row in 0..<(B * T) {
            let dzr = pdz + row * U4
            for j in 0..<U4 { pdb[j] += dzr[j] }
        }
        grads.append(db)
    }
    return grads
}

/// Time steps `from ..< from + count` of a (B, T, U) buffer as a new tensor: (B, U) for one
/// step, (B, count, U) otherwise, optionally in reverse time order.
private func copyTimes(_ src: Tensor, from t0: Int, count: Int, reversed: Bool) throws -> Tensor {
    let (B, T, U) = (src.shape[0], src.shape[1], src.shape[2]), row = U * src.dtype.itemSize
    let out = try Tensor(empty: count == 1 ? [B, U] : [B, count, U], dtype: src.dtype)
    let ps = src.rawPointer, po = out.rawPointer
    for b in 0..<B {
        for k in 0..<count {
            let t = t0 + (reversed ? count - 1 - k : k)
            (po + (b * count + k) * row).copyMemory(from: ps + (b * T + t) * row, byteCount: row)
        }
    }
    return out
}

/// Keras's LSTM layer over a whole sequence (gates i, f, c, o; sigmoid gates, tanh cell):
/// x (B, T, F), h0 and c0 (B, U), kernel (F, 4U), recurrent kernel (U, 4U), bias (4U) or nil.
/// Returns each step's output in processing order (B, T, U) and the final h and c (B, U).
/// float32 or float64; differentiable in every input (first order).
public func lstm(_ x: Tensor, h0: Tensor, c0: Tensor, kernel: Tensor, recurrentKernel: Tensor, bias: Tensor?,
                 goBackwards: Bool = false) throws -> (outputs: Tensor, h: Tensor, c: Tensor) {
    let dt = x.dtype
    let all = [x, h0, c0, kernel, recurrentKernel] + (bias.map { [$0] } ?? [])
    guard dt == .float32 || dt == .float64, all.allSatisfy({ $0.dtype == dt }) else {
        throw EngineError.type("lstm needs float32 or float64 inputs of one dtype, got \(all.map(\.dtype))")
    }
    guard x.rank == 3, recurrentKernel.rank == 2 else {
        throw EngineError.value("lstm expects x (batch, steps, features) and a 2-D recurrent kernel, got \(x.shape) and \(recurrentKernel.shape)")
    }
    let (B, T, F, U) = (x.shape[0], x.shape[1], x.shape[2], recurrentKernel.shape[0])
    guard T > 0 else { throw EngineError.value("lstm needs at least one time step, got x of shape \(x.shape)") }
    guard h0.shape == [B, U], c0.shape == [B, U], kernel.shape == [F, 4 * U], recurrentKernel.shape == [U, 4 * U],
          bias.map({ $0.shape == [4 * U] }) ?? true else {
        throw EngineError.value("lstm shapes do not agree: x \(x.shape), h0 \(h0.shape), c0 \(c0.shape), kernel \(kernel.shape), recurrent kernel \(recurrentKernel.shape), bias \(bias?.shape ?? [])")
    }
    let g = LSTMGeometry(batch: B, steps: T, features: F, units: U, goBackwards: goBackwards)
    let run = LSTMRun(g: g, x: x, h0: h0, c0: c0, kernel: kernel, recurrent: recurrentKernel, bias: bias,
                      gates: try Tensor(empty: [B, T, 4 * U], dtype: dt), cells: try Tensor(empty: [B, T, U], dtype: dt),
                      hidden: try Tensor(empty: [B, T, U], dtype: dt))
    if dt == .float32 { lstmForward(Float.self, run) } else { lstmForward(Double.self, run) }

    let last = g.time(T - 1)
    let h = try copyTimes(run.hidden, from: last, count: 1, reversed: false)
    let c = try copyTimes(run.cells, from: last, count: 1, reversed: false)
    let outputs = goBackwards ? try copyTimes(run.hidden, from: 0, count: T, reversed: true) : run.hidden

    func backward(_ gOut: Tensor?, _ gh: Tensor?, _ gc: Tensor?) throws -> [Tensor?] {
        if Tape.shouldRecord([gOut, gh, gc].compactMap { $0 } + all) {
            throw EngineError.notImplemented("second-order gradients through the fused lstm op")
        }
        return dt == .float32 ? try lstmBackward(Float.self, run, gOut: gOut, gh: gh, gc: gc)
            : try lstmBackward(Double.self, run, gOut: gOut, gh: gh, gc: gc)
    }
    Tape.record(outputs, all) { try backward($0, nil, nil) }
    Tape.record(h, all) { try backward(nil, $0, nil) }
    Tape.record(c, all) { try backward(nil, nil, $0) }
    return (outputs, h, c)
}

let rnnOps: [OpDef] = [
    OpDef("lstm") { t, a in
        guard t.count == 5 || t.count == 6 else {
            throw EngineError.value("lstm takes x, h0, c0, kernel, recurrent_kernel and an optional bias; got \(t.count) inputs")
        }
        let r = try lstm(t[0], h0: t[1], c0: t[2], kernel: t[3], recurrentKernel: t[4], bias: t.count == 6 ? t[5] : nil,
                         goBackwards: a.bool("go_backwards", default: false))
        return [r.outputs, r.h, r.c]
    },
]
