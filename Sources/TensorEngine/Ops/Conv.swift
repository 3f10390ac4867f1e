/// N-D convolution (1 to 3 spatial dimensions, channels last) via im2col + GEMM, with groups
/// (depthwise = groups == channels) and its adjoint, the transposed convolution. Forward and
/// input-gradient passes of 3x3 stride-1 2-D convs with enough channels go to Winograd.swift.
/// Every shape is handled as 3-D: missing leading spatial dimensions have size 1.

struct ConvGeometry {
    var n = 0, c = 0, o = 0, groups = 1
    var inSize = [1, 1, 1], kernel = [1, 1, 1], outSize = [1, 1, 1]
    var strides = [1, 1, 1], dilation = [1, 1, 1], pads = [0, 0, 0]
    var cg: Int { c / groups }
    var og: Int { o / groups }
    var rowsPerImage: Int { outSize.reduce(1, *) }
    /// Output lines (one (z, y) row of `outSize[2]` pixels) per image: im2col's chunk unit.
    var linesPerImage: Int { outSize[0] * outSize[1] }
    var kk: Int { kernel.reduce(1, *) * cg }
    var inPerImage: Int { inSize.reduce(1, *) * c }
}

/// Pads a spatial list of rank 1...3 to 3 entries with `fill` in front.
private func spatial3(_ v: [Int], _ fill: Int) -> [Int] { repeatedInts(fill, count: 3 - v.count) + v }

/// Copies `n` channels; a short run is a plain loop, not a call to memmove (a 1-channel
/// input made im2col spend most of its time in memmove and memset calls of one element).
@inline(__always)
private func copyChannels<T>(_ src: UnsafePointer<T>, _ dst: UnsafeMutablePointer<T>, _ n: Int) {
    if n >= 16 { dst.update(from: src, count: n) } else { for j in 0..<n { dst[j] = src[j] } }
}

@inline(__always)
private func zeroChannels<T: BLASFloat>(_ dst: UnsafeMutablePointer<T>, _ n: Int) {
    if n >= 16 { dst.update(repeating: 0, count: n) } else { for j in 0..<n { dst[j] = 0 } }
}

/// Where a conv's taps read for one output line: the geometry as scalars (arrays in an inner
/// loop cost a bounds check and a retain each), walked tap by tap.
private struct TapWalk {
    let d, h, w, kd, kh, kw, sz, sy, sx, dz, dy, dx, pz, py, px, od, oh, ow: Int

    init(_ g: ConvGeometry) {
        (d, h, w) = (g.inSize[0], g.inSize[1], g.inSize[2])
        (kd, kh, kw) = (g.kernel[0], g.kernel[1], g.kernel[2])
        (sz, sy, sx) = (g.strides[0], g.strides[1], g.strides[2])
        (dz, dy, dx) = (g.dilation[0], g.dilation[1], g.dilation[2])
        (pz, py, px) = (g.pads[0], g.pads[1], g.pads[2])
        (od, oh, ow) = (g.outSize[0], g.outSize[1], g.outSize[2])
    }

    /// Calls `body(tap, inputRow, kx)` for every tap of output line `line` (image, z, y):
    /// `inputRow` is the input row's first pixel index (image, z, y, x = 0), nil where the
    /// row lies in the padding.
    @inline(__always)
    func forEachTap(line: Int, _ body: (_ tap: Int, _ inputRow: Int?, _ kx: Int) -> Void) {
        let img = line / (od * oh), oz = (line / oh) % od, oy = line % oh
        var tap = 0
        for kz in 0..<kd {
            let iz = oz * sz - pz + kz * dz
            for ky in 0..<kh {
                let iy = oy * sy - py + ky * dy
                let row = iz >= 0 && iz < d && iy >= 0 && iy < h ? ((img * d + iz) * h + iy) * w : nil
                for kx in 0..<kw {
                    body(tap, row, kx)
                    tap += 1
                }
            }
        }
    }

