import XCTest
@testable import TensorEngine

final class OpTests: XCTestCase {
    func testBroadcastArithmetic() throws {
        let a = try Tensor([Float(1), 2, 3, 4, 5, 6], shape: [2, 3])
        let b = try Tensor([Float(10), 20, 30])
        XCTAssertEqual(try add(a, b).array(Float.self), [11, 22, 33, 14, 25, 36])
        XCTAssertEqual(try binary(.greater, a, try scalar(3)).array(Bool.self), [false, false, false, true, true, true])
        XCTAssertThrowsError(try add(a, try Tensor([Float(1), 2])))
    }

    func testIntegerSemanticsNeverTrap() throws {
        let a = try Tensor([Int32(7), -7, Int32.min, 5])
        let b = try Tensor([Int32(2), 2, -1, 0])
        XCTAssertEqual(try binary(.floorDivide, a, b).array(Int32.self), [3, -4, Int32.min, 0])
        XCTAssertEqual(try binary(.mod, a, b).array(Int32.self), [1, 1, 0, 0])
        XCTAssertEqual(try add(a, a).array(Int32.self)[2], 0) // wraps
        XCTAssertEqual(try cast(try Tensor([Float.nan, 1e20, -1e20, 2.7]), to: .int32).array(Int32.self), [0, Int32.max, Int32.min, 2])
    }

    func testBitwise() throws {
        let a = try Tensor([Int32(12), -1, 5]), b = try Tensor([Int32(10), 3, 40])
        XCTAssertEqual(try bitwise(.and, a, b).array(Int32.self), [8, 3, 0])
        XCTAssertEqual(try bitwise(.or, a, b).array(Int32.self), [14, -1, 45])
        XCTAssertEqual(try bitwise(.xor, a, b).array(Int32.self), [6, -4, 45])
        XCTAssertEqual(try bitwise(.leftShift, a, try Tensor([Int32(1), 2, 40])).array(Int32.self), [24, -4, 0])
        XCTAssertEqual(try bitwise(.rightShift, a, try Tensor([Int32(2), 40, 1])).array(Int32.self), [3, -1, 2])
        XCTAssertEqual(try bitwiseInvert(try Tensor([UInt8(0), 255])).array(UInt8.self), [255, 0])
        XCTAssertEqual(try bitwise(.and, try Tensor([true, true]), try Tensor([true, false])).array(Bool.self), [true, false])
        XCTAssertThrowsError(try bitwise(.and, try Tensor([Float(1)]), try Tensor([Float(1)])))
    }

    func testSpecialFunctionsAndIntegerOps() throws {
        let x = try Tensor([0.0, 0.3, -0.95, 1.5])
        let back = try unary(.erfinv, try unary(.erf, x)).doubles()
        for (a, b) in zip(back, x.doubles()) { XCTAssertEqual(a, b, accuracy: 1e-12) }
        XCTAssertEqual(try unary(.erfinv, try Tensor([1.0, -1.0])).doubles(), [.infinity, -.infinity])
        let i = try Tensor([1.0, -1.0, 50.0])
        let i0 = try unary(.i0, i).doubles(), i1 = try unary(.i1, i).doubles()
        XCTAssertEqual(i0[0], 1.2660658777520082, accuracy: 1e-14)
        XCTAssertEqual(i0[1], 1.2660658777520082, accuracy: 1e-14)
        XCTAssertEqual(i0[2] / 2.932553783849336e20, 1, accuracy: 1e-12)
        XCTAssertEqual(i1[0], 0.5651591039924851, accuracy: 1e-14)
        XCTAssertEqual(i1[1], -0.5651591039924851, accuracy: 1e-14)
        XCTAssertEqual(try gcdLcm(try Tensor([Int32(12), -18, 0]), try Tensor([Int32(18), 12, 5]), lcm: false).array(Int32.self), [6, 6, 5])
        XCTAssertEqual(try gcdLcm(try Tensor([Int32(4), -6, 0]), try Tensor([Int32(6), 4, 5]), lcm: true).array(Int32.self), [12, 12, 0])
        let n = try binary(.nextafter, try Tensor([Float(1), 1]), try Tensor([Float(2), 0])).array(Float.self)
        XCTAssertEqual(n, [Float(1).nextUp, Float(1).nextDown])
    }

