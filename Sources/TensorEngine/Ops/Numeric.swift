/// numpy-style numeric ops that need their own kernels: bit reinterpretation, 1-D
/// correlation, histograms, unique, and the framing / overlap-add pair behind stft / istft.

// MARK: - bitcast

/// numpy's `ndarray.view(dtype)`: the same bytes read as `dtype`. With a different item size
/// the last axis is rescaled (its byte length must divide evenly); a scalar cannot change size.
public func bitcast(_ x: Tensor, to dtype: DType) throws -> Tensor {
    if dtype == x.dtype { return x }
    if dtype == .bool && x.dtype != .bool {
        // Only 0/1 bytes are valid bools; arbitrary bit patterns are not.
        throw EngineError.type("cannot view \(x.dtype) as bool")
    }
    var shape = x.shape
    let a = x.dtype.itemSize, b = dtype.itemSize
    if a != b {
        guard let last = shape.last else {
            throw EngineError.value("cannot view a scalar of \(x.dtype) (\(a) bytes) as \(dtype) (\(b) bytes)")
        }
        guard (last * a) % b == 0 else {
            throw EngineError.value("the last axis (\(last) x \(a) bytes) does not divide into \(dtype) items of \(b) bytes")
        }
        shape[shape.count - 1] = last * a / b
    }
    let out = try Tensor(empty: shape, dtype: dtype)
    if x.nbytes > 0 { out.rawPointer.copyMemory(from: x.rawPointer, byteCount: x.nbytes) }
    return out
}

// MARK: - correlate

/// out[k] = sum_n a[n + k + lo] * b[n] for k in 0..<len (a read as 0 outside its range).
private func shiftedCorrelation(_ a: Tensor, _ b: Tensor, lo: Int, len: Int) throws -> Tensor {
    let out = try Tensor(zeros: [len], dtype: a.dtype)
    struct K: FloatVisitor {
        let a: Tensor, b: Tensor, out: Tensor, lo: Int, len: Int
        func visit<T: FloatElem>(_: T.Type) throws {
            let pa = a.pointer(T.self), pb = b.pointer(T.self), po = out.pointer(T.self)
            let (na, nb, lo) = (a.count, b.count, self.lo)
            parallelFor(len, cost: nb * 2) { range in
                for k in range {
                    // Only n with 0 <= n + k + lo < na contribute.
                    let n0 = Swift.max(0, -(k + lo)), n1 = Swift.min(nb, na - k - lo)
                    var acc = T.zeroValue
                    if n0 < n1 { for n in n0..<n1 { acc = acc + pa[n + k + lo] * pb[n] } }
                    po[k] = acc
                }
            }
        }
    }
    try dispatchFloat(a.dtype, K(a: a, b: b, out: out, lo: lo, len: len))
    return out
}

private func reversed1D(_ x: Tensor) throws -> Tensor {
    let n = x.count
    return try stridedSlice(x, begin: [n - 1], end: [-1], strides: [-1])
}

/// numpy's `correlate(a, v, mode)` of two 1-D float tensors (same float dtype; f16/bf16 are
/// computed in float32): c[k] = sum_n a[n + k] v[n] over the window `mode` selects.
public func correlate(_ a0: Tensor, _ v0: Tensor, mode: String = "valid") throws -> Tensor {
    guard a0.rank == 1, v0.rank == 1 else {
        throw EngineError.value("correlate takes 1-D inputs, got shapes \(a0.shape) and \(v0.shape)")
    }
    guard a0.dtype.isFloatingPoint, a0.dtype == v0.dtype else {
        throw EngineError.type("correlate needs two inputs of one float dtype, got \(a0.dtype) and \(v0.dtype)")
    }
    if a0.dtype.isHalf {
        let r = try correlate(try cast(a0, to: .float32), try cast(v0, to: .float32), mode: mode)
        return try cast(r, to: a0.dtype)
    }
    let na = a0.count, nv = v0.count
    guard na > 0, nv > 0 else { throw EngineError.value("correlate needs non-empty inputs") }
    // Offsets as numpy computes them (it swaps the inputs and reverses when a is shorter).
    let lo: Int, len: Int
    switch mode {
    case "full": (lo, len) = (-(nv - 1), na + nv - 1)
    case "same": (lo, len) = na >= nv ? (-(nv / 2), na) : (-(nv - 1 - na / 2), nv)
    case "valid": (lo, len) = na >= nv ? (0, na - nv + 1) : (-(nv - na), nv - na + 1)
    default: throw EngineError.value("correlate mode must be 'valid', 'same' or 'full', got '\(mode)'")
    }
    let out = try Tape.paused { try shiftedCorrelation(a0, v0, lo: lo, len: len) }
    Tape.record(out, [a0, v0]) { g in
        // da[i] = sum_k g[k] v[i - k - lo]; dv[n] = sum_k g[k] a[n + k + lo].
        let da = try shiftedCorrelation(g, try reversed1D(v0), lo: -lo - (nv - 1), len: na)
        let dv = try shiftedCorrelation(a0, g, lo: lo, len: nv)
        return [da, dv]
    }
    return out
}

