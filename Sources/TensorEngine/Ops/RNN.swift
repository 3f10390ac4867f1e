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

/// The shapes of one fused recurrent call; buffers are batch-major (B, T, ·) in input-time order.
private struct RNNGeometry {
    let batch: Int, steps: Int, units: Int, goBackwards: Bool

    /// The input time step processed at step `s`.
    @inline(__always) func time(_ s: Int) -> Int { goBackwards ? steps - 1 - s : s }

    /// The state entering step `s`: the initial state (leading dimension U) at step 0, else
    /// the previous step's row of a (B, T, U) buffer (leading dimension T·U).
    @inline(__always)
    func previous<E>(_ s: Int, initial: UnsafeMutablePointer<E>, steps buf: UnsafeMutablePointer<E>) -> (UnsafeMutablePointer<E>, Int) {
        s == 0 ? (initial, units) : (buf + time(s - 1) * units, self.steps * units)
    }
}

/// Runs `body` over slices of the batch on the worker pool. The rows of a recurrence are
/// independent, so each thread runs every step of its own rows: no barrier per step, and
/// each step's small GEMM runs on its thread (an LSTM(64) over 200 steps of a batch of 64
/// spent a third of its forward time in gate loops on one thread, between split GEMMs).
private func batchSlices(_ g: RNNGeometry, width: Int, _ body: (Range<Int>) -> Void) {
    parallelFor(g.batch, cost: g.steps * width * (g.units + 16), body)
}

/// Every step's input projection x @ W at once, batch-major (B, T, k·U): the gate buffer
/// the forward pass then adds biases and the recurrence to and activates in place.
private func inputProjections(_ x: Tensor, _ kernel: Tensor) throws -> Tensor {
    let (B, T, F) = (x.shape[0], x.shape[1], x.shape[2])
    return try gemm(x.sharing(shape: [B * T, F]), kernel).sharing(shape: [B, T, kernel.shape[1]])
}

/// Gradients of the input projections z = x @ W (+ b) for dz (B, T, k·U): dx, dW and, when
/// there is a bias, its gradient (dz summed over batch and time).
private func inputProjectionGradients(_ x: Tensor, _ kernel: Tensor, _ dz: Tensor, bias: Bool) throws
    -> (dx: Tensor, dW: Tensor, db: Tensor?) {
    let (B, T, F, width) = (x.shape[0], x.shape[1], x.shape[2], dz.shape[2])
    let rows = dz.sharing(shape: [B * T, width])
    let dx = try gemm(rows, kernel, transB: true).sharing(shape: [B, T, F])
    let dW = try gemm(x.sharing(shape: [B * T, F]), rows, transA: true)
    return (dx, dW, bias ? try sum(dz, axes: [0, 1]) : nil)
}

/// Adds `bias` (`width` values) to each of `rows` consecutive rows of `z`.
@inline(__always)
private func addBias<E: RNNFloat>(_ z: UnsafeMutablePointer<E>, _ bias: UnsafePointer<E>, rows: Int, width: Int) {
    for row in 0..<rows {
        let zr = z + row * width
        for j in 0..<width { zr[j] += bias[j] }
    }
}

/// Everything the backward pass reads, from one forward run.
private struct LSTMRun {
    let g: RNNGeometry
    let x: Tensor, h0: Tensor, c0: Tensor, kernel: Tensor, recurrent: Tensor, bias: Tensor?
    /// Post-activation gates i, f, g, o (B, T, 4U), cell states (B, T, U), outputs (B, T, U).
    let gates: Tensor, cells: Tensor, hidden: Tensor
}