    /// At kernel column `kx` of the input row starting at element `row` (pixel index times
    /// channels is the caller's): the output pixels whose input lies inside the row (not in
    /// the padding), the input pixel the first of them reads, and the pixels between the
    /// inputs of neighbouring ones (0 for one pixel: a stride may be too large to multiply out).
    @inline(__always)
    func run(row: Int, kx: Int) -> (pixels: Range<Int>, first: Int, step: Int) {
        let shift = kx * dx - px  // output pixel ox reads input column ox * sx + shift
        // ceil(a / sx) for a > 0, without forming a + sx (a stride may be near Int.max).
        func ceilDiv(_ a: Int) -> Int { a <= 0 ? 0 : (a - 1) / sx + 1 }
        let lo = Swift.min(ceilDiv(-shift), ow)
        let pixels = lo..<Swift.max(Swift.min(ceilDiv(w - shift), ow), lo)
        return pixels.isEmpty ? (pixels, 0, 0) : (pixels, row + lo * sx + shift, pixels.count > 1 ? sx : 0)
    }
}

/// Columns (kernel position, group channel) for output lines [l0, l1) and group `gi`; a line
/// is one (image, z, y) row of the output, `ow` pixels.
private func im2col<T: BLASFloat>(_ x: UnsafePointer<T>, _ g: ConvGeometry, _ gi: Int, _ l0: Int, _ l1: Int,
                                  _ cols: UnsafeMutablePointer<T>) {
    let walk = TapWalk(g), (c, cg, kk, ow) = (g.c, g.cg, g.kk, g.outSize[2])
    let x0 = x + gi * cg
    parallelFor(l1 - l0, cost: ow * kk) { range in
        for r in range {
            let lineCols = cols + r * ow * kk
            walk.forEachTap(line: l0 + r) { tap, row, kx in
                // Per tap: zeros left and right of the row, a strided copy between, with no
                // per-pixel tests (they were most of the time of a 1-channel conv).
                let dst = lineCols + tap * cg
                let (inside, first, step) = row.map { walk.run(row: $0, kx: kx) } ?? (0..<0, 0, 0)
                for ox in 0..<inside.lowerBound { zeroChannels(dst + ox * kk, cg) }
                let src = x0 + first * c, stride = step * c
                if cg == 1 {
                    for (j, ox) in inside.enumerated() { dst[ox * kk] = src[j * stride] }
                } else {
                    for (j, ox) in inside.enumerated() { copyChannels(src + j * stride, dst + ox * kk, cg) }
                }
                for ox in inside.upperBound..<ow { zeroChannels(dst + ox * kk, cg) }
            }
        }
    }
}

/// im2col for a one-channel input, tap-major: `cols[tap][pixel]` for output lines [l0, l1),
/// so that each tap's pixels are one contiguous run (a strided store per element, pixel-major,
/// was a third of a 1-channel first layer's time); the GEMM reads it transposed.
private func im2colOneChannel<T: BLASFloat>(_ x: UnsafePointer<T>, _ g: ConvGeometry, _ l0: Int, _ l1: Int,
                                            _ cols: UnsafeMutablePointer<T>) {
    let walk = TapWalk(g), ow = g.outSize[2], rows = (l1 - l0) * ow
    parallelFor(l1 - l0, cost: ow * g.kk) { range in
        for r in range {
            walk.forEachTap(line: l0 + r) { tap, row, kx in
                let dst = cols + tap * rows + r * ow
                let (inside, first, step) = row.map { walk.run(row: $0, kx: kx) } ?? (0..<0, 0, 0)
                for ox in 0..<inside.lowerBound { dst[ox] = 0 }
                let src = x + first, d = dst + inside.lowerBound
                if step == 1 {
                    d.update(from: src, count: inside.count)
                } else {
                    for j in 0..<inside.count { d[j] = src[j * step] }
                }
                for ox in inside.upperBound..<ow { dst[ox] = 0 }
            }
        }
    }
}

