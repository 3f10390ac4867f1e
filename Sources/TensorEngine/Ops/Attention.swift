/// Scaled dot-product attention, softmax(q kᵀ · scale) v per (batch, head), computed a block
/// of query rows at a time: the scores of one block live in a per-thread buffer that stays in
/// cache, and only the output and each row's log-sum-exp are kept for the backward pass, which
/// recomputes the block's probabilities (FlashAttention's scheme, on the CPU). The unfused
/// form materialised two (batch, heads, T, S) tensors and kept both for the gradient: 40 MB
/// for a Keras MultiHeadAttention of 2 heads over 64 × 200 tokens.

/// Query rows per block: their scores (rows × S) fill about `attentionBlockElements`.
private let attentionBlockElements = 1 << 15

private struct AttentionShape {
    let pairs: Int, t: Int, s: Int, h: Int, hv: Int
    let scale: Double, causal: Bool
    var rowsPerBlock: Int { Swift.max(1, Swift.min(t, attentionBlockElements / Swift.max(s, 1))) }
    /// Key columns query row `i` attends to.
    func columns(_ i: Int) -> Int { causal ? Swift.min(i + 1, s) : s }
}

/// Forward: out (pairs, T, Hv) and lse (pairs, T) from q (pairs, T, H), k (pairs, S, H),
/// v (pairs, S, Hv).
private struct AttentionForward: BLASVisitor {
    let q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, shape: AttentionShape
    func visit<T: BLASFloat>(_: T.Type) throws {
        let (pq, pk, pv, po, pl) = (q.pointer(T.self), k.pointer(T.self), v.pointer(T.self), out.pointer(T.self),
                                    lse.pointer(T.self))
        let sh = shape, r = sh.rowsPerBlock, scale = T(sh.scale)
        parallelFor(sh.pairs, cost: sh.t * sh.s * (sh.h + sh.hv)) { range in
            let scores = UnsafeMutablePointer<T>.allocate(capacity: r * sh.s)
            defer { scores.deallocate() }
            for p in range {
                let (qp, kp, vp) = (pq + p * sh.t * sh.h, pk + p * sh.s * sh.h, pv + p * sh.s * sh.hv)
                var t0 = 0
                while t0 < sh.t {
                    let rows = Swift.min(r, sh.t - t0)
                    T.blasGEMM(transA: false, transB: true, m: rows, n: sh.s, k: sh.h, a: qp + t0 * sh.h, lda: sh.h,
                               b: kp, ldb: sh.h, beta: 0, c: scores, ldc: sh.s)
                    for i in 0..<rows {
                        let row = scores + i * sh.s, n = sh.columns(t0 + i)
                        for j in 0..<n { row[j] *= scale }
                        pl[p * sh.t + t0 + i] = n > 0 ? softmaxRow(row, row, n, log: false) : -.infinity
                        for j in n..<sh.s { row[j] = 0 }
                    }
                    T.blasGEMM(transA: false, transB: false, m: rows, n: sh.hv, k: sh.s, a: scores, lda: sh.s,
                               b: vp, ldb: sh.hv, beta: 0, c: po + (p * sh.t + t0) * sh.hv, ldc: sh.hv)
                    t0 += rows
                }
            }
        }
    }
}

