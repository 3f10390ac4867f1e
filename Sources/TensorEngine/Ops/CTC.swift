// Connectionist temporal classification: the loss (forward–backward in log space, with its
// gradient w.r.t. the logits recorded on the tape) and greedy / beam-search decoding.

/// log(exp(a) + exp(b)) without overflow; -inf is the identity.
@inline(__always)
private func logAddExp<T: FloatElem>(_ a: T, _ b: T) -> T {
    if a == -T.infinity { return b }
    if b == -T.infinity { return a }
    return a > b ? a + T.log1p(T.exp(b - a)) : b + T.log1p(T.exp(a - b))
}

/// Log-softmax of one row of `k` values into `dst`.
@inline(__always)
private func logSoftmaxRow<T: FloatElem>(_ src: UnsafePointer<T>, _ dst: UnsafeMutablePointer<T>, _ k: Int) {
    var m = src[0]
    for i in 1..<k where src[i] > m || src[i].isNaN { m = src[i] }
    if !m.isFinite && !m.isNaN { m = 0 }
    var total: T = 0
    for i in 0..<k { total += T.exp(src[i] - m) }
    let lt = T.log(total) + m
    for i in 0..<k { dst[i] = src[i] - lt }
}

/// Logits as the float type CTC computes in: float32/float64 kept, others cast to float32
/// (the cast is recorded, so gradients still reach a half-precision input).
private func ctcFloat(_ x: Tensor) throws -> Tensor {
    x.dtype == .float32 || x.dtype == .float64 ? x : try cast(x, to: .float32)
}

/// Per-row lengths clamped to [0, limit], as Swift ints.
private func ctcLengths(_ t: Tensor, _ batch: Int, _ limit: Int, _ name: String) throws -> [Int] {
    guard t.dtype.isInteger, t.rank == 1, t.shape[0] == batch else {
        throw EngineError.value("\(name) must be an integer vector of length \(batch), got \(t.dtype) \(t.shape)")
    }
    return try cast(t, to: .int64).array(Int64.self).map { Int(Swift.max(0, Swift.min(Int64(limit), $0))) }
}

private func ctcBlank(_ maskIndex: Int, _ k: Int) throws -> Int {
    guard maskIndex >= -k && maskIndex < k else {
        throw EngineError.value("mask_index \(maskIndex) is out of range for \(k) classes")
    }
    return maskIndex < 0 ? maskIndex + k : maskIndex
}

