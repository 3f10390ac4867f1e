import XCTest
@testable import TensorEngine

/// The vectorised / fused fast paths against the plain definitions they replace.
final class KernelPathTests: XCTestCase {
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
}
