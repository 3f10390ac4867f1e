import XCTest
@testable import TensorEngine

final class LinalgTests: XCTestCase {
    /// A well-conditioned batch of square matrices: random + 3 I.
    private func wellConditioned(_ batch: [Int], _ n: Int, seed: Int) throws -> Tensor {
        try add(try f64(batch + [n, n], seed: seed), try multiply(try eye(n, n, dtype: .float64), try scalar(3, .float64)))
    }

    func testGradients() throws {
        let a = try wellConditioned([2], 3, seed: 40)
        try checkGradient("inv", [a]) { try inv($0[0]) }
        try checkGradient("det", [a], tolerance: 1e-4) { try det($0[0]) }
        try checkGradient("slogdet", [a]) { try slogdet($0[0]).logabsdet }
        let b = try f64([2, 3, 2], seed: 41)
        try checkGradient("solve", [a, b]) { try solve($0[0], $0[1]) }
        let lower = try triangle(a, k: 0, upper: false)
        try checkGradient("solve_triangular", [lower, b]) { try solveTriangular(try triangle($0[0], k: 0, upper: false), $0[1], lower: true) }
        // Symmetric positive-definite and symmetric inputs, parametrised so that any perturbation stays valid.
        let x = try f64([3, 3], seed: 42)
        try checkGradient("cholesky", [x], tolerance: 1e-4) {
            let spd = try add(try matmul($0[0], try matrixTranspose($0[0])), try multiply(try eye(3, 3, dtype: .float64), try scalar(2, .float64)))
            return try cholesky(spd)
        }
        try checkGradient("eigh values", [x]) { try eigh(try add($0[0], try matrixTranspose($0[0]))).values }
        // v * v does not depend on each eigenvector's sign.
        try checkGradient("eigh vectors", [x], tolerance: 1e-4) {
            let v = try eigh(try add($0[0], try matrixTranspose($0[0]))).vectors
            return try multiply(v, v)
        }
    }

    func testFactorizationsReconstruct() throws {
        let a = try f64([2, 4, 3], seed: 43)
        let (q, r) = try qr(a)
        XCTAssertEqual(q.shape, [2, 4, 3])
        XCTAssertEqual(r.shape, [2, 3, 3])
        try assertClose(try matmul(q, r), a)
        try assertClose(try matmul(try matrixTranspose(q), q), try broadcastTo(try eye(3, 3, dtype: .float64), [2, 3, 3]))
        let (qc, rc) = try qr(a, complete: true)
        XCTAssertEqual(qc.shape, [2, 4, 4])
        try assertClose(try matmul(qc, rc), a)
        let (u, s, vt) = try svd(a, full: false)
        try assertClose(try matmul(try multiply(u, try expandDims(s, axis: -2)), vt), a)
        XCTAssertEqual(try svd(a, full: true).u.shape, [2, 4, 4])
        let sq = try wellConditioned([], 3, seed: 44), rhs = try f64([3, 2], seed: 45)
        try assertClose(try lstsq(sq, rhs), try solve(sq, rhs))
        try assertClose(try matmul(sq, try inv(sq)), try eye(3, 3, dtype: .float64))
        let (lu, piv) = try luFactor(try Tensor([0.0, 1, 2, 3], shape: [2, 2]))
        XCTAssertEqual(try piv.array(Int32.self), [1, 1])
        XCTAssertEqual(lu.doubles(), [2, 3, 0, 1])
        XCTAssertEqual(try det(try Tensor([1.0, 2, 3, 4], shape: [2, 2])).doubles()[0], -2, accuracy: 1e-12)
        let (sign, logdet) = try slogdet(try Tensor([Float(1), 2, 3, 4], shape: [2, 2]))
        XCTAssertEqual(try sign.array(Float.self), [-1])
        XCTAssertEqual(try logdet.array(Float.self)[0], Float(2).logarithm, accuracy: 1e-6)
    }