    func testPromotion() {
        XCTAssertEqual(DType.result(.int32, .float32), .float32)
        XCTAssertEqual(DType.result(.uint8, .int8), .int16)
        XCTAssertEqual(DType.result(.float16, .bfloat16), .float32)
        XCTAssertEqual(DType.result(.bool, .int32), .int32)
        XCTAssertEqual(DType.result(.int64, .float16), .float16)
        XCTAssertEqual(DType.result(.uint32, .int32), .int64)
    }

    func testHalfTypes() throws {
        let x = try cast(try Tensor([Float(1.5), -2.25, 3]), to: .bfloat16)
        XCTAssertEqual(try cast(x, to: .float32).array(Float.self), [1.5, -2.25, 3])
        let y = try add(x, x)
        XCTAssertEqual(y.dtype, .bfloat16)
        XCTAssertEqual(try cast(y, to: .float32).array(Float.self), [3, -4.5, 6])
        let h = try exp(try cast(try Tensor([Float(0), 1]), to: .float16))
        XCTAssertEqual(h.dtype, .float16)
        XCTAssertEqual(try cast(h, to: .float32).array(Float.self)[1], 2.71875, accuracy: 1e-3)
    }

    func testReductions() throws {
        let x = try Tensor([Float(1), 5, 3, 4, 2, 6], shape: [2, 3])
        XCTAssertEqual(try sum(x, axes: [0]).array(Float.self), [5, 7, 9])
        XCTAssertEqual(try mean(x, axes: [1], keepdims: true).shape, [2, 1])
        XCTAssertEqual(try reduce(.max, x).array(Float.self), [6])
        XCTAssertEqual(try argReduce(.argmax, x, axis: 1).array(Int32.self), [1, 2])
        XCTAssertEqual(try argReduce(.argmin, x, axis: nil).array(Int32.self), [0])
        XCTAssertEqual(try reduce(.mean, try Tensor([Int32(1), 2])).dtype, .float32)
        XCTAssertEqual(try reduce(.any, try Tensor([Float(0), 0, 1])).array(Bool.self), [true])
        XCTAssertEqual(try reduce(.any, try Tensor([Float(0.5), 0, 0.25, 0.75], shape: [2, 2]), axes: [-1]).array(Bool.self), [true, true])
        XCTAssertEqual(try reduce(.all, try Tensor([Float(0.5), 0, 0.25, 0.75], shape: [2, 2]), axes: [-1]).array(Bool.self), [false, true])
        // long rows take the split path
        let big = try full([1 << 20], value: 0.5)
        XCTAssertEqual(try sum(big).array(Float.self)[0], Float(1 << 19))
        XCTAssertThrowsError(try reduce(.max, try Tensor(zeros: [0])))
    }

    func testMatmulAgainstLoop() throws {
        for dt in [DType.float32, .float64, .int32] {
            let a = try cast(try f64([2, 3, 5], seed: 1, lo: -3, hi: 3), to: dt)
            let b = try cast(try f64([5, 4], seed: 2, lo: -3, hi: 3), to: dt)
            let c = try matmul(a, b).doubles(), av = a.doubles(), bv = b.doubles()
            for bi in 0..<2 { for i in 0..<3 { for j in 0..<4 {
                var s = 0.0
                for k in 0..<5 { s += av[(bi * 3 + i) * 5 + k] * bv[k * 4 + j] }
                XCTAssertEqual(c[(bi * 3 + i) * 4 + j], s, accuracy: 1e-4)
            } } }
        }
        XCTAssertThrowsError(try matmul(try zeros([2, 3]), try zeros([4, 2])))
    }

