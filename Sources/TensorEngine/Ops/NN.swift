/// Moves `axis` last (copying if needed) so row kernels see contiguous rows.
private func withAxisLast(_ x: Tensor, _ axis: Int, _ body: (Tensor) throws -> Tensor) throws -> Tensor {
    let ax = try normalizeAxis(axis, rank: x.rank)
    if ax == x.rank - 1 || x.rank == 0 { return try body(x) }
    var perm = Array(0..<x.rank)
    perm.remove(at: ax)
    perm.append(ax)
    var inverse = repeatedInts(0, count: perm.count)
    for (i, p) in perm.enumerated() { inverse[p] = i }
    return try transpose(try body(try transpose(x, perm)), inverse)
}

/// Float dtype an op computes in: float32/float64 as is, everything else float32.
private func computeDType(_ dt: DType) -> DType { dt == .float64 ? .float64 : .float32 }

/// Softmax (or log-softmax) of the `r` values at `s` into `d` (`d` may be `s` unless `log`);
/// returns the row's log-sum-exp (the shift plus the log of the sum).
@inline(__always)
@discardableResult
func softmaxRow<T: FloatElem>(_ s: UnsafePointer<T>, _ d: UnsafeMutablePointer<T>, _ r: Int, log: Bool) -> T {
    // Selects in four independent chains (one chain waits out each compare); a NaN in the
    // row still makes the whole row NaN through the sum below.
    var (m0, m1, m2, m3) = (s[0], s[0], s[0], s[0])
    var i = 1
    while i + 4 <= r {
        m0 = s[i] > m0 ? s[i] : m0
        m1 = s[i + 1] > m1 ? s[i + 1] : m1
        m2 = s[i + 2] > m2 ? s[i + 2] : m2
        m3 = s[i + 3] > m3 ? s[i + 3] : m3
        i += 4
    }
    while i < r {
        m0 = s[i] > m0 ? s[i] : m0
        i += 1
    }
    var m = m0
    if m1 > m { m = m1 }
    if m2 > m { m = m2 }
    if m3 > m { m = m3 }
    // An all -inf row shifts by 0 (its result is NaN, as in JAX, either way);
    // a +inf maximum stays, so that inf - inf makes the row NaN as JAX's.
    if !m.isFinite && !(m > 0) { m = 0 }
    // exp and the sum in separate passes: each then vectorises (float32 exp
    // through VecMath instead of one libm call per element).
    if T.self == Float.self {
        let sf = UnsafeRawPointer(s).assumingMemoryBound(to: Float.self)
        let df = UnsafeMutableRawPointer(d).assumingMemoryBound(to: Float.self)
        let mf = unsafeBitCast(m, to: Float.self)
        for i in 0..<r { df[i] = VecMath.exp(sf[i] - mf) }
    } else {
        for i in 0..<r { d[i] = T.exp(s[i] - m) }
    }
    let total = T.sumRow(d, r), lt = T.log(total)
    if log {
        for i in 0..<r { d[i] = s[i] - m - lt }
    } else {
        let inv = 1 / total
        for i in 0..<r { d[i] *= inv }
    }
    return m + lt
}

/// softmax (or log-softmax) along `axis`, max-shifted for stability.
public func softmax(_ x0: Tensor, axis: Int = -1, log: Bool = false) throws -> Tensor {
    if x0.dtype != computeDType(x0.dtype) {
        let r = try softmax(try cast(x0, to: .float32), axis: axis, log: log)
        return x0.dtype.isHalf ? try cast(r, to: x0.dtype) : r
    }
    if x0.rank == 0 { return log ? try zerosLike(x0) : try onesLike(x0) }
    return try withAxisLast(x0, axis) { x in
        let out = try Tensor(empty: x.shape, dtype: x.dtype)
        let r = x.shape.last!
        struct K: FloatVisitor {
            let x: Tensor, out: Tensor, r: Int, log: Bool
            func visit<T: FloatElem>(_: T.Type) throws {
                let px = x.pointer(T.self), po = out.pointer(T.self), (r, log) = (self.r, self.log)
                guard r > 0 else { return }
                parallelFor(x.count / r, cost: r * 8) { range in
                    for row in range { softmaxRow(px + row * r, po + row * r, r, log: log) }
                }
            }
        }
        try dispatchFloat(x.dtype, K(x: x, out: out, r: r, log: log))
        Tape.record(out, [x]) { g in
            if log {
                return [try subtract(g, try multiply(try exp(out), try sum(g, axes: [-1], keepdims: true)))]
            }
            let gy = try multiply(g, out)
            return [try subtract(gy, try multiply(out, try sum(gy, axes: [-1], keepdims: true)))]
        }
        return out
    }
}

