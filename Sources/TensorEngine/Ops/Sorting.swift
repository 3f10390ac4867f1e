/// Sorting, top-k and cumulative ops along one axis.

/// Stable argsort (int32) along `axis`; NaNs sort last (first when descending).
public func argsort(_ x0: Tensor, axis: Int = -1, descending: Bool = false) throws -> Tensor {
    var x = x0
    if x.dtype.isHalf { x = try cast(x, to: .float32) }
    if x.dtype == .bool { x = try cast(x, to: .uint8) }
    if x.rank == 0 { return try Tensor(zeros: [], dtype: .int32) }
    let ax = try normalizeAxis(axis, rank: x.rank)
    let outer = x.shape[..<ax].reduce(1, *), r = x.shape[ax], inner = x.shape[(ax + 1)...].reduce(1, *)
    let out = try Tensor(zeros: x.shape, dtype: .int32)
    // Empty: nothing to sort, where a loop over the lanes of an empty axis might never end.
    if x.count == 0 { return out }
    struct K: NumericVisitor {
        let x: Tensor, out: Tensor, outer: Int, r: Int, inner: Int, descending: Bool
        func visit<T: NumElem>(_: T.Type) throws {
            let px = x.pointer(T.self), po = out.pointer(Int32.self)
            let (r, inner, descending) = (self.r, self.inner, self.descending)
            parallelFor(outer * inner, cost: r * 16) { range in
                var order = repeatedInts(0, count: r)
                for cell in range {
                    let o = cell / inner, i = cell % inner
                    let base = o * r * inner + i
                    for k in 0..<r { order[k] = k }
                    // A strict weak order: NaN after every number, ties by position (stable).
                    order.sort { a, b in
                        let va = px[base + a * inner], vb = px[base + b * inner]
                        let na = va.isNaNValue, nb = vb.isNaNValue
                        if na || nb { return na != nb ? (descending ? na : nb) : a < b }
                        if va == vb { return a < b }
                        return descending ? va > vb : va < vb
                    }
                    for k in 0..<r { po[base + k * inner] = Int32(order[k]) }
                }
            }
        }
    }
    try dispatchNumeric(x.dtype, K(x: x, out: out, outer: outer, r: r, inner: inner, descending: descending))
    return out
}

/// Sorted values along `axis`. Differentiable (gradients follow the permutation).
public func sort(_ x: Tensor, axis: Int = -1, descending: Bool = false) throws -> Tensor {
    if x.rank == 0 { return x }
    return try takeAlongAxis(x, try argsort(x, axis: axis, descending: descending), axis: axis)
}

/// The k largest values along the last axis and their int32 indices (ties: lowest index first).
public func topK(_ x: Tensor, k: Int) throws -> (values: Tensor, indices: Tensor) {
    guard x.rank >= 1 else { throw EngineError.value("top_k needs a tensor of rank >= 1") }
    let n = x.shape[x.rank - 1]
    guard k >= 0 && k <= n else { throw EngineError.value("k = \(k) is out of range for a last dimension of \(n)") }
    let order = try argsort(x, axis: -1, descending: true)
    var b = repeatedInts(0, count: x.rank), e = x.shape
    e[x.rank - 1] = k
    let idx = try stridedSlice(order, begin: b, end: e, strides: repeatedInts(1, count: x.rank))
    b[0] = 0
    return (try takeAlongAxis(x, idx, axis: -1), idx)
}

/// Cumulative sum or product along `axis` (nil = flattened); `reverse` accumulates from the end.
public func cumulative(_ x0: Tensor, axis: Int?, product: Bool, reverse: Bool = false) throws -> Tensor {
    var x = axis == nil ? try reshape(x0, [x0.count]) : x0
    if x.dtype.isHalf { return try cast(try cumulative(try cast(x, to: .float32), axis: axis, product: product, reverse: reverse), to: x.dtype) }
    if x.dtype == .bool { x = try cast(x, to: .int32) }
    if x.rank == 0 { return x }
    let ax = try normalizeAxis(axis ?? 0, rank: x.rank)
    let outer = x.shape[..<ax].reduce(1, *), r = x.shape[ax], inner = x.shape[(ax + 1)...].reduce(1, *)
    if x.count == 0 { return x }  // as argsort: no lanes to walk
    let out = try Tensor(zeros: x.shape, dtype: x.dtype)
    struct K: NumericVisitor {
        let x: Tensor, out: Tensor, outer: Int, r: Int, inner: Int, product: Bool, reverse: Bool
        func visit<T: NumElem>(_: T.Type) throws {
            let px = x.pointer(T.self), po = out.pointer(T.self)
            let (r, inner, product, reverse) = (self.r, self.inner, self.product, self.reverse)
            parallelFor(outer, cost: r * inner) { range in
                for o in range {
                    let base = o * r * inner
                    for i in 0..<inner {
                        var acc = product ? T.oneValue : T.zeroValue
                        for s in 0..<r {
                            let k = reverse ? r - 1 - s : s
                            let p = base + k * inner + i
                            acc = product ? T.mul(acc, px[p]) : T.add(acc, px[p])
                            po[p] = acc
                        }
                    }
                }
            }
        }
    }
    try dispatchNumeric(x.dtype, K(x: x, out: out, outer: outer, r: r, inner: inner, product: product, reverse: reverse))
    if x.dtype.isFloatingPoint {
        let xx = x
        Tape.record(out, [xx]) { g in
            if !product { return [try cumulative(g, axis: ax, product: false, reverse: !reverse)] }
            // d/dx_k of prod_{j<=k} x_j: sum over later outputs of g*out / x_k (x_k != 0 assumed).
            return [try divide(try cumulative(try multiply(g, out), axis: ax, product: false, reverse: !reverse), xx)]
        }
    }
    return out
}

private let sortAttrs: [AttrSpec] = [.int("axis", default: -1), .bool("descending", default: false)]
private let scanAttrs: [AttrSpec] = [.int("axis", absent: "x flattened"), .bool("reverse", default: false)]

let sortingOps: [OpDef] = [
    OpDef(unary: "argsort", attrs: sortAttrs, grad: .no, doc: "Indices (int32) that sort x along axis, stable; NaN last") { x, a in
        try argsort(x, axis: a.int("axis"), descending: a.bool("descending"))
    },
    OpDef(unary: "sort", attrs: sortAttrs, doc: "x sorted along axis; NaN last") { x, a in
        try sort(x, axis: a.int("axis"), descending: a.bool("descending"))
    },
    OpDef("top_k", inputs: ["x"], outputs: ["values", "indices"], attrs: [.int("k")],
          doc: "The k largest values along the last axis and their int32 indices (ties: lowest index first)") { t, a in
        let r = try topK(t[0], k: a.int("k"))
        return [r.values, r.indices]
    },
    OpDef(unary: "cumsum", attrs: scanAttrs, doc: "Cumulative sum along axis (reverse: from the end)") { x, a in
        try cumulative(x, axis: a.has("axis") ? a.int("axis") : nil, product: false, reverse: a.bool("reverse"))
    },
    OpDef(unary: "cumprod", attrs: scanAttrs, doc: "Cumulative product along axis (reverse: from the end)") { x, a in
        try cumulative(x, axis: a.has("axis") ? a.int("axis") : nil, product: true, reverse: a.bool("reverse"))
    },
]
