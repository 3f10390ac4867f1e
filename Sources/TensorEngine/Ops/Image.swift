#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Image resampling: separable kernel-weighted resizing (jax.image.scale_and_translate
/// semantics) and point sampling at arbitrary coordinates (jax.scipy.ndimage.map_coordinates
/// semantics, order 0 or 1), each with its VJP with respect to the image.

// MARK: - Separable resampling

/// The 1-D interpolation kernels of `resize` / `scale_and_translate`.
enum ResampleKernel {
    case nearest, linear, cubic, lanczos3, lanczos5

    init(_ name: String) throws {
        switch name {
        case "nearest": self = .nearest
        case "linear", "bilinear", "trilinear", "triangle": self = .linear
        case "cubic", "bicubic", "tricubic": self = .cubic
        case "lanczos3": self = .lanczos3
        case "lanczos5": self = .lanczos5
        default: throw EngineError.value("unknown resampling method '\(name)'")
        }
    }

    var radius: Double {
        switch self {
        case .nearest: return 0.5
        case .linear: return 1
        case .cubic: return 2
        case .lanczos3: return 3
        case .lanczos5: return 5
        }
    }

    /// Kernel value at distance x >= 0.
    func callAsFunction(_ x: Double) -> Double {
        switch self {
        case .nearest: return x < 0.5 ? 1 : 0
        case .linear: return Swift.max(0, 1 - x)
        case .cubic:
            // Keys cubic with a = -0.5 (TensorFlow, Pillow, jax).
            if x >= 2 { return 0 }
            if x >= 1 { return ((-0.5 * x + 2.5) * x - 4) * x + 2 }
            return ((1.5 * x - 2.5) * x) * x + 1
        case .lanczos3, .lanczos5:
            let r = radius
            if x > r { return 0 }
            if x <= 1e-3 { return 1 }
            return r * sin(Double.pi * x) * sin(Double.pi * x / r) / (Double.pi * Double.pi * x * x)
        }
    }
}

/// Sparse (banded) weights of one axis: output j reads input rows starts[j] ..< starts[j] + counts[j]
/// with weights[j * span ..< j * span + counts[j]]. `gather`: one row of weight 1 per output.
struct ResamplePlan {
    var inSize = 0, outSize = 0, span = 0
    var starts: [Int] = [], counts: [Int] = []
    var weights: [Double] = []
    var gather = false

    /// Nearest-neighbour resize exactly as jax.image.resize: floor((j + 0.5) * in / out) in float32.
    static func nearest(inSize: Int, outSize: Int) throws -> ResamplePlan {
        guard inSize > 0 || outSize == 0 else { throw EngineError.value("cannot resize an axis of size 0 to \(outSize)") }
        var p = ResamplePlan(inSize: inSize, outSize: outSize, span: 1, gather: true)
        p.starts = (0..<outSize).map { j in
            let f = ((Float(j) + 0.5) * Float(inSize) / Float(outSize)).rounded(.down)
            return Swift.min(Swift.max(Int(f), 0), inSize - 1)
        }
        p.counts = repeatedInts(1, count: outSize)
        p.weights = [Double](repeating: 1, count: outSize)
        return p
    }

    /// 'same' zero-padded correlation with `taps` (jax/TensorFlow SAME: the extra pad of an
    /// even kernel goes after): out[j] = sum_t taps[t] * x[j - (n - 1) / 2 + t].
    static func filter(_ taps: [Double], size: Int) throws -> ResamplePlan {
        let n = taps.count, padLo = (n - 1) / 2
        try SizeCheck("a \(n)-tap filter's weight table").count([size, n], itemSize: 8)
        var p = ResamplePlan(inSize: size, outSize: size, span: n)
        p.starts = repeatedInts(0, count: size)
        p.counts = repeatedInts(0, count: size)
        p.weights = [Double](repeating: 0, count: size * n)
        for j in 0..<size {
            let first = j - padLo
            let a = Swift.max(0, first), b = Swift.min(size - 1, first + n - 1)
            guard b >= a else { continue }
            p.starts[j] = a
            p.counts[j] = b - a + 1
            for u in 0..<(b - a + 1) { p.weights[j * n + u] = taps[a - first + u] }
        }
        return p
    }

