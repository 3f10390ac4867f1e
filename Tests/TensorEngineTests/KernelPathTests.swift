import XCTest
import Foundation
import Dispatch
import Synchronization
@testable import TensorEngine

/// The vectorised / fused fast paths against the plain definitions they replace.
final class KernelPathTests: XCTestCase {
    /// GEMM cut into blocks of rows or columns on the pool: every shape, transpose and beta
    /// against a plain triple loop (in double), including blocks that do not divide evenly
    /// and calls from inside a parallel loop (which run on their own thread).
    func testGEMMSplitAcrossThreadsMatchesTheDefinition() {
        let saved = Threading.numThreads
        defer { Threading.numThreads = saved }
        Threading.numThreads = 3
        for (m, n, k) in [(517, 96, 33), (40, 700, 50), (300, 299, 3), (64, 64, 64), (2, 5000, 30)] {
            for (transA, transB) in [(false, false), (true, false), (false, true), (true, true)] {
                for beta: Float in [0, 1] {
                    var rng: UInt64 = 99
                    func next() -> Float { rng = rng &* 6364136223846793005 &+ 1; return Float(Int(rng >> 40) % 19 - 9) / 8 }
                    let a = (0..<(m * k)).map { _ in next() }, b = (0..<(k * n)).map { _ in next() }
                    let c0 = (0..<(m * n)).map { _ in next() }
                    let (lda, ldb) = (transA ? m : k, transB ? k : n)
                    var want = [Double](repeating: 0, count: m * n)
                    for i in 0..<m { for j in 0..<n {
                        var acc = Double(beta) * Double(c0[i * n + j])
                        for p in 0..<k {
                            acc += Double(transA ? a[p * lda + i] : a[i * lda + p]) * Double(transB ? b[j * ldb + p] : b[p * ldb + j])
                        }
                        want[i * n + j] = acc
                    } }
                    for nested in [false, true] {
                        var c = c0
                        let run = { (pc: UnsafeMutablePointer<Float>) in
                            Float.gemm(transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb,
                                       beta: beta, c: pc, ldc: n)
                        }
                        c.withUnsafeMutableBufferPointer { buf in
                            let pc = buf.baseAddress!
                            if nested { parallelFor(2, cost: Threading.grain) { r in if r.contains(0) { run(pc) } } } else { run(pc) }
                        }
                        let worst = zip(c, want).map { abs(Double($0) - $1) }.max() ?? 0
                        XCTAssertLessThan(worst, 1e-3, "\(m)x\(n)x\(k) transA \(transA) transB \(transB) beta \(beta) nested \(nested)")
                    }
                }
            }
        }
    }

