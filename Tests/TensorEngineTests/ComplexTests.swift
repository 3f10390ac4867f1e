import XCTest
@testable import TensorEngine

final class ComplexTests: XCTestCase {
    typealias C = Complex<Float>

    private func values(_ t: Tensor) throws -> [(Float, Float)] {
        try t.array(C.self).map { ($0.re, $0.im) }
    }

    private func assertClose(_ t: Tensor, _ expected: [(Float, Float)], tol: Float = 1e-5,
                             file: StaticString = #filePath, line: UInt = #line) throws {
        let got = try values(t)
        XCTAssertEqual(got.count, expected.count, file: file, line: line)
        for (g, e) in zip(got, expected) {
            XCTAssertEqual(g.0, e.0, accuracy: tol * max(1, abs(e.0)), file: file, line: line)
            XCTAssertEqual(g.1, e.1, accuracy: tol * max(1, abs(e.1)), file: file, line: line)
        }
    }

    func testArithmeticMatchesNumpy() throws {
        let x = try Tensor([C(1, 2), C(3, -4)]), y = try Tensor([C(0.5, 0), C(-1, 1)])
        try assertClose(try add(x, y), [(1.5, 2), (2, -3)])
        try assertClose(try subtract(x, y), [(0.5, 2), (4, -5)])
        try assertClose(try multiply(x, y), [(0.5, 1), (1, 7)])
        try assertClose(try divide(x, y), [(2, 4), (-3.5, 0.5)])
        try assertClose(try power(x, try Tensor([C(2), C(2)])), [(-3, 4), (-7, -24)], tol: 0)
        try assertClose(try power(x, try Tensor([C(0.5, 1), C(0.5, 1)])), [(0.10423306, 0.4830959), (2.330479, 5.1492014)], tol: 1e-4)
        // Division by a huge divisor: Smith's scaling keeps |y|^2 from overflowing.
        try assertClose(try divide(try Tensor([C(1e30, 1e30)]), try Tensor([C(1e30, 1e30)])), [(1, 0)])
        XCTAssertEqual(try binary(.equal, x, try Tensor([C(1, 2), C(3, 4)])).array(Bool.self), [true, false])
        XCTAssertThrowsError(try binary(.less, x, y))
    }

    func testPromotionAndCasts() throws {
        let x = try Tensor([C(1, 2), C(0, 0)])
        XCTAssertEqual(DType.result(.float32, .complex64), .complex64)
        XCTAssertEqual(DType.result(.int32, .complex64), .complex64)
        XCTAssertEqual(DType.result(.float64, .complex64), .complex128)
        try assertClose(try add(x, try Tensor([Float(1), 2])), [(2, 2), (2, 0)])
        XCTAssertEqual(try cast(x, to: .bool).array(Bool.self), [true, false])
        XCTAssertEqual(try cast(x, to: .float32).array(Float.self), [1, 0])
        let wide = try cast(x, to: .complex128)
        XCTAssertEqual(try wide.array(Complex<Double>.self).map { [$0.re, $0.im] }, [[1, 2], [0, 0]])
        try assertClose(try cast(try Tensor([Int32(3)]), to: .complex64), [(3, 0)])
        try assertClose(try full([2], value: 1, dtype: .complex64), [(1, 0), (1, 0)])
    }