    /// Products with one row or one column run as GEMV (`BLASFloat.product`), forward and in
    /// the VJPs' transposed products; values against loops, gradients against differences.
    func testOneRowAndOneColumnProducts() throws {
        for (m, k, n) in [(1, 5, 4), (3, 5, 1), (1, 5, 1), (1, 70, 300)] {
            for dt in [DType.float32, .float64] {
                let a = try cast(try f64([m, k], seed: 3, lo: -2, hi: 2), to: dt)
                let b = try cast(try f64([k, n], seed: 4, lo: -2, hi: 2), to: dt)
                let c = try matmul(a, b).doubles(), av = a.doubles(), bv = b.doubles()
                for i in 0..<m { for j in 0..<n {
                    var s = 0.0
                    for p in 0..<k { s += av[i * k + p] * bv[p * n + j] }
                    XCTAssertEqual(c[i * n + j], s, accuracy: 1e-4, "\(m)x\(k)x\(n) \(dt)")
                } }
            }
            try checkGradient("matmul \(m)x\(k)x\(n)", [try f64([m, k], seed: 5), try f64([k, n], seed: 6)]) {
                try matmul($0[0], $0[1])
            }
        }
    }

    func testSlicingAndGather() throws {
        let x = try Tensor((0..<12).map { Float($0) }, shape: [3, 4])
        XCTAssertEqual(try stridedSlice(x, begin: [2, 3], end: [-1, 0], strides: [-2, -2]).array(Float.self), [11, 9, 3, 1])
        XCTAssertEqual(try take(x, try Tensor([Int32(-1), 0]), axis: 0).array(Float.self), [8, 9, 10, 11, 0, 1, 2, 3])
        XCTAssertThrowsError(try take(x, try Tensor([Int32(3)]), axis: 0)) { e in
            guard case EngineError.index = e else { return XCTFail("expected an index error, got \(e)") }
        }
        XCTAssertEqual(try transpose(x).shape, [4, 3])
        XCTAssertEqual(try transpose(x).array(Float.self)[1], 4)
        XCTAssertEqual(try transpose(x, [-1, 0]).array(Float.self), try transpose(x).array(Float.self))
        XCTAssertEqual(try transpose(x, [0, -1]).array(Float.self), try x.array(Float.self))
        for bad in [[0], [0, 0], [1, -1], [0, 2], [-3, 0], [0, 1, 2]] {
            XCTAssertThrowsError(try transpose(x, bad), "perm \(bad)") { e in
                guard case EngineError.value = e else { return XCTFail("expected a value error, got \(e)") }
            }
        }
        XCTAssertEqual(try concatenate([x, x], axis: 0).shape, [6, 4])
        XCTAssertEqual(try oneHot(try Tensor([Int32(1), 5, 0]), numClasses: 3).array(Float.self), [0, 1, 0, 0, 0, 0, 1, 0, 0])
        XCTAssertEqual(try oneHot(try Tensor([Int32(1), 0]), numClasses: 2, axis: 0).array(Float.self), [0, 1, 1, 0])
    }

    func testConvMatchesDirectLoop() throws {
        let x = try f64([1, 4, 5, 2], seed: 3), k = try f64([3, 2, 2, 3], seed: 4)
        let y = try conv2d(x, k, strides: [1, 1], padding: "same")
        XCTAssertEqual(y.shape, [1, 4, 5, 3])
        let xv = x.doubles(), kv = k.doubles(), yv = y.doubles()
        // same padding: pad_top = 1, pad_left = 0 (total 1 on width, put on the right)
        for oy in 0..<4 { for ox in 0..<5 { for o in 0..<3 {
            var s = 0.0
            for ky in 0..<3 { for kx in 0..<2 { for c in 0..<2 {
                let iy = oy - 1 + ky, ix = ox + kx
                if iy >= 0 && iy < 4 && ix >= 0 && ix < 5 { s += xv[(iy * 5 + ix) * 2 + c] * kv[((ky * 2 + kx) * 2 + c) * 3 + o] }
            } } }
            XCTAssertEqual(yv[(oy * 5 + ox) * 3 + o], s, accuracy: 1e-9)
        } } }
        XCTAssertThrowsError(try conv2d(x, try zeros([3, 3, 5, 1], dtype: .float64)))
    }

