/// Index-driven ops: pad, gather_nd / scatter_nd, slice_update, nonzero, repeat,
/// segment reductions, triangles and eye.

/// Runs `body(outIndex, offsets)` over every element of `shape`, where offsets[k] is the
/// element offset into operand k given its per-dimension `strides` (row-major walk).
@inline(__always)
private func walk(_ shape: [Int], _ strides: [[Int]], _ body: (Int, [Int]) -> Void) {
    let n = shape.reduce(1, *)
    guard n > 0 else { return }
    var idx = repeatedInts(0, count: shape.count)
    var off = repeatedInts(0, count: strides.count)
    for i in 0..<n {
        body(i, off)
        var d = shape.count - 1
        while d >= 0 {
            idx[d] += 1
            for k in strides.indices { off[k] += strides[k][d] }
            if idx[d] < shape[d] { break }
            for k in strides.indices { off[k] -= strides[k][d] * shape[d] }
            idx[d] = 0
            d -= 1
        }
    }
}

public enum PadMode: String { case constant, reflect, symmetric, edge }

/// Input index for output position `i` of a padded dimension, or -1 for a constant pad.
private func padSource(_ i: Int, _ lo: Int, _ n: Int, _ mode: PadMode) -> Int {
    var j = i - lo
    if j >= 0 && j < n { return j }
    switch mode {
    case .constant: return -1
    case .edge: return j < 0 ? 0 : n - 1
    case .reflect:
        if n == 1 { return 0 }
        let period = 2 * (n - 1)
        j = ((j % period) + period) % period
        return j < n ? j : period - j
    case .symmetric:
        let period = 2 * n
        j = ((j % period) + period) % period
        return j < n ? j : period - 1 - j
    }
}

/// Pads each dimension by (before, after) = pads[2d], pads[2d+1]. Differentiable.
public func pad(_ x: Tensor, _ pads: [Int], mode: PadMode = .constant, value: Double = 0) throws -> Tensor {
    guard pads.count == 2 * x.rank, pads.allSatisfy({ $0 >= 0 }) else {
        throw EngineError.value("pad needs 2 non-negative widths per dimension (\(2 * x.rank)), got \(pads)")
    }
    for d in 0..<x.rank where mode != .constant && x.shape[d] == 0 && pads[2 * d] + pads[2 * d + 1] > 0 {
        throw EngineError.value("cannot \(mode.rawValue)-pad an empty dimension")
    }
    let sizes = SizeCheck("pad")
    let shape: [Int] = try (0..<x.rank).map { d in try sizes.sum([x.shape[d], pads[2 * d], pads[2 * d + 1]]) }
    // The source table below holds one Int per output element.
    try sizes.fits(try sizes.count(shape, itemSize: x.dtype.itemSize), itemSize: Swift.max(x.dtype.itemSize, 8))
    let out = try full(shape, value: value, dtype: x.dtype)
    // Per-dimension source tables, none for an empty output: its other dimensions may be
    // far longer than memory (a fuzz finding: (0, 2^41) padded along its second axis).
    let maps = out.count == 0 ? [] : (0..<x.rank).map { d in (0..<shape[d]).map { padSource($0, pads[2 * d], x.shape[d], mode) } }
    let size = x.dtype.itemSize, strides = contiguousStrides(x.shape)
    let src = x.rawPointer, dst = out.rawPointer
    var source = repeatedInts(0, count: out.count)
    var idx = repeatedInts(0, count: x.rank)
    for i in 0..<out.count {
        var off = 0, inside = true
        for d in 0..<x.rank {
            let m = maps[d][idx[d]]
            if m < 0 { inside = false; break }
            off += m * strides[d]
        }
        source[i] = inside ? off : -1
        if inside { (dst + i * size).copyMemory(from: src + off * size, byteCount: size) }
        var d = x.rank - 1
        while d >= 0 { idx[d] += 1; if idx[d] < shape[d] { break }; idx[d] = 0; d -= 1 }
    }
    if x.dtype.isFloatingPoint {
        Tape.record(out, [x]) { g in
            let g64 = try cast(g, to: .float64), gx = try Tensor(zeros: x.shape, dtype: .float64)
            let pg = g64.pointer(Double.self), px = gx.pointer(Double.self)
            for i in 0..<source.count where source[i] >= 0 { px[source[i]] += pg[i] }
            let result = try cast(gx, to: x.dtype)
            // Under create_graph: the scatter is linear in g, its VJP is this pad again (with zeros).
            Tape.record(result, [g]) { gg in [try cast(try pad(gg, pads, mode: mode, value: 0), to: g.dtype)] }
            return [result]
        }
    }
    return out
}