// MARK: - histogram

/// numpy's `histogram` of a 1-D tensor into `bins` equal bins over [lo, hi] (default: the
/// data's min and max; an empty range widens by 0.5 each side). Values outside are dropped,
/// the last bin is closed. Returns int32 counts and the bins + 1 edges (float dtype of x,
/// float32 for non-float x).
public func histogram(_ x0: Tensor, bins: Int, range: (Double, Double)? = nil) throws -> (counts: Tensor, edges: Tensor) {
    guard x0.rank == 1 else { throw EngineError.value("Input tensor must be 1-dimensional, got shape \(x0.shape)") }
    guard bins >= 0, bins < maxTensorBytes else { throw EngineError.value("bins must be a non-negative integer below the tensor size limit, got \(bins)") }
    let x = try cast(x0, to: .float64)
    let px = x.pointer(Double.self), n = x.count
    var lo: Double, hi: Double
    if let r = range {
        (lo, hi) = r
    } else if n == 0 {
        (lo, hi) = (0, 1)
    } else {
        (lo, hi) = (px[0], px[0])
        for i in 0..<n { lo = Swift.min(lo, px[i]); hi = Swift.max(hi, px[i]) }
    }
    guard lo.isFinite, hi.isFinite else { throw EngineError.value("histogram range [\(lo), \(hi)] is not finite") }
    guard lo <= hi else { throw EngineError.value("histogram range needs min <= max, got [\(lo), \(hi)]") }
    if lo == hi { lo -= 0.5; hi += 0.5 }
    guard (hi - lo).isFinite else { throw EngineError.value("histogram range [\(lo), \(hi)] is too wide for float64") }
    // Allocating the outputs first bounds `bins` by the tensor size limit before any loop.
    let countsT = try Tensor(zeros: [bins], dtype: .int32), edgesT = try Tensor(zeros: [bins + 1], dtype: .float64)
    let edges = edgesT.pointer(Double.self), counts = countsT.pointer(Int32.self)
    let step = (hi - lo) / Double(Swift.max(bins, 1))
    for i in 0...bins { edges[i] = Double(i) * step + lo }  // numpy's linspace
    if bins > 0 { edges[bins] = hi }
    // numpy's rule: edges that do not increase (a range below float64's spacing at its
    // magnitude, as for int64 values near 2**62) cannot make bins; the scaled index would
    // also be 0 / 0 there.
    for i in 0..<bins where !(edges[i] < edges[i + 1]) {
        throw EngineError.value("Too many bins for data range. Cannot create \(bins) finite-sized bins.")
    }
    if bins > 0 {
        for i in 0..<n {
            let v = px[i]
            guard v >= lo && v <= hi else { continue }  // also drops NaN
            // (v - lo) / (hi - lo) lies in [0, 1], so the product cannot overflow Int.
            var b = Swift.min(Int((v - lo) / (hi - lo) * Double(bins)), bins - 1)
            // Rounding in the scaled index can land one bin off; the edges decide, as numpy does.
            if b > 0 && v < edges[b] { b -= 1 } else if b < bins - 1 && v >= edges[b + 1] { b += 1 }
            counts[b] &+= 1
        }
    }
    let edgeType: DType = x0.dtype.isFloatingPoint ? x0.dtype : .float32
    return (countsT, try cast(edgesT, to: edgeType))
}