    /// A convolution whose im2col columns (float64, 41 KB per output line) span two ~4 MB
    /// chunks, the second starting inside the second image: the output and both gradients
    /// against direct loops.
    func testConvSplitAcrossColumnChunksMatchesDirectLoops() throws {
        let (n, h, w, c, o) = (2, 80, 72, 8, 2)
        let x = try f64([n, h, w, c], seed: 11), k = try f64([3, 3, c, o], seed: 12), r = try f64([n, h, w, o], seed: 13)
        let (y, dx, dk) = directConv3x3(x, k, weights: r, pad: 1)
        Tape.push()
        defer { try? Tape.pop() }
        x.requiresGrad = true
        k.requiresGrad = true
        defer { x.requiresGrad = false; k.requiresGrad = false }
        let out = try conv2d(x, k, strides: [1, 1], padding: "same")
        let grads = try Tape.gradient(of: try sum(try multiply(out, r)), wrt: [x, k])
        for (name, got, want) in [("y", out, y), ("dx", grads[0]!, dx), ("dk", grads[1]!, dk)] {
            assertNear(got, want, relative: 1e-9, name)
        }
    }

    func testWinogradConvMatchesDirectLoopsAcrossChunksAndEdges() throws {
        // Odd sizes leave half tiles at the bottom and right; 5 tiles per chunk puts chunk
        // boundaries inside image rows and across images.
        let (n, h, w, c, o) = (2, 9, 11, 16, 17)
        let x = try f64([n, h, w, c], seed: 21), k = try f64([3, 3, c, o], seed: 22)
        for pad in [0, 1, 2] {
            var g = ConvGeometry()
            (g.n, g.c, g.o) = (n, c, o)
            g.inSize = [1, h, w]
            g.kernel = [1, 3, 3]
            g.pads = [0, pad, pad]
            let (oh, ow) = (h + 2 * pad - 2, w + 2 * pad - 2)
            g.outSize = [1, oh, ow]
            let want = directConv3x3(x, k, weights: nil, pad: pad).y
            for chunkBytes in [4 << 20, 5 * 16 * c * 8] {
                for tile in [2, 4] {
                    let y = try Tensor(zeros: [n, oh, ow, o], dtype: .float64)
                    try winogradConv(Double.self, g, x: x.pointer(Double.self), w: k.pointer(Double.self),
                                     y: y.pointer(Double.self), chunkBytes: chunkBytes, tile: tile)
                    assertNear(y, want, relative: 1e-12, "pad \(pad), chunk \(chunkBytes), tile \(tile)")
                }
            }
        }
        // Through conv2d and its VJP: the forward pass and dx (a Winograd pass of its own).
        for padding in ["same", "valid"] {
            let (h2, w2, c2, o2) = (19, 20, 16, 18)
            let x2 = try f64([1, h2, w2, c2], seed: 23), k2 = try f64([3, 3, c2, o2], seed: 24)
            let p = padding == "same" ? 1 : 0, (oh, ow) = (h2 + 2 * p - 2, w2 + 2 * p - 2)
            let r2 = try f64([1, oh, ow, o2], seed: 25)
            let (y, dx, _) = directConv3x3(x2, k2, weights: r2, pad: p)
            Tape.push()
            defer { try? Tape.pop() }
            x2.requiresGrad = true
            defer { x2.requiresGrad = false }
            let out = try conv2d(x2, k2, padding: padding)
            let gx = try Tape.gradient(of: try sum(try multiply(out, r2)), wrt: [x2])[0]!
            for (name, got, want) in [("y", out, y), ("dx", gx, dx)] {
                assertNear(got, want, relative: 1e-12, "\(padding) \(name)")
            }
        }
        // Which geometries take this path.
        var g = ConvGeometry()
        (g.n, g.c, g.o, g.inSize, g.kernel, g.outSize) = (1, 16, 16, [1, 16, 16], [1, 3, 3], [1, 16, 16])
        XCTAssertTrue(winogradApplies(g))
        XCTAssertNotNil(winogradGeometry(forward: false, g))
        g.strides = [1, 2, 2]
        XCTAssertFalse(winogradApplies(g))
    }