/// One-hot encoding of integer `indices`; out-of-range indices give all-zero rows.
public func oneHot(_ indices: Tensor, numClasses: Int, axis: Int = -1, dtype: DType = .float32) throws -> Tensor {
    guard numClasses >= 0 else { throw EngineError.value("num_classes must be non-negative, got \(numClasses)") }
    guard indices.dtype.isInteger || indices.dtype == .bool || indices.count == 0 else {
        throw EngineError.type("one_hot needs integer indices, got \(indices.dtype)")
    }
    try SizeCheck("one_hot").count(indices.shape + [numClasses], itemSize: dtype.itemSize)
    let idx = try cast(indices, to: .int64)
    let flat = try Tensor(zeros: indices.shape + [numClasses], dtype: .uint8)
    let pi = idx.pointer(Int64.self), po = flat.pointer(UInt8.self)
    for i in 0..<idx.count where pi[i] >= 0 && pi[i] < numClasses { po[i * numClasses + Int(pi[i])] = 1 }
    let out = try cast(flat, to: dtype)
    let ax = try normalizeAxis(axis, rank: indices.rank + 1)
    if ax == indices.rank { return out }
    var perm = Array(0..<indices.rank)
    perm.insert(indices.rank, at: ax)
    return try transpose(out, perm)
}

// MARK: - Convolution and pooling (NHWC)

/// Output size and leading pad of one spatial dimension (TensorFlow's "valid"/"same").
func windowGeometry(_ size: Int, _ k: Int, _ stride: Int, _ dilation: Int, _ padding: String,
                    op: String) throws -> (out: Int, pad: Int) {
    guard k > 0, stride > 0, dilation > 0 else { throw EngineError.value("window, stride and dilation must be positive") }
    // Kernel, stride and dilation come from the caller unbounded.
    let sizes = SizeCheck("\(op) (window \(k), stride \(stride), dilation \(dilation))")
    let effective = try sizes.add(try sizes.multiply(k - 1, dilation), 1)
    switch padding {
    case "valid":
        return (size >= effective ? (size - effective) / stride + 1 : 0, 0)
    case "same":
        let out = size == 0 ? 0 : (size - 1) / stride + 1
        let span = try sizes.add(try sizes.multiply(out - 1, stride), effective)
        let total = Swift.max(span - size, 0)
        return (out, total / 2)
    default:
        throw EngineError.value("padding must be 'valid' or 'same', got '\(padding)'")
    }
}

public enum PoolKind: String { case max, avg }

/// Max / average pooling over 1 to 3 spatial dimensions, channels last. Average pooling with
/// "same" padding divides by the number of in-bounds elements (TensorFlow semantics).
/// Differentiable; max pooling sends each gradient to the first maximum of its window.
public func pool(_ kind: PoolKind, _ x0: Tensor, poolSize: [Int], strides: [Int], padding: String = "valid") throws -> Tensor {
    let spatial = x0.rank - 2
    guard (1...3).contains(spatial) else {
        throw EngineError.value("pooling expects input (N, *spatial, C) with 1 to 3 spatial dims, got \(x0.shape)")
    }
    if x0.dtype != computeDType(x0.dtype) {
        let r = try pool(kind, try cast(x0, to: .float32), poolSize: poolSize, strides: strides, padding: padding)
        return try cast(r, to: x0.dtype)
    }
    let x = x0
    let inSize = repeatedInts(1, count: 3 - spatial) + Array(x.shape[1...spatial])
    let w = try PoolWindows(inSize: inSize, spatial: spatial, poolSize: poolSize, strides: strides, padding: padding,
                             op: "\(kind.rawValue)_pool")
    let out = try Tensor(empty: [x.shape[0]] + Array(w.outSize.suffix(spatial)) + [x.shape[x.rank - 1]], dtype: x.dtype)
    return try windowPool(kind, x, into: out, w)
}

/// The windows of a pooling over (3-padded) spatial size `inSize`: the output size and, per
/// output cell along each dimension d, the clipped box lo[d][i]..<hi[d][i].
struct PoolWindows {
    let inSize: [Int], outSize: [Int]
    let lo: [[Int]], hi: [[Int]]

    init(inSize: [Int], outSize: [Int], lo: [[Int]], hi: [[Int]]) {
        (self.inSize, self.outSize, self.lo, self.hi) = (inSize, outSize, lo, hi)
    }