/// Backward: dq, dk, dv from the output gradient `dout`, recomputing each block's
/// probabilities from the scores and the saved log-sum-exp.
private struct AttentionBackward: BLASVisitor {
    let q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, dout: Tensor
    let dq: Tensor, dk: Tensor, dv: Tensor, shape: AttentionShape
    func visit<T: BLASFloat>(_: T.Type) throws {
        let (pq, pk, pv, po, pl, pd) = (q.pointer(T.self), k.pointer(T.self), v.pointer(T.self), out.pointer(T.self),
                                        lse.pointer(T.self), dout.pointer(T.self))
        let (gq, gk, gv) = (dq.pointer(T.self), dk.pointer(T.self), dv.pointer(T.self))
        let sh = shape, r = sh.rowsPerBlock, scale = T(sh.scale)
        parallelFor(sh.pairs, cost: 2 * sh.t * sh.s * (sh.h + sh.hv)) { range in
            let probs = UnsafeMutablePointer<T>.allocate(capacity: r * sh.s)
            let dprobs = UnsafeMutablePointer<T>.allocate(capacity: r * sh.s)
            defer {
                probs.deallocate()
                dprobs.deallocate()
            }
            for p in range {
                let (qp, kp, vp) = (pq + p * sh.t * sh.h, pk + p * sh.s * sh.h, pv + p * sh.s * sh.hv)
                let (op, dop) = (po + p * sh.t * sh.hv, pd + p * sh.t * sh.hv)
                let (dqp, dkp, dvp) = (gq + p * sh.t * sh.h, gk + p * sh.s * sh.h, gv + p * sh.s * sh.hv)
                var t0 = 0
                while t0 < sh.t {
                    let rows = Swift.min(r, sh.t - t0)
                    T.blasGEMM(transA: false, transB: true, m: rows, n: sh.s, k: sh.h, a: qp + t0 * sh.h, lda: sh.h,
                               b: kp, ldb: sh.h, beta: 0, c: probs, ldc: sh.s)
                    for i in 0..<rows {
                        let row = probs + i * sh.s, n = sh.columns(t0 + i), l = pl[p * sh.t + t0 + i]
                        if T.self == Float.self {
                            // The forward's exp (softmaxRow's), vectorised.
                            let rf = UnsafeMutableRawPointer(row).assumingMemoryBound(to: Float.self)
                            let (sf, lf) = (Float(sh.scale), unsafeBitCast(l, to: Float.self))
                            for j in 0..<n { rf[j] = VecMath.exp(rf[j] * sf - lf) }
                        } else {
                            for j in 0..<n { row[j] = T.exp(row[j] * scale - l) }
                        }
                        for j in n..<sh.s { row[j] = 0 }
                    }
                    // dv += Pᵀ dO; dP = dO vᵀ
                    T.blasGEMM(transA: true, transB: false, m: sh.s, n: sh.hv, k: rows, a: probs, lda: sh.s,
                               b: dop + t0 * sh.hv, ldb: sh.hv, beta: t0 == 0 ? 0 : 1, c: dvp, ldc: sh.hv)
                    T.blasGEMM(transA: false, transB: true, m: rows, n: sh.s, k: sh.hv, a: dop + t0 * sh.hv, lda: sh.hv,
                               b: vp, ldb: sh.hv, beta: 0, c: dprobs, ldc: sh.s)
                    // dS = P ⊙ (dP − rowsum(dO ⊙ O)) · scale
                    for i in 0..<rows {
                        let (o, d) = (op + (t0 + i) * sh.hv, dop + (t0 + i) * sh.hv)
                        var dot = T(0)
                        for j in 0..<sh.hv { dot += o[j] * d[j] }
                        let (pr, dr) = (probs + i * sh.s, dprobs + i * sh.s)
                        for j in 0..<sh.s { dr[j] = pr[j] * (dr[j] - dot) * scale }
                    }
                    // dq = dS k; dk += dSᵀ q
                    T.blasGEMM(transA: false, transB: false, m: rows, n: sh.h, k: sh.s, a: dprobs, lda: sh.s,
                               b: kp, ldb: sh.h, beta: 0, c: dqp + t0 * sh.h, ldc: sh.h)
                    T.blasGEMM(transA: true, transB: false, m: sh.s, n: sh.h, k: rows, a: dprobs, lda: sh.s,
                               b: qp + t0 * sh.h, ldb: sh.h, beta: t0 == 0 ? 0 : 1, c: dkp, ldc: sh.h)
                    t0 += rows
                }
            }
        }
    }
}