// MARK: - unique

/// numpy's `unique`: the distinct entries of x (axis nil: of the flattened x) or the distinct
/// slices along `axis`, sorted (NaNs are all distinct and sort last). Returns the unique values,
/// the int32 index of each one's first occurrence, the int32 inverse (shape of x for axis nil,
/// else [x.shape[axis]]) and int32 counts. With `size`, outputs are cut or padded to `size`
/// entries: values with `fill` (default: the smallest unique entry), counts with 0, indices with
/// the first unique's index.
public func unique(_ x0: Tensor, axis: Int? = nil, size: Int? = nil, fill: Double? = nil) throws
    -> (values: Tensor, index: Tensor, inverse: Tensor, counts: Tensor) {
    if let s = size, s < 0 || s > maxTensorBytes / 8 { throw EngineError.value("unique size must be >= 0 and within the tensor size limit, got \(s)") }
    let ax: Int? = try axis.map { try normalizeAxis($0, rank: x0.rank) }
    // Rows to compare: axis moved to the front, everything else flattened into the row.
    var moved = x0
    if let ax = ax, ax != 0 {
        var perm = Array(0..<x0.rank)
        perm.remove(at: ax)
        perm.insert(ax, at: 0)
        moved = try transpose(x0, perm)
    }
    let rows = ax == nil ? x0.count : x0.shape[ax!]
    // The sort order and the inverse hold an entry per row, even where the rows are empty
    // (a (0, 2^41) tensor along its last axis).
    try SizeCheck("unique").fits(rows, itemSize: MemoryLayout<Int>.size)
    let width = rows == 0 ? 0 : moved.count / rows
    var keys = moved
    if keys.dtype.isHalf { keys = try cast(keys, to: .float32) }
    if keys.dtype == .bool { keys = try cast(keys, to: .uint8) }

    struct K: NumericVisitor {
        let keys: Tensor, rows: Int, width: Int
        func visit<T: NumElem>(_: T.Type) throws -> (first: [Int], inverse: [Int32], counts: [Int32]) {
            let p = keys.pointer(T.self)
            let (rows, width) = (self.rows, self.width)
            // -1 / 0 / 1 lexicographic order of two rows, NaN after every number.
            func cmp(_ a: Int, _ b: Int) -> Int {
                for j in 0..<width {
                    let va = p[a * width + j], vb = p[b * width + j]
                    let na = va.isNaNValue, nb = vb.isNaNValue
                    if na || nb {
                        if na && nb { return a < b ? -1 : (a > b ? 1 : 0) }  // NaNs never compare equal
                        return na ? 1 : -1
                    }
                    if va < vb { return -1 }
                    if vb < va { return 1 }
                }
                return 0
            }
            var order = Array(0..<rows)
            if width == 1 {
                // The flattened case, without the row loop (several times faster).
                order.sort { a, b in
                    let va = p[a], vb = p[b]
                    let na = va.isNaNValue, nb = vb.isNaNValue
                    if na || nb { return na != nb ? nb : a < b }
                    return va < vb || (va == vb && a < b)
                }
            } else {
                order.sort { a, b in
                    let c = cmp(a, b)
                    return c != 0 ? c < 0 : a < b
                }
            }
            var first: [Int] = [], counts: [Int32] = []
            var inverse = [Int32](repeating: 0, count: rows)
            for (k, r) in order.enumerated() {
                let fresh = k == 0 || (width == 1 ? !(p[order[k - 1]] == p[r]) : cmp(order[k - 1], r) != 0)
                if fresh {
                    first.append(r)  // stable sort: the first of a group is its first occurrence
                    counts.append(0)
                }
                counts[counts.count - 1] += 1
                inverse[r] = Int32(first.count - 1)
            }
            return (first, inverse, counts)
        }
    }
    let groups = try dispatchNumeric(keys.dtype, K(keys: keys, rows: rows, width: width))
    var first = groups.first, counts = groups.counts
    let inverse = groups.inverse
    let u = first.count
    var padRows = 0  // rows of `fill` appended to the values
    if let s = size {
        if s < u {
            first.removeLast(u - s)
            counts.removeLast(u - s)
        } else if s > u {
            counts += [Int32](repeating: 0, count: s - u)
            if fill != nil {
                padRows = s - u
            } else {
                guard let f0 = first.first else {
                    throw EngineError.value("unique of an empty tensor with `size` needs a fill_value")
                }
                first += repeatedInts(f0, count: s - u)
            }
        }
    }
    let firstT = try Tensor(first.map { Int32($0) }, shape: [first.count])
    var values: Tensor
    if let ax = ax {
        values = try take(x0, firstT, axis: ax)
        if padRows > 0 {
            var pads = repeatedInts(0, count: 2 * x0.rank)
            pads[2 * ax + 1] = padRows
            values = try pad(values, pads, mode: .constant, value: fill ?? 0)
        }
    } else {
        values = try take(try reshape(x0, [x0.count]), firstT, axis: 0)
        if padRows > 0 { values = try pad(values, [0, padRows], mode: .constant, value: fill ?? 0) }
    }
    var index = first.map { Int32($0) }
    if padRows > 0 { index += [Int32](repeating: index.first ?? 0, count: padRows) }
    let invShape = ax == nil ? x0.shape : [rows]
    return (values, try Tensor(index, shape: [index.count]), try Tensor(inverse, shape: invShape),
            try Tensor(counts, shape: [counts.count]))
}

