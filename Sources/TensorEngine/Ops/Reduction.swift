public enum ReduceOp: String, CaseIterable {
    case sum, mean, prod, max, min, any, all
}

/// (outer, reduced, inner) view of `x` for reducing `axes`; transposes (copies) first when
/// the reduced axes are not one contiguous block.
private func reductionLayout(_ x: Tensor, _ axes: [Int]) throws -> (Tensor, Int, Int, Int) {
    let contiguousBlock = axes.last! - axes.first! + 1 == axes.count
    if contiguousBlock {
        let outer = x.shape[..<axes.first!].reduce(1, *)
        let r = axes.map { x.shape[$0] }.reduce(1, *)
        let inner = x.shape[(axes.last! + 1)...].reduce(1, *)
        return (x, outer, r, inner)
    }
    let kept = (0..<x.rank).filter { !axes.contains($0) }
    let t = try Tape.paused { try transpose(x, kept + axes) }
    // outer from the kept dimensions: x.count / r is 0 when a reduced axis is empty.
    let r = axes.map { x.shape[$0] }.reduce(1, *)
    return (t, kept.map { x.shape[$0] }.reduce(1, *), r, 1)
}

/// The shape with reduced `axes` set to 1, and the output shape (that one under `keepdims`,
/// else without those axes).
private func reducedShapes(_ shape: [Int], axes: [Int], keepdims: Bool) -> (kept: [Int], out: [Int]) {
    var kept = shape
    for a in axes { kept[a] = 1 }
    return (kept, keepdims ? kept : shape.enumerated().filter { !axes.contains($0.offset) }.map { $0.element })
}