    func testUnaryAndParts() throws {
        let x = try Tensor([C(3, -4), C(-1, 0)])
        XCTAssertEqual(try unary(.abs, x).array(Float.self), [5, 1])
        XCTAssertEqual(try real(x).array(Float.self), [3, -1])
        XCTAssertEqual(try imag(x).array(Float.self), [-4, 0])
        try assertClose(try conj(x), [(3, 4), (-1, -0)])
        XCTAssertEqual(try angle(x).array(Float.self)[1], .pi, accuracy: 1e-6)
        try assertClose(try unary(.sqrt, x), [(2, -1), (0, 1)])
        try assertClose(try unary(.exp, try Tensor([C(1, 2)])), [(-1.1312044, 2.4717267)])
        try assertClose(try unary(.log, try Tensor([C(1, 2)])), [(0.804719, 1.1071488)])
        XCTAssertEqual(try unary(.isfinite, try Tensor([C(.infinity, 0), C(1, 1)])).array(Bool.self), [false, true])
        XCTAssertThrowsError(try unary(.relu, x))
        // Real inputs: real is the identity, imag zeros, angle arctan2(0, x).
        XCTAssertEqual(try imag(try Tensor([Float(2)])).array(Float.self), [0])
        let realAngles = try angle(try Tensor([Float(-2), 2])).array(Float.self)
        XCTAssertEqual(realAngles[0], .pi, accuracy: 1e-6)
        XCTAssertEqual(realAngles[1], 0)
        try assertClose(try complex(try Tensor([Float(1), 2]), try Tensor([Float(3)])), [(1, 3), (2, 3)])
    }

    func testReductionsAndMatmul() throws {
        let x = try Tensor([C(1, 2), C(3, -4), C(0, 1), C(2, 2)], shape: [2, 2])
        try assertClose(try reduce(.sum, x, axes: [0]), [(1, 3), (5, -2)])
        try assertClose(try reduce(.mean, x), [(1.5, 0.25)])
        XCTAssertThrowsError(try reduce(.max, x))
        // [[1+2i, 3-4i], [i, 2+2i]] @ itself, as numpy computes it.
        try assertClose(try matmul(x, x), [(1, 7), (25, 0), (-4, 3), (4, 11)])
    }

    func testRegistryRefusesComplexWhereUnsupported() throws {
        let x = try Tensor([C(1, 2)])
        XCTAssertThrowsError(try OpRegistry.call("relu", [x])) { err in
            XCTAssertTrue("\(err)".contains("complex"), "\(err)")
        }
        XCTAssertEqual(try OpRegistry.call("real", [x])[0].array(Float.self), [1])
        XCTAssertEqual(try OpRegistry.call("reshape", [x], Attrs(["shape": .ints([1, 1])]))[0].shape, [1, 1])
    }

    func testEigReconstructsGeneralMatrices() throws {
        // A rotation-like block has the conjugate pair 1 ± 2i; the last eigenvalue is real.
        let a: [Double] = [1, -2, 0.5, 2, 1, 0.25, 0, 0, 3]
        let (w, v) = try eig(try Tensor(a, shape: [3, 3]))
        XCTAssertEqual(w.dtype, .complex128)
        let ws = try w.array(Complex<Double>.self), vs = try v.array(Complex<Double>.self)
        XCTAssertEqual(Set(ws.map { [($0.re * 1e6).rounded() / 1e6, ($0.im * 1e6).rounded() / 1e6] }), [[1, 2], [1, -2], [3, 0]])
        // A v_j = w_j v_j for every column j.
        for j in 0..<3 {
            for i in 0..<3 {
                var av = Complex<Double>(0)
                for k in 0..<3 { av = av + Complex(a[i * 3 + k]) * vs[k * 3 + j] }
                let wv = ws[j] * vs[i * 3 + j]
                XCTAssertEqual(av.re, wv.re, accuracy: 1e-9)
                XCTAssertEqual(av.im, wv.im, accuracy: 1e-9)
            }
        }
        XCTAssertEqual(try eig(try Tensor([Float(2), 0, 0, 1], shape: [2, 2])).values.dtype, .complex64)
        XCTAssertThrowsError(try eig(try Tensor([Float(1), 2], shape: [1, 2])))
        // NaN input: NaN eigenpairs (LAPACK itself would reject the argument).
        let nanPairs = try eig(try Tensor([Float.nan, 1, 2, 3], shape: [2, 2]))
        XCTAssertTrue(try nanPairs.values.array(Complex<Float>.self).allSatisfy { $0.re.isNaN })
    }
}