    /// `poolSize` and `strides`: one value or one per spatial dimension (the last `spatial`
    /// of the 3-padded `inSize`).
    init(inSize: [Int], spatial: Int, poolSize: [Int], strides: [Int], padding: String, op: String) throws {
        func per(_ v: [Int], _ name: String) throws -> [Int] {
            let full = v.count == 1 ? repeatedInts(v[0], count: spatial) : v
            guard full.count == spatial, full.allSatisfy({ $0 > 0 }) else {
                throw EngineError.value("\(name) needs 1 or \(spatial) positive values, got \(v)")
            }
            return repeatedInts(1, count: 3 - spatial) + full
        }
        let k = try per(poolSize, "pool_size"), st = try per(strides, "strides")
        var pads = [0, 0, 0], out = [1, 1, 1]
        for d in 0..<3 { (out[d], pads[d]) = try windowGeometry(inSize[d], k[d], st[d], 1, padding, op: op) }
        let lo = (0..<3).map { d in (0..<out[d]).map { Swift.max(0, $0 * st[d] - pads[d]) } }
        let hi = (0..<3).map { d in (0..<out[d]).map { Swift.max(lo[d][$0], Swift.min(inSize[d], $0 * st[d] - pads[d] + k[d])) } }
        self.init(inSize: inSize, outSize: out, lo: lo, hi: hi)
    }

    /// The bounds as one flat table (z, y, x after each other), as `poolRows` reads them.
    var table: [Int] { lo[0] + hi[0] + lo[1] + hi[1] + lo[2] + hi[2] }
}

/// Pools output rows `rows` (image, z, y) of channels-last `px` (images of `w.inSize`, `c`
/// channels) into `po` (images of `w.outSize`). `bounds` is `w.table`: nested arrays read in
/// the inner loop cost a bounds check and a retain each, which made the kernel 10% of a
/// convnet's predict step for 4-element windows. Each cell walks x with no division.
@inline(__always)
func poolRows<T: FloatElem>(isMax: Bool, _ px: UnsafePointer<T>, _ po: UnsafeMutablePointer<T>, rows: Range<Int>,
                            c: Int, _ w: PoolWindows, bounds b: UnsafePointer<Int>) {
    let (outZ, outY, outX) = (w.outSize[0], w.outSize[1], w.outSize[2])
    let (inZ, inY, inX) = (w.inSize[0], w.inSize[1], w.inSize[2])
    let (lz, hz, ly, hy, lx, hx) = (b, b + outZ, b + 2 * outZ, b + 2 * outZ + outY, b + 2 * (outZ + outY),
                                    b + 2 * (outZ + outY) + outX)
    if isMax, T.self == Float.self, c % 8 == 0 {
        // Channels a vector at a time from -inf, which gives the bits of the loop below
        // (max(-inf, v) is v, NaN included): the per-cell copy call and scalar loop were as
        // long as the conv GEMM they followed in a fused first layer. 32 channels at once run
        // four independent compare-and-blend chains.
        let px = UnsafeRawPointer(px).assumingMemoryBound(to: Float.self)
        let po = UnsafeMutableRawPointer(po).assumingMemoryBound(to: Float.self)
        return maxPoolRowsF32(px, po, rows: rows, c: c, w, bounds: b)
    }
    for row in rows {
        let oy = row % outY, oz = (row / outY) % outZ, img = row / (outY * outZ)
        let (z0, z1, y0, y1) = (lz[oz], hz[oz], ly[oy], hy[oy])
        for ox in 0..<outX {
            let d = po + (row * outX + ox) * c
            let (x0, x1) = (lx[ox], hx[ox])
            var first = true
            for iz in z0..<z1 { for iy in y0..<y1 {
                var s = px + (((img * inZ + iz) * inY + iy) * inX + x0) * c
                for _ in x0..<x1 {
                    if first {
                        d.update(from: s, count: c)
                        first = false
                    } else if isMax {
                        for ch in 0..<c { d[ch] = T.maxOrNaN(d[ch], s[ch]) }
                    } else {
                        for ch in 0..<c { d[ch] += s[ch] }
                    }
                    s += c
                }
            } }
            if first {
                d.update(repeating: isMax ? -T.infinity : 0, count: c)
            } else if !isMax {
                let inv = 1 / T((z1 - z0) * (y1 - y0) * (x1 - x0))
                for ch in 0..<c { d[ch] *= inv }
            }
        }
    }
}