    /// Kernel weights of jax's compute_weight_mat (no edge padding): output pixel centre j + 0.5
    /// maps to input position (j + 0.5 - translation) / scale; the kernel is widened by 1 / scale
    /// when downsampling with antialiasing; weights are normalised over the in-range taps and
    /// zeroed when the sample falls outside the input.
    static func kernel(_ k: ResampleKernel, inSize: Int, outSize: Int, scale: Double, translation: Double,
                       antialias: Bool) throws -> ResamplePlan {
        guard scale.isFinite, scale != 0, translation.isFinite else {
            throw EngineError.value("scale must be finite and non-zero and translation finite; got scale \(scale), translation \(translation)")
        }
        let invScale = 1 / scale
        let ks = antialias ? Swift.max(invScale, 1) : 1
        let reach = k.radius * ks
        var lo = repeatedInts(0, count: outSize), cnt = repeatedInts(0, count: outSize)
        var samples = [Double](repeating: 0, count: outSize)
        var span = 0
        for j in 0..<outSize {
            let s = (Double(j) + 0.5) * invScale - translation * invScale - 0.5
            samples[j] = s
            guard s >= -0.5, s <= Double(inSize) - 0.5, inSize > 0 else { continue }
            // Clamped in Double first: with a tiny scale the reach can exceed Int's range.
            let a = Int(Swift.max(0, (s - reach).rounded(.up)))
            let b = Int(Swift.min(Double(inSize - 1), (s + reach).rounded(.down)))
            guard b >= a else { continue }
            lo[j] = a
            cnt[j] = b - a + 1
            span = Swift.max(span, b - a + 1)
        }
        try SizeCheck("resampling \(inSize) -> \(outSize) with scale \(scale)").count([outSize, span], itemSize: 8)
        var p = ResamplePlan(inSize: inSize, outSize: outSize, span: span)
        p.starts = lo
        p.counts = cnt
        p.weights = [Double](repeating: 0, count: outSize * span)
        let threshold = 1000 * Double(Float.ulpOfOne)
        for j in 0..<outSize where cnt[j] > 0 {
            var total = 0.0
            for t in 0..<cnt[j] {
                let w = k(abs(samples[j] - Double(lo[j] + t)) / ks)
                p.weights[j * span + t] = w
                total += w
            }
            for t in 0..<cnt[j] {
                p.weights[j * span + t] = abs(total) > threshold ? p.weights[j * span + t] / total : 0
            }
        }
        return p
    }
}

/// out[o, j, i] = sum_t w[j, t] * x[o, start_j + t, i] (or its adjoint), x viewed as (outer, axis, inner).
private struct ResampleKernelPass: FloatVisitor {
    let x: Tensor, out: Tensor, plan: ResamplePlan, outer: Int, inner: Int, adjoint: Bool
    func visit<T: FloatElem>(_: T.Type) throws {
        // Weights rounded to the data type first, as jax contracts with a weight matrix of x's dtype.
        let w = plan.weights.map { T(fromDouble: $0) }
        let px = x.pointer(T.self), po = out.pointer(T.self)
        let (inS, outS, span, inner) = (plan.inSize, plan.outSize, plan.span, self.inner)
        let starts = plan.starts, counts = plan.counts
        if !adjoint {
            parallelFor(outer * outS, cost: Swift.max(span, 1) * inner) { range in
                for r in range {
                    let o = r / outS, j = r % outS
                    let dst = po + r * inner
                    dst.update(repeating: 0, count: inner)
                    for t in 0..<counts[j] {
                        let wt = w[j * span + t]
                        if wt == 0 { continue }
                        let src = px + (o * inS + starts[j] + t) * inner
                        for i in 0..<inner { dst[i] += wt * src[i] }
                    }
                }
            }
            return
        }
        // Adjoint (x is the output gradient, out the input gradient, zero-filled): tasks own
        // disjoint (outer, inner block) pieces of `out`, so the scatter never races.
        let block = Swift.min(Swift.max(inner, 1), 256)
        let nb = (inner + block - 1) / block
        parallelFor(outer * nb, cost: outS * Swift.max(span, 1) * block) { range in
            for u in range {
                let o = u / nb, i0 = (u % nb) * block, i1 = Swift.min(inner, i0 + block)
                for j in 0..<outS {
                    let src = px + (o * outS + j) * inner
                    for t in 0..<counts[j] {
                        let wt = w[j * span + t]
                        if wt == 0 { continue }
                        let dst = po + (o * inS + starts[j] + t) * inner
                        for i in i0..<i1 { dst[i] += wt * src[i] }
                    }
                }
            }
        }
    }
}