/// softmax(q kᵀ · scale, masked to j ≤ i when `causal`) v for q (B, N, T, H), k (B, N, S, H)
/// and v (B, N, S, Hv) of one float dtype: (B, N, T, Hv). Differentiable in q, k and v.
public func dotProductAttention(_ q: Tensor, _ k: Tensor, _ v: Tensor, scale: Double, causal: Bool) throws -> Tensor {
    guard q.rank == 4, k.rank == 4, v.rank == 4 else {
        throw EngineError.value("dot_product_attention needs rank-4 (batch, heads, seq, dim) q, k and v; got \(q.shape), \(k.shape), \(v.shape)")
    }
    guard q.dtype == k.dtype, q.dtype == v.dtype, q.dtype == .float32 || q.dtype == .float64 else {
        throw EngineError.type("dot_product_attention needs float32 or float64 q, k and v of one dtype; got \(q.dtype), \(k.dtype), \(v.dtype)")
    }
    let (b, n, t, h) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3])
    let (s, hv) = (k.shape[2], v.shape[3])
    guard Array(k.shape[0..<2]) == [b, n], k.shape[3] == h, Array(v.shape[0..<3]) == [b, n, s] else {
        throw EngineError.value("dot_product_attention: q \(q.shape), k \(k.shape) and v \(v.shape) do not fit (batch, heads, seq, dim)")
    }
    guard scale.isFinite else { throw EngineError.value("dot_product_attention: scale must be finite, got \(scale)") }
    let shape = AttentionShape(pairs: b * n, t: t, s: s, h: h, hv: hv, scale: scale, causal: causal)
    let out = try Tensor(zeros: [b, n, t, hv], dtype: q.dtype)
    let lse = try Tensor(empty: [b, n, t], dtype: q.dtype)
    if out.count > 0 {
        try dispatchBLAS(q.dtype, AttentionForward(q: q, k: k, v: v, out: out, lse: lse, shape: shape))
    }
    Tape.record(out, [q, k, v]) { g0 in
        let g = try cast(g0, to: q.dtype)
        if Tape.shouldRecord([g, q, k, v]) {
            return try attentionVJPByOps(g, q, k, v, scale: scale, causal: causal)
        }
        let (dq, dk, dv) = (try Tensor(zeros: q.shape, dtype: q.dtype), try Tensor(zeros: k.shape, dtype: q.dtype),
                            try Tensor(zeros: v.shape, dtype: q.dtype))
        if out.count > 0, s > 0 {
            try dispatchBLAS(q.dtype, AttentionBackward(q: q, k: k, v: v, out: out, lse: lse, dout: g,
                                                        dq: dq, dk: dk, dv: dv, shape: shape))
        }
        return [dq, dk, dv]
    }
    return out
}

/// The same gradients through recorded ops, so that a create-graph backward pass
/// differentiates again (the fused kernel's are constants to the tape).
private func attentionVJPByOps(_ g: Tensor, _ q: Tensor, _ k: Tensor, _ v: Tensor,
                               scale: Double, causal: Bool) throws -> [Tensor?] {
    let c = try full([], value: scale, dtype: q.dtype)
    var logits = try multiply(try matmul(q, try matrixTranspose(k)), c)
    if causal {
        let (t, s) = (q.shape[2], k.shape[2])
        let mask = try Tensor((0..<(t * s)).map { $0 % s <= $0 / s }, shape: [t, s])
        logits = try `where`(mask, logits, try full([], value: -.infinity, dtype: q.dtype))
    }
    let p = try softmax(logits)
    let dp = try matmul(g, try matrixTranspose(v))
    let ds = try multiply(try multiply(p, try subtract(dp, try sum(try multiply(dp, p), axes: [-1], keepdims: true))), c)
    return [try matmul(ds, k), try matmul(try matrixTranspose(ds), q), try matmul(try matrixTranspose(p), g)]
}

let attentionOps: [OpDef] = [
    OpDef("dot_product_attention", inputs: ["query", "key", "value"],
          attrs: [.float("scale"), .bool("causal", default: false)],
          doc: "softmax(query keyᵀ · scale) value per (batch, head) for query (B, N, T, H), key (B, N, S, H), "
            + "value (B, N, S, Hv); causal masks key j > query i; computed in blocks of query rows, keeping only "
            + "the output and each row's log-sum-exp for the gradient") { t, a in
        try dotProductAttention(t[0], t[1], t[2], scale: a.float("scale"), causal: a.bool("causal"))
    },
]