/// `poolRows` for max over float32, 8 channels (`c` a multiple of 8) at a time, or 32 as four
/// independent chains (the blend's latency bound one chain). Concrete SIMD8: the same code
/// generic over the vector type ran unspecialised, 200 times slower.
@inline(__always)
private func maxPoolRowsF32(_ px: UnsafePointer<Float>, _ po: UnsafeMutablePointer<Float>, rows: Range<Int>, c: Int,
                            _ w: PoolWindows, bounds b: UnsafePointer<Int>) {
    typealias V = SIMD8<Float>
    @inline(__always) func load(_ p: UnsafePointer<Float>) -> V { UnsafeRawPointer(p).loadUnaligned(as: V.self) }
    @inline(__always) func store(_ v: V, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: V.self) }
    // maxOrNaN(m, v): m where m > v or m is NaN, else v.
    @inline(__always) func maxOrNaN(_ m: V, _ v: V) -> V { v.replacing(with: m, where: (m .> v) .| (m .!= m)) }
    let (outZ, outY, outX) = (w.outSize[0], w.outSize[1], w.outSize[2])
    let (inZ, inY, inX) = (w.inSize[0], w.inSize[1], w.inSize[2])
    let (lz, hz, ly, hy, lx, hx) = (b, b + outZ, b + 2 * outZ, b + 2 * outZ + outY, b + 2 * (outZ + outY),
                                    b + 2 * (outZ + outY) + outX)
    let wide = c % 32 == 0
    for row in rows {
        let oy = row % outY, oz = (row / outY) % outZ, img = row / (outY * outZ)
        let (z0, z1, y0, y1) = (lz[oz], hz[oz], ly[oy], hy[oy])
        for ox in 0..<outX {
            let d = po + (row * outX + ox) * c
            let (x0, x1) = (lx[ox], hx[ox])
            var block = 0
            while block < c {
                let start = -V(repeating: .infinity)
                var (m0, m1, m2, m3) = (start, start, start, start)
                for iz in z0..<z1 { for iy in y0..<y1 {
                    var s = px + (((img * inZ + iz) * inY + iy) * inX + x0) * c + block
                    for _ in x0..<x1 {
                        m0 = maxOrNaN(m0, load(s))
                        if wide {
                            m1 = maxOrNaN(m1, load(s + 8))
                            m2 = maxOrNaN(m2, load(s + 16))
                            m3 = maxOrNaN(m3, load(s + 24))
                        }
                        s += c
                    }
                } }
                store(m0, d + block)
                if wide {
                    store(m1, d + block + 8)
                    store(m2, d + block + 16)
                    store(m3, d + block + 24)
                    block += 32
                } else {
                    block += 8
                }
            }
        }
    }
}

/// The kernel of every pooling op: channels-last x (N, *inSize, C) → out (N, *outSize, C), output
/// cell (z, y, x) reducing its box of `w`; an empty box gives -inf (max) or 0 (avg). Records
/// the VJP: max sends each gradient to the first maximum of its box, avg spreads it evenly.
private func windowPool(_ kind: PoolKind, _ x: Tensor, into out: Tensor, _ w: PoolWindows) throws -> Tensor {
    let n = x.shape[0], c = x.shape[x.rank - 1]
    let (inSize, outSize, lo, hi) = (w.inSize, w.outSize, w.lo, w.hi)
    let cells = outSize.reduce(1, *)
    if out.count == 0 { return out }
    struct Fwd: FloatVisitor {
        let isMax: Bool, x: Tensor, out: Tensor, n: Int, c: Int, w: PoolWindows
        func visit<T: FloatElem>(_: T.Type) throws {
            let px = x.pointer(T.self), po = out.pointer(T.self)
            let (c, isMax, w) = (self.c, self.isMax, self.w)
            w.table.withUnsafeBufferPointer { b in
                // One task item per output row (image, z, y).
                parallelFor(n * w.outSize[0] * w.outSize[1], cost: w.outSize[2] * c * 8) { range in
                    poolRows(isMax: isMax, px, po, rows: range, c: c, w, bounds: b.baseAddress!)
                }
            }
        }
    }
    try dispatchFloat(x.dtype, Fwd(isMax: kind == .max, x: x, out: out, n: n, c: c, w: w))
    Tape.record(out, [x]) { gy0 in
        let gy = try cast(gy0, to: x.dtype)
        let dx = try zerosLike(x)
        try dispatchFloat(x.dtype, PoolBackward(isMax: kind == .max, x: x, y: out, gy: gy, dx: dx, n: n, c: c, cells: cells,
                                                outSize: outSize, inSize: inSize, lo: lo, hi: hi))
        return [dx]
    }
    return out
}

/// The VJP kernel of `windowPool`. A type of its own rather than one nested in the tape's
/// closure: nested there it was left generic (every element op an indirect call), 18% of a
/// convnet's train step. Channels are the inner loop, as they are contiguous.
private struct PoolBackward: FloatVisitor {
    let isMax: Bool, x: Tensor, y: Tensor, gy: Tensor, dx: Tensor, n: Int, c: Int, cells: Int
    let outSize: [Int], inSize: [Int], lo: [[Int]], hi: [[Int]]