/// Applies `plan` along `axis` of `x` (or its adjoint, mapping an output-shaped gradient back
/// to the input shape). Differentiable; each direction's VJP is the other.
func resampleAxis(_ x0: Tensor, axis: Int, plan: ResamplePlan, adjoint: Bool = false) throws -> Tensor {
    let ax = try normalizeAxis(axis, rank: x0.rank)
    let (from, to) = adjoint ? (plan.outSize, plan.inSize) : (plan.inSize, plan.outSize)
    guard x0.shape[ax] == from else {
        throw EngineError.value("resample: axis \(axis) has size \(x0.shape[ax]), expected \(from)")
    }
    var outShape = x0.shape
    outShape[ax] = to
    let outer = x0.shape[..<ax].reduce(1, *), inner = x0.shape[(ax + 1)...].reduce(1, *)
    if plan.gather && !adjoint {
        // Nearest neighbour copies rows: exact, and any dtype.
        let out = try Tensor(empty: outShape, dtype: x0.dtype)
        let rowBytes = inner * x0.dtype.itemSize
        let src = x0.rawPointer, dst = out.rawPointer, starts = plan.starts
        parallelFor(outer * to, cost: Swift.max(inner, 1)) { range in
            for r in range {
                let o = r / to, j = r % to
                (dst + r * rowBytes).copyMemory(from: src + (o * from + starts[j]) * rowBytes, byteCount: rowBytes)
            }
        }
        if x0.dtype.isFloatingPoint {
            Tape.record(out, [x0]) { g in [try resampleAxis(try cast(g, to: x0.dtype), axis: ax, plan: plan, adjoint: true)] }
        }
        return out
    }
    var x = x0
    if !x.dtype.isFloatingPoint { x = try cast(x, to: .float32) }
    if x.dtype.isHalf {
        return try cast(try resampleAxis(try cast(x, to: .float32), axis: ax, plan: plan, adjoint: adjoint), to: x.dtype)
    }
    let out = try Tensor(zeros: outShape, dtype: x.dtype)
    try dispatchFloat(x.dtype, ResampleKernelPass(x: x, out: out, plan: plan, outer: outer, inner: inner, adjoint: adjoint))
    let dt = x.dtype
    Tape.record(out, [x]) { g in [try resampleAxis(try cast(g, to: dt), axis: ax, plan: plan, adjoint: !adjoint)] }
    return out
}

/// Normalised axes, validated with their output sizes (nil: sizes unchanged) before any
/// per-output table is built, so an oversized request is a ValueError, not a failed allocation.
private func resampleAxes(_ x: Tensor, axes: [Int], sizes: [Int]?, name: String) throws -> [Int] {
    guard axes.count == (sizes?.count ?? axes.count) else {
        throw EngineError.value("\(name): \(axes.count) axes but \(sizes?.count ?? 0) sizes")
    }
    let norm = try axes.map { try normalizeAxis($0, rank: x.rank) }
    guard Set(norm).count == norm.count else { throw EngineError.value("\(name): repeated axis in \(axes)") }
    guard let sizes = sizes else { return norm }
    guard sizes.allSatisfy({ $0 >= 0 }) else { throw EngineError.value("\(name): negative output size in \(sizes)") }
    var shape = x.shape
    for (a, n) in zip(norm, sizes) { shape[a] = n }
    try SizeCheck(name).count(shape, itemSize: 8)
    return norm
}