    func testWinogradF4IsAccurateInFloat32() throws {
        // F(4x4, 3x3)'s transforms scale by up to 8 and 1/24: in float32 the result stays
        // within 1e-5 of the output's scale (the MNIST convnet's second layer).
        let (n, h, w, c, o) = (2, 13, 13, 32, 64)
        let x = try f64([n, h, w, c], seed: 31), k = try f64([3, 3, c, o], seed: 32)
        let want = directConv3x3(x, k, weights: nil, pad: 0).y
        var g = ConvGeometry()
        (g.n, g.c, g.o, g.inSize, g.kernel, g.outSize) = (n, c, o, [1, h, w], [1, 3, 3], [1, h - 2, w - 2])
        XCTAssertEqual(winogradTile(g), 4)
        let (x32, k32) = (try cast(x, to: .float32), try cast(k, to: .float32))
        let y = try Tensor(zeros: [n, h - 2, w - 2, o], dtype: .float32)
        try winogradConv(Float.self, g, x: x32.pointer(Float.self), w: k32.pointer(Float.self), y: y.pointer(Float.self))
        let got = y.doubles(), ref = want
        let scale = ref.map(abs).max()!
        let err = zip(got, ref).map { abs($0 - $1) }.max()!
        XCTAssertLessThan(err / scale, 1e-5)
    }

    func testConvTransposeIsTheAdjointOfConv() throws {
        // <conv(x, w), y> == <x, conv_transpose(y, w)> for the same geometry.
        let x = try f64([2, 7, 6, 3], seed: 5), w = try f64([3, 2, 3, 4], seed: 6)
        let y = try conv(x, w, strides: [2, 2], padding: "same")
        let r = try f64(y.shape, seed: 7)
        // "same" with stride 2: output 4x3; pad totals 2 and 0 → before = 1, 0
        let xt = try convTranspose(r, w, strides: [2, 2], padsBefore: [1, 0], outputSize: [7, 6])
        let lhs = try sum(try multiply(y, r)).double(at: 0), rhs = try sum(try multiply(x, xt)).double(at: 0)
        XCTAssertEqual(lhs, rhs, accuracy: 1e-9)
    }

    func testRandomIsAPureFunctionOfTheSeed() throws {
        let a = try random(.uniform(0, 1), shape: [1000], seed: [42, 7])
        let b = try random(.uniform(0, 1), shape: [1000], seed: [42, 7])
        let c = try random(.uniform(0, 1), shape: [1000], seed: [42, 8])
        XCTAssertEqual(try a.array(Float.self), try b.array(Float.self))
        XCTAssertNotEqual(try a.array(Float.self), try c.array(Float.self))
        let v = try a.array(Float.self)
        XCTAssertTrue(v.allSatisfy { $0 >= 0 && $0 < 1 })
        XCTAssertEqual(Double(v.reduce(0, +)) / 1000, 0.5, accuracy: 0.05)
        let n = try random(.normal(0, 1), shape: [20000], seed: [1, 2]).doubles()
        let m = n.reduce(0, +) / Double(n.count)
        let sd = (n.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(n.count)).squareRoot()
        XCTAssertEqual(m, 0, accuracy: 0.03)
        XCTAssertEqual(sd, 1, accuracy: 0.03)
        let t = try random(.truncatedNormal(0, 1), shape: [20000], seed: [1, 2]).doubles()
        XCTAssertTrue(t.allSatisfy { abs($0) <= 2 })
    }

    func testHostileArgumentsThrowInsteadOfTrapping() throws {
        XCTAssertThrowsError(try arange(start: 0, stop: 1e19, step: 1))
        XCTAssertThrowsError(try arange(start: 0, stop: 1e30, step: 1e-30))
        XCTAssertThrowsError(try zeros([1 << 20, 1 << 20]), "bigger than physical memory")
        let x = try zeros([2, 3])
        XCTAssertEqual(try stridedSlice(x, begin: [0, 0], end: [2, 3], strides: [1 << 62, 1]).shape, [1, 3])
        XCTAssertEqual(try stridedSlice(x, begin: [1, 2], end: [-1, -1], strides: [-(1 << 62), -(1 << 62)]).shape, [1, 1])
        XCTAssertThrowsError(try stridedSlice(x, begin: [Int.min, 0], end: [Int.max, 3], strides: [1, 1]))
        XCTAssertEqual(try arange(start: 0, stop: 5, step: 2, dtype: .int64).array(Int64.self), [0, 2, 4])
    }