/// Adds columns back into the input-shaped buffer (the adjoint of im2col).
private func col2im<T: BLASFloat>(_ cols: UnsafePointer<T>, _ g: ConvGeometry, _ gi: Int, _ n0: Int, _ n1: Int,
                                  _ dx: UnsafeMutablePointer<T>) {
    let walk = TapWalk(g), (c, cg, kk, ow) = (g.c, g.cg, g.kk, g.outSize[2])
    let lines = g.linesPerImage, dx0 = dx + gi * cg
    // One task per image: windows never cross images, so writes never race.
    parallelFor(n1 - n0, cost: g.rowsPerImage * g.kk) { range in
        for li in range {
            for l in 0..<lines {
                let lineCols = cols + (li * lines + l) * ow * kk
                walk.forEachTap(line: (n0 + li) * lines + l) { tap, row, kx in
                    guard let row = row else { return }
                    let (inside, first, step) = walk.run(row: row, kx: kx)
                    let src = lineCols + tap * cg, dst = dx0 + first * c, stride = step * c
                    for (j, ox) in inside.enumerated() {
                        let d = dst + j * stride, s = src + ox * kk
                        for ch in 0..<cg { d[ch] += s[ch] }
                    }
                }
            }
        }
    }
}

/// Bytes of one Winograd task's transformed tiles and products (Winograd.swift): about one
/// core's L2.
let convChunkBytes = 1 << 20

/// Bytes of im2col columns and GEMM output per chunk: both stay in cache between im2col and
/// GEMM (a 1-channel 3x3 conv of 128x28x28 images to 32 channels, K = 9, ran 6.7 ms with
/// 4 MB of columns and a 14 MB output per chunk, 4.0 ms with 1 MB of both).
let im2colChunkBytes = 1 << 20

/// Output lines per im2col chunk, bounding its columns and output rows to `im2colChunkBytes`:
/// GEMM then reads columns im2col has just written while they are still in cache (16x32x32x64, 3x3: one
/// image per chunk ran ~20 ms against ~30 ms for 13 images per 32 MB chunk; one 128x128x64
/// image, one 38 MB chunk when chunks were whole images: 10.1-10.7 ms against 7.4-8.0). The
/// input-gradient pass takes whole images: col2im's threads split by image so that their
/// writes never overlap.
private func chunkLines(_ g: ConvGeometry, _ itemSize: Int, wholeImages: Bool) -> Int {
    let perLine = Swift.max(1, g.outSize[2] * (g.kk + g.og) * itemSize)
    let lines = Swift.max(1, Swift.min(g.n * g.linesPerImage, im2colChunkBytes / perLine))
    return wholeImages ? Swift.max(1, lines / g.linesPerImage) * g.linesPerImage : lines
}

private enum ConvPass { case forward, inputGrad, kernelGrad }

