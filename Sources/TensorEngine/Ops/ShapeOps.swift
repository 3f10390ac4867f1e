/// Copies `n` elements of `size` bytes from `src` (stride `ss` elements) to contiguous `dst`.
@inline(__always)
private func copyStrided(_ dst: UnsafeMutableRawPointer, _ src: UnsafeRawPointer, _ n: Int, _ ss: Int, _ size: Int) {
    if ss == 1 { dst.copyMemory(from: src, byteCount: n * size); return }
    switch size {
    case 1: let d = dst.assumingMemoryBound(to: UInt8.self), s = src.assumingMemoryBound(to: UInt8.self); for i in 0..<n { d[i] = s[i * ss] }
    case 2: let d = dst.assumingMemoryBound(to: UInt16.self), s = src.assumingMemoryBound(to: UInt16.self); for i in 0..<n { d[i] = s[i * ss] }
    case 4: let d = dst.assumingMemoryBound(to: UInt32.self), s = src.assumingMemoryBound(to: UInt32.self); for i in 0..<n { d[i] = s[i * ss] }
    default: let d = dst.assumingMemoryBound(to: UInt64.self), s = src.assumingMemoryBound(to: UInt64.self); for i in 0..<n { d[i] = s[i * ss] }
    }
}

/// Gathers `x` viewed with `strides` (elements, may be negative) starting at `offset` into a
/// new contiguous tensor of `shape`. Shared by transpose, slicing and broadcasting.
func gatherView(_ x: Tensor, shape: [Int], strides: [Int], offset: Int) throws -> Tensor {
    let out = try Tensor(empty: shape, dtype: x.dtype)
    gatherStrided(from: x.rawPointer, into: out.rawPointer, itemSize: x.dtype.itemSize, shape: shape,
                  strides: strides, offset: offset)
    return out
}

/// The copy behind `gatherView`, from raw memory into a contiguous destination of `shape`.
func gatherStrided(from src: UnsafeMutableRawPointer, into dst: UnsafeMutableRawPointer, itemSize size: Int,
                   shape: [Int], strides: [Int], offset: Int) {
    let n = shape.reduce(1, *)
    if n == 0 { return }
    let (cs, st) = coalesce(shape, [strides])
    let inner = cs.last ?? 1, si = st[0].last ?? 1
    let outerShape = Array(cs.dropLast()), outerStrides = Array(st[0].dropLast())
    if si != 1 && inner >= 4, let q = outerStrides.firstIndex(of: 1), outerShape[q] >= 4 {
        func tiled<W: SIMDScalar>(_: W.Type) {
            gatherTiled(dst.assumingMemoryBound(to: W.self), UnsafePointer(src.assumingMemoryBound(to: W.self)),
                        shape: cs, strides: st[0], offset: offset, q: q)
        }
        switch size {
        case 1: tiled(UInt8.self); return
        case 2: tiled(UInt16.self); return
        case 4: tiled(UInt32.self); return
        case 8: tiled(UInt64.self); return
        default: break
        }
    }
    parallelFor(n / inner, cost: inner, streaming: si == 1) { range in
        var idx = repeatedInts(0, count: outerShape.count)
        var rem = range.lowerBound, off = offset
        for d in stride(from: outerShape.count - 1, through: 0, by: -1) {
            idx[d] = rem % outerShape[d]
            rem /= outerShape[d]
            off += idx[d] * outerStrides[d]
        }
        for o in range {
            copyStrided(dst + o * inner * size, src + off * size, inner, si, size)
            var d = outerShape.count - 1
            while d >= 0 {
                idx[d] += 1
                off += outerStrides[d]
                if idx[d] < outerShape[d] { break }
                off -= outerStrides[d] * outerShape[d]
                idx[d] = 0
                d -= 1
            }
        }
    }
}