/// Validated flat element offsets of the index tuples in `indices` (last axis = tuple).
private func tupleOffsets(_ indices: Tensor, into shape: [Int]) throws -> (offsets: [Int], sliceShape: [Int], batchShape: [Int]) {
    guard indices.rank >= 1 else { throw EngineError.value("indices need at least one dimension") }
    guard indices.dtype.isInteger else { throw EngineError.type("indices must be integers, got \(indices.dtype)") }
    let k = indices.shape.last!
    guard k <= shape.count else { throw EngineError.value("index tuples of length \(k) for a tensor of rank \(shape.count)") }
    let sliceShape = Array(shape[k...])
    let strides = contiguousStrides(shape)
    let values = try cast(indices, to: .int64)
    let v = values.pointer(Int64.self)
    defer { withExtendedLifetime(values) {} }
    // One tuple per batch position, also when the tuples are empty (k = 0: each takes the
    // whole tensor).
    let batchShape = Array(indices.shape.dropLast())
    try SizeCheck("the index tuples of shape \(indices.shape)").count(batchShape, itemSize: 8)
    var out = repeatedInts(0, count: batchShape.reduce(1, *))
    for t in 0..<out.count {
        var off = 0
        for j in 0..<k {
            var i = Int(v[t * k + j])
            if i < 0 { i += shape[j] }
            guard i >= 0 && i < shape[j] else {
                throw EngineError.index("index \(v[t * k + j]) is out of bounds for axis \(j) with size \(shape[j])")
            }
            off += i * strides[j]
        }
        out[t] = off
    }
    return (out, sliceShape, batchShape)
}

/// out[b...] = x[indices[b..., :]] (TensorFlow's gather_nd). Differentiable in x.
public func gatherND(_ x: Tensor, _ indices: Tensor) throws -> Tensor {
    let (offsets, sliceShape, batch) = try tupleOffsets(indices, into: x.shape)
    let slice = sliceShape.reduce(1, *), size = x.dtype.itemSize
    let out = try Tensor(zeros: batch + sliceShape, dtype: x.dtype)
    for (t, off) in offsets.enumerated() where t * slice < out.count {
        (out.rawPointer + t * slice * size).copyMemory(from: x.rawPointer + off * size, byteCount: slice * size)
    }
    if x.dtype.isFloatingPoint {
        Tape.record(out, [x]) { g in [try scatterND(try zerosLike(x), indices, g, reduction: .add)] }
    }
    return out
}

public enum ScatterReduction: String { case add, update, max, min, mul }