/// The three GEMM passes of a convolution with geometry `g`:
/// forward: y = conv(x, w); inputGrad: dx = conv^T(dy, w); kernelGrad: dw = conv^T_w(x, dy).
private struct ConvKernel: BLASVisitor {
    let pass: ConvPass, g: ConvGeometry
    let a: Tensor, b: Tensor, out: Tensor
    /// The forward pass's epilogue (Epilogue.swift): a bias and its activation, if any.
    var bias: Tensor? = nil, activation: EpilogueActivation? = nil
    /// A max pool over the forward pass's output (`conv`'s `maxPool`): `out` is the pooled
    /// result. Only for one group, off the Winograd path.
    var pool: PoolWindows? = nil
    func visit<T: BLASFloat>(_: T.Type) throws {
        let epilogue = activation.map { Epilogue<T>(bias: bias.map { UnsafePointer($0.pointer(T.self)) }, activation: $0) }
        if let pool = pool { return try pooledForward(T.self, pool, epilogue) }
        guard g.n > 0, g.kk > 0, g.rowsPerImage > 0 else {
            // No products (no input channels): the output is zeros, still to be finished.
            if let e = epilogue, g.o > 0 { e.apply(out.pointer(T.self), rows: out.count / g.o, width: g.o, ld: g.o) }
            return
        }
        if pass != .kernelGrad, let wg = winogradGeometry(forward: pass == .forward, g) {
            return try winogradPass(T.self, inputGrad: pass == .inputGrad, wg, x: a, w: b, y: out, epilogue: epilogue)
        }
        let ow = g.outSize[2], lines = g.n * g.linesPerImage
        let unit = pass == .inputGrad ? g.linesPerImage : 1, threads = Threading.numThreads
        var chunk = chunkLines(g, MemoryLayout<T>.size, wholeImages: pass == .inputGrad)
        // Forward and input-gradient chunks write disjoint parts of their output, so each runs
        // start to end on one thread (im2col, its GEMM and the epilogue or col2im, its columns
        // in that core's cache), claimed one by one. Splitting each step over the threads
        // instead cost a wake-up and a wait per step, two per chunk (28 for the MNIST convnet's
        // first layer). At least two chunks per thread where the lines allow. The kernel
        // gradient sums every chunk into one dW, so its chunks run in turn, each step threaded.
        let byTask = pass != .kernelGrad && threads > 1
        if byTask {
            let units = lines / unit
            chunk = Swift.max(unit, Swift.min(chunk, (units + 2 * threads - 1) / (2 * threads) * unit))
        }
        let tasks = (lines + chunk - 1) / chunk
        func runChunks(_ range: Range<Int>) throws {
            // im2col writes every column entry (padding included) and the input-gradient GEMM
            // runs with beta = 0, so the buffer needs no zeroing.
            let cols = try Tensor(empty: [chunk * ow * g.kk], dtype: T.dtype), pc = cols.pointer(T.self)
            defer { withExtendedLifetime(cols) {} }
            for task in range {
                // rows: output pixels in the chunk; first: the chunk's first pixel.
                let l0 = task * chunk, l1 = Swift.min(lines, l0 + chunk), rows = (l1 - l0) * ow, first = l0 * ow
                for gi in 0..<g.groups {
                    switch pass {
                    case .forward:
                        // y[:, group cols] = cols @ W[:, group cols]
                        let tapMajor = im2colInto(pc, g, gi, l0, l1, T.self)
                        T.gemm(transA: tapMajor, transB: false, m: rows, n: g.og, k: g.kk, a: pc, lda: tapMajor ? rows : g.kk,
                               b: b.pointer(T.self) + gi * g.og, ldb: g.o, beta: 0,
                               c: out.pointer(T.self) + first * g.o + gi * g.og, ldc: g.o,
                               epilogue: g.groups == 1 ? epilogue : nil)
                    case .inputGrad:
                        // cols = dy[:, group] @ W[:, group]^T, then scatter into dx
                        T.gemm(transA: false, transB: true, m: rows, n: g.kk, k: g.og,
                               a: a.pointer(T.self) + first * g.o + gi * g.og, lda: g.o,
                               b: b.pointer(T.self) + gi * g.og, ldb: g.o, beta: 0, c: pc, ldc: g.kk)
                        col2im(pc, g, gi, l0 / g.linesPerImage, l1 / g.linesPerImage, out.pointer(T.self))
                    case .kernelGrad:
                        // dW[:, group] += cols^T @ dy[:, group]
                        im2col(a.pointer(T.self), g, gi, l0, l1, pc)
                        T.gemm(transA: true, transB: false, m: g.kk, n: g.og, k: rows, a: pc, lda: g.kk,
                               b: b.pointer(T.self) + first * g.o + gi * g.og, ldb: g.o, beta: 1,
                               c: out.pointer(T.self) + gi * g.og, ldc: g.o)
                    }
                }
            }
        }
        if byTask { try forEachTask(tasks, runChunks) } else { try runChunks(0..<tasks) }
        // Grouped: each chunk wrote one group's channels; the bias spans them all.
        if g.groups > 1, let e = epilogue { e.apply(out.pointer(T.self), rows: out.count / g.o, width: g.o, ld: g.o) }
    }

    /// The forward pass's columns for output lines [l0, l1) and group `gi`; true when they are
    /// tap-major (a one-channel input: `im2colOneChannel`).
    private func im2colInto<T: BLASFloat>(_ cols: UnsafeMutablePointer<T>, _ g: ConvGeometry, _ gi: Int, _ l0: Int,
                                          _ l1: Int, _: T.Type) -> Bool {
        if g.c == 1 {
            im2colOneChannel(a.pointer(T.self), g, l0, l1, cols)
            return true
        }
        im2col(a.pointer(T.self), g, gi, l0, l1, cols)
        return false
    }