    func testRegistryAndAttrs() throws {
        let out = try OpRegistry.call("full", [], Attrs(["shape": .ints([2, 2]), "value": .float(3), "dtype": .string("int64")]))
        XCTAssertEqual(try out[0].array(Int64.self), [3, 3, 3, 3])
        XCTAssertThrowsError(try OpRegistry.call("nope", []))
        XCTAssertThrowsError(try OpRegistry.call("add", [out[0]]))
        XCTAssertThrowsError(try OpRegistry.call("full", [], Attrs(["shape": .string("x")])))
        XCTAssertThrowsError(try OpRegistry.call("full", [], Attrs(["shape": .ints([-1])])))
        XCTAssertThrowsError(try OpRegistry.call("full", [], Attrs(["shape": .ints([1 << 40, 1 << 40])])))
        XCTAssertEqual(Set(OpRegistry.ops.map { $0.name }).count, OpRegistry.ops.count, "op names are unique")
        var a = Attrs(["axis": .int(1)])
        a.set("keepdims", .bool(true))
        a.set("axis", .ints([0, 2]))  // a repeated name replaces, as a dictionary key would
        XCTAssertEqual(try a.ints("axis"), [0, 2])
        XCTAssertTrue(try a.bool("keepdims"))
        XCTAssertFalse(a.has("dtype"))
        XCTAssertEqual(a.values.keys.sorted(), ["axis", "keepdims"])
        a.set("keepdims", .bool(false))  // past the first, inline, attribute too
        a.set("dtype", .string("int32"))
        XCTAssertFalse(try a.bool("keepdims"))
        XCTAssertEqual(try a.string("dtype"), "int32")
        XCTAssertEqual(try a.ints("axis"), [0, 2])
        XCTAssertEqual(a.values.count, 3)
        XCTAssertTrue(Attrs().values.isEmpty)
        XCTAssertFalse(Attrs(capacity: 4).has("axis"))
    }

    /// A freed buffer goes back only to requests of its own bucket: a slot shared by two
    /// capacities would hand out a buffer smaller than asked for.
    func testBufferPoolReusesBuffersOfTheSameBucketOnly() throws {
        let pool = BufferPool.shared
        pool.trim()  // buffers earlier tests freed would be reused too
        var sizes = [1, 63, 64, 65, 127, 128, 129, 200, 511, 512, 513, 4095, 4097, 70_000]
        for k in 10..<23 {
            let p: Int = 1 << k
            sizes += [p - 1, p, p + 1, p * 5 / 4 + 3]
        }
        var held: [(UnsafeMutableRawPointer, Int, Int)] = []
        for n in sizes {
            let (p, cap) = try pool.allocate(n)
            XCTAssertEqual(cap, BufferPool.bucket(n))
            XCTAssertGreaterThanOrEqual(cap, n)
            XCTAssertLessThanOrEqual(cap, Swift.max(64, n + n / 4 + 64))
            held.append((p, cap, n))
        }
        for (p, cap, _) in held { pool.release(p, cap) }
        for (_, cap, n) in held.reversed() {
            let (p, c) = try pool.allocate(n)
            XCTAssertEqual(c, cap)
            XCTAssertTrue(held.contains { $0.0 == p && $0.1 == c }, "a reused buffer comes from the request's own bucket")
            pool.release(p, c)
        }
    }

    func testTapeRecordsOnlyWhatNeedsIt() throws {
        let x = try Tensor([Float(1), 2, 3])
        Tape.push()
        let y = try multiply(x, x)
        XCTAssertNil(y.node, "nothing requires a gradient")
        x.requiresGrad = true
        let z = try sum(try multiply(x, x))
        let g = try Tape.gradient(of: z, wrt: [x])
        XCTAssertEqual(try g[0]!.array(Float.self), [2, 4, 6])
        let w = stopGradient(try multiply(x, x))
        XCTAssertNil(try Tape.gradient(of: try sum(w), wrt: [x])[0])
        try Tape.pop()
        XCTAssertThrowsError(try Tape.pop())
        XCTAssertThrowsError(try Tape.gradient(of: z, wrt: [x]))
    }