/// Writes `updates` into a copy of `base` at the index tuples of `indices`, combining with
/// `reduction`. Differentiable in base and updates for add and update.
public func scatterND(_ base0: Tensor, _ indices: Tensor, _ updates0: Tensor, reduction: ScatterReduction) throws -> Tensor {
    let (base, updates) = try promote(base0, updates0)
    let (offsets, sliceShape, batch) = try tupleOffsets(indices, into: base.shape)
    let slice = sliceShape.reduce(1, *)
    let expected = batch + sliceShape
    guard (try? broadcastShapes(updates.shape, expected)) == expected else {
        throw EngineError.value("scatter_nd: updates of shape \(updates.shape) do not broadcast to "
                                + "indices.shape[:-1] + base.shape[\(indices.shape.last ?? 0):] = \(expected)")
    }
    let u = try materialize(updates, expected)
    if base.dtype.isComplex {
        // Adding or storing acts on the two parts independently.
        guard reduction == .add || reduction == .update else {
            throw EngineError.type("scatter_nd reduction '\(reduction.rawValue)' is not defined for \(base.dtype)")
        }
        return pairsAsComplex(try scatterND(complexAsPairs(base), indices, complexAsPairs(u), reduction: reduction))
    }
    let out = try Tensor(zeros: base.shape, dtype: base.dtype)
    out.rawPointer.copyMemory(from: base.rawPointer, byteCount: base.nbytes)
    if base.dtype.isHalf || base.dtype == .bool {
        let wide: DType = base.dtype == .bool ? .uint8 : .float32
        return try cast(try scatterND(try cast(base, to: wide), indices, try cast(u, to: wide), reduction: reduction), to: base.dtype)
    }
    struct K: NumericVisitor {
        let out: Tensor, u: Tensor, offsets: [Int], slice: Int, reduction: ScatterReduction
        func visit<T: NumElem>(_: T.Type) throws {
            let po = out.pointer(T.self), pu = u.pointer(T.self)
            for (t, off) in offsets.enumerated() {
                for i in 0..<slice {
                    let v = pu[t * slice + i], d = off + i
                    switch reduction {
                    case .add: po[d] = T.add(po[d], v)
                    case .update: po[d] = v
                    case .max: po[d] = T.maxOrNaN(po[d], v)
                    case .min: po[d] = T.minOrNaN(po[d], v)
                    case .mul: po[d] = T.mul(po[d], v)
                    }
                }
            }
        }
    }
    try dispatchNumeric(base.dtype, K(out: out, u: u, offsets: offsets, slice: slice, reduction: reduction))
    if base.dtype.isFloatingPoint && (reduction == .add || reduction == .update) {
        Tape.record(out, [base, u]) { g in
            let gu = try gatherND(g, indices)
            if reduction == .add { return [g, gu] }
            let mask = try scatterND(try onesLike(g), indices, try zerosLike(gu), reduction: .update)
            return [try multiply(g, mask), gu]
        }
    }
    return out
}

/// Copy of `x` with `updates` written at `start` (one start index per dimension).
public func sliceUpdate(_ x0: Tensor, _ updates0: Tensor, start: [Int]) throws -> Tensor {
    let (x, updates) = try promote(x0, updates0)
    guard start.count == x.rank, updates.rank == x.rank else {
        throw EngineError.value("slice_update needs updates of rank \(x.rank) and \(x.rank) start indices")
    }
    var begin: [Int] = []
    for d in 0..<x.rank {
        let s = Swift.min(Swift.max(start[d] < 0 ? start[d] + x.shape[d] : start[d], 0), Swift.max(x.shape[d] - updates.shape[d], 0))
        guard updates.shape[d] <= x.shape[d] else {
            throw EngineError.value("update of shape \(updates.shape) does not fit in \(x.shape)")
        }
        begin.append(s)
    }
    // Index tuples of every updated position, then a scatter of the flattened updates.
    let n = updates.count
    let tuples = try Tensor(zeros: [n, x.rank], dtype: .int64)
    let pt = tuples.pointer(Int64.self)
    var idx = repeatedInts(0, count: x.rank)
    for i in 0..<n {
        for d in 0..<x.rank { pt[i * x.rank + d] = Int64(begin[d] + idx[d]) }
        var d = x.rank - 1
        while d >= 0 { idx[d] += 1; if idx[d] < updates.shape[d] { break }; idx[d] = 0; d -= 1 }
    }
    return try scatterND(x, tuples, try reshape(updates, [n]), reduction: .update)
}

/// Coordinates (int64, [count, rank]) of the non-zero elements, row-major.
public func nonzero(_ x: Tensor) throws -> Tensor {
    let b = try cast(x, to: .bool), p = b.pointer(Bool.self)
    var coords: [Int64] = []
    let strides = contiguousStrides(x.shape)
    for i in 0..<b.count where p[i] {
        var rem = i
        for s in strides { coords.append(Int64(rem / s)); rem %= s }
    }
    return try Tensor(coords, shape: [coords.count / Swift.max(x.rank, 1), x.rank])
}