    /// The forward pass with a max pool: chunks of whole images (a pooling window never
    /// crosses one), each convolved into scratch and pooled from there while it is in the
    /// core's cache, so the convolution's output is never written out: a first layer's output
    /// is its largest tensor (11 MB for the MNIST convnet's 128 images), and writing it and
    /// reading it back was most of that layer's time.
    private func pooledForward<T: BLASFloat>(_: T.Type, _ pool: PoolWindows, _ epilogue: Epilogue<T>?) throws {
        // The convolution's output is never allocated whole, so its sizes are checked here.
        let sizes = SizeCheck("conv (max_pool_size)")
        let colsPerImage = try sizes.multiply(g.rowsPerImage, g.kk), outPerImage = try sizes.multiply(g.rowsPerImage, g.o)
        let perImage = Swift.max(1, try sizes.multiply(try sizes.add(colsPerImage, outPerImage), MemoryLayout<T>.size))
        let threads = Threading.numThreads
        var images = Swift.max(1, Swift.min(g.n, im2colChunkBytes / perImage))
        if threads > 1 { images = Swift.max(1, Swift.min(images, (g.n + 2 * threads - 1) / (2 * threads))) }
        let tasks = (g.n + images - 1) / images, ow = g.outSize[2]
        let pooledRows = pool.outSize[0] * pool.outSize[1], pooledPerImage = pool.outSize.reduce(1, *) * g.o
        let table = pool.table
        let colsCount = try sizes.multiply(images, colsPerImage), outCount = try sizes.multiply(images, outPerImage)
        func runChunks(_ range: Range<Int>) throws {
            let cols = try Tensor(empty: [colsCount], dtype: T.dtype)
            let convolved = try Tensor(empty: [outCount], dtype: T.dtype)
            let pc = cols.pointer(T.self), py = convolved.pointer(T.self)
            defer { withExtendedLifetime((cols, convolved)) {} }
            for task in range {
                let i0 = task * images, i1 = Swift.min(g.n, i0 + images)
                let l0 = i0 * g.linesPerImage, l1 = i1 * g.linesPerImage
                let rows = (l1 - l0) * ow, tapMajor = im2colInto(pc, g, 0, l0, l1, T.self)
                T.gemm(transA: tapMajor, transB: false, m: rows, n: g.o, k: g.kk, a: pc, lda: tapMajor ? rows : g.kk,
                       b: b.pointer(T.self), ldb: g.o, beta: 0, c: py, ldc: g.o, epilogue: epilogue)
                table.withUnsafeBufferPointer { bounds in
                    poolRows(isMax: true, UnsafePointer(py), out.pointer(T.self) + i0 * pooledPerImage,
                             rows: 0..<((i1 - i0) * pooledRows), c: g.o, pool, bounds: bounds.baseAddress!)
                }
            }
        }
        if threads > 1 { try forEachTask(tasks, runChunks) } else { try runChunks(0..<tasks) }
    }
}

private func runConv(_ pass: ConvPass, _ g: ConvGeometry, _ a: Tensor, _ b: Tensor, outShape: [Int],
                     bias: Tensor? = nil, activation: EpilogueActivation? = nil) throws -> Tensor {
    // Only the forward pass overwrites every output element; the others accumulate.
    let out = pass == .forward && g.kk > 0 ? try Tensor(empty: outShape, dtype: a.dtype) : try Tensor(zeros: outShape, dtype: a.dtype)
    try dispatchBLAS(a.dtype, ConvKernel(pass: pass, g: g, a: a, b: b, out: out, bias: bias, activation: activation))
    return out
}

/// Records the VJP shared by conv and conv_transpose: both are linear in each argument,
/// so each one's gradient is a pass of the other with geometry `g`.
private func recordConv(_ out: Tensor, x: Tensor, w: Tensor, g: ConvGeometry, transposed: Bool) {
    Tape.record(out, [x, w]) { gy in try convVJP(gy, x: x, w: w, g: g, transposed: transposed) }
}

private func convVJP(_ gy0: Tensor, x: Tensor, w: Tensor, g: ConvGeometry, transposed: Bool) throws -> [Tensor?] {
    let gy = try cast(gy0, to: x.dtype)
    let (wantX, wantW) = (Tape.needsInputGrad(0), Tape.needsInputGrad(1))
    if transposed {
        // out = conv^T(x, w): dx = conv(gy, w), dw = kernelGrad(gy, x)
        return [wantX ? try runConv(.forward, g, gy, w, outShape: x.shape) : nil,
                wantW ? try runConv(.kernelGrad, g, gy, x, outShape: w.shape) : nil]
    }
    return [wantX ? try runConv(.inputGrad, g, gy, w, outShape: x.shape) : nil,
            wantW ? try runConv(.kernelGrad, g, x, gy, outShape: w.shape) : nil]
}