/// CTC negative log-likelihood per batch row. `labels` (B, S) int, `logits` (B, T, K)
/// unnormalised, `labelLengths` / `logitLengths` (B) int (clamped to S / T); class
/// `maskIndex` is the blank. Labels past a row's length are ignored; an alignment that
/// cannot exist (labels longer than the frames allow) gives +inf with a zero gradient.
/// Result: float32 (float64 for float64 logits). Differentiable w.r.t. `logits`.
public func ctcLoss(labels: Tensor, logits logits0: Tensor, labelLengths: Tensor, logitLengths: Tensor,
                    maskIndex: Int = 0) throws -> Tensor {
    guard logits0.rank == 3, labels.rank == 2, labels.shape[0] == logits0.shape[0] else {
        throw EngineError.value("ctc_loss expects labels (B, S) and logits (B, T, K), got \(labels.shape) and \(logits0.shape)")
    }
    guard labels.dtype.isInteger else { throw EngineError.type("ctc_loss labels must be integers, got \(labels.dtype)") }
    let (b, t, k, s) = (logits0.shape[0], logits0.shape[1], logits0.shape[2], labels.shape[1])
    guard k > 0 else { throw EngineError.value("ctc_loss needs at least one class") }
    let blank = try ctcBlank(maskIndex, k)
    let lab = try cast(labels, to: .int64)
    let labLen = try ctcLengths(labelLengths, b, s, "label lengths")
    let outLen = try ctcLengths(logitLengths, b, t, "logit lengths")
    let pl = lab.pointer(Int64.self)
    for row in 0..<b {
        for j in 0..<labLen[row] where pl[row * s + j] < 0 || pl[row * s + j] >= k {
            throw EngineError.value("ctc_loss label \(pl[row * s + j]) is out of range for \(k) classes")
        }
    }
    let logits = try ctcFloat(logits0)
    let loss = try Tensor(empty: [b], dtype: logits.dtype)
    let wantGrad = Tape.shouldRecord([logits])
    let grad = wantGrad ? try Tensor(zeros: logits.shape, dtype: logits.dtype) : nil

    struct Kernel: FloatVisitor {
        let logits: Tensor, labels: Tensor, loss: Tensor, grad: Tensor?
        let b: Int, t: Int, k: Int, s: Int, blank: Int, labLen: [Int], outLen: [Int]
        func visit<T: FloatElem>(_: T.Type) throws {
            let px = logits.pointer(T.self), pl = labels.pointer(Int64.self), po = loss.pointer(T.self)
            let pg = grad?.pointer(T.self)
            let (t, k, s, blank, labLen, outLen) = (self.t, self.k, self.s, self.blank, self.labLen, self.outLen)
            parallelFor(b, cost: t * (k + 8) * 8) { range in
                for row in range {
                    let tb = outLen[row], l = labLen[row], sx = 2 * l + 1
                    if tb == 0 { po[row] = l == 0 ? 0 : T.infinity; continue }
                    // Extended label sequence: blank, l1, blank, l2, …, blank.
                    var ext = repeatedInts(blank, count: sx)
                    for j in 0..<l { ext[2 * j + 1] = Int(pl[row * s + j]) }
                    var lp = [T](repeating: 0, count: tb * k)
                    lp.withUnsafeMutableBufferPointer { buf in
                        for f in 0..<tb { logSoftmaxRow(px + (row * t + f) * k, buf.baseAddress! + f * k, k) }
                    }
                    // skip[s]: the s-2 → s transition is allowed (a label differing from the previous one).
                    var skip = [Bool](repeating: false, count: sx)
                    for j in stride(from: 3, to: sx, by: 2) { skip[j] = ext[j] != ext[j - 2] }
                    var alpha = [T](repeating: -T.infinity, count: tb * sx)
                    alpha[0] = lp[blank]
                    if sx > 1 { alpha[1] = lp[ext[1]] }
                    for f in 1..<Swift.max(1, tb) {
                        let prev = (f - 1) * sx, cur = f * sx
                        for j in 0..<sx {
                            var a = alpha[prev + j]
                            if j >= 1 { a = logAddExp(a, alpha[prev + j - 1]) }
                            if skip[j] { a = logAddExp(a, alpha[prev + j - 2]) }
                            alpha[cur + j] = a == -T.infinity ? a : a + lp[f * k + ext[j]]
                        }
                    }
                    let last = (tb - 1) * sx
                    let ll = logAddExp(alpha[last + sx - 1], sx > 1 ? alpha[last + sx - 2] : -T.infinity)
                    po[row] = -ll
                    guard let pg = pg, ll != -T.infinity else { continue }
                    // beta[f][j]: log-probability of frames f+1… given state j at frame f.
                    var beta = [T](repeating: -T.infinity, count: tb * sx)
                    beta[last + sx - 1] = 0
                    if sx > 1 { beta[last + sx - 2] = 0 }
                    for f in stride(from: tb - 2, through: 0, by: -1) {
                        let cur = f * sx, next = (f + 1) * sx, e = (f + 1) * k
                        for j in 0..<sx {
                            var v = beta[next + j] + lp[e + ext[j]]
                            if j + 1 < sx { v = logAddExp(v, beta[next + j + 1] + lp[e + ext[j + 1]]) }
                            if j + 2 < sx && skip[j + 2] { v = logAddExp(v, beta[next + j + 2] + lp[e + ext[j + 2]]) }
                            beta[cur + j] = v
                        }
                    }
                    // d(-ll)/dlogit[f, c] = softmax[f, c] - P(state with class c at frame f | labels).
                    for f in 0..<tb {
                        let g = pg + (row * t + f) * k
                        for c in 0..<k { g[c] = T.exp(lp[f * k + c]) }
                        for j in 0..<sx {
                            let post = alpha[f * sx + j] + beta[f * sx + j] - ll
                            if post != -T.infinity { g[ext[j]] -= T.exp(post) }
                        }
                    }
                }
            }
        }
    }
    try dispatchFloat(logits.dtype, Kernel(logits: logits, labels: lab, loss: loss, grad: grad, b: b, t: t, k: k, s: s,
                                           blank: blank, labLen: labLen, outLen: outLen))
    if let grad = grad {
        Tape.record(loss, [logits]) { g in
            [try multiply(grad, try reshape(try cast(g, to: grad.dtype), [b, 1, 1]))]
        }
    }
    return loss
}