/// Reduces `x` over `axes` (nil = all). `mean` of integers gives float32; `any`/`all` give
/// bool; half types accumulate in float32.
public func reduce(_ op: ReduceOp, _ x0: Tensor, axes axes0: [Int]? = nil, keepdims: Bool = false) throws -> Tensor {
    let axes = try normalizeAxes(axes0, rank: x0.rank)
    let (keptShape, outShape) = reducedShapes(x0.shape, axes: axes, keepdims: keepdims)

    if op == .any || op == .all {
        // Over nothing, any is False and all is True (their identities; max/min have none).
        if axes.contains(where: { x0.shape[$0] == 0 }) {
            return try full(outShape, value: op == .all ? 1 : 0, dtype: .bool)
        }
        // Truthiness first: a cast straight to uint8 would truncate 0.5 to 0.
        let b = try cast(try cast(x0, to: .bool), to: .uint8)
        let r = try reduce(op == .any ? .max : .min, b, axes: axes0, keepdims: keepdims)
        return try cast(r, to: .bool)
    }
    if x0.dtype.isComplex { return try complexReduce(op, x0, axes: axes0, keepdims: keepdims) }
    if x0.dtype.isHalf { return try cast(try reduce(op, try cast(x0, to: .float32), axes: axes0, keepdims: keepdims), to: x0.dtype) }
    if x0.dtype == .bool {
        let wide: DType = (op == .sum || op == .prod) ? .int32 : (op == .mean ? .float32 : .uint8)
        let r = try reduce(op, try cast(x0, to: wide), axes: axes0, keepdims: keepdims)
        return (op == .max || op == .min) ? try cast(r, to: .bool) : r
    }
    if op == .mean && !x0.dtype.isFloatingPoint {
        return try reduce(.mean, try cast(x0, to: .float32), axes: axes0, keepdims: keepdims)
    }
    if axes.isEmpty { return try reshape(x0, outShape) }
    let rcount = axes.map { x0.shape[$0] }.reduce(1, *)
    if (op == .max || op == .min) && rcount == 0 {
        throw EngineError.value("zero-size reduction \(op.rawValue) over axes \(axes) of shape \(x0.shape) has no identity")
    }
    let (x, outer, r, inner) = try reductionLayout(x0, axes)
    let out = try Tensor(empty: outShape, dtype: x0.dtype)
    struct K: NumericVisitor {
        let op: ReduceOp, x: Tensor, out: Tensor, outer: Int, r: Int, inner: Int
        func visit<T: NumElem>(_: T.Type) throws {
            let px = x.pointer(T.self), po = out.pointer(T.self)
            let (r, inner) = (self.r, self.inner)
            let identity: T
            switch op {
            case .prod: identity = T.oneValue
            case .max: identity = T.lowest
            case .min: identity = T.highest
            default: identity = T.zeroValue
            }
            @inline(__always) func combine(_ a: T, _ b: T) -> T {
                switch op {
                case .prod: return T.mul(a, b)
                case .max: return T.maxOrNaN(a, b)
                case .min: return T.minOrNaN(a, b)
                default: return T.add(a, b)
                }
            }
            @inline(__always) func reduceRow(_ base: Int, _ lo: Int, _ hi: Int) -> T {
                if op == .sum || op == .mean { return T.sumRow(px + base + lo, hi - lo) }
                // Four independent chains: one chain waits out each combine's latency (a
                // row max ran at ~4 cycles an element).
                var (a0, a1, a2, a3) = (identity, identity, identity, identity)
                var i = lo
                while i + 4 <= hi {
                    a0 = combine(a0, px[base + i])
                    a1 = combine(a1, px[base + i + 1])
                    a2 = combine(a2, px[base + i + 2])
                    a3 = combine(a3, px[base + i + 3])
                    i += 4
                }
                while i < hi {
                    a0 = combine(a0, px[base + i])
                    i += 1
                }
                return combine(combine(a0, a1), combine(a2, a3))
            }
            if inner == 1 {
                if outer >= Threading.threads || r < Threading.grain {
                    parallelFor(outer, cost: r) { range in
                        for o in range { po[o] = reduceRow(o * r, 0, r) }
                    }
                } else {
                    // Few long rows: split each row, then combine the partials.
                    let parts = Threading.threads
                    let chunk = (r + parts - 1) / parts
                    var partial = [T](repeating: identity, count: parts)
                    for o in 0..<outer {
                        partial.withUnsafeMutableBufferPointer { pp in
                            let base = pp.baseAddress!
                            parallelFor(parts, cost: Threading.grain) { range in
                                for p in range { base[p] = reduceRow(o * r, p * chunk, Swift.min(r, (p + 1) * chunk)) }
                            }
                        }
                        var acc = identity
                        for p in partial { acc = combine(acc, p) }
                        po[o] = acc
                    }
                }
            } else {
                // A functor per op: the switch inside `combine` kept this loop scalar.
                func columns<F: BinaryKernel>(_ f: F) where F.A == T, F.B == T, F.R == T {
                    parallelFor(outer * inner, cost: r) { range in
                        // Each task owns whole (outer, inner-block) cells of the output.
                        var idx = range.lowerBound
                        while idx < range.upperBound {
                            let o = idx / inner, i0 = idx % inner
                            let i1 = Swift.min(inner, i0 + (range.upperBound - idx))
                            let dst = po + o * inner
                            for i in i0..<i1 { dst[i] = identity }
                            for k in 0..<r {
                                let src = px + (o * r + k) * inner
                                for i in i0..<i1 { dst[i] = f(dst[i], src[i]) }
                            }
                            idx += i1 - i0
                        }
                    }
                }
                switch op {
                case .prod: columns(Mul<T>())
                case .max: columns(Max<T>())
                case .min: columns(Min<T>())
                default: columns(Add<T>())
                }
            }
            if op == .mean {
                let n = T(fromDouble: Double(r))
                let cnt = out.count
                for i in 0..<cnt { po[i] = T.div(po[i], n) }
            }
        }
    }
    try dispatchNumeric(x0.dtype, K(op: op, x: x, out: out, outer: outer, r: r, inner: inner))
    if x0.dtype.isFloatingPoint {
        let kept = keptShape
        Tape.record(out, [x0]) { g in
            let gk = try reshape(g, kept)
            switch op {
            case .sum: return [try broadcastTo(gk, x0.shape)]
            case .mean: return [try broadcastTo(try divide(gk, try scalar(Double(rcount), g.dtype)), x0.shape)]
            case .prod: return [try divide(try multiply(gk, try reshape(out, kept)), x0)]
            case .max, .min:
                let mask = try cast(try binary(.equal, x0, try reshape(out, kept)), to: g.dtype)
                let ties = try reduce(.sum, mask, axes: axes, keepdims: true)
                return [try multiply(mask, try divide(gk, ties))]
            default: return [nil]
            }
        }
    }
    return out
}