    func visit<T: FloatElem>(_: T.Type) throws {
        let px = x.pointer(T.self), py = y.pointer(T.self), pg = gy.pointer(T.self), pd = dx.pointer(T.self)
        let (c, cells, outSize, inSize, isMax, lo, hi) = (self.c, self.cells, self.outSize, self.inSize, self.isMax, self.lo, self.hi)
        // One task per image: boxes never cross images, so writes never race.
        parallelFor(n, cost: cells * c * 8) { range in
            // Per channel: has this cell's gradient found its (first) maximum yet (0 or 1).
            let found = UnsafeMutablePointer<UInt8>.allocate(capacity: Swift.max(c, 1))
            defer { found.deallocate() }
            for img in range { for r in 0..<cells {
                let (oz, oy, ox) = (r / (outSize[1] * outSize[2]), (r / outSize[2]) % outSize[1], r % outSize[2])
                let (z0, z1, y0, y1, x0, x1) = (lo[0][oz], hi[0][oz], lo[1][oy], hi[1][oy], lo[2][ox], hi[2][ox])
                guard z1 > z0 && y1 > y0 && x1 > x0 else { continue }
                let yo = py + (img * cells + r) * c, go = pg + (img * cells + r) * c
                let inv = isMax ? 0 : 1 / T((z1 - z0) * (y1 - y0) * (x1 - x0))
                if isMax { found.update(repeating: 0, count: c) }
                for iz in z0..<z1 { for iy in y0..<y1 { for ix in x0..<x1 {
                    let at = (((img * inSize[0] + iz) * inSize[1] + iy) * inSize[2] + ix) * c
                    let s = px + at, d = pd + at
                    if isMax {
                        // Branch-free with every load unconditional, so that the loop vectorises
                        // without masked loads (microcoded on AMD: 40% of this kernel's time).
                        // Adding 0 where nothing hits leaves d's bits as they are: d starts at +0
                        // and no sum that starts at +0 is ever -0.
                        for ch in 0..<c {
                            let (sv, yv, gv, fv) = (s[ch], yo[ch], go[ch], found[ch])
                            let match: UInt8 = sv == yv || (sv != sv && yv != yv) ? 1 : 0
                            let hit = match & (fv ^ 1)
                            d[ch] += hit != 0 ? gv : 0
                            found[ch] = fv | hit
                        }
                    } else {
                        for ch in 0..<c { d[ch] += go[ch] * inv }
                    }
                } } }
            } }
        }
    }
}

public func pool2d(_ kind: PoolKind, _ x: Tensor, poolSize: [Int], strides: [Int], padding: String = "valid") throws -> Tensor {
    guard x.rank == 4 else { throw EngineError.value("pool2d expects a rank-4 NHWC input, got \(x.shape)") }
    return try pool(kind, x, poolSize: poolSize, strides: strides, padding: padding)
}

private let poolPadding = AttrSpec.string("padding", default: "valid", choices: ["valid", "same"])

private func poolOp(_ name: String, _ kind: PoolKind, rank2: Bool) -> OpDef {
    let what = kind == .max ? "Max" : "Average"
    let doc = rank2 ? "The 2-D form of \(kind == .max ? "max_pool" : "avg_pool"): x (N, H, W, C)"
        : "\(what) pooling of x (N, *spatial, C), 1-3 spatial dims; pool_size and strides: one int or one per dim"
            + (kind == .avg ? "; with same padding divides by the in-bounds count" : "")
    return OpDef(unary: name, attrs: [.ints("pool_size"), .ints("strides", absent: "pool_size"), poolPadding], doc: doc) { x, a in
        let p = try a.requiredInts("pool_size")
        let s = try a.ints("strides") ?? p
        return rank2 ? try pool2d(kind, x, poolSize: p, strides: s, padding: a.string("padding"))
            : try pool(kind, x, poolSize: p, strides: s, padding: a.string("padding"))
    }
}

let nnOps: [OpDef] = [
    OpDef(unary: "softmax", attrs: [.int("axis", default: -1)], doc: "e ** x normalised to sum 1 along axis") { x, a in
        try softmax(x, axis: a.int("axis"))
    },
    OpDef(unary: "log_softmax", attrs: [.int("axis", default: -1)], doc: "log(softmax(x)) along axis, computed stably") { x, a in
        try softmax(x, axis: a.int("axis"), log: true)
    },
    OpDef(unary: "one_hot", attrs: [.int("num_classes"), .int("axis", default: -1), .dtype("dtype", default: .float32)],
          grad: .no, doc: "One-hot encoding of integer indices along a new axis; out-of-range indices give zeros") { x, a in
        try oneHot(x, numClasses: a.int("num_classes"), axis: a.int("axis"), dtype: a.dtype("dtype"))
    },
    poolOp("max_pool", .max, rank2: false),
    poolOp("avg_pool", .avg, rank2: false),
    poolOp("max_pool2d", .max, rank2: true),
    poolOp("avg_pool2d", .avg, rank2: true),
]

// MARK: - im2col / col2im (torch's Unfold / Fold, NCHW)

/// Geometry shared by `unfold` and `fold`: kernel, dilation, padding and stride per spatial dim
/// (one value or two), and the number of sliding blocks along each dim for an image of `size`.
struct BlockGeometry {
    let k: [Int], d: [Int], p: [Int], s: [Int]