/// Greedy CTC decoding: the best class per frame, frames past a row's length dropped,
/// consecutive repeats merged (`mergeRepeated`), blanks removed. Returns decoded labels
/// (1, B, T) int32 left-aligned and padded with -1, and scores (B, 1): minus the sum of the
/// per-frame maxima of `inputs` (as given, not normalised).
public func ctcGreedyDecode(_ inputs0: Tensor, sequenceLengths: Tensor, mergeRepeated: Bool = true,
                            maskIndex: Int = 0) throws -> (decoded: Tensor, scores: Tensor) {
    guard inputs0.rank == 3 else { throw EngineError.value("ctc_decode expects inputs (B, T, K), got \(inputs0.shape)") }
    let (b, t, k) = (inputs0.shape[0], inputs0.shape[1], inputs0.shape[2])
    guard k > 0 else { throw EngineError.value("ctc_decode needs at least one class") }
    let blank = try ctcBlank(maskIndex, k)
    let lens = try ctcLengths(sequenceLengths, b, t, "sequence lengths")
    let inputs = try ctcFloat(inputs0)
    let decoded = try full([1, b, t], value: -1, dtype: .int32)
    let scores = try Tensor(empty: [b, 1], dtype: inputs.dtype)
    struct Kernel: FloatVisitor {
        let x: Tensor, decoded: Tensor, scores: Tensor, b: Int, t: Int, k: Int, blank: Int, lens: [Int], merge: Bool
        func visit<T: FloatElem>(_: T.Type) throws {
            let px = x.pointer(T.self), pd = decoded.pointer(Int32.self), ps = scores.pointer(T.self)
            let (t, k, blank, lens, merge) = (self.t, self.k, self.blank, self.lens, self.merge)
            parallelFor(b, cost: t * k) { range in
                for row in range {
                    var total: T = 0, n = 0, prev = -1
                    for f in 0..<lens[row] {
                        let p = px + (row * t + f) * k
                        var best = 0
                        for c in 1..<k where p[c] > p[best] { best = c }
                        total += p[best]
                        if best != blank && !(merge && best == prev) { pd[row * t + n] = Int32(best); n += 1 }
                        prev = best
                    }
                    ps[row] = -total
                }
            }
        }
    }
    try dispatchFloat(inputs.dtype, Kernel(x: inputs, decoded: decoded, scores: scores, b: b, t: t, k: k, blank: blank,
                                           lens: lens, merge: mergeRepeated))
    return (decoded, scores)
}