/// gatherView for views whose last output axis is strided in the source while output axis `q`
/// is contiguous there (transposes that move the last axis). The copy goes in tiles over
/// (q, last), 4 x 4 blocks transposed in registers, instead of one source cache line per
/// element. Tiles are 64 rows by 8 columns: with power-of-two strides, more than 8 columns
/// map to one L1 set and evict each other.
private func gatherTiled<W: SIMDScalar>(_ dst: UnsafeMutablePointer<W>, _ src: UnsafePointer<W>, shape: [Int],
                                        strides: [Int], offset: Int, q: Int) {
    let last = shape.count - 1
    let cols = shape[last], colStride = strides[last], rows = shape[q]
    let outStrides = contiguousStrides(shape)
    let rowStride = outStrides[q]
    let others = (0..<last).filter { $0 != q }
    let otherShape = others.map { shape[$0] }, otherSrc = others.map { strides[$0] }, otherDst = others.map { outStrides[$0] }
    let tileRows = 64, tileCols = 8
    let rowTiles = (rows + tileRows - 1) / tileRows
    let items = otherShape.reduce(1, *) * rowTiles
    let size = MemoryLayout<W>.stride
    parallelFor(items, cost: tileRows * cols) { range in
        for item in range {
            var rem = item / rowTiles, so = offset, d = 0
            for k in stride(from: otherShape.count - 1, through: 0, by: -1) {
                let i = rem % otherShape[k]
                rem /= otherShape[k]
                so += i * otherSrc[k]
                d += i * otherDst[k]
            }
            let s0 = UnsafeRawPointer(src + so), d0 = UnsafeMutableRawPointer(dst + d)
            @inline(__always) func load(_ r: Int, _ c: Int) -> SIMD4<W> {
                s0.loadUnaligned(fromByteOffset: (c * colStride + r) * size, as: SIMD4<W>.self)
            }
            @inline(__always) func store(_ v: SIMD4<W>, _ r: Int, _ c: Int) {
                d0.storeBytes(of: v, toByteOffset: (r * rowStride + c) * size, as: SIMD4<W>.self)
            }
            let r0 = (item % rowTiles) * tileRows, r1 = Swift.min(rows, r0 + tileRows)
            var c0 = 0
            while c0 < cols {
                let c1 = Swift.min(cols, c0 + tileCols)
                var r = r0
                while r + 4 <= r1 {
                    var c = c0
                    while c + 4 <= c1 {
                        let a = load(r, c), b = load(r, c + 1), e = load(r, c + 2), f = load(r, c + 3)
                        store(SIMD4(a[0], b[0], e[0], f[0]), r, c)
                        store(SIMD4(a[1], b[1], e[1], f[1]), r + 1, c)
                        store(SIMD4(a[2], b[2], e[2], f[2]), r + 2, c)
                        store(SIMD4(a[3], b[3], e[3], f[3]), r + 3, c)
                        c += 4
                    }
                    for rr in r..<(r + 4) { for cc in c..<c1 { dst[d + rr * rowStride + cc] = src[so + cc * colStride + rr] } }
                    r += 4
                }
                for rr in r..<r1 { for cc in c0..<c1 { dst[d + rr * rowStride + cc] = src[so + cc * colStride + rr] } }
                c0 = c1
            }
        }
    }
}

/// Same data, new shape (one -1 is inferred). Shares storage.
public func reshape(_ x: Tensor, _ shape0: [Int]) throws -> Tensor {
    var shape = shape0
    let unknown = shape.indices.filter { shape[$0] == -1 }
    guard unknown.count <= 1, !shape.contains(where: { $0 < -1 }) else {
        throw EngineError.value("invalid reshape target \(shape0)")
    }
    let sizes = SizeCheck("reshape")
    if let u = unknown.first {
        let known = try sizes.count(shape.enumerated().filter { $0.offset != u }.map { $0.element })
        guard known > 0, x.count % known == 0 else {
            throw EngineError.value("cannot reshape tensor of shape \(x.shape) into \(shape0)")
        }
        shape[u] = x.count / known
    }
    guard try sizes.count(shape) == x.count else {
        throw EngineError.value("cannot reshape tensor of shape \(x.shape) (\(x.count) elements) into \(shape0)")
    }
    let out = x.sharing(shape: shape)
    let xs = x.shape
    Tape.record(out, [x]) { g in [try reshape(g, xs)] }
    return out
}

/// Inserts a unit axis at `axis`.
public func expandDims(_ x: Tensor, axis: Int) throws -> Tensor {
    let a = try normalizeAxis(axis < 0 ? axis + x.rank + 1 : axis, rank: x.rank + 1)
    var s = x.shape
    s.insert(1, at: a)
    return try reshape(x, s)
}