/// Sum over `axes` (nil = all).
public func sum(_ x: Tensor, axes: [Int]? = nil, keepdims: Bool = false) throws -> Tensor {
    try reduce(.sum, x, axes: axes, keepdims: keepdims)
}
/// Mean over `axes` (nil = all).
public func mean(_ x: Tensor, axes: [Int]? = nil, keepdims: Bool = false) throws -> Tensor {
    try reduce(.mean, x, axes: axes, keepdims: keepdims)
}

/// Mean and biased variance over `axes` (nil = all), as Keras's `moments`, fused: one pass
/// for the mean and one for the squared deviations from it, with no temporaries. Partial sums
/// are kept in Double. Half and integer inputs compute in float32. The variance's VJP treats
/// the mean as a constant, which is exact: the deviations sum to zero.
public func moments(_ x: Tensor, axes axes0: [Int]? = nil, keepdims: Bool = false) throws -> (mean: Tensor, variance: Tensor) {
    if x.dtype.isComplex { throw EngineError.type("moments does not support complex inputs (got \(x.dtype))") }
    if x.dtype.isHalf {
        let (m, v) = try moments(try cast(x, to: .float32), axes: axes0, keepdims: keepdims)
        return (try cast(m, to: x.dtype), try cast(v, to: x.dtype))
    }
    if !x.dtype.isFloatingPoint { return try moments(try cast(x, to: .float32), axes: axes0, keepdims: keepdims) }
    let axes = try normalizeAxes(axes0, rank: x.rank)
    let (keptShape, outShape) = reducedShapes(x.shape, axes: axes, keepdims: keepdims)
    if axes.isEmpty { return (try reshape(x, outShape), try Tensor(zeros: outShape, dtype: x.dtype)) }
    let (xl, outer, r, inner) = try reductionLayout(x, axes)
    let mean = try Tensor(empty: outShape, dtype: x.dtype), variance = try Tensor(empty: outShape, dtype: x.dtype)
    struct K: FloatVisitor {
        let x: Tensor, mean: Tensor, variance: Tensor, outer: Int, r: Int, inner: Int
        func visit<T: FloatElem>(_: T.Type) throws {
            let px = UnsafePointer(x.pointer(T.self)), pm = mean.pointer(T.self), pv = variance.pointer(T.self)
            let (r, inner) = (self.r, self.inner)
            let scale = r == 0 ? Double.nan : 1 / Double(r)
            if inner == 1 {
                parallelFor(outer, cost: 2 * r) { range in
                    for o in range {
                        let row = px + o * r
                        let m = T(fromDouble: T.sumRow(row, r).doubleValue * scale)
                        pm[o] = m
                        pv[o] = T(fromDouble: squaredDeviationSum(row, r, m) * scale)
                    }
                }
                return
            }
            // Blocks of columns: each task reads its block's rows once per pass.
            let width = Swift.min(inner, 256), blocks = (inner + width - 1) / width
            parallelFor(outer * blocks, cost: 2 * r * width) { range in
                let acc = UnsafeMutablePointer<Double>.allocate(capacity: width)
                let part = UnsafeMutablePointer<T>.allocate(capacity: width)
                let center = UnsafeMutablePointer<T>.allocate(capacity: width)
                defer { acc.deallocate(); part.deallocate(); center.deallocate() }
                for item in range {
                    let o = item / blocks, c0 = (item % blocks) * width, w = Swift.min(width, inner - c0)
                    let base = px + o * r * inner + c0, out = o * inner + c0
                    columnSums(base, rows: r, stride: inner, width: w, acc: acc, part: part) { v, _ in v }
                    for i in 0..<w {
                        center[i] = T(fromDouble: acc[i] * scale)
                        pm[out + i] = center[i]
                    }
                    columnSums(base, rows: r, stride: inner, width: w, acc: acc, part: part) { v, i in
                        let d = v - center[i]
                        return d * d
                    }
                    for i in 0..<w { pv[out + i] = T(fromDouble: acc[i] * scale) }
                }
            }
        }
    }
    if mean.count > 0 {
        try dispatchFloat(x.dtype, K(x: xl, mean: mean, variance: variance, outer: outer, r: r, inner: inner))
    }
    let kept = keptShape, n = Double(r), xs = x.shape
    Tape.record(mean, [x]) { g in [try broadcastTo(try divide(try reshape(g, kept), try scalar(n, g.dtype)), xs)] }
    let m = stopGradient(mean)
    Tape.record(variance, [x]) { g in
        let centered = try subtract(x, try reshape(m, kept))
        return [try multiply(centered, try reshape(try multiply(g, try scalar(2 / n, g.dtype)), kept))]
    }
    return (mean, variance)
}