/// Resizes `x` along `axes` to `sizes` (jax.image.resize semantics: half-pixel centres; nearest,
/// linear, cubic (Keys), lanczos3, lanczos5; antialias widens the kernel when downsampling).
/// Non-nearest methods compute in float (integers as float32). Differentiable.
public func resize(_ x: Tensor, axes: [Int], sizes: [Int], method: String, antialias: Bool) throws -> Tensor {
    let norm = try resampleAxes(x, axes: axes, sizes: sizes, name: "resize")
    let k = try ResampleKernel(method)
    var y = x
    if k != .nearest && !y.dtype.isFloatingPoint { y = try cast(y, to: .float32) }
    for (ax, n) in zip(norm, sizes) {
        let m = y.shape[ax]
        // All kernels interpolate, so an unchanged size is the identity (as in jax).
        if m == n { continue }
        guard m > 0 else { throw EngineError.value("cannot resize an axis of size 0 to \(n)") }
        let plan = k == .nearest
            ? try ResamplePlan.nearest(inSize: m, outSize: n)
            : try ResamplePlan.kernel(k, inSize: m, outSize: n, scale: n == 0 ? 1 : Double(n) / Double(m),
                                      translation: 0, antialias: antialias)
        y = try resampleAxis(y, axis: ax, plan: plan)
    }
    return y
}

/// jax.image.scale_and_translate: output pixel centre p maps to input (p - translation) / scale
/// along each of `axes`. Any method but nearest. Computes in float; differentiable in x.
public func scaleAndTranslate(_ x: Tensor, axes: [Int], sizes: [Int], scales: [Double], translations: [Double],
                              method: String, antialias: Bool) throws -> Tensor {
    let norm = try resampleAxes(x, axes: axes, sizes: sizes, name: "scale_and_translate")
    guard scales.count == axes.count, translations.count == axes.count else {
        throw EngineError.value("scale_and_translate needs one scale and one translation per axis (\(axes.count)); got \(scales.count) and \(translations.count)")
    }
    let k = try ResampleKernel(method)
    guard k != .nearest else { throw EngineError.value("nearest neighbour resampling is not supported by scale_and_translate") }
    var y = x
    if !y.dtype.isFloatingPoint { y = try cast(y, to: .float32) }
    for i in 0..<norm.count {
        let plan = try ResamplePlan.kernel(k, inSize: y.shape[norm[i]], outSize: sizes[i], scale: scales[i],
                                           translation: translations[i], antialias: antialias)
        y = try resampleAxis(y, axis: norm[i], plan: plan)
    }
    return y
}

/// Separable 'same' zero-padded correlation: along each of `axes` in turn, the 1-D `taps`.
/// Float compute (integers as float32); differentiable in x.
public func separableFilter(_ x: Tensor, axes: [Int], taps: [[Double]]) throws -> Tensor {
    guard axes.count == taps.count else { throw EngineError.value("separable_filter: \(axes.count) axes but \(taps.count) kernels") }
    let norm = try resampleAxes(x, axes: axes, sizes: nil, name: "separable_filter")
    guard taps.allSatisfy({ !$0.isEmpty && $0.allSatisfy { $0.isFinite } }) else {
        throw EngineError.value("separable_filter: every kernel needs at least one finite tap")
    }
    var y = x
    if !y.dtype.isFloatingPoint { y = try cast(y, to: .float32) }
    for (ax, k) in zip(norm, taps) { y = try resampleAxis(y, axis: ax, plan: try ResamplePlan.filter(k, size: y.shape[ax])) }
    return y
}