private func lstmForward<E: RNNFloat>(_: E.Type, _ r: LSTMRun) {
    let g = r.g, (B, T, U) = (g.batch, g.steps, g.units), U4 = 4 * U
    let z = r.gates.pointer(E.self), cs = r.cells.pointer(E.self), hs = r.hidden.pointer(E.self)
    let uk = r.recurrent.pointer(E.self), h0 = r.h0.pointer(E.self), c0 = r.c0.pointer(E.self)
    let bias = r.bias?.pointer(E.self)
    batchSlices(g, width: U4) { rows in
        let b0 = rows.lowerBound
        if let bias { addBias(z + b0 * T * U4, bias, rows: rows.count * T, width: U4) }
        for s in 0..<T {
            let t = g.time(s)
            let (hp, ld) = g.previous(s, initial: h0, steps: hs), cp = g.previous(s, initial: c0, steps: cs).0
            // z_t += h_{t-1} @ U
            gemmUnlessEmpty(m: rows.count, n: U4, k: U, a: hp + b0 * ld, lda: ld, b: uk, ldb: U4, beta: 1,
                            c: z + b0 * T * U4 + t * U4, ldc: T * U4)
            // One loop per output stream: a loop that writes several pointers Swift cannot
            // prove apart stays scalar.
            for b in rows {
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
}

/// Gradients of one forward run for the given cotangents (outputs in processing order,
/// final h, final c; nil = zero), in input order: x, h0, c0, kernel, recurrent kernel, bias.
private func lstmBackward<E: RNNFloat>(_: E.Type, _ r: LSTMRun, gOut: Tensor?, gh: Tensor?, gc: Tensor?) throws -> [Tensor?] {
    let g = r.g, (B, T, U) = (g.batch, g.steps, g.units), U4 = 4 * U
    let dt = r.x.dtype
    let dz = try Tensor(empty: [B, T, U4], dtype: dt)
    let dh = try stateGradient(gh, [B, U], dt), dc = try stateGradient(gc, [B, U], dt)
    let dU = try Tensor(zeros: [U, U4], dtype: dt)
    let gOutT = try gOut.map { try cast($0, to: dt) }
    let z = r.gates.pointer(E.self), cs = r.cells.pointer(E.self), hs = r.hidden.pointer(E.self)
    let pdz = dz.pointer(E.self), pdh = dh.pointer(E.self), pdc = dc.pointer(E.self)
    let h0 = r.h0.pointer(E.self), c0 = r.c0.pointer(E.self), uk = r.recurrent.pointer(E.self)
    let pgo = gOutT?.pointer(E.self)
    // As forward: each thread runs every step of its own rows.
    batchSlices(g, width: U4) { rows in
        let b0 = rows.lowerBound
        for s in stride(from: T - 1, through: 0, by: -1) {
            let t = g.time(s)
            let (_, ld) = g.previous(s, initial: h0, steps: hs), cp = g.previous(s, initial: c0, steps: cs).0
            for b in rows {
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
            // dh_{t-1} = dz_t U^T
            gemmUnlessEmpty(transB: true, m: rows.count, n: U, k: U4, a: pdz + b0 * T * U4 + t * U4, lda: T * U4,
                            b: uk, ldb: U4, beta: 0, c: pdh + b0 * U, ldc: U)
        }
    }
    // dU = sum over steps of h_{t-1}^T dz_t: one GEMM over every (batch, step) row, each
    // row's entering state gathered beside it (was one small GEMM per step).
    let entering = try Tensor(empty: [B, T, U], dtype: dt)
    let pe = entering.pointer(E.self)
    for s in 0..<T {
        let t = g.time(s), (hp, ld) = g.previous(s, initial: h0, steps: hs)
        for b in 0..<B { (pe + (b * T + t) * U).update(from: hp + b * ld, count: U) }
    }
    gemmUnlessEmpty(transA: true, m: U, n: U4, k: B * T, a: pe, lda: U, b: pdz, ldb: U4, beta: 0,
                    c: dU.pointer(E.self), ldc: U4)
    let p = try inputProjectionGradients(r.x, r.kernel, dz, bias: r.bias != nil)
    return [p.dx, dh, dc, p.dW, dU] + (p.db.map { [$0] } ?? [])
}

/// Everything the GRU's backward pass reads, from one forward run.
private struct GRURun {
    let g: RNNGeometry
    let x: Tensor, h0: Tensor, kernel: Tensor, recurrent: Tensor, bias: Tensor?
    /// z, r and the candidate h~ after activation (B, T, 3U); the recurrent projections
    /// h_{t-1} @ U + b_r (B, T, 3U), of which the candidate's third is read; outputs (B, T, U).
    let gates: Tensor, recurrentProjections: Tensor, hidden: Tensor
}

private func gruForward<E: RNNFloat>(_: E.Type, _ r: GRURun) {
    let g = r.g, (B, T, U) = (g.batch, g.steps, g.units), U3 = 3 * U
    let z = r.gates.pointer(E.self), rp = r.recurrentProjections.pointer(E.self), hs = r.hidden.pointer(E.self)
    let uk = r.recurrent.pointer(E.self), h0 = r.h0.pointer(E.self)
    let (bi, br) = (r.bias?.pointer(E.self), r.bias.map { $0.pointer(E.self) + U3 })
    batchSlices(g, width: U3) { rows in
        let b0 = rows.lowerBound
        if let bi { addBias(z + b0 * T * U3, bi, rows: rows.count * T, width: U3) }
        for s in 0..<T {
            let t = g.time(s)
            let (hp, ld) = g.previous(s, initial: h0, steps: hs)
            if U == 0 { continue }
            gemmUnlessEmpty(m: rows.count, n: U3, k: U, a: hp + b0 * ld, lda: ld, b: uk, ldb: U3, beta: 0,
                            c: rp + b0 * T * U3 + t * U3, ldc: T * U3)
            for b in rows {
                let zb = z + (b * T + t) * U3, rb = rp + (b * T + t) * U3, hb = hs + (b * T + t) * U, hpb = hp + b * ld
                if let br { addBias(rb, br, rows: 1, width: U3) }
                let gz = zb, gr = zb + U, gh = zb + 2 * U, rh = UnsafePointer(rb + 2 * U)
                for j in 0..<(2 * U) { zb[j] = E.sigmoidGate(zb[j] + rb[j]) }
                for j in 0..<U { gh[j] = E.tanhGate(gh[j] + gr[j] * rh[j]) }
                for j in 0..<U { hb[j] = gz[j] * hpb[j] + (1 - gz[j]) * gh[j] }
            }
        }
    }
}

/// Gradients of one GRU run for the cotangents of the outputs (processing order) and of
/// the final h, in input order: x, h0, kernel, recurrent kernel, bias (2, 3U).
private func gruBackward<E: RNNFloat>(_: E.Type, _ r: GRURun, gOut: Tensor?, gh: Tensor?) throws -> [Tensor?] {
    let g = r.g, (B, T, U) = (g.batch, g.steps, g.units), U3 = 3 * U
    let dt = r.x.dtype
    let dx3 = try Tensor(empty: [B, T, U3], dtype: dt), dr = try Tensor(empty: [B, U3], dtype: dt)
    let dh = try stateGradient(gh, [B, U], dt)
    let dU = try Tensor(zeros: [U, U3], dtype: dt), dbr = try Tensor(zeros: [U3], dtype: dt)
    let gOutT = try gOut.map { try cast($0, to: dt) }
    let z = r.gates.pointer(E.self), rp = r.recurrentProjections.pointer(E.self), hs = r.hidden.pointer(E.self)
    let pdx = dx3.pointer(E.self), pdr = dr.pointer(E.self), pdh = dh.pointer(E.self), pdbr = dbr.pointer(E.self)
    let h0 = r.h0.pointer(E.self), uk = r.recurrent.pointer(E.self)
    let pgo = gOutT?.pointer(E.self)
    for s in stride(from: T - 1, through: 0, by: -1) {
        let t = g.time(s)
        let (hp, ld) = g.previous(s, initial: h0, steps: hs)
        for b in 0..<B {
            let zb = UnsafePointer(z + (b * T + t) * U3), rh = UnsafePointer(rp + (b * T + t) * U3 + 2 * U)
            let dxb = pdx + (b * T + t) * U3, drb = pdr + b * U3
            let hpb = UnsafePointer(hp + b * ld), dhb = pdh + b * U
            if let gob = pgo.map({ $0 + (b * T + s) * U }) {
                for j in 0..<U { dhb[j] += gob[j] }
            }
            let gz = zb, gr = zb + U, gc = zb + 2 * U
            let dz = dxb, dxr = dxb + U, da = dxb + 2 * U
            // Pre-activation gradients: candidate a = x_h + r * rh, reset, update.
            for j in 0..<U { da[j] = dhb[j] * (1 - gz[j]) * (1 - gc[j] * gc[j]) }
            for j in 0..<U { dxr[j] = da[j] * rh[j] * gr[j] * (1 - gr[j]) }
            for j in 0..<U { dz[j] = dhb[j] * (hpb[j] - gc[j]) * gz[j] * (1 - gz[j]) }
            // The recurrent projection sees z and r unchanged, the candidate's scaled by r.
            for j in 0..<(2 * U) { drb[j] = dxb[j] }
            for j in 0..<U { drb[2 * U + j] = da[j] * gr[j] }
            for j in 0..<U3 { pdbr[j] += drb[j] }
            for j in 0..<U { dhb[j] *= gz[j] }
        }
        // dU += h_{t-1}^T dr, then dh_{t-1} = dh z + dr U^T
        gemmUnlessEmpty(transA: true, m: U, n: U3, k: B, a: hp, lda: ld, b: pdr, ldb: U3, beta: 1,
                        c: dU.pointer(E.self), ldc: U3)
        gemmUnlessEmpty(transB: true, m: B, n: U, k: U3, a: pdr, lda: U3, b: uk, ldb: U3, beta: 1, c: pdh, ldc: U)
    }
    // The input bias's gradient is dx3 summed; the recurrent bias's was summed per step.
    let p = try inputProjectionGradients(r.x, r.kernel, dx3, bias: r.bias != nil)
    return [p.dx, dh, p.dW, dU] + (try p.db.map { [try stack([$0, dbr])] } ?? [])
}

/// A state's cotangent as a buffer the backward pass may update in place: a copy (a cast
/// may return the caller's tensor itself), or zeros for none.
private func stateGradient(_ g: Tensor?, _ shape: [Int], _ dt: DType) throws -> Tensor {
    guard let g = try g.map({ try cast($0, to: dt) }) else { return try Tensor(zeros: shape, dtype: dt) }
    return try Tensor(bytes: g.rawPointer, byteCount: g.nbytes, shape: shape, dtype: dt)
}

/// Checks a fused layer's operands: one float32/float64 dtype, x (B, T, F), each state
/// (B, U), kernel (F, k·U), recurrent kernel (U, k·U), bias of `biasShape(U)`.
private func rnnGeometry(_ name: String, x: Tensor, states: [Tensor], kernel: Tensor, recurrent: Tensor, bias: Tensor?,
                         gates k: Int, biasShape: (Int) -> [Int], goBackwards: Bool) throws -> RNNGeometry {
    let all = [x] + states + [kernel, recurrent] + (bias.map { [$0] } ?? [])
    let dt = x.dtype
    guard dt == .float32 || dt == .float64, all.allSatisfy({ $0.dtype == dt }) else {
        throw EngineError.type("\(name) needs float32 or float64 inputs of one dtype, got \(all.map(\.dtype))")
    }
    guard x.rank == 3, recurrent.rank == 2 else {
        throw EngineError.value("\(name) expects x (batch, steps, features) and a 2-D recurrent kernel, got \(x.shape) and \(recurrent.shape)")
    }
    let (B, T, F, U) = (x.shape[0], x.shape[1], x.shape[2], recurrent.shape[0])
    guard T > 0 else { throw EngineError.value("\(name) needs at least one time step, got x of shape \(x.shape)") }
    guard states.allSatisfy({ $0.shape == [B, U] }), kernel.shape == [F, k * U], recurrent.shape == [U, k * U],
          bias.map({ $0.shape == biasShape(U) }) ?? true else {
        throw EngineError.value("\(name) shapes do not agree: x \(x.shape), states \(states.map(\.shape)), kernel \(kernel.shape), recurrent kernel \(recurrent.shape), bias \(bias?.shape ?? [])")
    }
    return RNNGeometry(batch: B, steps: T, units: U, goBackwards: goBackwards)
}

/// Records a fused layer's outputs: each one's VJP runs the whole backward pass with its own
/// cotangent (the others zero), which a later output's VJP adds to. A kernel computes that
/// pass, so it refuses to be differentiated again rather than drop terms.
private func recordRNN(_ name: String, outputs: [Tensor], inputs: [Tensor],
                       backward: @escaping ([Tensor?]) throws -> [Tensor?]) {
    for (k, out) in outputs.enumerated() {
        Tape.record(out, inputs) { g in
            if Tape.shouldRecord([g] + inputs) {
                throw EngineError.notImplemented("second-order gradients through the fused \(name) op")
            }
            var cotangents = [Tensor?](repeating: nil, count: outputs.count)
            cotangents[k] = g
            return try backward(cotangents)
        }
    }
}

/// Time step `t` of a (B, T, U) buffer as a new (B, U) tensor.
private func timeStep(_ src: Tensor, _ t: Int) throws -> Tensor {
    let (B, U) = (src.shape[0], src.shape[2])
    return try reshape(try stridedSlice(src, begin: [0, t, 0], end: [B, t + 1, U], strides: [1, 1, 1]), [B, U])
}

/// A (B, T, U) buffer with its time axis reversed (processing order of a backward layer).
private func reversedInTime(_ src: Tensor) throws -> Tensor {
    let (B, T, U) = (src.shape[0], src.shape[1], src.shape[2])
    return try stridedSlice(src, begin: [0, T - 1, 0], end: [B, -1, U], strides: [1, -1, 1])
}

/// Keras's LSTM layer over a whole sequence (gates i, f, c, o; sigmoid gates, tanh cell):
/// x (B, T, F), h0 and c0 (B, U), kernel (F, 4U), recurrent kernel (U, 4U), bias (4U) or nil.
/// Returns each step's output in processing order (B, T, U) and the final h and c (B, U).
/// float32 or float64; differentiable in every input (first order).
public func lstm(_ x: Tensor, h0: Tensor, c0: Tensor, kernel: Tensor, recurrentKernel: Tensor, bias: Tensor?,
                 goBackwards: Bool = false) throws -> (outputs: Tensor, h: Tensor, c: Tensor) {
    let g = try rnnGeometry("lstm", x: x, states: [h0, c0], kernel: kernel, recurrent: recurrentKernel, bias: bias,
                            gates: 4, biasShape: { [4 * $0] }, goBackwards: goBackwards)
    let (B, T, U, dt) = (g.batch, g.steps, g.units, x.dtype)
    let run = LSTMRun(g: g, x: x, h0: h0, c0: c0, kernel: kernel, recurrent: recurrentKernel, bias: bias,
                      gates: try inputProjections(x, kernel), cells: try Tensor(empty: [B, T, U], dtype: dt),
                      hidden: try Tensor(empty: [B, T, U], dtype: dt))
    if dt == .float32 { lstmForward(Float.self, run) } else { lstmForward(Double.self, run) }

    let last = g.time(T - 1)
    let h = try timeStep(run.hidden, last), c = try timeStep(run.cells, last)
    let outputs = goBackwards ? try reversedInTime(run.hidden) : run.hidden
    recordRNN("lstm", outputs: [outputs, h, c], inputs: [x, h0, c0, kernel, recurrentKernel] + (bias.map { [$0] } ?? [])) { gs in
        dt == .float32 ? try lstmBackward(Float.self, run, gOut: gs[0], gh: gs[1], gc: gs[2])
            : try lstmBackward(Double.self, run, gOut: gs[0], gh: gs[1], gc: gs[2])
    }
    return (outputs, h, c)
}

/// Keras's GRU layer (reset_after, as Keras 3 defaults to and cuDNN computes; gates z, r, h;
/// sigmoid gates, tanh candidate) over a whole sequence: x (B, T, F), h0 (B, U), kernel
/// (F, 3U), recurrent kernel (U, 3U), bias (2, 3U: input, recurrent) or nil. Returns each
/// step's output in processing order (B, T, U) and the final h (B, U). float32 or float64;
/// differentiable in every input (first order).
public func gru(_ x: Tensor, h0: Tensor, kernel: Tensor, recurrentKernel: Tensor, bias: Tensor?,
                goBackwards: Bool = false) throws -> (outputs: Tensor, h: Tensor) {
    let g = try rnnGeometry("gru", x: x, states: [h0], kernel: kernel, recurrent: recurrentKernel, bias: bias,
                            gates: 3, biasShape: { [2, 3 * $0] }, goBackwards: goBackwards)
    let (B, T, U, dt) = (g.batch, g.steps, g.units, x.dtype)
    let run = GRURun(g: g, x: x, h0: h0, kernel: kernel, recurrent: recurrentKernel, bias: bias,
                     gates: try inputProjections(x, kernel),
                     recurrentProjections: try Tensor(empty: [B, T, 3 * U], dtype: dt),
                     hidden: try Tensor(empty: [B, T, U], dtype: dt))
    if dt == .float32 { gruForward(Float.self, run) } else { gruForward(Double.self, run) }

    let h = try timeStep(run.hidden, g.time(T - 1))
    let outputs = goBackwards ? try reversedInTime(run.hidden) : run.hidden
    recordRNN("gru", outputs: [outputs, h], inputs: [x, h0, kernel, recurrentKernel] + (bias.map { [$0] } ?? [])) { gs in
        dt == .float32 ? try gruBackward(Float.self, run, gOut: gs[0], gh: gs[1])
            : try gruBackward(Double.self, run, gOut: gs[0], gh: gs[1])
    }
    return (outputs, h)
}

let rnnOps: [OpDef] = [
    OpDef("lstm", inputs: ["x", "h0", "c0", "kernel", "recurrent_kernel", "bias?"], outputs: ["outputs", "h", "c"],
          attrs: [.bool("go_backwards", default: false)],
          doc: "Keras's LSTM (gates i, f, c, o; sigmoid and tanh) over x (B, T, F), fused; outputs (B, T, U)") { t, a in
        let r = try lstm(t[0], h0: t[1], c0: t[2], kernel: t[3], recurrentKernel: t[4], bias: t.count == 6 ? t[5] : nil,
                         goBackwards: a.bool("go_backwards"))
        return [r.outputs, r.h, r.c]
    },
    OpDef("gru", inputs: ["x", "h0", "kernel", "recurrent_kernel", "bias?"], outputs: ["outputs", "h"],
          attrs: [.bool("go_backwards", default: false)],
          doc: "Keras's GRU (reset_after, gates z, r, h) over x (B, T, F), fused; outputs (B, T, U)") { t, a in
        let r = try gru(t[0], h0: t[1], kernel: t[2], recurrentKernel: t[3], bias: t.count == 5 ? t[4] : nil,
                        goBackwards: a.bool("go_backwards"))
        return [r.outputs, r.h]
    },
]