/// Σ (p[i] - m)² in Double: float lanes within blocks of 1024, as `sumRow` (not shared: a
/// closure-built lane term cost this row loop 1.4× on rows of 100).
@inline(__always)
private func squaredDeviationSum<T: FloatElem>(_ p: UnsafePointer<T>, _ n: Int, _ m: T) -> Double {
    var total = 0.0, i = 0
    let mv = SIMD16<T>(repeating: m)
    while i < n {
        let end = Swift.min(n, i + 1024)
        var lanes = SIMD16<T>(repeating: 0)
        var j = i
        while j + 16 <= end {
            let d = UnsafeRawPointer(p + j).loadUnaligned(as: SIMD16<T>.self) - mv
            lanes += d * d
            j += 16
        }
        var block = 0.0
        for l in 0..<16 { block += lanes[l].doubleValue }
        while j < end {
            let d = p[j] - m
            block += (d * d).doubleValue
            j += 1
        }
        total += block
        i = end
    }
    return total
}

/// acc[i] = Σ_k term(base[k * stride + i], i) for i < width, in float runs of 256 rows
/// added into Double (`term` is the value itself, or its squared deviation from a center).
@inline(__always)
private func columnSums<T: FloatElem>(_ base: UnsafePointer<T>, rows: Int, stride: Int, width: Int,
                                      acc: UnsafeMutablePointer<Double>, part: UnsafeMutablePointer<T>,
                                      _ term: (T, Int) -> T) {
    for i in 0..<width { acc[i] = 0 }
    var k = 0
    while k < rows {
        let end = Swift.min(rows, k + 256)
        for i in 0..<width { part[i] = 0 }
        for kk in k..<end {
            let src = base + kk * stride
            for i in 0..<width { part[i] += term(src[i], i) }
        }
        for i in 0..<width { acc[i] += part[i].doubleValue }
        k = end
    }
}

public enum ArgReduce: String { case argmax, argmin }

/// Index (int32) of the first maximum / minimum along `axis` (nil = flattened); NaN wins.
public func argReduce(_ op: ArgReduce, _ x0: Tensor, axis: Int?, keepdims: Bool = false) throws -> Tensor {
    var x = x0
    if x.dtype.isHalf { x = try cast(x, to: .float32) }
    if x.dtype == .bool { x = try cast(x, to: .uint8) }
    let ax: Int
    var outShape: [Int]
    if let a = axis {
        ax = try normalizeAxis(a, rank: x.rank)
        outShape = x.shape
        if keepdims { outShape[ax] = 1 } else { outShape.remove(at: ax) }
    } else {
        x = x.sharing(shape: [x.count])
        ax = 0
        outShape = keepdims ? repeatedInts(1, count: x0.rank) : []
    }
    guard x.shape[ax] > 0 else { throw EngineError.value("\(op.rawValue) of an empty axis") }
    let outer = x.shape[..<ax].reduce(1, *), r = x.shape[ax], inner = x.shape[(ax + 1)...].reduce(1, *)
    let out = try Tensor(empty: outShape, dtype: .int32)
    struct K: NumericVisitor {
        let isMax: Bool, x: Tensor, out: Tensor, outer: Int, r: Int, inner: Int
        func visit<T: NumElem>(_: T.Type) throws {
            let px = x.pointer(T.self), po = out.pointer(Int32.self)
            let (r, inner, isMax) = (self.r, self.inner, self.isMax)
            if inner == 1 && T.self == Float.self {
                let pf = x.pointer(Float.self)
                parallelFor(outer, cost: r) { range in
                    for o in range {
                        let row = pf + o * r
                        po[o] = Int32(truncatingIfNeeded: isMax ? argExtremumF32(row, r, max: true) : argExtremumF32(row, r, max: false))
                    }
                }
                return
            }
            parallelFor(outer * inner, cost: r) { range in
                for cell in range {
                    let o = cell / inner, i = cell % inner
                    var best = px[o * r * inner + i], bi = 0
                    if !best.isNaNValue {
                        for k in 1..<r {
                            let v = px[(o * r + k) * inner + i]
                            if v.isNaNValue { bi = k; break }
                            if isMax ? v > best : v < best { best = v; bi = k }
                        }
                    }
                    po[cell] = Int32(truncatingIfNeeded: bi)
                }
            }
        }
    }
    try dispatchNumeric(x.dtype, K(isMax: op == .argmax, x: x, out: out, outer: outer, r: r, inner: inner))
    return out
}