/// Removes unit axes (all of them when `axes` is nil).
public func squeeze(_ x: Tensor, axes: [Int]? = nil) throws -> Tensor {
    let ax = try axes.map { try normalizeAxes($0, rank: x.rank) } ?? x.shape.indices.filter { x.shape[$0] == 1 }
    for a in ax where x.shape[a] != 1 {
        throw EngineError.value("cannot squeeze axis \(a) of size \(x.shape[a])")
    }
    return try reshape(x, x.shape.enumerated().filter { !ax.contains($0.offset) }.map { $0.element })
}

/// Below this many elements a transpose copies at once: deferring costs a lock and an object.
let deferredCopyMinimum = 1 << 14

/// Permutes axes (nil = reverse them). Large results are deferred copies (`Tensor(deferring:)`).
public func transpose(_ x: Tensor, _ perm0: [Int]? = nil) throws -> Tensor {
    // An O(1) op whose cost is its allocations and reference counting: the common call (axes
    // in range, a large dense input) makes only the output's shape array. `map` here, because
    // the unspecialised array initialisers look the element type's metadata up on every call.
    let rank = x.rank
    var perm = perm0 ?? Array((0..<rank).reversed())
    if perm.contains(where: { $0 < 0 || $0 >= rank }) { perm = try perm.map { try normalizeAxis($0, rank: rank) } }
    // Axes in range, rank of them and all distinct: a permutation.
    func bad() -> EngineError { .value("transpose permutation \(perm0 ?? []) does not match rank \(rank)") }
    guard perm.count == rank else { throw bad() }
    var identity = true
    for i in perm.indices {
        for j in 0..<i where perm[j] == perm[i] { throw bad() }
        identity = identity && perm[i] == i
    }
    let xs = x.shape
    let shape = perm.map { xs[$0] }
    let out: Tensor
    if identity {
        out = x.sharing(shape: shape)
    } else {
        // A transpose of a pending transpose reads the first one's source directly.
        let base = x.viewBase
        let layout: DeferredLayout = base.strides.map { bs in .strided(perm.map { bs[$0] }) } ?? .permuted(perm)
        out = x.count < deferredCopyMinimum
            ? try gatherView(base.tensor, shape: shape, strides: layout.strides(of: base.tensor), offset: base.offset)
            : try Tensor(deferring: base.tensor, shape: shape, count: x.count, layout: layout, offset: base.offset)
    }
    Tape.record(out, [x]) { g in
        var inverse = perm
        for (i, p) in perm.enumerated() { inverse[p] = i }
        return [try transpose(g, inverse)]
    }
    return out
}

/// Broadcasts `x` to `shape` (materialised).
public func broadcastTo(_ x: Tensor, _ shape: [Int]) throws -> Tensor {
    try SizeCheck("broadcast_to").count(shape, itemSize: x.dtype.itemSize)
    guard try broadcastShapes(x.shape, shape) == shape else {
        throw EngineError.value("cannot broadcast shape \(x.shape) to \(shape)")
    }
    if x.shape == shape { return x }
    let out = try gatherView(x, shape: shape, strides: broadcastStrides(x.shape, to: shape), offset: 0)
    let xs = x.shape
    Tape.record(out, [x]) { g in [try sumToShape(g, xs)] }
    return out
}

/// Joins tensors along `axis` (dtypes promoted).
public func concatenate(_ xs0: [Tensor], axis: Int) throws -> Tensor {
    guard let first = xs0.first else { throw EngineError.value("concatenate needs at least one tensor") }
    let dt = xs0.dropFirst().reduce(first.dtype) { DType.result($0, $1.dtype) }
    let xs = try xs0.map { try cast($0, to: dt) }
    guard first.rank > 0 else { throw EngineError.value("cannot concatenate 0-d tensors") }
    let ax = try normalizeAxis(axis, rank: first.rank)
    var shape = first.shape
    shape[ax] = 0
    for x in xs {
        guard x.rank == first.rank, x.shape.enumerated().allSatisfy({ $0.offset == ax || $0.element == first.shape[$0.offset] }) else {
            throw EngineError.value("concatenate: shape \(x.shape) does not match \(first.shape) outside axis \(ax)")
        }
        shape[ax] = try SizeCheck("concatenate").add(shape[ax], x.shape[ax])
    }
    let out = try Tensor(empty: shape, dtype: dt)
    let outer = shape[..<ax].reduce(1, *), inner = shape[(ax + 1)...].reduce(1, *), size = dt.itemSize
    let rowBytes = shape[ax] * inner * size
    var offset = 0
    for x in xs {
        let chunk = x.shape[ax] * inner * size
        let src = x.rawPointer, dst = out.rawPointer + offset
        parallelFor(outer, cost: chunk / size, streaming: true) { r in
            for o in r { (dst + o * rowBytes).copyMemory(from: src + o * chunk, byteCount: chunk) }
        }
        offset += chunk
    }
    if dt.isFloatingPoint {
        let sizes = xs.map { $0.shape[ax] }
        Tape.record(out, xs) { g in
            var start = 0
            return try sizes.map { n in
                var b = repeatedInts(0, count: g.rank), e = g.shape, s = repeatedInts(1, count: g.rank)
                b[ax] = start
                e[ax] = start + n
                s[ax] = 1
                start += n
                return try stridedSlice(g, begin: b, end: e, strides: s)
            }
        }
    }
    return out
}