    init(kernel: [Int], dilation: [Int], padding: [Int], stride: [Int]) throws {
        func pair(_ v: [Int], _ name: String, min: Int) throws -> [Int] {
            let r = v.count == 1 ? [v[0], v[0]] : v
            guard r.count == 2, r.allSatisfy({ $0 >= min }) else {
                throw EngineError.value("\(name) needs 1 or 2 values >= \(min), got \(v)")
            }
            return r
        }
        k = try pair(kernel, "kernel_size", min: 1)
        d = try pair(dilation, "dilation", min: 1)
        p = try pair(padding, "padding", min: 0)
        s = try pair(stride, "stride", min: 1)
    }

    func blocks(_ size: [Int]) throws -> [Int] {
        try (0..<2).map { i in
            // Checked: kernel, dilation and padding come from the caller unbounded.
            let (dk, o1) = d[i].multipliedReportingOverflow(by: k[i] - 1)
            let (p2, o2) = p[i].multipliedReportingOverflow(by: 2)
            let (padded, o3) = size[i].addingReportingOverflow(p2)
            guard !o1, !o2, !o3, dk < Int.max, padded <= maxTensorBytes else {
                throw EngineError.value("kernel_size, dilation or padding too large: \(k), \(d), \(p)")
            }
            let span = dk + 1
            guard padded >= span else {
                throw EngineError.value("sliding blocks of span \(span) do not fit the padded size \(padded) (dim \(i))")
            }
            return (padded - span) / s[i] + 1
        }
    }
}

/// Copies patches between an image (N, C, H, W) and its columns (N, C*kH*kW, L): unfold
/// writes columns, fold adds them back into the image. One task per (n, c) plane, which owns
/// both its image plane and its kH*kW column rows, so tasks never write the same memory.
private struct Im2Col: FloatVisitor {
    let image: Tensor, cols: Tensor, geo: BlockGeometry, planes: Int, h: Int, w: Int, nb: [Int], toCols: Bool
    func visit<T: FloatElem>(_: T.Type) throws {
        let pimg = image.pointer(T.self), pcol = cols.pointer(T.self)
        let (k, d, p, s, h, w, nb, toCols) = (geo.k, geo.d, geo.p, geo.s, self.h, self.w, self.nb, self.toCols)
        let l = nb[0] * nb[1]
        parallelFor(planes, cost: k[0] * k[1] * l) { range in
            for plane in range {
                let img = pimg + plane * h * w
                for i in 0..<k[0] { for j in 0..<k[1] {
                    let col = pcol + (plane * k[0] * k[1] + i * k[1] + j) * l
                    for oy in 0..<nb[0] {
                        let iy = oy * s[0] - p[0] + i * d[0]
                        guard iy >= 0 && iy < h else { continue }
                        for ox in 0..<nb[1] {
                            let ix = ox * s[1] - p[1] + j * d[1]
                            guard ix >= 0 && ix < w else { continue }
                            if toCols { col[oy * nb[1] + ox] = img[iy * w + ix] } else { img[iy * w + ix] += col[oy * nb[1] + ox] }
                        }
                    }
                } }
            }
        }
    }
}

/// Runs a float kernel on `x`, widening other dtypes to float32 and narrowing the result back.
private func inFloat(_ x: Tensor, _ body: (Tensor) throws -> Tensor) throws -> Tensor {
    if x.dtype == computeDType(x.dtype) { return try body(x) }
    return try cast(try body(try cast(x, to: .float32)), to: x.dtype)
}

/// Sliding local blocks of an NCHW image (torch `Unfold`): (N, C, H, W) → (N, C*kH*kW, L),
/// padding reads as zeros. Differentiable; its VJP is `fold`.
public func unfold(_ x0: Tensor, kernelSize: [Int], dilation: [Int] = [1], padding: [Int] = [0], stride: [Int] = [1]) throws -> Tensor {
    guard x0.rank == 4 else { throw EngineError.value("unfold expects a 4D (N, C, H, W) input, got shape \(x0.shape)") }
    let geo = try BlockGeometry(kernel: kernelSize, dilation: dilation, padding: padding, stride: stride)
    let (n, c, h, w) = (x0.shape[0], x0.shape[1], x0.shape[2], x0.shape[3])
    let nb = try geo.blocks([h, w])
    let rows = try elementCount([c, geo.k[0], geo.k[1]]), blocks = try elementCount(nb)
    return try inFloat(x0) { x in
        let out = try Tensor(zeros: [n, rows, blocks], dtype: x.dtype)
        if out.count == 0 { return out }
        try dispatchFloat(x.dtype, Im2Col(image: x, cols: out, geo: geo, planes: n * c, h: h, w: w, nb: nb, toCols: true))
        Tape.record(out, [x]) { g in
            [try fold(try cast(g, to: x.dtype), outputSize: [h, w], kernelSize: kernelSize, dilation: dilation, padding: padding, stride: stride)]
        }
        return out
    }
}

