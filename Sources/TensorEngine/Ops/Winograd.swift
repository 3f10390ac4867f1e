/// 3x3, stride-1 convolutions by Winograd's F(m x m, 3x3), m = 2 or 4: each m x m output tile
/// is A^T [(G g G^T) ⊙ (B^T d B)] A for its (m+2) x (m+2) input patch d, so the (m+2)^2
/// products per tile and channel pair become (m+2)^2 GEMMs of (tiles x C) by (C x O), with
/// 2.25x (m = 2) or 4x (m = 4) fewer multiply-adds than im2col's one GEMM, and no 9x column
/// buffer. Channels are innermost (NHWC), so every transform is a vector loop over channels.
///
/// Used for the forward and input-gradient passes of 2-D convs (and so for transposed convs
/// and their input gradient) with enough channels that the GEMMs dominate; the transforms'
/// extra rounding stays within a few float32 ulps of the im2col result at these sizes for
/// m = 2, and within about 1e-6 of the output's scale for m = 4 (points 0, ±1, ±2).
func winogradApplies(_ g: ConvGeometry) -> Bool {
    g.groups == 1 && g.kernel == [1, 3, 3] && g.strides == [1, 1, 1] && g.dilation == [1, 1, 1]
        && g.inSize[0] == 1 && g.c >= 16 && g.o >= 16 && g.n * g.outSize[1] * g.outSize[2] >= 256
}

/// The geometry to run a conv pass by Winograd, or nil. The input gradient of a 3x3
/// stride-1 conv is itself one: dy (channels O) correlated with the kernel turned 180° and
/// its channel axes swapped, padded 2 − p, giving x's spatial size.
func winogradGeometry(forward: Bool, _ g: ConvGeometry) -> ConvGeometry? {
    var t = g
    if !forward {
        (t.c, t.o, t.inSize, t.outSize) = (g.o, g.c, g.outSize, g.inSize)
        t.pads = [g.pads[0], 2 - g.pads[1], 2 - g.pads[2]]
    }
    return winogradApplies(t) ? t : nil
}

/// y = conv(x, w), or for `inputGrad` dx = conv^T(dy, w) with `g` from `winogradGeometry`.
func winogradPass<T: BLASFloat>(_: T.Type, inputGrad: Bool, _ g: ConvGeometry, x: Tensor,
                                w: Tensor, y: Tensor, epilogue: Epilogue<T>? = nil) throws {
    guard inputGrad else {
        return try winogradConv(T.self, g, x: x.pointer(T.self), w: w.pointer(T.self), y: y.pointer(T.self),
                                epilogue: epilogue)
    }
    // w (3, 3, C, O) -> (3, 3, O, C) turned 180°; here g.c = O and g.o = C.
    let (c, o) = (g.o, g.c)
    let turned = try Tensor(empty: [9 * c * o], dtype: T.dtype)
    let src = w.pointer(T.self), dst = turned.pointer(T.self)
    for tap in 0..<9 {
        let from = src + (8 - tap) * c * o, to = dst + tap * c * o
        for ci in 0..<c { for oi in 0..<o { to[oi * c + ci] = from[ci * o + oi] } }
    }
    try winogradConv(T.self, g, x: x.pointer(T.self), w: turned.pointer(T.self), y: y.pointer(T.self))
    withExtendedLifetime(turned) {}
}

/// (a − c, b + c, c − b, b − d) over `n` channels: one line of B^T d B.
@inline(__always)
private func inputLine<T: BinaryFloatingPoint>(_ a: UnsafePointer<T>, _ b: UnsafePointer<T>, _ c: UnsafePointer<T>,
                                               _ d: UnsafePointer<T>, _ o0: UnsafeMutablePointer<T>,
                                               _ o1: UnsafeMutablePointer<T>, _ o2: UnsafeMutablePointer<T>,
                                               _ o3: UnsafeMutablePointer<T>, _ n: Int) {
    for i in 0..<n {
        let (x, y, z, w) = (a[i], b[i], c[i], d[i])
        o0[i] = x - z
        o1[i] = y + z
        o2[i] = z - y
        o3[i] = y - w
    }
}