/// Repeats each element `repeats` times along `axis` (nil = flattened); `repeats` has one
/// count or one per element of that axis.
public func `repeat`(_ x0: Tensor, repeats: [Int], axis: Int?) throws -> Tensor {
    let x = axis == nil ? try reshape(x0, [x0.count]) : x0
    guard x.rank > 0 else { throw EngineError.value("repeat of a 0-d tensor needs axis=None") }
    let ax = try normalizeAxis(axis ?? 0, rank: x.rank)
    let n = x.shape[ax]
    guard repeats.count == 1 || repeats.count == n, repeats.allSatisfy({ $0 >= 0 }) else {
        throw EngineError.value("repeats must be one non-negative count or \(n) of them, got \(repeats.count)")
    }
    // The index table holds one Int64 per output element: sized and checked before it is built.
    let sizes = SizeCheck("repeat")
    let total = repeats.count == 1 ? try sizes.multiply(repeats[0], n) : try sizes.sum(repeats)
    var outShape = x.shape
    outShape[ax] = total
    try sizes.fits(try sizes.count(outShape, itemSize: x.dtype.itemSize), itemSize: 8)
    try sizes.fits(total, itemSize: 8)
    var idx: [Int64] = []
    idx.reserveCapacity(total)
    for i in 0..<n { idx += [Int64](repeating: Int64(i), count: repeats.count == 1 ? repeats[0] : repeats[i]) }
    return try take(x, try Tensor(idx), axis: ax)
}

/// Reduces rows of `data` (axis 0) into `numSegments` buckets by `segmentIDs`; ids out of
/// range are dropped. Empty max/min segments give the dtype's lowest/highest value (as TF).
public func segmentReduce(_ op: ScatterReduction, _ data: Tensor, _ segmentIDs: Tensor, numSegments: Int) throws -> Tensor {
    guard data.rank >= 1, segmentIDs.rank == 1, segmentIDs.shape[0] == data.shape[0] else {
        throw EngineError.value("segment ids must be 1-D with one id per row of data: \(segmentIDs.shape) vs \(data.shape)")
    }
    guard numSegments >= 0 else { throw EngineError.value("num_segments must be non-negative") }
    try SizeCheck("segment_reduce").count([numSegments] + data.shape.dropFirst(), itemSize: data.dtype.itemSize)
    let idTensor = try cast(segmentIDs, to: .int64)
    let ids = idTensor.pointer(Int64.self)
    defer { withExtendedLifetime(idTensor) {} }
    var rows: [[Int64]] = []
    var keep: [Int64] = []
    for r in 0..<data.shape[0] where ids[r] >= 0 && ids[r] < numSegments {
        rows.append([ids[r]])
        keep.append(Int64(r))
    }
    let rest = Array(data.shape.dropFirst())
    let initial: Double
    switch op {
    case .max: initial = -Double.infinity
    case .min: initial = Double.infinity
    case .mul: initial = 1
    default: initial = 0
    }
    let base = try full([numSegments] + rest, value: initial, dtype: data.dtype)
    let picked = try take(data, try Tensor(keep), axis: 0)
    let tuples = try Tensor(rows.flatMap { $0 }, shape: [rows.count, 1])
    if op == .max || op == .min {
        // Differentiable form: scatter the values, then route gradients to the rows that won.
        let out = try Tape.paused { try scatterND(base, tuples, picked, reduction: op) }
        if data.dtype.isFloatingPoint {
            Tape.record(out, [picked]) { g in
                let winner = try gatherND(out, tuples)
                let mask = try cast(try binary(.equal, picked, winner), to: g.dtype)
                let counts = try scatterND(try zerosLike(out), tuples, mask, reduction: .add)
                return [try multiply(mask, try divide(try gatherND(g, tuples), try gatherND(counts, tuples)))]
            }
        }
        return out
    }
    return try scatterND(base, tuples, picked, reduction: op)
}

/// Keeps the lower (k-th diagonal and below) or upper triangle of the last two dimensions.
public func triangle(_ x: Tensor, k: Int, upper: Bool) throws -> Tensor {
    guard x.rank >= 2 else { throw EngineError.value("triangle needs a tensor of rank >= 2, got \(x.shape)") }
    let (m, n) = (x.shape[x.rank - 2], x.shape[x.rank - 1])
    let mask = try Tensor(zeros: [m, n], dtype: .bool)
    let p = mask.pointer(Bool.self)
    for i in 0..<m { for j in 0..<n { p[i * n + j] = upper ? (j - i >= k) : (j - i <= k) } }
    return try `where`(mask, x, try zerosLike(x))
}