    func testAdamUpdateMatchesTheFormula() throws {
        let x = try f64([5], seed: 60), g = try f64([5], seed: 61), m = try f64([5], seed: 62)
        let v = try f64([5], seed: 63, lo: 0, hi: 1)
        let (alpha, b1, b2, eps) = (0.01, 0.9, 0.999, 1e-7)
        let (nx, nm, nv) = try adamUpdate(variable: x, grad: g, m: m, v: v, alpha: alpha, beta1: b1, beta2: b2, epsilon: eps)
        for i in 0..<5 {
            let (xi, gi, mi, vi) = (x.doubles()[i], g.doubles()[i], m.doubles()[i], v.doubles()[i])
            let em = mi + (gi - mi) * (1 - b1), ev = vi + (gi * gi - vi) * (1 - b2)
            XCTAssertEqual(nm.doubles()[i], em, accuracy: 1e-12)
            XCTAssertEqual(nv.doubles()[i], ev, accuracy: 1e-12)
            XCTAssertEqual(nx.doubles()[i], xi - em * alpha / (ev.squareRoot() + eps), accuracy: 1e-12)
        }
        XCTAssertThrowsError(try adamUpdate(variable: x, grad: try f64([4], seed: 1), m: m, v: v, alpha: 1, beta1: 0.9, beta2: 0.9, epsilon: 0))
        let xi = try cast(x, to: .int32)
        XCTAssertThrowsError(try adamUpdate(variable: xi, grad: xi, m: xi, v: xi, alpha: 1, beta1: 0.9, beta2: 0.9, epsilon: 0))
    }

    /// The float32 kernel runs four lanes at a time then a scalar tail: every element of
    /// both must match the float64 formula rounded to float32.
    func testAdamUpdateFloat32LanesAndTail() throws {
        let n = 11
        let x = try f64([n], seed: 64), g = try f64([n], seed: 65), m = try f64([n], seed: 66)
        let v = try f64([n], seed: 67, lo: 0, hi: 1)
        let (alpha, b1, b2, eps) = (0.01, 0.9, 0.999, 1e-7)
        let (nx, nm, nv) = try adamUpdate(variable: try cast(x, to: .float32), grad: try cast(g, to: .float32),
                                          m: try cast(m, to: .float32), v: try cast(v, to: .float32),
                                          alpha: alpha, beta1: b1, beta2: b2, epsilon: eps)
        XCTAssertEqual(nx.dtype, .float32)
        let (rx, rm, rv) = try adamUpdate(variable: x, grad: g, m: m, v: v, alpha: alpha, beta1: b1, beta2: b2, epsilon: eps)
        for (got, want) in [(nx, rx), (nm, rm), (nv, rv)] {
            for i in 0..<n { XCTAssertEqual(got.doubles()[i], want.doubles()[i], accuracy: 1e-5, "element \(i)") }
        }
    }

    /// Max pooling sends each gradient to the first maximum of its window only (ties
    /// included), and overlapping windows add their gradients up.
    func testMaxPoolGradientGoesToTheFirstMaximum() throws {
        // One image, 1x4 pixels, 2 channels; pool 1x2, stride 1: windows {0,1}, {1,2}, {2,3}.
        let x = try reshape(try Tensor([3, 1, 3, 5, 2, 5, 2, 4] as [Double]), [1, 1, 4, 2])
        x.requiresGrad = true
        Tape.push()
        let y = try pool2d(.max, x, poolSize: [1, 2], strides: [1, 1])
        let w = try reshape(try Tensor([1, 10, 100, 1000, 10000, 100000] as [Double]), [1, 1, 3, 2])
        let gx = try Tape.gradient(of: try sum(try multiply(y, w)), wrt: [x])[0]!
        try Tape.pop()
        x.requiresGrad = false
        // Channel 0 (3, 3, 2, 2): windows pick pixel 0 (tie, first), pixel 1, pixel 2 (tie, first).
        // Channel 1 (1, 5, 5, 4): pixel 1, pixel 1 (tie with pixel 2, first), pixel 2.
        XCTAssertEqual(gx.doubles(), [1, 0, 100, 10 + 1000, 10000, 100000, 0, 0])
    }