    func testErrors() throws {
        XCTAssertThrowsError(try inv(try Tensor([1.0, 2, 2, 4], shape: [2, 2])))
        XCTAssertThrowsError(try inv(try zeros([2, 3])))
        XCTAssertThrowsError(try cholesky(try Tensor([1.0, 2, 2, 1], shape: [2, 2])))
        XCTAssertThrowsError(try solve(try eye(2, 2), try zeros([3, 1])))
        XCTAssertEqual(try det(try Tensor([1.0, 2, 2, 4], shape: [2, 2])).doubles(), [0])
    }

    private func assertClose(_ a: Tensor, _ b: Tensor, file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(a.shape, b.shape, file: file, line: line)
        for (x, y) in zip(a.doubles(), b.doubles()) { XCTAssertEqual(x, y, accuracy: 1e-9, file: file, line: line) }
    }

    /// LAPACK's SVD refuses a matrix holding NaN or infinity; the engine reports NaN
    /// factors for that matrix alone (as numpy and jax do) and decomposes the others.
    func testSVDAndLstsqOfNonFiniteMatricesAreNaN() throws {
        let x = try Tensor([1, 2, 3, 4, Double.nan, 0, 0, 1, 2, 0, 0, Double.infinity], shape: [3, 2, 2])
        let r = try svd(x)
        let s = r.s.doubles(), u = r.u.doubles(), vt = r.vt.doubles()
        XCTAssertEqual(s[0], 5.464985704219043, accuracy: 1e-12)
        XCTAssertFalse(u[0..<4].contains { $0.isNaN })
        XCTAssertTrue(s[2..<6].allSatisfy(\.isNaN) && u[4..<12].allSatisfy(\.isNaN) && vt[4..<12].allSatisfy(\.isNaN))
        let a = try Tensor([1, Double.nan, 0, 1], shape: [2, 2]), b = try Tensor([1.0, 2], shape: [2])
        XCTAssertTrue(try lstsq(a, b).doubles().allSatisfy(\.isNaN))
        XCTAssertEqual(try lstsq(try Tensor([2.0, 0, 0, 4], shape: [2, 2]), b).doubles(), [0.5, 0.5])
    }
}

private extension Float {
    var logarithm: Float { Float.log(self) }
}

final class FFTTests: XCTestCase {
    func testMatchesDirectDFT() throws {
        for n in [1, 2, 8, 5, 12] {
            let xr = try f64([3, n], seed: n), xi = try f64([3, n], seed: n + 100)
            let (yr, yi) = try fft(xr, xi)
            let (r, i, or, oi) = (xr.doubles(), xi.doubles(), yr.doubles(), yi.doubles())
            for row in 0..<3 { for k in 0..<n {
                var sr = 0.0, si = 0.0
                for j in 0..<n {
                    let ang = -2 * Double.pi * Double(j * k) / Double(n)
                    sr += r[row * n + j] * cos(ang) - i[row * n + j] * sin(ang)
                    si += r[row * n + j] * sin(ang) + i[row * n + j] * cos(ang)
                }
                XCTAssertEqual(or[row * n + k], sr, accuracy: 1e-9, "n=\(n)")
                XCTAssertEqual(oi[row * n + k], si, accuracy: 1e-9, "n=\(n)")
            } }
            let (br, bi) = try fft(yr, yi, inverse: true)
            for (a, b) in zip(br.doubles() + bi.doubles(), r + i) { XCTAssertEqual(a, b, accuracy: 1e-9) }
        }
    }

    func testGradients() throws {
        for n in [4, 6] {
            let xr = try f64([2, n], seed: 1), xi = try f64([2, n], seed: 2)
            try checkGradient("fft real \(n)", [xr, xi]) { try fft($0[0], $0[1]).real }
            try checkGradient("fft imag \(n)", [xr, xi]) { try fft($0[0], $0[1]).imag }
            try checkGradient("ifft real \(n)", [xr, xi]) { try fft($0[0], $0[1], inverse: true).real }
            try checkGradient("ifft both \(n)", [xr, xi]) {
                let (a, b) = try fft($0[0], $0[1], inverse: true)
                return try add(try square(a), b)
            }
        }
    }
}