/// Gaussian blur along `axes`: normalised taps exp(-((t - (n - 1) / 2) / sigma)^2 / 2), n taps
/// per axis, 'same' zero padding (jax's gaussian_blur, as two 1-D passes). Differentiable in x.
public func gaussianBlur(_ x: Tensor, axes: [Int], sizes: [Int], sigmas: [Double]) throws -> Tensor {
    guard sizes.count == axes.count, sigmas.count == axes.count else {
        throw EngineError.value("gaussian_blur needs one kernel size and one sigma per axis (\(axes.count))")
    }
    guard sizes.allSatisfy({ $0 >= 1 && $0 <= 1 << 20 }), sigmas.allSatisfy({ $0.isFinite && $0 != 0 }) else {
        throw EngineError.value("gaussian_blur: kernel sizes must be in 1...2^20 and sigmas finite and non-zero; got \(sizes), \(sigmas)")
    }
    let taps = zip(sizes, sigmas).map { n, s -> [Double] in
        let k = (0..<n).map { t -> Double in
            let u = (Double(t) - Double(n - 1) / 2) / s
            return exp(-0.5 * u * u)
        }
        let total = k.reduce(0, +)
        return k.map { $0 / total }
    }
    return try separableFilter(x, axes: axes, taps: taps)
}

// MARK: - Sampling at coordinates

enum FillMode {
    case constant, nearest, wrap, mirror, reflect

    init(_ name: String) throws {
        switch name {
        case "constant": self = .constant
        case "nearest": self = .nearest
        case "wrap": self = .wrap
        case "mirror": self = .mirror
        case "reflect": self = .reflect
        default: throw EngineError.value("fill_mode must be one of constant, nearest, wrap, mirror, reflect; got '\(name)'")
        }
    }

    @inline(__always)
    static func floorMod(_ a: Int, _ m: Int) -> Int {
        let r = a % m
        return r < 0 ? r + m : r
    }

    /// jax's index fixers: an in-range index for `i` on an axis of `size` > 0.
    @inline(__always)
    func fix(_ i: Int, _ size: Int) -> Int {
        switch self {
        case .constant: return i
        case .nearest: return Swift.min(Swift.max(i, 0), size - 1)
        case .wrap: return FillMode.floorMod(i, size)
        case .mirror:
            if size == 1 { return 0 }
            let s = size - 1
            return abs(FillMode.floorMod(i + s, 2 * s) - s)
        case .reflect:
            let s = 2 * size  // mirror of 2i + 1 on 2 * size + 1, halved
            let m = abs(FillMode.floorMod(2 * i + 1 + s, 2 * s) - s)  // odd, so >= 1
            return (m - 1) / 2
        }
    }
}

/// Sampling geometry of x viewed as (N, S_1 ... S_d, C) at points of coords (Nc, P, d).
struct SampleGeometry {
    let n: Int, spatial: [Int], strides: [Int], c: Int, points: Int, coordBatch: Int
    let order: Int, mode: FillMode
    var d: Int { spatial.count }
    var corners: Int { order == 0 ? 1 : 1 << spatial.count }

    /// Writes each corner's element offset (in units of C), weight and validity for one point;
    /// `lo`/`frac` are scratch of length d.
    @inline(__always)
    func corners(_ coord: UnsafePointer<Double>, _ lo: UnsafeMutablePointer<Int>, _ frac: UnsafeMutablePointer<Double>,
                 _ offsets: UnsafeMutablePointer<Int>, _ weights: UnsafeMutablePointer<Double>,
                 _ valid: UnsafeMutablePointer<Bool>) {
        // Coordinates far outside any image are clamped first so the Int conversion cannot trap;
        // NaN is treated as far below the image.
        let limit = 4.0e15
        for k in 0..<d {
            var v = coord[k]
            if v.isNaN { v = -limit }
            v = Swift.min(Swift.max(v, -limit), limit)
            if order == 0 {
                lo[k] = Int(v.rounded(.toNearestOrAwayFromZero))
                frac[k] = 0
            } else {
                let f = v.rounded(.down)
                lo[k] = Int(f)
                frac[k] = v - f
            }
        }
        for corner in 0..<corners {
            var off = 0, w = 1.0, ok = true
            for k in 0..<d {
                let up = (corner >> k) & 1 == 1
                let i = lo[k] + (up ? 1 : 0)
                if order == 1 { w *= up ? frac[k] : 1 - frac[k] }
                if mode == .constant {
                    if i < 0 || i >= spatial[k] { ok = false; continue }
                    off += i * strides[k]
                } else {
                    off += mode.fix(i, spatial[k]) * strides[k]
                }
            }
            offsets[corner] = off
            weights[corner] = w
            valid[corner] = ok
        }
    }
}