/// Sums sliding local blocks back into an image (torch `Fold`): (N, C*kH*kW, L) →
/// (N, C, oH, oW); L must equal the number of blocks of an oH×oW image. Differentiable;
/// its VJP is `unfold`.
public func fold(_ x0: Tensor, outputSize: [Int], kernelSize: [Int], dilation: [Int] = [1], padding: [Int] = [0], stride: [Int] = [1]) throws -> Tensor {
    guard x0.rank == 3 else { throw EngineError.value("fold expects a 3D (N, C*kH*kW, L) input, got shape \(x0.shape)") }
    let geo = try BlockGeometry(kernel: kernelSize, dilation: dilation, padding: padding, stride: stride)
    let size = outputSize.count == 1 ? [outputSize[0], outputSize[0]] : outputSize
    guard size.count == 2, size.allSatisfy({ $0 >= 0 }) else { throw EngineError.value("output_size needs 1 or 2 non-negative values, got \(outputSize)") }
    let (n, ckk, l) = (x0.shape[0], x0.shape[1], x0.shape[2])
    let kk = try elementCount(geo.k)
    guard ckk % kk == 0 else {
        throw EngineError.value("fold: input dim 1 (\(ckk)) must be divisible by the kernel size product (\(kk))")
    }
    let nb = try geo.blocks(size)
    guard l == (try elementCount(nb)) else {
        throw EngineError.value("fold: input has \(l) blocks but output_size \(size) with these parameters gives \(nb[0]) x \(nb[1])")
    }
    return try inFloat(x0) { x in
        let out = try Tensor(zeros: [n, ckk / kk, size[0], size[1]], dtype: x.dtype)
        if out.count == 0 || x.count == 0 { return out }
        try dispatchFloat(x.dtype, Im2Col(image: out, cols: x, geo: geo, planes: n * (ckk / kk), h: size[0], w: size[1], nb: nb, toCols: false))
        Tape.record(out, [x]) { g in
            [try unfold(try cast(g, to: x.dtype), kernelSize: kernelSize, dilation: dilation, padding: padding, stride: stride)]
        }
        return out
    }
}

// MARK: - sparsemax

/// Sparsemax along `axis` (Martins & Astudillo 2016): the Euclidean projection of each row
/// onto the probability simplex, max(x - tau, 0). Differentiable: inside the support the
/// gradient is g minus its mean over the support, zero outside.
public func sparsemax(_ x0: Tensor, axis: Int = -1) throws -> Tensor {
    if x0.rank == 0 { return try reshape(try sparsemax(try reshape(x0, [1]), axis: 0), []) }
    return try inFloat(x0) { x1 in
        try withAxisLast(x1, axis) { x in
            let out = try Tensor(empty: x.shape, dtype: x.dtype)
            let r = x.shape.last!
            struct K: FloatVisitor {
                let x: Tensor, out: Tensor, r: Int
                func visit<T: FloatElem>(_: T.Type) throws {
                    let px = x.pointer(T.self), po = out.pointer(T.self), r = self.r
                    guard r > 0 else { return }
                    parallelFor(x.count / r, cost: r * 16) { range in
                        var z = [T](repeating: 0, count: r)
                        for row in range {
                            let s = px + row * r, d = po + row * r
                            for i in 0..<r { z[i] = s[i] }
                            // A NaN or +inf leaves no projection (and `>` no order to sort by):
                            // the row is NaN, as softmax's is.
                            guard !z.contains(where: { $0.isNaN || $0 == .infinity }) else {
                                d.update(repeating: .nan, count: r)
                                continue
                            }
                            z.sort(by: >)
                            // Support size k: the largest j with 1 + j*z_j > sum of the top j.
                            var cum: T = 0, kept: T = 0, k = 0
                            for j in 0..<r {
                                cum += z[j]
                                if 1 + T(j + 1) * z[j] > cum { k = j + 1; kept = cum }
                            }
                            let tau = (kept - 1) / T(Swift.max(k, 1))
                            for i in 0..<r { d[i] = T.maxOrNaN(s[i] - tau, 0) }
                        }
                    }
                }
            }
            try dispatchFloat(x.dtype, K(x: x, out: out, r: r))
            Tape.record(out, [x]) { g0 in
                let g = try cast(g0, to: out.dtype)
                let support = try cast(try binary(.greater, out, try zerosLike(out)), to: out.dtype)
                let gs = try multiply(g, support)
                let mean = try divide(try sum(gs, axes: [-1], keepdims: true), try sum(support, axes: [-1], keepdims: true))
                return [try multiply(support, try subtract(g, mean))]
            }
            return out
        }
    }
}