private func convOperands(_ x0: Tensor, _ w0: Tensor, _ name: String) throws -> (Tensor, Tensor, Int) {
    let spatial = x0.rank - 2
    guard (1...3).contains(spatial), w0.rank == x0.rank else {
        throw EngineError.value("\(name) expects input (N, *spatial, C) with 1 to 3 spatial dims and a kernel of the same rank; got \(x0.shape) and \(w0.shape)")
    }
    let (x, w) = try promote(x0, w0)
    guard x.dtype.isFloatingPoint else { throw EngineError.type("\(name) needs float inputs, got \(x.dtype)") }
    return (x, w, spatial)
}

private func spatialAttr(_ v: [Int], _ spatial: Int, _ name: String) throws -> [Int] {
    let full = v.count == 1 ? repeatedInts(v[0], count: spatial) : v
    guard full.count == spatial, full.allSatisfy({ $0 > 0 }) else {
        throw EngineError.value("\(name) needs 1 or \(spatial) positive values, got \(v)")
    }
    return spatial3(full, 1)
}

/// The geometry of `conv(x, w, ...)` (operands from `convOperands`), validated.
private func convGeometry(_ x: Tensor, _ w: Tensor, _ spatial: Int, strides: [Int], padding: String, dilation: [Int],
                          groups: Int) throws -> ConvGeometry {
    var g = ConvGeometry()
    g.n = x.shape[0]
    g.c = x.shape[x.rank - 1]
    g.o = w.shape[w.rank - 1]
    g.groups = groups
    guard groups >= 1, g.c % groups == 0, g.o % groups == 0, w.shape[w.rank - 2] == g.c / groups else {
        throw EngineError.value("conv: input has \(g.c) channels, kernel \(w.shape) expects \(w.shape[w.rank - 2]) per group with \(groups) group(s)")
    }
    g.inSize = spatial3(Array(x.shape[1...spatial]), 1)
    g.kernel = spatial3(Array(w.shape[0..<spatial]), 1)
    g.strides = try spatialAttr(strides, spatial, "strides")
    g.dilation = try spatialAttr(dilation, spatial, "dilation")
    for d in 0..<3 {
        (g.outSize[d], g.pads[d]) = try windowGeometry(g.inSize[d], g.kernel[d], g.strides[d], g.dilation[d], padding, op: "conv")
    }
    return g
}

/// `conv` with `maxPool` in one kernel (`ConvKernel.pooledForward`), or nil where that kernel
/// does not apply and the caller composes the two ops.
private func convMaxPool(_ x0: Tensor, _ w0: Tensor, bias: Tensor?, activation: EpilogueActivation, strides: [Int],
                         padding: String, dilation: [Int], groups: Int, size: [Int], poolStrides: [Int]) throws -> Tensor? {
    let (x, w, spatial) = try convOperands(x0, w0, "conv")
    guard !x.dtype.isHalf, groups == 1, !Tape.shouldRecord([x, w] + (bias.map { [$0] } ?? [])) else { return nil }
    let g = try convGeometry(x, w, spatial, strides: strides, padding: padding, dilation: dilation, groups: groups)
    let windows = try PoolWindows(inSize: g.outSize, spatial: spatial, poolSize: size, strides: poolStrides,
                                  padding: "valid", op: "max_pool")
    let epilogue = bias != nil || activation != .none
    guard g.n > 0, g.kk > 0, g.rowsPerImage > 0, winogradGeometry(forward: true, g) == nil,
          !epilogue || epilogueFits(bias: bias, dtype: x.dtype, channels: g.o, rank: spatial + 2) else { return nil }
    let out = try Tensor(empty: [g.n] + Array(windows.outSize.suffix(spatial)) + [g.o], dtype: x.dtype)
    if out.count > 0 {
        try dispatchBLAS(x.dtype, ConvKernel(pass: .forward, g: g, a: x, b: w, out: out, bias: bias,
                                             activation: epilogue ? activation : nil, pool: windows))
    }
    return out
}