private struct GridSampleForward: NumericVisitor {
    let x: Tensor, coords: Tensor, out: Tensor, g: SampleGeometry, fill: Double
    func visit<T: NumElem>(_: T.Type) throws {
        let px = x.pointer(T.self), pc = coords.pointer(Double.self), po = out.pointer(T.self)
        let g = self.g, c = g.c, d = g.d, nc = g.corners
        let cval = T(fromDouble: fill).doubleValue  // jax casts cval to the input dtype
        let image = g.spatial.reduce(1, *) * c
        parallelFor(g.n * g.points, cost: nc * (c + d)) { range in
            let lo = UnsafeMutablePointer<Int>.allocate(capacity: Swift.max(d, 1))
            let frac = UnsafeMutablePointer<Double>.allocate(capacity: Swift.max(d, 1))
            let offs = UnsafeMutablePointer<Int>.allocate(capacity: nc)
            let ws = UnsafeMutablePointer<Double>.allocate(capacity: nc)
            let ok = UnsafeMutablePointer<Bool>.allocate(capacity: nc)
            let acc = UnsafeMutablePointer<Double>.allocate(capacity: Swift.max(c, 1))
            defer { lo.deallocate(); frac.deallocate(); offs.deallocate(); ws.deallocate(); ok.deallocate(); acc.deallocate() }
            for r in range {
                let b = r / g.points, p = r % g.points
                let cb = g.coordBatch == 1 ? 0 : b
                g.corners(pc + (cb * g.points + p) * d, lo, frac, offs, ws, ok)
                acc.update(repeating: 0, count: c)
                let base = px + b * image
                for k in 0..<nc {
                    let w = ws[k]
                    if ok[k] {
                        let src = base + offs[k] * c
                        for ch in 0..<c { acc[ch] += w * src[ch].doubleValue }
                    } else {
                        for ch in 0..<c { acc[ch] += w * cval }
                    }
                }
                let dst = po + r * c
                if T.isFloat {
                    for ch in 0..<c { dst[ch] = T(fromDouble: acc[ch]) }
                } else {
                    // Integer images round half away from zero, as jax does.
                    for ch in 0..<c { dst[ch] = T(fromDouble: acc[ch].rounded(.toNearestOrAwayFromZero)) }
                }
            }
        }
    }
}

/// Adjoint with respect to the image: scatters the output gradient onto the sampled corners.
/// One task per (image, channel), so scatters never race.
private struct GridSampleAdjoint: FloatVisitor {
    let gy: Tensor, coords: Tensor, dx: Tensor, g: SampleGeometry
    func visit<T: FloatElem>(_: T.Type) throws {
        let pg = gy.pointer(T.self), pc = coords.pointer(Double.self), pd = dx.pointer(T.self)
        let g = self.g, c = g.c, d = g.d, nc = g.corners
        let image = g.spatial.reduce(1, *) * c
        parallelFor(g.n * c, cost: g.points * nc * d) { range in
            let lo = UnsafeMutablePointer<Int>.allocate(capacity: Swift.max(d, 1))
            let frac = UnsafeMutablePointer<Double>.allocate(capacity: Swift.max(d, 1))
            let offs = UnsafeMutablePointer<Int>.allocate(capacity: nc)
            let ws = UnsafeMutablePointer<Double>.allocate(capacity: nc)
            let ok = UnsafeMutablePointer<Bool>.allocate(capacity: nc)
            defer { lo.deallocate(); frac.deallocate(); offs.deallocate(); ws.deallocate(); ok.deallocate() }
            for task in range {
                let b = task / c, ch = task % c
                let cb = g.coordBatch == 1 ? 0 : b
                let base = pd + b * image + ch
                for p in 0..<g.points {
                    g.corners(pc + (cb * g.points + p) * d, lo, frac, offs, ws, ok)
                    let gv = pg[(b * g.points + p) * c + ch]
                    for k in 0..<nc where ok[k] { base[offs[k] * c] += T(fromDouble: ws[k]) * gv }
                }
            }
        }
    }
}