/// Beam-search CTC decoding over log-softmax(`inputs`) (prefix beam search: each prefix keeps
/// the log-probability of ending in a label and of ending in a blank; repeats merge unless
/// separated by a blank). Keeps `beamWidth` prefixes per frame and returns the `topPaths` best:
/// paths (topPaths, B, T) int32 padded with -1 and their log-probabilities (B, topPaths).
/// Ties break as the JAX backend's (toward lower class ids), so results match it exactly.
public func ctcBeamSearchDecode(_ inputs0: Tensor, sequenceLengths: Tensor, beamWidth: Int = 100, topPaths: Int = 1,
                                maskIndex: Int = 0) throws -> (decoded: Tensor, scores: Tensor) {
    guard inputs0.rank == 3 else { throw EngineError.value("ctc_decode expects inputs (B, T, K), got \(inputs0.shape)") }
    let (b, t, k) = (inputs0.shape[0], inputs0.shape[1], inputs0.shape[2])
    guard k > 0 else { throw EngineError.value("ctc_decode needs at least one class") }
    guard beamWidth > 0, topPaths > 0, topPaths <= beamWidth else {
        throw EngineError.value("ctc_decode needs 0 < top_paths <= beam_width, got top_paths=\(topPaths), beam_width=\(beamWidth)")
    }
    let blank = try ctcBlank(maskIndex, k)
    let lens = try ctcLengths(sequenceLengths, b, t, "sequence lengths")
    let inputs = try ctcFloat(inputs0)
    let decoded = try full([topPaths, b, t], value: -1, dtype: .int32)
    let scores = try full([b, topPaths], value: -Double.infinity, dtype: inputs.dtype)
    struct Kernel: FloatVisitor {
        let x: Tensor, decoded: Tensor, scores: Tensor, b: Int, t: Int, k: Int, blank: Int, lens: [Int]
        let beamWidth: Int, topPaths: Int

        struct Entry<T> { var emit: T; var blankEnd: T }

        func visit<T: FloatElem>(_: T.Type) throws {
            let px = x.pointer(T.self), pd = decoded.pointer(Int32.self), ps = scores.pointer(T.self)
            let (t, k, blank, lens, beamWidth, topPaths) = (self.t, self.k, self.blank, self.lens, self.beamWidth, self.topPaths)
            /// JAX's order on prefixes: lexicographic on flipped class ids (k-1-c), a prefix
            /// before its extensions.
            func lexLess(_ a: [Int32], _ b: [Int32]) -> Bool {
                for i in 0..<Swift.min(a.count, b.count) where a[i] != b[i] { return a[i] > b[i] }
                return a.count < b.count
            }
            /// Best `n` prefixes by total log-probability, ties to the later one in lexLess order.
            func best(_ beams: [[Int32]: Entry<T>], _ n: Int) -> [([Int32], Entry<T>, T)] {
                var all = beams.map { ($0.key, $0.value, logAddExp($0.value.emit, $0.value.blankEnd)) }
                all.sort { x, y in x.2 != y.2 ? x.2 > y.2 : lexLess(y.0, x.0) }
                return Array(all.prefix(n))
            }
            parallelFor(b, cost: t * k * Swift.min(beamWidth, 1024) * 16) { range in
                var lp = [T](repeating: 0, count: k)
                for row in range {
                    let len = lens[row]
                    lp.withUnsafeMutableBufferPointer { logSoftmaxRow(px + row * t * k, $0.baseAddress!, k) }
                    // Frame 0 (used even for an empty row, as JAX does): the best beamWidth classes.
                    let order = (0..<k).sorted { lp[$0] != lp[$1] ? lp[$0] > lp[$1] : $0 < $1 }
                    var beams: [[Int32]: Entry<T>] = [:]
                    for c in order.prefix(beamWidth) {
                        if c == blank { beams[[], default: Entry(emit: -T.infinity, blankEnd: -T.infinity)].blankEnd = lp[c] }
                        else { beams[[Int32(c)], default: Entry(emit: -T.infinity, blankEnd: -T.infinity)].emit = lp[c] }
                    }
                    for f in 1..<Swift.max(1, len) {
                        lp.withUnsafeMutableBufferPointer { logSoftmaxRow(px + (row * t + f) * k, $0.baseAddress!, k) }
                        var next: [[Int32]: Entry<T>] = [:]
                        let empty = Entry(emit: -T.infinity, blankEnd: -T.infinity)
                        for (path, e) in beams {
                            let tail = path.last.map { Int($0) } ?? -1
                            for (score, endsInBlank) in [(e.emit, false), (e.blankEnd, true)] where score != -T.infinity {
                                for c in 0..<k {
                                    let v = score + lp[c]
                                    if c == blank {
                                        next[path, default: empty].blankEnd = logAddExp(next[path, default: empty].blankEnd, v)
                                    } else if c == tail && !endsInBlank {
                                        next[path, default: empty].emit = logAddExp(next[path, default: empty].emit, v)
                                    } else {
                                        let p = path + [Int32(c)]
                                        next[p, default: empty].emit = logAddExp(next[p, default: empty].emit, v)
                                    }
                                }
                            }
                        }
                        beams = [:]
                        for (path, e, _) in best(next, beamWidth) { beams[path] = e }
                    }
                    for (i, (path, _, total)) in best(beams, topPaths).enumerated() {
                        ps[row * topPaths + i] = total
                        for (j, c) in path.enumerated() { pd[(i * (lens.count) + row) * t + j] = c }
                    }
                }
            }
        }
    }
    try dispatchFloat(inputs.dtype, Kernel(x: inputs, decoded: decoded, scores: scores, b: b, t: t, k: k, blank: blank,
                                           lens: lens, beamWidth: beamWidth, topPaths: topPaths))
    return (decoded, scores)
}

let ctcOps: [OpDef] = [
    OpDef("ctc_loss", inputs: ["labels", "logits", "label_lengths", "logit_lengths"],
          attrs: [.int("mask_index", default: 0)], grad: .wrt(["logits"]),
          doc: "Per-sequence CTC negative log-likelihood (B); mask_index is the blank class (negative wraps); "
            + "infeasible sequences give +inf with a zero gradient") { t, a in
        try ctcLoss(labels: t[0], logits: t[1], labelLengths: t[2], logitLengths: t[3], maskIndex: a.int("mask_index"))
    },
    OpDef("ctc_decode", inputs: ["logits", "sequence_lengths"], outputs: ["decoded", "scores"],
          attrs: [.int("mask_index", default: 0), .string("strategy", default: "greedy", choices: ["greedy", "beam_search"]),
                  .bool("merge_repeated", default: true), .int("beam_width", default: 100), .int("top_paths", default: 1)],
          grad: .no, doc: "CTC decoding, greedy (merge_repeated) or beam search (beam_width, top_paths)") { t, a in
        let mask = try a.int("mask_index")
        if try a.string("strategy") == "greedy" {
            let r = try ctcGreedyDecode(t[0], sequenceLengths: t[1], mergeRepeated: a.bool("merge_repeated"), maskIndex: mask)
            return [r.decoded, r.scores]
        }
        let r = try ctcBeamSearchDecode(t[0], sequenceLengths: t[1], beamWidth: a.int("beam_width"),
                                        topPaths: a.int("top_paths"), maskIndex: mask)
        return [r.decoded, r.scores]
    },
]