// MARK: - adaptive pooling (torch bins)

/// Torch's adaptive bin `i` of `out` over `n`: [floor(i*n/out), ceil((i+1)*n/out)),
/// computed in double width so huge sizes cannot overflow.
@inline(__always)
private func adaptiveBin(_ i: Int, _ n: Int, _ out: Int) -> (Int, Int) {
    let lo = out.dividingFullWidth(i.multipliedFullWidth(by: n)).quotient
    let hiFull = (i + 1).multipliedFullWidth(by: n)
    let (q, r) = out.dividingFullWidth(hiFull)
    return (lo, r == 0 ? q : q + 1)
}

/// Adaptive max / average pooling over 1 to 3 spatial dims, channels last: (N, *in, C) →
/// (N, *outputSize, C), output cell i of a dim pooling the torch bin
/// [floor(i*in/out), ceil((i+1)*in/out)). Differentiable; max sends each gradient to the
/// first maximum of its bin.
public func adaptivePool(_ kind: PoolKind, _ x0: Tensor, outputSize: [Int]) throws -> Tensor {
    let spatial = x0.rank - 2
    guard (1...3).contains(spatial) else {
        throw EngineError.value("adaptive pooling expects input (N, *spatial, C) with 1 to 3 spatial dims, got \(x0.shape)")
    }
    let sizes = outputSize.count == 1 ? repeatedInts(outputSize[0], count: spatial) : outputSize
    guard sizes.count == spatial, sizes.allSatisfy({ $0 > 0 }) else {
        throw EngineError.value("output_size needs 1 or \(spatial) positive values, got \(outputSize)")
    }
    guard x0.shape[1...spatial].allSatisfy({ $0 > 0 }) else {
        throw EngineError.value("adaptive pooling needs non-empty spatial dims, got \(x0.shape)")
    }
    return try inFloat(x0) { x in
        let n = x.shape[0], c = x.shape[x.rank - 1]
        // Allocated first: it validates the requested size before the bin tables are built.
        let out = try Tensor(empty: [n] + sizes + [c], dtype: x.dtype)
        let inSize = repeatedInts(1, count: 3 - spatial) + Array(x.shape[1...spatial])
        let outSize = repeatedInts(1, count: 3 - spatial) + sizes
        _ = try elementCount(outSize)
        if out.count == 0 { return out }
        let bins = (0..<3).map { d in (0..<outSize[d]).map { adaptiveBin($0, inSize[d], outSize[d]) } }
        return try windowPool(kind, x, into: out, PoolWindows(inSize: inSize, outSize: outSize,
                                                              lo: bins.map { $0.map(\.0) }, hi: bins.map { $0.map(\.1) }))
    }
}

private let blockAttrs: [AttrSpec] = [
    .ints("kernel_size"), .ints("dilation", default: [1]), .ints("padding", default: [0]), .ints("stride", default: [1]),
]

let nnExtraOps: [OpDef] = [
    OpDef(unary: "unfold", attrs: blockAttrs,
          doc: "torch's Unfold (im2col): x (N, C, H, W) to (N, C*kH*kW, L), zero padding; sizes one int or two") { x, a in
        try unfold(x, kernelSize: a.requiredInts("kernel_size"), dilation: a.requiredInts("dilation"),
                   padding: a.requiredInts("padding"), stride: a.requiredInts("stride"))
    },
    OpDef(unary: "fold", attrs: [.ints("output_size")] + blockAttrs,
          doc: "torch's Fold (col2im): x (N, C*kH*kW, L) to (N, C, oH, oW), overlaps summed") { x, a in
        try fold(x, outputSize: a.requiredInts("output_size"), kernelSize: a.requiredInts("kernel_size"),
                 dilation: a.requiredInts("dilation"), padding: a.requiredInts("padding"), stride: a.requiredInts("stride"))
    },
    OpDef(unary: "sparsemax", attrs: [.int("axis", default: -1)], doc: "Euclidean projection of x onto the simplex along axis") { x, a in
        try sparsemax(x, axis: a.int("axis"))
    },
    OpDef(unary: "adaptive_max_pool", attrs: [.ints("output_size")],
          doc: "Max over torch's adaptive bins: x (N, *spatial, C) to output_size (one int or one per dim)") { x, a in
        try adaptivePool(.max, x, outputSize: a.requiredInts("output_size"))
    },
    OpDef(unary: "adaptive_avg_pool", attrs: [.ints("output_size")],
          doc: "Average over torch's adaptive bins: x (N, *spatial, C) to output_size (one int or one per dim)") { x, a in
        try adaptivePool(.avg, x, outputSize: a.requiredInts("output_size"))
    },
]