private func gridSampleAdjoint(_ gy: Tensor, _ coords: Tensor, _ g: SampleGeometry, xShape: [Int], dtype: DType) throws -> Tensor {
    let gw = try cast(gy, to: dtype)
    let dx = try Tensor(zeros: xShape, dtype: dtype)
    try dispatchFloat(dtype, GridSampleAdjoint(gy: gw, coords: coords, dx: dx, g: g))
    return dx
}

/// Samples x (N, S_1 ... S_d, C) at coords (N or 1, P_1 ... P_k, d) (positions in pixels, axis
/// order of S) with nearest (order 0, rounding half away from zero) or linear (order 1)
/// interpolation; outside points follow `mode` (constant: `fillValue`). Output (N, P..., C) of
/// x's dtype (integers rounded). Differentiable with respect to x.
public func gridSample(_ x0: Tensor, _ coords0: Tensor, order: Int, mode: String, fillValue: Double) throws -> Tensor {
    guard order == 0 || order == 1 else { throw EngineError.value("order must be 0 or 1, got \(order)") }
    let fm = try FillMode(mode)
    guard x0.rank >= 2 else { throw EngineError.value("grid_sample expects an input (N, *spatial, C), got \(x0.shape)") }
    let d = x0.rank - 2
    guard coords0.rank >= 2, coords0.shape[coords0.rank - 1] == d,
          coords0.shape[0] == 1 || coords0.shape[0] == x0.shape[0] else {
        throw EngineError.value("grid_sample: coordinates \(coords0.shape) do not match input \(x0.shape) (expected (N or 1, ..., \(d)))")
    }
    guard d < 24 else { throw EngineError.value("grid_sample supports at most 23 spatial dimensions, got \(d)") }
    guard coords0.dtype != .bool, x0.dtype != .bool else { throw EngineError.type("grid_sample does not take bool tensors") }
    guard fillValue.isFinite || x0.dtype.isFloatingPoint else {
        throw EngineError.value("fill_value \(fillValue) is not representable in \(x0.dtype)")
    }
    let spatial = Array(x0.shape[1..<(1 + d)])
    if fm != .constant && spatial.contains(0) && coords0.count > 0 {
        throw EngineError.value("fill_mode '\(mode)' cannot sample an input with an empty axis (\(x0.shape))")
    }
    if x0.dtype.isHalf {
        return try cast(try gridSample(try cast(x0, to: .float32), coords0, order: order, mode: mode, fillValue: fillValue), to: x0.dtype)
    }
    let coords = coords0.dtype == .float64 ? coords0 : try cast(coords0, to: .float64)
    var strides = repeatedInts(1, count: d)
    for k in stride(from: d - 2, through: 0, by: -1) { strides[k] = strides[k + 1] * spatial[k + 1] }
    let points = coords.shape[1..<(coords.rank - 1)].reduce(1, *)
    let g = SampleGeometry(n: x0.shape[0], spatial: spatial, strides: strides, c: x0.shape[x0.rank - 1], points: points,
                           coordBatch: coords.shape[0], order: order, mode: fm)
    let outShape = [x0.shape[0]] + Array(coords.shape[1..<(coords.rank - 1)]) + [g.c]
    let out = try Tensor(zeros: outShape, dtype: x0.dtype)
    try dispatchNumeric(x0.dtype, GridSampleForward(x: x0, coords: coords, out: out, g: g, fill: fillValue))
    if x0.dtype.isFloatingPoint {
        let (xs, dt) = (x0.shape, x0.dtype)
        Tape.record(out, [x0]) { gy in [try gridSampleAdjoint(gy, coords, g, xShape: xs, dtype: dt)] }
    }
    return out
}