/// Stacks same-shaped tensors along a new `axis`.
public func stack(_ xs: [Tensor], axis: Int = 0) throws -> Tensor {
    guard let first = xs.first else { throw EngineError.value("stack needs at least one tensor") }
    let a = try normalizeAxis(axis < 0 ? axis + first.rank + 1 : axis, rank: first.rank + 1)
    return try concatenate(try xs.map { try expandDims($0, axis: a) }, axis: a)
}

/// Python-style strided slice; begin/end/strides are already normalised per dimension
/// (as `slice.indices(dim)` gives them; end may be -1 for negative strides).
public func stridedSlice(_ x: Tensor, begin: [Int], end: [Int], strides: [Int]) throws -> Tensor {
    guard begin.count == x.rank, end.count == x.rank, strides.count == x.rank else {
        throw EngineError.value("strided_slice needs begin/end/strides of length \(x.rank)")
    }
    var shape: [Int] = [], st: [Int] = [], offset = 0
    let base = contiguousStrides(x.shape)
    for d in 0..<x.rank {
        let n = x.shape[d]
        guard strides[d] != 0 else { throw EngineError.value("slice step cannot be zero") }
        // Clamping keeps every later product in range; a step longer than the dimension
        // selects at most one element either way.
        let b = Swift.min(Swift.max(begin[d], -1), n), e = Swift.min(Swift.max(end[d], -1), n)
        let s = Swift.min(Swift.max(strides[d], -(n + 1)), n + 1)
        let len = s > 0 ? Swift.max(0, (e - b + s - 1) / s) : Swift.max(0, (b - e + (-s) - 1) / (-s))
        if len > 0 {
            guard b >= 0, b < n, b + (len - 1) * s >= 0, b + (len - 1) * s < n else {
                throw EngineError.index("slice \(b):\(e):\(s) is out of range for dimension \(d) of size \(n)")
            }
        }
        shape.append(len)
        st.append(base[d] * s)
        if len > 0 { offset += b * base[d] }
    }
    let out = try gatherView(x, shape: shape, strides: st, offset: offset)
    if x.dtype.isFloatingPoint {
        let xs = x.shape, dt = x.dtype
        Tape.record(out, [x]) { g in
            // Scatter g back into zeros of x's shape at the sliced positions.
            let gx = try Tensor(zeros: xs, dtype: dt)
            let gc = try cast(g, to: dt)
            let size = dt.itemSize
            let (cs, cst) = coalesce(shape, [st])
            let inner = cs.last ?? 1, si = cst[0].last ?? 1
            let outerShape = Array(cs.dropLast()), outerStrides = Array(cst[0].dropLast())
            var idx = repeatedInts(0, count: outerShape.count), off = offset
            let src = gc.rawPointer, dst = gx.rawPointer
            for o in 0..<(gc.count / Swift.max(inner, 1)) {
                for i in 0..<inner {
                    (dst + (off + i * si) * size).copyMemory(from: src + (o * inner + i) * size, byteCount: size)
                }
                var d = outerShape.count - 1
                while d >= 0 {
                    idx[d] += 1
                    off += outerStrides[d]
                    if idx[d] < outerShape[d] { break }
                    off -= outerStrides[d] * outerShape[d]
                    idx[d] = 0
                    d -= 1
                }
            }
            // Under create_graph the scatter is itself recorded: linear in g, its VJP is
            // this slice again.
            let (vs, vst, voff) = (shape, st, offset)
            Tape.record(gx, [gc]) { gg in [try gatherView(gg, shape: vs, strides: vst, offset: voff)] }
            return [gx]
        }
    }
    return out
}