/// Index of the first maximum (or minimum) of the float32 row p[0..<r], r > 0; a NaN wins.
/// Two passes over the (cache-resident) row: the extremum and whether there is a NaN, in
/// 16 lanes with no data-dependent branch, then a scan for the first index that matches.
@inline(__always)
private func argExtremumF32(_ p: UnsafePointer<Float>, _ r: Int, max: Bool) -> Int {
    typealias V = SIMD4<Float>
    let raw = UnsafeRawPointer(p)
    @inline(__always) func load(_ i: Int) -> V { raw.loadUnaligned(fromByteOffset: i * 4, as: V.self) }
    @inline(__always) func better(_ a: V, _ b: V) -> V {
        var m = b
        m.replace(with: a, where: max ? a .> b : a .< b)
        return m
    }
    var m0 = V(repeating: p[0]), m1 = m0, m2 = m0, m3 = m0
    var nan = SIMDMask<SIMD4<Int32>>(repeating: false)
    var i = 0
    while i + 16 <= r {
        let v0 = load(i), v1 = load(i + 4), v2 = load(i + 8), v3 = load(i + 12)
        nan = nan .| (v0 .!= v0) .| (v1 .!= v1) .| (v2 .!= v2) .| (v3 .!= v3)
        m0 = better(v0, m0); m1 = better(v1, m1); m2 = better(v2, m2); m3 = better(v3, m3)
        i += 16
    }
    let m = better(better(m0, m1), better(m2, m3))
    var best = max ? m.max() : m.min()
    var anyNaN = any(nan) || p[0] != p[0]
    while i < r {
        let v = p[i]
        anyNaN = anyNaN || v != v
        if max ? v > best : v < best { best = v }
        i += 1
    }
    if anyNaN {
        for k in 0..<r where p[k] != p[k] { return k }
    }
    for k in 0..<r where p[k] == best { return k }
    return 0
}

extension ReduceOp {
    var doc: String {
        switch self {
        case .sum: return "Sum over axes"
        case .mean: return "Mean over axes (ints give float32)"
        case .prod: return "Product over axes"
        case .max: return "Maximum over axes (NaN propagates)"
        case .min: return "Minimum over axes (NaN propagates)"
        case .any: return "Whether any element over axes is true (nonzero)"
        case .all: return "Whether every element over axes is true (nonzero)"
        }
    }
}

private let reduceAttrs: [AttrSpec] = [.ints("axes", absent: "every axis"), .bool("keepdims", default: false)]

let reductionOps: [OpDef] = ReduceOp.allCases.map { op in
    OpDef(unary: op.rawValue, attrs: reduceAttrs, dtypes: op == .sum || op == .mean ? .all : .real,
          grad: op == .any || op == .all ? .no : .yes, doc: op.doc) { x, a in
        try reduce(op, x, axes: a.ints("axes"), keepdims: a.bool("keepdims"))
    }
} + [
    OpDef("moments", inputs: ["x"], outputs: ["mean", "variance"], attrs: reduceAttrs,
          doc: "Mean and biased variance over axes in one fused pass each (sums in float64; ints give float32)") { t, a in
        let r = try moments(t[0], axes: a.ints("axes"), keepdims: a.bool("keepdims"))
        return [r.mean, r.variance]
    },
] + [ArgReduce.argmax, .argmin].map { op in
    OpDef(unary: op.rawValue, attrs: [.int("axis", absent: "x flattened"), .bool("keepdims", default: false)], grad: .no,
          doc: "Index (int32) of the first \(op == .argmax ? "maximum" : "minimum") along axis; NaN wins") { x, a in
        try argReduce(op, x, axis: a.has("axis") ? a.int("axis") : nil, keepdims: a.bool("keepdims"))
    }
}