    func testFloat8Casts() throws {
        let x = try Tensor([1.0, -2.5, 448, 500, 0.001953125, 0.0009765625, 1e-6, 0.3, Double.nan] as [Double])
        let e4 = try cast(x, to: .float8_e4m3fn)
        XCTAssertEqual(e4.dtype.itemSize, 1)
        let bits4 = (0..<e4.count).map { e4.pointer(UInt8.self)[$0] }
        // 1.0, -2.5, max 448, overflow -> NaN, min subnormal 2^-9, 2^-10 ties to even (0), 1e-6 -> 0, 0.3 -> 0.3125
        XCTAssertEqual(Array(bits4.prefix(8)), [0x38, 0xC2, 0x7E, 0x7F, 0x01, 0x00, 0x00, 0x2A])
        XCTAssertEqual(bits4[8] & 0x7F, 0x7F)
        let back = try cast(e4, to: .float32).doubles()
        XCTAssertEqual(Array(back.prefix(3)), [1, -2.5, 448])
        XCTAssertTrue(back[3].isNaN)
        XCTAssertEqual(back[7], 0.3125)
        let e5 = try cast(try Tensor([1.0, 57344, 1e6, -0.0] as [Double]), to: .float8_e5m2)
        XCTAssertEqual((0..<4).map { e5.pointer(UInt8.self)[$0] }, [0x3C, 0x7B, 0x7C, 0x80])
        // Arithmetic widens to float32 and rounds back, like the other narrow floats.
        let s = try add(e4, e4)
        XCTAssertEqual(s.dtype, .float8_e4m3fn)
        XCTAssertEqual(try cast(s, to: .float64).doubles()[1], -5)
    }
}

/// A stride-1 3x3 conv of x (N, H, W, C) with k (3, 3, C, O) and `pad` zeros on every side
/// by direct loops in float64, with the gradients of sum(y * weights) when weights are given.
private func directConv3x3(_ x: Tensor, _ k: Tensor, weights r: Tensor?, pad: Int) -> (y: [Double], dx: [Double], dk: [Double]) {
    let (n, h, w, c, o) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3], k.shape[3])
    let (oh, ow) = (h + 2 * pad - 2, w + 2 * pad - 2)
    let xv = x.doubles(), kv = k.doubles(), rv = r?.doubles()
    var y = [Double](repeating: 0, count: n * oh * ow * o), dx = [Double](repeating: 0, count: xv.count)
    var dk = [Double](repeating: 0, count: kv.count)
    for img in 0..<n { for oy in 0..<oh { for ox in 0..<ow { for ky in 0..<3 { for kx in 0..<3 {
        let iy = oy - pad + ky, ix = ox - pad + kx
        guard iy >= 0 && iy < h && ix >= 0 && ix < w else { continue }
        for ch in 0..<c { for oc in 0..<o {
            let xi = ((img * h + iy) * w + ix) * c + ch, ki = ((ky * 3 + kx) * c + ch) * o + oc
            let yi = ((img * oh + oy) * ow + ox) * o + oc
            y[yi] += xv[xi] * kv[ki]
            if let rv = rv {
                dx[xi] += rv[yi] * kv[ki]
                dk[ki] += rv[yi] * xv[xi]
            }
        } }
    } } } } }
    return (y, dx, dk)
}

/// Same length, and every element within `relative` of the largest |want| (at least 1).
private func assertNear(_ got: Tensor, _ want: [Double], relative: Double, _ message: String,
                        file: StaticString = #filePath, line: UInt = #line) {
    let g = got.doubles()
    XCTAssertEqual(g.count, want.count, message, file: file, line: line)
    let worst = zip(g, want).map { Swift.abs($0 - $1) }.max() ?? 0
    XCTAssertLessThan(worst, relative * Swift.max(1, want.map(Swift.abs).max() ?? 0), message, file: file, line: line)
}