// MARK: - frame / overlap_add

/// Overlapping frames of the last axis: [..., n] -> [..., frames, length], frame f starting at
/// f * stride; frames = (n - length) / stride + 1 (0 when n < length). Differentiable.
public func frame(_ x: Tensor, length: Int, stride: Int) throws -> Tensor {
    guard x.rank >= 1 else { throw EngineError.value("frame needs a tensor of rank >= 1") }
    guard length > 0, stride > 0 else { throw EngineError.value("frame length and stride must be positive, got \(length), \(stride)") }
    let n = x.shape[x.rank - 1]
    let frames = n >= length ? (n - length) / stride + 1 : 0
    let outer = n == 0 ? x.count : x.count / n
    let out = try Tensor(empty: Array(x.shape.dropLast()) + [frames, length], dtype: x.dtype)
    let item = x.dtype.itemSize
    let src = x.rawPointer, dst = out.rawPointer
    parallelFor(outer * frames, cost: length) { range in
        for c in range {
            let o = c / frames, f = c % frames
            (dst + c * length * item).copyMemory(from: src + (o * n + f * stride) * item, byteCount: length * item)
        }
    }
    if x.dtype.isFloatingPoint {
        Tape.record(out, [x]) { g in [try overlapAdd(g, stride: stride, length: n)] }
    }
    return out
}