/// Identity-like matrix with ones on diagonal k.
public func eye(_ n: Int, _ m: Int, k: Int = 0, dtype: DType = .float32) throws -> Tensor {
    try SizeCheck("eye").count([n, m], itemSize: dtype.itemSize)
    let out = try Tensor(zeros: [n, m], dtype: .uint8)
    let p = out.pointer(UInt8.self)
    // Only the rows the diagonal crosses, bounded without forming i + k (k comes from the
    // caller unbounded): a loop over all n rows never ends for eye(2**60, 0).
    let lo = k >= 0 ? 0 : (k <= -n ? n : -k)
    let hi = k >= m ? 0 : (k > m - n ? m - k : n)
    for i in lo..<Swift.max(lo, hi) { p[i * m + i + k] = 1 }
    return try cast(out, to: dtype)
}

private func scatterReduction(_ a: Attrs) throws -> ScatterReduction {
    let s = try a.string("reduction")
    guard let r = ScatterReduction(rawValue: s) else { throw EngineError.value("unknown reduction '\(s)'") }
    return r
}

private let reduction = AttrSpec.string("reduction", default: "add", choices: ["add", "update", "max", "min", "mul"])

let indexingOps: [OpDef] = [
    OpDef(unary: "pad", attrs: [.ints("pads"), .string("mode", default: "constant", choices: ["constant", "reflect", "symmetric", "edge"]),
                               .float("value", default: 0)], dtypes: .all,
          doc: "x padded by pads (before and after, per dim: 2 * rank ints) as numpy.pad's mode") { x, a in
        let m = try a.string("mode")
        guard let mode = PadMode(rawValue: m) else { throw EngineError.value("unknown pad mode '\(m)'") }
        return try pad(x, a.requiredInts("pads"), mode: mode, value: a.float("value"))
    },
    OpDef("gather_nd", inputs: ["x", "indices"], dtypes: .all, grad: .wrt(["x"]),
          doc: "Slices of x at the index tuples in the last axis of indices") { t, _ in try gatherND(t[0], t[1]) },
    OpDef("scatter_nd", inputs: ["base", "indices", "updates"], attrs: [reduction], dtypes: .all, grad: .wrt(["base", "updates"]),
          doc: "A copy of base with updates combined in at the index tuples of indices") { t, a in
        try scatterND(t[0], t[1], t[2], reduction: scatterReduction(a))
    },
    OpDef("slice_update", inputs: ["x", "updates"], attrs: [.ints("start")], dtypes: .all,
          doc: "A copy of x with updates written at start") { t, a in try sliceUpdate(t[0], t[1], start: a.requiredInts("start")) },
    OpDef(unary: "nonzero", grad: .no, doc: "Indices (int64, (nnz, rank)) of the nonzero elements") { x, _ in try nonzero(x) },
    OpDef(unary: "repeat", attrs: [.ints("repeats"), .int("axis", absent: "x flattened")], dtypes: .all,
          doc: "Each element (or slice along axis) repeated repeats times (one count, or one per slice)") { x, a in
        try `repeat`(x, repeats: a.requiredInts("repeats"), axis: a.has("axis") ? a.int("axis") : nil)
    },
    OpDef("segment_reduce", inputs: ["data", "segment_ids"], attrs: [reduction, .int("num_segments")], grad: .wrt(["data"]),
          doc: "Rows of data reduced into num_segments buckets by segment_ids; ids out of range are dropped") { t, a in
        try segmentReduce(scatterReduction(a), t[0], t[1], numSegments: a.int("num_segments"))
    },
    OpDef(unary: "triangle", attrs: [.int("k", default: 0), .bool("upper")],
          doc: "The lower (j - i <= k) or upper (j - i >= k) triangle of the last two axes, zeros elsewhere") { x, a in
        try triangle(x, k: a.int("k"), upper: a.bool("upper"))
    },
    OpDef("eye", inputs: [], attrs: [.int("n"), .int("m", absent: "n"), .int("k", default: 0), .dtype("dtype", default: .float32)],
          grad: .no, doc: "An n x m matrix with ones on diagonal k") { _, a in
        let n = try a.int("n")
        return try eye(n, a.has("m") ? a.int("m") : n, k: a.int("k"), dtype: a.dtype("dtype"))
    },
]