/// Validated int64 copy of an index tensor; negative indices wrap once.
private func indexValues(_ indices: Tensor, bound n: Int) throws -> [Int] {
    guard indices.dtype.isInteger || (indices.dtype.isFloatingPoint && indices.count == 0) else {
        throw EngineError.type("indices must be integers, got \(indices.dtype)")
    }
    // int32 (Keras's usual index dtype) is read in place; others go through one int64 copy.
    let vals = indices.dtype == .int32 ? indices : try cast(indices, to: .int64)
    func read<I: BinaryInteger>(_ p: UnsafeMutablePointer<I>) throws -> [Int] {
        var out = repeatedInts(0, count: indices.count)
        for i in 0..<indices.count {
            var v = Int(p[i])
            if v < 0 { v += n }
            guard v >= 0 && v < n else {
                throw EngineError.index("index \(p[i]) is out of bounds for axis with size \(n)")
            }
            out[i] = v
        }
        return out
    }
    return vals.dtype == .int32 ? try read(vals.pointer(Int32.self)) : try read(vals.pointer(Int64.self))
}

/// Gathers slices of `x` along `axis` (nil = flattened x) at `indices`.
public func take(_ x0: Tensor, _ indices: Tensor, axis: Int?) throws -> Tensor {
    let x = axis == nil ? try reshape(x0, [x0.count]) : x0
    guard x.rank > 0 else { throw EngineError.value("take from a 0-d tensor") }
    let ax = try normalizeAxis(axis ?? 0, rank: x.rank)
    let idx = try indexValues(indices, bound: x.shape[ax])
    let outer = x.shape[..<ax].reduce(1, *), n = x.shape[ax], inner = x.shape[(ax + 1)...].reduce(1, *)
    let shape = Array(x.shape[..<ax]) + indices.shape + Array(x.shape[(ax + 1)...])
    let out = try Tensor(empty: shape, dtype: x.dtype)
    let size = x.dtype.itemSize, chunk = inner * size
    let src = x.rawPointer, dst = out.rawPointer, k = idx.count
    parallelFor(outer * k, cost: inner, streaming: true) { r in
        for cell in r {
            let o = cell / k, j = cell % k
            (dst + cell * chunk).copyMemory(from: src + (o * n + idx[j]) * chunk, byteCount: chunk)
        }
    }
    if x.dtype.isFloatingPoint {
        let xs = x.shape, dt = x.dtype
        Tape.record(out, [x]) { g in
            let gx = try Tensor(zeros: xs, dtype: dt)
            let gc = try cast(g, to: dt)
            struct S: FloatVisitor {
                let gx: Tensor, g: Tensor, idx: [Int], outer: Int, n: Int, inner: Int
                func visit<T: FloatElem>(_: T.Type) throws {
                    let pg = g.pointer(T.self), px = gx.pointer(T.self), k = idx.count
                    for o in 0..<outer { for j in 0..<k {
                        let s = pg + (o * k + j) * inner, d = px + (o * n + idx[j]) * inner
                        for i in 0..<inner { d[i] += s[i] }
                    } }
                }
            }
            let result: Tensor
            if dt.isHalf {
                let g32 = try cast(gc, to: .float32), gx32 = try cast(gx, to: .float32)
                try dispatchFloat(.float32, S(gx: gx32, g: g32, idx: idx, outer: outer, n: n, inner: inner))
                result = try cast(gx32, to: dt)
            } else {
                try dispatchFloat(dt, S(gx: gx, g: gc, idx: idx, outer: outer, n: n, inner: inner))
                result = gx
            }
            // Under create_graph: the scatter-add is linear in g, its VJP is this take again.
            Tape.record(result, [gc]) { gg in [try take(gg, indices, axis: ax)] }
            return [result]
        }
        if axis == nil { return out }
    }
    return out
}