/// Sums frames [..., frames, frameLength] placed stride apart: the adjoint of `frame`. The
/// output's last axis is `length` (default (frames - 1) * stride + frameLength; a shorter
/// length drops the tail, a longer one zero-pads). Float inputs only. Differentiable.
public func overlapAdd(_ x0: Tensor, stride: Int, length: Int? = nil) throws -> Tensor {
    guard x0.rank >= 2 else { throw EngineError.value("overlap_add needs a tensor of rank >= 2") }
    guard x0.dtype.isFloatingPoint else { throw EngineError.type("overlap_add needs a float tensor, got \(x0.dtype)") }
    guard stride > 0 else { throw EngineError.value("overlap_add stride must be positive, got \(stride)") }
    if x0.dtype.isHalf {
        return try cast(try overlapAdd(try cast(x0, to: .float32), stride: stride, length: length), to: x0.dtype)
    }
    let frames = x0.shape[x0.rank - 2], fl = x0.shape[x0.rank - 1]
    let sizes = SizeCheck("overlap_add")
    let natural0 = try sizes.add(try sizes.multiply(Swift.max(frames - 1, 0), stride), fl)
    let natural = frames == 0 ? 0 : natural0
    let n = length ?? natural
    guard n >= 0 else { throw EngineError.value("overlap_add length must be >= 0, got \(n)") }
    let outer = frames * fl == 0 ? x0.shape.dropLast(2).reduce(1, *) : x0.count / (frames * fl)
    let out = try Tensor(zeros: Array(x0.shape.dropLast(2)) + [n], dtype: x0.dtype)
    struct K: FloatVisitor {
        let x: Tensor, out: Tensor, outer: Int, frames: Int, fl: Int, stride: Int, n: Int
        func visit<T: FloatElem>(_: T.Type) throws {
            let px = x.pointer(T.self), po = out.pointer(T.self)
            let (frames, fl, stride, n) = (self.frames, self.fl, self.stride, self.n)
            parallelFor(outer, cost: frames * fl) { range in
                for o in range {
                    for f in 0..<frames {
                        let start = f * stride, m = Swift.min(fl, n - start)
                        if m <= 0 { break }
                        let src = px + (o * frames + f) * fl, dst = po + o * n + start
                        for j in 0..<m { dst[j] = dst[j] + src[j] }
                    }
                }
            }
        }
    }
    try dispatchFloat(x0.dtype, K(x: x0, out: out, outer: outer, frames: frames, fl: fl, stride: stride, n: n))
    Tape.record(out, [x0]) { g in
        // Frames of g; frames reaching past a short output get zero gradient there.
        var gg = g
        if natural > n {
            var pads = repeatedInts(0, count: 2 * g.rank)
            pads[2 * g.rank - 1] = natural - n
            gg = try pad(g, pads)
        }
        return [try frame(gg, length: fl, stride: stride)]
    }
    return out
}

let numericOps: [OpDef] = [
    OpDef(unary: "bitcast", attrs: [.dtype("dtype")], dtypes: .all, grad: .no,
          doc: "x's bytes read as dtype (the last axis scales by the itemsize ratio)") { x, a in try bitcast(x, to: a.dtype("dtype")) },
    OpDef("correlate", inputs: ["a", "v"], attrs: [.string("mode", default: "valid", choices: ["valid", "same", "full"])],
          doc: "numpy.correlate of two 1-D tensors") { t, a in try correlate(t[0], t[1], mode: a.string("mode")) },
    OpDef("histogram", inputs: ["x"], outputs: ["counts", "edges"],
          attrs: [.int("bins", default: 10), .float("min", absent: "x's minimum"), .float("max", absent: "x's maximum")], grad: .no,
          doc: "numpy.histogram with bins equal bins over [min, max]") { t, a in
        let range: (Double, Double)? = a.has("min") || a.has("max") ? (try a.float("min"), try a.float("max")) : nil
        let r = try histogram(t[0], bins: a.int("bins"), range: range)
        return [r.counts, r.edges]
    },
    OpDef("unique", inputs: ["x"], outputs: ["values", "index", "inverse", "counts"],
          attrs: [.int("axis", absent: "x flattened"), .int("size", absent: "as many as there are"),
                  .float("fill_value", absent: "the smallest value")], grad: .no,
          doc: "numpy.unique with return_index, return_inverse and return_counts; size pads or truncates (jax)") { t, a in
        let r = try unique(t[0], axis: a.has("axis") ? a.int("axis") : nil, size: a.has("size") ? a.int("size") : nil,
                           fill: a.has("fill_value") ? a.float("fill_value") : nil)
        return [r.values, r.index, r.inverse, r.counts]
    },
    OpDef(unary: "frame", attrs: [.int("length"), .int("stride")],
          doc: "Overlapping frames of length every stride along the last axis (a new axis before it)") { x, a in
        try frame(x, length: a.int("length"), stride: a.int("stride"))
    },
    OpDef(unary: "overlap_add", attrs: [.int("stride"), .int("length", absent: "the full overlap-added length")],
          doc: "Frames (..., frames, frame_length) summed back at stride hops; the adjoint of frame") { x, a in
        try overlapAdd(x, stride: a.int("stride"), length: a.has("length") ? a.int("length") : nil)
    },
]