/// (a + b + c, b − c − d) over `n` channels: one line of A^T m A.
@inline(__always)
private func outputLine<T: BinaryFloatingPoint>(_ a: UnsafePointer<T>, _ b: UnsafePointer<T>, _ c: UnsafePointer<T>,
                                                _ d: UnsafePointer<T>, _ o0: UnsafeMutablePointer<T>,
                                                _ o1: UnsafeMutablePointer<T>, _ n: Int) {
    for i in 0..<n {
        let (x, y, z, w) = (a[i], b[i], c[i], d[i])
        o0[i] = x + y + z
        o1[i] = y - z - w
    }
}

/// (a, (a + b + c) / 2, (a − b + c) / 2, c) over `n` channels: one line of G g G^T.
@inline(__always)
private func kernelLine<T: BinaryFloatingPoint>(_ a: UnsafePointer<T>, _ b: UnsafePointer<T>, _ c: UnsafePointer<T>,
                                                _ o0: UnsafeMutablePointer<T>, _ o1: UnsafeMutablePointer<T>,
                                                _ o2: UnsafeMutablePointer<T>, _ o3: UnsafeMutablePointer<T>, _ n: Int) {
    for i in 0..<n {
        let (x, y, z) = (a[i], b[i], c[i])
        o0[i] = x
        o1[i] = (x + y + z) * 0.5
        o2[i] = (x - y + z) * 0.5
        o3[i] = z
    }
}

/// B^T d for F(4x4, 3x3) over `n` channels: one line of the 6x6 input transform.
@inline(__always)
private func inputLine6<T: BinaryFloatingPoint>(_ d: (UnsafePointer<T>, UnsafePointer<T>, UnsafePointer<T>, UnsafePointer<T>,
                                                      UnsafePointer<T>, UnsafePointer<T>),
                                                _ o: (UnsafeMutablePointer<T>, UnsafeMutablePointer<T>, UnsafeMutablePointer<T>,
                                                      UnsafeMutablePointer<T>, UnsafeMutablePointer<T>, UnsafeMutablePointer<T>),
                                                _ n: Int) {
    for i in 0..<n {
        let (d0, d1, d2, d3, d4, d5) = (d.0[i], d.1[i], d.2[i], d.3[i], d.4[i], d.5[i])
        o.0[i] = 4 * d0 - 5 * d2 + d4
        o.1[i] = d3 + d4 - 4 * (d1 + d2)
        o.2[i] = d4 - d3 + 4 * (d1 - d2)
        o.3[i] = d4 - d2 + 2 * (d3 - d1)
        o.4[i] = d4 - d2 + 2 * (d1 - d3)
        o.5[i] = 4 * d1 - 5 * d3 + d5
    }
}

/// A^T m for F(4x4, 3x3) over `n` channels: one line of the output transform (6 in, 4 out).
@inline(__always)
private func outputLine6<T: BinaryFloatingPoint>(_ m: (UnsafePointer<T>, UnsafePointer<T>, UnsafePointer<T>, UnsafePointer<T>,
                                                       UnsafePointer<T>, UnsafePointer<T>),
                                                 _ o: (UnsafeMutablePointer<T>, UnsafeMutablePointer<T>, UnsafeMutablePointer<T>,
                                                       UnsafeMutablePointer<T>),
                                                 _ n: Int) {
    for i in 0..<n {
        let (m0, m1, m2, m3, m4, m5) = (m.0[i], m.1[i], m.2[i], m.3[i], m.4[i], m.5[i])
        let (p12, d12, p34, d34) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4)
        o.0[i] = m0 + p12 + p34
        o.1[i] = d12 + 2 * d34
        o.2[i] = p12 + 4 * p34
        o.3[i] = d12 + 8 * d34 + m5
    }
}

/// G g for F(4x4, 3x3) over `n` channels: one line of the kernel transform (3 in, 6 out).
@inline(__always)
private func kernelLine6<T: BinaryFloatingPoint>(_ a: UnsafePointer<T>, _ b: UnsafePointer<T>, _ c: UnsafePointer<T>,
                                                 _ o: (UnsafeMutablePointer<T>, UnsafeMutablePointer<T>, UnsafeMutablePointer<T>,
                                                       UnsafeMutablePointer<T>, UnsafeMutablePointer<T>, UnsafeMutablePointer<T>),
                                                 _ n: Int) {
    for i in 0..<n {
        let (x, y, z) = (a[i], b[i], c[i])
        o.0[i] = x / 4
        o.1[i] = -(x + y + z) / 6
        o.2[i] = -(x - y + z) / 6
        o.3[i] = x / 24 + y / 12 + z / 6
        o.4[i] = x / 24 - y / 12 + z / 6
        o.5[i] = z
    }
}