/// jax.scipy.ndimage.map_coordinates (order 0 or 1): x of rank d sampled at coords (d, *out).
/// Differentiable with respect to x.
public func mapCoordinates(_ x: Tensor, _ coords: Tensor, order: Int, mode: String, fillValue: Double) throws -> Tensor {
    guard coords.rank >= 1, coords.shape[0] == x.rank else {
        throw EngineError.value("map_coordinates: the first dimension of coordinates \(coords.shape) must equal the input rank \(x.rank)")
    }
    let outShape = Array(coords.shape.dropFirst())
    // (d, *out) -> (1, *out, d): the grid sampler's layout, with one batch and one channel.
    let perm = Array(1..<coords.rank) + [0]
    let c = try reshape(try transpose(coords, perm), [1] + outShape + [x.rank])
    let y = try gridSample(try reshape(x, [1] + x.shape + [1]), c, order: order, mode: mode, fillValue: fillValue)
    return try reshape(y, outShape)
}

private let resampling = ["nearest", "linear", "bilinear", "trilinear", "triangle", "cubic", "bicubic", "tricubic",
                          "lanczos3", "lanczos5"]
private let fillModes = ["constant", "nearest", "wrap", "mirror", "reflect"]

let imageOps: [OpDef] = [
    OpDef(unary: "resize", attrs: [.ints("axes"), .ints("sizes"), .string("method", choices: resampling),
                                  .bool("antialias", default: false)],
          doc: "x resampled to sizes along axes (jax.image.resize's methods)") { x, a in
        try resize(x, axes: a.requiredInts("axes"), sizes: a.requiredInts("sizes"), method: a.string("method"),
                   antialias: a.bool("antialias"))
    },
    OpDef(unary: "scale_and_translate",
          attrs: [.ints("axes"), .ints("sizes"), .floats("scales"), .floats("translations"),
                  .string("method", choices: resampling), .bool("antialias", default: true)],
          doc: "jax.image.scale_and_translate: x resampled along axes with a scale and translation each") { x, a in
        try scaleAndTranslate(x, axes: a.requiredInts("axes"), sizes: a.requiredInts("sizes"),
                              scales: a.requiredFloats("scales"), translations: a.requiredFloats("translations"),
                              method: a.string("method"), antialias: a.bool("antialias"))
    },
    OpDef(unary: "separable_filter", attrs: [.ints("axes"), .ints("sizes"), .floats("taps")],
          doc: "x correlated along each of axes with its own taps (sizes[i] of the concatenated taps), zero padded, same size") { x, a in
        let axes = try a.requiredInts("axes"), sizes = try a.requiredInts("sizes"), flat = try a.requiredFloats("taps")
        guard sizes.count == axes.count, sizes.allSatisfy({ $0 >= 1 && $0 <= flat.count }), sizes.reduce(0, +) == flat.count else {
            throw EngineError.value("separable_filter: sizes \(sizes) must be positive, one per axis, and sum to the \(flat.count) taps")
        }
        var taps: [[Double]] = [], at = 0
        for n in sizes { taps.append(Array(flat[at..<(at + n)])); at += n }
        return try separableFilter(x, axes: axes, taps: taps)
    },
    OpDef(unary: "gaussian_blur", attrs: [.ints("axes"), .ints("sizes"), .floats("sigmas")],
          doc: "x blurred along axes by Gaussian kernels of the given sizes and sigmas") { x, a in
        try gaussianBlur(x, axes: a.requiredInts("axes"), sizes: a.requiredInts("sizes"), sigmas: a.requiredFloats("sigmas"))
    },
    OpDef("grid_sample", inputs: ["x", "coordinates"],
          attrs: [.int("order", default: 1), .string("fill_mode", default: "constant", choices: fillModes), .float("fill_value", default: 0)],
          grad: .wrt(["x"]), doc: "x sampled at coordinates (batched map_coordinates)") { t, a in
        try gridSample(t[0], t[1], order: a.int("order"), mode: a.string("fill_mode"), fillValue: a.float("fill_value"))
    },
    OpDef("map_coordinates", inputs: ["x", "coordinates"],
          attrs: [.int("order"), .string("fill_mode", default: "constant", choices: fillModes), .float("fill_value", default: 0)],
          grad: .wrt(["x"]), doc: "scipy.ndimage.map_coordinates: x interpolated (order 0 or 1) at coordinates") { t, a in
        try mapCoordinates(t[0], t[1], order: a.int("order"), mode: a.string("fill_mode"), fillValue: a.float("fill_value"))
    },
]