/// Convolution of x (N, *spatial, C) with kernel (*k, C / groups, O), "valid" or "same"
/// padding (TensorFlow's split: the extra pad goes after), then `activation(y + bias)` when
/// given (Epilogue.swift). Differentiable in all three.
///
/// With `maxPool` (window sizes and strides: one value or one per spatial dim), the result
/// is `pool(.max, that, ..., padding: "valid")`, computed without writing the convolution's
/// output where the kernel can (no tape recording, one group, off the Winograd path).
public func conv(_ x0: Tensor, _ w0: Tensor, bias: Tensor? = nil, activation: EpilogueActivation = .none,
                 strides: [Int] = [1], padding: String = "valid", dilation: [Int] = [1], groups: Int = 1,
                 maxPool: (size: [Int], strides: [Int])? = nil) throws -> Tensor {
    if let mp = maxPool {
        if let fused = try convMaxPool(x0, w0, bias: bias, activation: activation, strides: strides, padding: padding,
                                       dilation: dilation, groups: groups, size: mp.size, poolStrides: mp.strides) {
            return fused
        }
        let y = try conv(x0, w0, bias: bias, activation: activation, strides: strides, padding: padding,
                         dilation: dilation, groups: groups)
        return try pool(.max, y, poolSize: mp.size, strides: mp.strides)
    }
    let (x, w, spatial) = try convOperands(x0, w0, "conv")
    if x.dtype.isHalf {
        let r = try conv(try cast(x, to: .float32), try cast(w, to: .float32), strides: strides, padding: padding,
                         dilation: dilation, groups: groups)
        return try epilogueByOps(try cast(r, to: x.dtype), bias: bias, activation: activation)
    }
    let g = try convGeometry(x, w, spatial, strides: strides, padding: padding, dilation: dilation, groups: groups)
    let outShape = [g.n] + Array(g.outSize.suffix(spatial)) + [g.o]
    if bias != nil || activation != .none, epilogueFits(bias: bias, dtype: x.dtype, channels: g.o, rank: outShape.count) {
        let out = try runConv(.forward, g, x, w, outShape: outShape, bias: bias, activation: activation)
        recordEpilogue(out, [x, w], bias: bias, activation: activation) { gz in
            try convVJP(gz, x: x, w: w, g: g, transposed: false)
        }
        return out
    }
    let out = try runConv(.forward, g, x, w, outShape: outShape)
    recordConv(out, x: x, w: w, g: g, transposed: false)
    return try epilogueByOps(out, bias: bias, activation: activation)
}

/// 2-D convenience form of `conv` (NHWC input, (KH, KW, C, O) kernel).
public func conv2d(_ x: Tensor, _ w: Tensor, strides: [Int] = [1, 1], padding: String = "valid", dilation: [Int] = [1, 1]) throws -> Tensor {
    guard x.rank == 4 else { throw EngineError.value("conv2d expects a rank-4 NHWC input, got \(x.shape)") }
    return try conv(x, w, strides: strides, padding: padding, dilation: dilation)
}