/// The output tile size: F(4x4, 3x3) where the output holds whole 4x4 tiles in both
/// directions (36 products per 16 outputs, against F(2x2, 3x3)'s 16 per 4: the MNIST
/// convnet's 11x11x64 layer spent most of its time in the 16 small GEMMs), else F(2x2, 3x3).
func winogradTile(_ g: ConvGeometry) -> Int { g.outSize[1] >= 4 && g.outSize[2] >= 4 ? 4 : 2 }

/// y = conv(x, w) for `winogradApplies(g)`: x (N, 1, H, W, C) as pointers, w (3, 3, C, O);
/// `epilogue` finishes each output pixel as its tile is written. `tile`: the output tile's
/// side, 2 or 4 (F(2x2, 3x3) or F(4x4, 3x3)); `winogradTile(g)` by default.
func winogradConv<T: BLASFloat>(_: T.Type, _ g: ConvGeometry, x: UnsafePointer<T>,
                                w: UnsafePointer<T>, y: UnsafeMutablePointer<T>,
                                chunkBytes: Int = convChunkBytes, epilogue: Epilogue<T>? = nil, tile: Int? = nil) throws {
    let (c, o) = (g.c, g.o)
    let (h, wd, oh, ow) = (g.inSize[1], g.inSize[2], g.outSize[1], g.outSize[2])
    let m = tile ?? winogradTile(g), alpha = m + 2, a2 = alpha * alpha
    guard m == 2 || m == 4 else { throw EngineError.internal("Winograd tile \(m) is not 2 or 4") }
    let (th, tw) = ((oh + m - 1) / m, (ow + m - 1) / m)
    let tiles = g.n * th * tw
    func origin(_ tile: Int) -> (img: Int, ty: Int, tx: Int) { (tile / (th * tw), (tile / tw) % th, tile % tw) }
    let size = MemoryLayout<T>.size
    // Tiles per task: the task's transformed inputs V and products M stay in its core's cache
    // between the input transform, the alpha^2 GEMMs and the output transform.
    // At least two tasks per thread where that leaves 16 tiles a task.
    let spread = (tiles + 2 * Threading.numThreads - 1) / (2 * Threading.numThreads)
    let chunk = Swift.max(1, Swift.min(tiles, chunkBytes / (a2 * (c + o) * size), Swift.max(16, spread)))
    let tasks = (tiles + chunk - 1) / chunk

    let u = try Tensor(empty: [a2 * c * o], dtype: T.dtype), pu = u.pointer(T.self)
    let zeros = try Tensor(zeros: [c], dtype: T.dtype), pz = UnsafePointer(zeros.pointer(T.self))

    // U[k][c][o] = G g G^T, k = alpha r + s.
    parallelFor(c, cost: a2 * o) { range in
        let tmp = UnsafeMutablePointer<T>.allocate(capacity: alpha * 3 * o)
        defer { tmp.deallocate() }
        for ci in range {
            // Columns first: tmp[r][kx] over ky.
            for kx in 0..<3 {
                let tap = { (ky: Int) in UnsafePointer(w + ((ky * 3 + kx) * c + ci) * o) }
                let out = { (r: Int) in tmp + (r * 3 + kx) * o }
                if m == 2 {
                    kernelLine(tap(0), tap(1), tap(2), out(0), out(1), out(2), out(3), o)
                } else {
                    kernelLine6(tap(0), tap(1), tap(2), (out(0), out(1), out(2), out(3), out(4), out(5)), o)
                }
            }
            for r in 0..<alpha {
                let row = UnsafePointer(tmp + r * 3 * o)
                let out = { (s: Int) in pu + ((r * alpha + s) * c + ci) * o }
                if m == 2 {
                    kernelLine(row, row + o, row + 2 * o, out(0), out(1), out(2), out(3), o)
                } else {
                    kernelLine6(row, row + o, row + 2 * o, (out(0), out(1), out(2), out(3), out(4), out(5)), o)
                }
            }
        }
    }

    // One task runs a chunk of tiles start to end on one thread: the transforms and the
    // alpha^2 single-threaded GEMMs. Splitting each step over the threads instead cost a
    // wake-up and a wait per step, 18 per chunk, and sent V and M through the shared cache.
    func run(_ range: Range<Int>) throws {
        let scratch = try [a2 * chunk * c, a2 * chunk * o, Swift.max(a2 * c, (m * alpha + 1) * o)].map {
            try Tensor(empty: [$0], dtype: T.dtype)
        }
        defer { withExtendedLifetime(scratch) {} }
        let (pv, pm, tmp) = (scratch[0].pointer(T.self), scratch[1].pointer(T.self), scratch[2].pointer(T.self))
        for task in range {
            let t0 = task * chunk, count = Swift.min(tiles, t0 + chunk) - t0
            // V[k][t][c] = B^T d B for each tile's alpha x alpha input patch (zeros outside the image).
            for t in 0..<count {
                let (img, ty, tx) = origin(t0 + t)
                let iy0 = m * ty - g.pads[1], ix0 = m * tx - g.pads[2]
                func at(_ i: Int, _ j: Int) -> UnsafePointer<T> {
                    let (iy, ix) = (iy0 + i, ix0 + j)
                    return iy >= 0 && iy < h && ix >= 0 && ix < wd ? x + ((img * h + iy) * wd + ix) * c : pz
                }
                // Rows first: tmp[i][s] over the patch's columns.
                for i in 0..<alpha {
                    let out = tmp + i * alpha * c
                    if m == 2 {
                        inputLine(at(i, 0), at(i, 1), at(i, 2), at(i, 3), out, out + c, out + 2 * c, out + 3 * c, c)
                    } else {
                        inputLine6((at(i, 0), at(i, 1), at(i, 2), at(i, 3), at(i, 4), at(i, 5)),
                                   (out, out + c, out + 2 * c, out + 3 * c, out + 4 * c, out + 5 * c), c)
                    }
                }
                for s in 0..<alpha {
                    let col = { (i: Int) in UnsafePointer(tmp + (i * alpha + s) * c) }
                    let out = { (r: Int) in pv + ((r * alpha + s) * chunk + t) * c }
                    if m == 2 {
                        inputLine(col(0), col(1), col(2), col(3), out(0), out(1), out(2), out(3), c)
                    } else {
                        inputLine6((col(0), col(1), col(2), col(3), col(4), col(5)),
                                   (out(0), out(1), out(2), out(3), out(4), out(5)), c)
                    }
                }
            }
            // M_k = V_k U_k.
            for k in 0..<a2 {
                T.product(transA: false, transB: false, m: count, n: o, k: c, a: pv + k * chunk * c, lda: c,
                          b: pu + k * c * o, ldb: o, beta: 0, c: pm + k * chunk * o, ldc: o)
            }
            // y tile = A^T M A; rows and columns past the output's edge go to scratch.
            let spill = tmp + m * alpha * o
            for t in 0..<count {
                let (img, ty, tx) = origin(t0 + t)
                // Columns first: tmp[a][s] over r.
                for s in 0..<alpha {
                    let src = { (r: Int) in UnsafePointer(pm + ((r * alpha + s) * chunk + t) * o) }
                    let out = { (a: Int) in tmp + (a * alpha + s) * o }
                    if m == 2 {
                        outputLine(src(0), src(1), src(2), src(3), out(0), out(1), o)
                    } else {
                        outputLine6((src(0), src(1), src(2), src(3), src(4), src(5)), (out(0), out(1), out(2), out(3)), o)
                    }
                }
                for a in 0..<m {
                    let oy = m * ty + a, ox = m * tx
                    let row = UnsafePointer(tmp + a * alpha * o)
                    let dst = { (b: Int) in oy < oh && ox + b < ow ? y + ((img * oh + oy) * ow + ox + b) * o : spill }
                    if m == 2 {
                        outputLine(row, row + o, row + 2 * o, row + 3 * o, dst(0), dst(1), o)
                    } else {
                        outputLine6((row, row + o, row + 2 * o, row + 3 * o, row + 4 * o, row + 5 * o),
                                    (dst(0), dst(1), dst(2), dst(3)), o)
                    }
                    if let e = epilogue, oy < oh {
                        for b in 0..<Swift.min(m, ow - ox) { e.apply(dst(b), rows: 1, width: o, ld: o) }
                    }
                }
            }
        }
    }
    try forEachTask(tasks, run)
    withExtendedLifetime((u, zeros)) {}
}