/// out[..., j, ...] = x[..., indices[..., j, ...], ...] along `axis`; other axes broadcast.
public func takeAlongAxis(_ x0: Tensor, _ indices0: Tensor, axis: Int) throws -> Tensor {
    guard x0.rank == indices0.rank, x0.rank > 0 else {
        throw EngineError.value("take_along_axis needs indices of the same rank as x (\(x0.rank)), got \(indices0.rank)")
    }
    let ax = try normalizeAxis(axis, rank: x0.rank)
    var xShape = x0.shape, iShape = indices0.shape
    xShape[ax] = 1; iShape[ax] = 1
    let common = try broadcastShapes(xShape, iShape)
    var xt = common, it = common
    xt[ax] = x0.shape[ax]; it[ax] = indices0.shape[ax]
    let x = try broadcastTo(x0, xt)
    let idx = try indexValues(try broadcastTo(indices0, it), bound: x0.shape[ax])
    let outer = common[..<ax].reduce(1, *), inner = common[(ax + 1)...].reduce(1, *)
    let n = xt[ax], k = it[ax]
    let out = try Tensor(empty: it, dtype: x.dtype)
    let size = x.dtype.itemSize, src = x.rawPointer, dst = out.rawPointer
    parallelFor(outer * k, cost: inner) { r in
        for cell in r {
            let o = cell / k, j = cell % k
            for i in 0..<inner {
                let pos = (o * k + j) * inner + i
                (dst + pos * size).copyMemory(from: src + ((o * n + idx[pos]) * inner + i) * size, byteCount: size)
            }
        }
    }
    if x.dtype.isFloatingPoint {
        let dt = x.dtype
        Tape.record(out, [x]) { g in
            let gx = try Tensor(zeros: xt, dtype: .float64)
            let g64 = try cast(g, to: .float64)
            let pg = g64.pointer(Double.self), px = gx.pointer(Double.self)
            for o in 0..<outer { for j in 0..<k { for i in 0..<inner {
                let pos = (o * k + j) * inner + i
                px[(o * n + idx[pos]) * inner + i] += pg[pos]
            } } }
            let result = try cast(gx, to: dt)
            // Under create_graph: the scatter-add is linear in g, its VJP this gather again.
            Tape.record(result, [g]) { gg in
                [try cast(try takeAlongAxis(gg, try broadcastTo(indices0, it), axis: ax), to: g.dtype)]
            }
            return [result]
        }
    }
    return out
}

let shapeOps: [OpDef] = [
    OpDef(unary: "reshape", attrs: [.ints("shape")], dtypes: .all, doc: "x with a new shape (one -1 inferred); shares storage") { x, a in
        try reshape(x, a.requiredInts("shape"))
    },
    OpDef(unary: "transpose", attrs: [.ints("perm", absent: "the axes reversed")], dtypes: .all,
          doc: "x with its axes permuted; from 16384 elements a deferred copy, made on first read") { x, a in
        try transpose(x, a.ints("perm"))
    },
    OpDef(unary: "broadcast_to", attrs: [.ints("shape")], dtypes: .all, doc: "x broadcast to shape (numpy rules)") { x, a in
        try broadcastTo(x, a.requiredInts("shape"))
    },
    OpDef("concatenate", inputs: ["xs..."], attrs: [.int("axis", default: 0)], dtypes: .all,
          doc: "The inputs joined along axis (promoted to one dtype)") { t, a in try concatenate(t, axis: a.int("axis")) },
    OpDef("stack", inputs: ["xs..."], attrs: [.int("axis", default: 0)], dtypes: .all,
          doc: "The inputs stacked along a new axis (promoted to one dtype)") { t, a in try stack(t, axis: a.int("axis")) },
    OpDef(unary: "strided_slice", attrs: [.ints("begin"), .ints("end"), .ints("strides")], dtypes: .all,
          doc: "x[begin:end:strides], one entry per dim, normalised like slice.indices (end -1 for a negative stride to the start)") { x, a in
        try stridedSlice(x, begin: a.requiredInts("begin"), end: a.requiredInts("end"), strides: a.requiredInts("strides"))
    },
    OpDef("take", inputs: ["x", "indices"], attrs: [.int("axis", absent: "x flattened")], dtypes: .all, grad: .wrt(["x"]),
          doc: "Slices of x at indices along axis; negative indices wrap, out of range is an IndexError") { t, a in
        try take(t[0], t[1], axis: a.has("axis") ? a.int("axis") : nil)
    },
    OpDef("take_along_axis", inputs: ["x", "indices"], attrs: [.int("axis")], dtypes: .all, grad: .wrt(["x"]),
          doc: "numpy.take_along_axis") { t, a in try takeAlongAxis(t[0], t[1], axis: a.int("axis")) },
]