/// Transposed convolution (the adjoint of `conv` w.r.t. its input): x (N, *spatial, C_in),
/// kernel (*k, C_out, C_in), output spatial size and leading pads given explicitly.
public func convTranspose(_ x0: Tensor, _ w0: Tensor, strides: [Int], padsBefore: [Int], outputSize: [Int],
                          dilation: [Int] = [1]) throws -> Tensor {
    let (x, w, spatial) = try convOperands(x0, w0, "conv_transpose")
    if x.dtype.isHalf {
        let r = try convTranspose(try cast(x, to: .float32), try cast(w, to: .float32), strides: strides,
                                  padsBefore: padsBefore, outputSize: outputSize, dilation: dilation)
        return try cast(r, to: x.dtype)
    }
    guard w.shape[w.rank - 1] == x.shape[x.rank - 1] else {
        throw EngineError.value("conv_transpose: input has \(x.shape[x.rank - 1]) channels, kernel \(w.shape) expects \(w.shape[w.rank - 1])")
    }
    guard outputSize.count == spatial, padsBefore.count == spatial, outputSize.allSatisfy({ $0 >= 0 }) else {
        throw EngineError.value("conv_transpose needs \(spatial) output sizes and pads")
    }
    var g = ConvGeometry()
    g.n = x.shape[0]
    g.c = w.shape[w.rank - 2]
    g.o = x.shape[x.rank - 1]
    g.inSize = spatial3(outputSize, 1)
    g.kernel = spatial3(Array(w.shape[0..<spatial]), 1)
    g.strides = try spatialAttr(strides, spatial, "strides")
    g.dilation = try spatialAttr(dilation, spatial, "dilation")
    g.pads = spatial3(padsBefore, 0)
    g.outSize = spatial3(Array(x.shape[1...spatial]), 1)
    // The conv this is the adjoint of must map outputSize back onto x's spatial size.
    let sizes = SizeCheck("conv_transpose")
    try sizes.count([g.n] + outputSize + [g.c], itemSize: x.dtype.itemSize)
    for d in 0..<3 {
        let span = try sizes.add(try sizes.add(try sizes.multiply(g.outSize[d] - 1, g.strides[d]),
                                               try sizes.multiply(g.kernel[d] - 1, g.dilation[d])), 1)
        guard g.outSize[d] == 0 || span - g.pads[d] > 0 else {
            throw EngineError.value("conv_transpose: pads \(padsBefore) do not fit output size \(outputSize)")
        }
    }
    let out = try runConv(.inputGrad, g, x, w, outShape: [g.n] + outputSize + [g.c])
    recordConv(out, x: x, w: w, g: g, transposed: true)
    return out
}

private let convStrides = AttrSpec.ints("strides", default: [1])
private let convDilation = AttrSpec.ints("dilation", default: [1])
private let convPadding = AttrSpec.string("padding", default: "valid", choices: ["valid", "same"])

let convOps: [OpDef] = [
    OpDef("conv", inputs: ["x", "kernel", "bias?"],
          attrs: [convStrides, convPadding, convDilation, .int("groups", default: 1), epilogueActivationAttr,
                  .ints("max_pool_size", default: []), .ints("max_pool_strides", absent: "max_pool_size")],
          doc: "Convolution of x (N, *spatial, C) with kernel (*k, C/groups, O), 1-3 spatial dims; strides and "
            + "dilation: one int or one per spatial dim; groups = C is depthwise; then activation(y + bias) "
            + "when given, applied as the output is written where it can be; then, when max_pool_size is given, "
            + "a valid max pool (max_pool_strides default to it), without writing the convolution's output where "
            + "it can") { t, a in
        let poolSize = try a.requiredInts("max_pool_size")
        return try conv(t[0], t[1], bias: t.count > 2 ? t[2] : nil, activation: a.epilogueActivation(),
                        strides: a.requiredInts("strides"), padding: a.string("padding"),
                        dilation: a.requiredInts("dilation"), groups: a.int("groups"),
                        maxPool: poolSize.isEmpty ? nil : (poolSize, try a.ints("max_pool_strides") ?? poolSize))
    },
    OpDef("conv2d", inputs: ["x", "kernel"], attrs: [.ints("strides", default: [1, 1]), convPadding, .ints("dilation", default: [1, 1])],
          doc: "The 2-D form of conv: x (N, H, W, C), kernel (KH, KW, C, O)") { t, a in
        try conv2d(t[0], t[1], strides: a.requiredInts("strides"), padding: a.string("padding"), dilation: a.requiredInts("dilation"))
    },
    OpDef("conv_transpose", inputs: ["x", "kernel"],
          attrs: [convStrides, .ints("pads_before"), .ints("output_size"), convDilation],
          doc: "Adjoint of conv with respect to its input: x (N, *spatial, C_in), kernel (*k, C_out, C_in); "
            + "pads_before and output_size one per spatial dim") { t, a in
        try convTranspose(t[0], t[1], strides: a.requiredInts("strides"), padsBefore: a.requiredInts("pads_before"),
                          outputSize: a.requiredInts("output_size"), dilation: a.requiredInts("dilation"))
    },
]