    /// WorkerPool: every index once, from nested calls and from several caller threads at
    /// a time (all but one run inline), with more workers than this machine may have cores.
    func testParallelForCoversEveryIndexOnceUnderConcurrentCallers() {
        let saved = Threading.numThreads
        defer { Threading.numThreads = saved }
        Threading.numThreads = 4
        func check(_ n: Int, nested: Bool) -> Bool {
            let hits = UnsafeMutablePointer<UInt8>.allocate(capacity: n)
            defer { hits.deallocate() }
            hits.initialize(repeating: 0, count: n)
            parallelFor(n, cost: Threading.grain) { r in
                if nested {
                    parallelFor(r.count, cost: Threading.grain) { inner in
                        for i in inner { hits[r.lowerBound + i] &+= 1 }
                    }
                } else {
                    for i in r { hits[i] &+= 1 }
                }
            }
            return (0..<n).allSatisfy { hits[$0] == 1 }
        }
        let failures = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 3) { caller in
            for round in 0..<300 {
                let n = 1 + (round * 7919 + caller * 104729) % 50
                if !check(n, nested: round % 5 == 0) { failures.withLock { $0.append("caller \(caller) n \(n)") } }
            }
        }
        XCTAssertEqual(failures.withLock { $0 }, [])
        for n in [1, 2, 3, 4, 5, 63, 64, 65, 1000] { XCTAssertTrue(check(n, nested: false), "n \(n)") }
    }

    func testPhiloxWordsMatchTheScalarBlocks() throws {
        let s = try Seed([12345, 678])
        // Starts just below a 2^32 boundary of the low counter word, where groups go scalar.
        for b0 in [0, 5, (1 << 32) - 13] {
            let count = 37
            var words = [UInt32](repeating: 0, count: 4 * count)
            words.withUnsafeMutableBufferPointer { s.words(from: b0, count: count, tag: 1, into: $0.baseAddress!) }
            for b in 0..<count {
                let w = s.block(b0 + b, tag: 1)
                XCTAssertEqual(Array(words[(4 * b)..<(4 * b + 4)]), [w.0, w.1, w.2, w.3], "block \(b0 + b)")
            }
        }
    }

    func testDropoutKeepsWhereTheSameUniformDrawIsBelowKeepProb() throws {
        let seed = [3, 9]
        for dtype in [DType.float32, .float64] {
            let x = try cast(try f64([37, 29], seed: 1), to: dtype)
            let u = try random(.uniform(0, 1), shape: x.shape, dtype: .float32, seed: seed).doubles()
            let y = try dropout(x, rate: 0.3, seed: seed).doubles(), xv = x.doubles()
            let kp = dtype == .float32 ? Double(Float(0.7)) : 0.7
            for i in 0..<xv.count {
                let want = Float(u[i]) < Float(0.7) ? xv[i] / kp : 0
                XCTAssertEqual(y[i], dtype == .float32 ? Double(Float(want)) : want, "\(dtype) element \(i)")
            }
        }
        // Broadcast noise: one draw per column, shared by every row.
        let x = try f64([5, 8], seed: 2)
        let y = try dropout(x, rate: 0.5, noiseShape: [1, 8], seed: seed).doubles()
        let keep = try random(.uniform(0, 1), shape: [1, 8], dtype: .float32, seed: seed).doubles().map { $0 < 0.5 }
        for r in 0..<5 { for c in 0..<8 { XCTAssertEqual(y[r * 8 + c] != 0, keep[c]) } }
        XCTAssertThrowsError(try dropout(x, rate: 1, seed: seed))
        try checkGradient("dropout", [try f64([4, 6], seed: 3)]) { try dropout($0[0], rate: 0.4, seed: seed) }
    }

    func testWhereWithOneElementBranchesEveryWidth() throws {
        let c = try Tensor([true, false, true, false, false, true, true, false, true], shape: [9])
        for dtype in [DType.int8, .int16, .float32, .float64, .bool] {
            let x = try cast(try Tensor((0..<9).map { Double($0 % 2 == 0 ? $0 : 0) }), to: dtype)
            let s = try cast(try scalar(1), to: dtype)
            let cv = try c.array(Bool.self), xv = x.doubles(), sv = s.doubles()[0]
            XCTAssertEqual(try `where`(c, x, s).doubles(), (0..<9).map { cv[$0] ? xv[$0] : sv }, "\(dtype)")
            XCTAssertEqual(try `where`(c, s, x).doubles(), (0..<9).map { cv[$0] ? sv : xv[$0] }, "\(dtype)")
            XCTAssertEqual(try `where`(c, x, x).doubles(), xv, "\(dtype)")
        }
    }

    func testFloat32ArgmaxRowsMatchTheGenericLoop() throws {
        for r in [1, 3, 15, 16, 17, 40] {
            var v = testValues(6 * r, seed: r).map { Float($0) }
            v[r - 1] = .nan                          // row 0: NaN wins
            for k in 0..<r { v[r + k] = 2 }          // row 1: all ties -> 0
            if r > 2 { v[2 * r + r / 2] = .infinity; v[2 * r + r - 1] = .infinity }
            v[3 * r] = -0.0                          // row 3: -0 and 0 compare equal
            let x = try Tensor(v, shape: [6, r])
            let wide = try cast(x, to: .float64)     // float64 takes the generic loop
            for op in [ArgReduce.argmax, .argmin] {
                XCTAssertEqual(try argReduce(op, x, axis: -1).array(Int32.self),
                               try argReduce(op, wide, axis: -1).array(Int32.self), "\(op) r=\(r)")
            }
        }
    }

    func testTiledTransposeMatchesIndexing() throws {
        let shape = [3, 5, 7, 9]
        let n = shape.reduce(1, *)
        for dtype in [DType.uint8, .int16, .float32, .float64] {
            let x = try cast(try Tensor((0..<n).map { Double($0 % 251) }, shape: shape), to: dtype)
            let xv = x.doubles()
            for perm in [[3, 2, 1, 0], [0, 3, 2, 1], [3, 0, 1, 2], [1, 3, 0, 2]] {
                let y = try transpose(x, perm)
                let ys = y.shape, yv = y.doubles()
                let xs = contiguousStrides(shape)
                for i in 0..<n {
                    var rem = i, src = 0
                    for d in stride(from: 3, through: 0, by: -1) {
                        src += (rem % ys[d]) * xs[perm[d]]
                        rem /= ys[d]
                    }
                    if yv[i] != xv[src] { return XCTFail("\(dtype) \(perm): element \(i)") }
                }
            }
        }
    }

    /// A deferred transpose takes its destination from the pool up front and gives it back
    /// when it goes away, whether or not it was ever read (then its `Storage` owns it).
    func testDeferredTransposeReturnsItsBufferWhetherOrNotItIsRead() throws {
        let x = try Tensor([Float](repeating: 1, count: 32768), shape: [8, 16, 4, 64])
        let pool = BufferPool.shared
        for read in [false, true] {
            pool.trim()
            do {
                let t = try transpose(x, [0, 2, 1, 3])
                XCTAssertEqual(pool.cachedBytes, 0)
                if read { XCTAssertEqual(try t.array(Float.self), [Float](repeating: 1, count: 32768)) }
            }
            XCTAssertEqual(pool.cachedBytes, BufferPool.bucket(x.nbytes), "read: \(read)")
        }
    }

    /// Large transposes are deferred copies: the values must match the eager copy of a small
    /// one, also for a transpose of a pending transpose, reshapes, gradients and readers racing
    /// on one pending tensor.
    func testDeferredTransposeMatchesTheEagerCopy() throws {
        let shape = [8, 16, 4, 64]  // 32768 elements: above deferredCopyMinimum
        let n = shape.reduce(1, *)
        XCTAssertGreaterThanOrEqual(n, deferredCopyMinimum)
        let x = try Tensor((0..<n).map { Float($0) }, shape: shape)
        func expected(_ perm: [Int], _ src: [Float], _ srcShape: [Int]) -> [Float] {
            let outShape = perm.map { srcShape[$0] }, st = contiguousStrides(srcShape)
            return (0..<n).map { i in
                var rem = i, off = 0
                for d in stride(from: perm.count - 1, through: 0, by: -1) {
                    off += (rem % outShape[d]) * st[perm[d]]
                    rem /= outShape[d]
                }
                return src[off]
            }
        }
        let xv = try x.array(Float.self)
        let y = try transpose(x, [0, 2, 1, 3])
        let z = try transpose(y, [3, 1, 0, 2])   // composed before y is read
        let zExpected = expected([3, 1, 0, 2], expected([0, 2, 1, 3], xv, shape), [8, 4, 16, 64])
        XCTAssertEqual(try z.array(Float.self), zExpected)
        XCTAssertEqual(try y.array(Float.self), expected([0, 2, 1, 3], xv, shape))
        XCTAssertEqual(try transpose(z, [2, 1, 3, 0]).array(Float.self), try y.array(Float.self))
        XCTAssertEqual(try reshape(try transpose(x, [3, 2, 1, 0]), [n]).array(Float.self), expected([3, 2, 1, 0], xv, shape))
        XCTAssertEqual(try add(try transpose(x, [1, 0, 2, 3]), try scalar(1)).array(Float.self),
                       expected([1, 0, 2, 3], xv, shape).map { $0 + 1 })

        // Many threads read one pending tensor at once: one copy, every reader sees it whole.
        let pending = try transpose(x, [2, 3, 0, 1])
        let want = expected([2, 3, 0, 1], xv, shape)
        var ok = [Bool](repeating: false, count: 8)
        ok.withUnsafeMutableBufferPointer { flags in
            let f = flags.baseAddress!
            DispatchQueue.concurrentPerform(iterations: 8) { t in
                f[t] = (try? sum(pending).double(at: 0)) == want.reduce(0.0) { $0 + Double($1) }
                    && Array(UnsafeBufferPointer(start: pending.pointer(Float.self), count: n)) == want
            }
        }
        XCTAssertEqual(ok, [Bool](repeating: true, count: 8))

        // The gradient of a deferred transpose is the inverse transpose of the output gradient.
        let w = try Tensor((0..<n).map { Float(($0 * 7) % 13) }, shape: [8, 4, 16, 64])
        Tape.push()
        defer { try? Tape.pop() }
        x.requiresGrad = true
        defer { x.requiresGrad = false }
        let l = try sum(try multiply(try transpose(x, [0, 2, 1, 3]), w))
        let g = try Tape.gradient(of: l, wrt: [x])[0]!
        XCTAssertEqual(try g.array(Float.self), try transpose(w, [0, 2, 1, 3]).array(Float.self))
    }

    /// The fused moments against a two-pass Double reference, over rows, columns, split axes,
    /// keepdims and float64, and their gradients against finite differences.
    func testMomentsMatchesATwoPassReference() throws {
        func reference(_ v: [Double], _ shape: [Int], _ axes: [Int]) -> ([Double], [Double]) {
            let kept = (0..<shape.count).filter { !axes.contains($0) }
            let st = contiguousStrides(shape)
            var groups: [[Int]: [Double]] = [:]
            for i in 0..<v.count {
                let key = kept.map { (i / st[$0]) % shape[$0] }
                groups[key, default: []].append(v[i])
            }
            let keys = groups.keys.sorted { $0.lexicographicallyPrecedes($1) }
            let means = keys.map { k in groups[k]!.reduce(0, +) / Double(groups[k]!.count) }
            let vars = keys.enumerated().map { j, k in groups[k]!.map { ($0 - means[j]) * ($0 - means[j]) }.reduce(0, +) / Double(groups[k]!.count) }
            return (means, vars)
        }
        let shape = [6, 5, 300]
        let v = testValues(shape.reduce(1, *), seed: 21, lo: 3, hi: 5)
        for dtype in [DType.float32, .float64] {
            let x = try cast(try Tensor(v, shape: shape), to: dtype)
            for axes in [[2], [0], [0, 1], [1], [0, 2], [0, 1, 2]] {
                let (m, va) = try moments(x, axes: axes)
                let (rm, rv) = reference(v, shape, axes)
                let tol = dtype == .float32 ? 1e-5 : 1e-12
                for (a, b) in zip(m.doubles(), rm) { XCTAssertEqual(a, b, accuracy: tol * 5, "\(dtype) \(axes) mean") }
                for (a, b) in zip(va.doubles(), rv) { XCTAssertEqual(a, b, accuracy: tol, "\(dtype) \(axes) variance") }
                XCTAssertEqual(m.shape, (0..<3).filter { !axes.contains($0) }.map { shape[$0] })
            }
        }
        let (mk, vk) = try moments(try Tensor(v, shape: shape), axes: [-1], keepdims: true)
        XCTAssertEqual(mk.shape, [6, 5, 1])
        XCTAssertEqual(vk.shape, [6, 5, 1])
        let (me, ve) = try moments(try Tensor(zeros: [0, 3], dtype: .float32), axes: [0])
        XCTAssertTrue(me.doubles().allSatisfy { $0.isNaN } && ve.doubles().allSatisfy { $0.isNaN } && me.count == 3)

        let small = try f64([3, 4, 5], seed: 22)
        for axes in [[2], [0], [0, 1], [0, 2]] {
            try checkGradient("moments mean \(axes)", [small]) { try moments($0[0], axes: axes).mean }
            try checkGradient("moments variance \(axes)", [small]) { try moments($0[0], axes: axes).variance }
            try checkGradient("moments both \(axes)", [small]) {
                let (m, va) = try moments($0[0], axes: axes, keepdims: true)
                return try add(try multiply(m, try scalar(0.7, .float64)), va)
            }
        }
    }
    /// The vectorised float32 erf against libm's double erf, in float32 ulps, over a dense
    /// grid (both branches and their joins) and the special values; then the exact gelu and
    /// its gradient, which use it, against double references.
    func testFloat32ErfAndExactGeluMatchDoubleReferences() throws {
        var xs: [Float] = stride(from: -6.0, through: 6.0, by: 1.0 / 4096).map { Float($0) }
        xs += [0, -0, 1e-30, -1e-30, 1e-8, 0.9, 0.8999999, 4, 3.9999998, .infinity, -.infinity]
        var worst = 0.0
        for x in xs {
            let got = Double(VecMath.erf(x)), want = Foundation.erf(Double(x))
            let ulp = Double(Float(Swift.abs(want)).ulp)
            worst = Swift.max(worst, Swift.abs(got - want) / ulp)
            XCTAssertEqual(VecMath.erf(x).sign, x.sign, "erf(\(x)) keeps the sign")
        }
        XCTAssertLessThanOrEqual(worst, 3, "erf is off by \(worst) ulp")
        XCTAssertTrue(VecMath.erf(.nan).isNaN)

        let t = try Tensor(xs.filter { $0.isFinite }, shape: [xs.count - 2])
        let gelu = try unary(.gelu(approximate: false), t).doubles()
        Tape.push()
        defer { try? Tape.pop() }
        t.requiresGrad = true
        defer { t.requiresGrad = false }
        let grad = try Tape.gradient(of: try sum(try unary(.gelu(approximate: false), t)), wrt: [t])[0]!.doubles()
        let erfGrad = try Tape.gradient(of: try sum(try unary(.erf, t)), wrt: [t])[0]!.doubles()
        for (i, x) in t.doubles().enumerated() {
            let phi = 0.5 * (1 + Foundation.erf(x / 2.0.squareRoot())), pdf = Foundation.exp(-0.5 * x * x) / (2 * Double.pi).squareRoot()
            XCTAssertEqual(gelu[i], x * phi, accuracy: 4e-7 * Swift.max(1, Swift.abs(x)), "gelu(\(x))")
            XCTAssertEqual(grad[i], phi + x * pdf, accuracy: 1e-6, "gelu'(\(x))")
            XCTAssertEqual(erfGrad[i], 2 / Double.pi.squareRoot() * Foundation.exp(-x * x), accuracy: 1e-6, "erf'(\(x))")
        }
    }

    /// float32 power's fast path (vectorised 2^(b log2 a) in double, powf for the lanes it
    /// leaves; `power` takes it in x86-64-v3 builds) against double pow: NaNs, infinities
    /// and signed zeros exactly, the rest within one float32 ulp; contiguous operands and a
    /// scalar on either side, through `mapPowF32` whichever build this is, and `power`.
    func testFloat32PowerMatchesDoubleReference() throws {
        let bases: [Float] = [0, -0, 1, -1, 2, -2, 0.5, -0.5, 3e38, -3e38, 1e-40, -1e-40, 1.1754944e-38,
                              .infinity, -.infinity, .nan, 0.9999, 1.0001, 7.25, -7.25, 123.5, 1e-20]
        let exponents: [Float] = [0, -0, 1, -1, 2, -2, 3, -3, 0.5, -0.5, 127, 128, -126, -150, 4194305, 8388609,
                                  16777216, 1e-8, 1e30, -1e30, .infinity, -.infinity, .nan, 2.75, -13, 40.5]
        var a: [Float] = [], b: [Float] = []
        for x in bases { for y in exponents { a.append(x); b.append(y) } }
        var g = SystemRandomNumberGenerator()
        for _ in 0..<4096 {
            a.append(Float.random(in: -4...4, using: &g))
            b.append(Float.random(in: -20...20, using: &g).rounded(a.last! < 0 ? .toNearestOrEven : .towardZero))
        }
        func check(_ x: [Float], _ y: [Float], _ got: [Double], _ label: String) {
            for i in got.indices {
                let want = Foundation.pow(Double(x[i]), Double(y[i])), w = Float(want), r = Float(got[i])
                let what = "\(label): pow(\(x[i]), \(y[i])) = \(r), want \(w)"
                if w.isNaN { XCTAssertTrue(r.isNaN, what); continue }
                if w.isInfinite || w == 0 { XCTAssertEqual(r.bitPattern, w.bitPattern, what); continue }
                XCTAssertLessThanOrEqual(Swift.abs(Double(r) - want) / Double(w.magnitude.ulp), 1, what)
            }
        }
        let n = a.count
        let ta = try Tensor(a, shape: [n]), tb = try Tensor(b, shape: [n])
        func fast(_ x: Tensor, _ y: Tensor) throws -> [Double] {
            let out = try Tensor(empty: [n], dtype: .float32)
            XCTAssertTrue(mapPowF32(x, y, out))
            return out.doubles()
        }
        check(a, b, try power(ta, tb).doubles(), "power")
        check(a, b, try fast(ta, tb), "contiguous")
        for s: Float in [2, -2, 0.5, -0] {
            let sa = try Tensor([s], shape: []), sb = try Tensor([s], shape: [])
            check(Array(repeating: s, count: n), b, try fast(sa, tb), "scalar base")
            check(a, Array(repeating: s, count: n), try fast(ta, sb), "scalar exponent")
        }
    }
}
