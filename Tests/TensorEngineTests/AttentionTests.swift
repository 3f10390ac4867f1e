import XCTest
import Foundation
@testable import TensorEngine

/// The blocked attention kernel against the ops it replaces, values and gradients.
final class AttentionTests: XCTestCase {
    override func tearDown() {
        while Tape.depth > 0 { try? Tape.pop() }
    }

    private func tensor(_ shape: [Int], _ seed: Int, dtype: DType = .float32) throws -> Tensor {
        let n = shape.reduce(1, *)
        let v = (0..<n).map { Float(sin(Double($0 * 7 + seed * 13) * 0.37)) }
        return try cast(try Tensor(v, shape: shape), to: dtype)
    }

    /// softmax(q kᵀ · scale) v with the unfused ops.
    private func reference(_ q: Tensor, _ k: Tensor, _ v: Tensor, scale: Double, causal: Bool) throws -> Tensor {
        var logits = try multiply(try matmul(q, try matrixTranspose(k)), try full([], value: scale, dtype: q.dtype))
        if causal {
            let (t, s) = (q.shape[2], k.shape[2])
            let mask = try Tensor((0..<(t * s)).map { $0 % s <= $0 / s }, shape: [t, s])
            logits = try `where`(mask, logits, try full([], value: -.infinity, dtype: q.dtype))
        }
        return try matmul(try softmax(logits), v)
    }

    private func assertClose(_ a: Tensor, _ b: Tensor, _ tol: Double, _ what: String,
                             file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(a.shape, b.shape, what, file: file, line: line)
        let (x, y) = (try cast(a, to: .float64).array(Double.self), try cast(b, to: .float64).array(Double.self))
        let worst = zip(x, y).map { abs($0 - $1) / (1 + abs($1)) }.max() ?? 0
        XCTAssertLessThan(worst, tol, what, file: file, line: line)
    }

    func testValuesAndGradientsMatchTheOps() throws {
        // One block, several blocks of query rows (S = 300 fits 109 rows a block), T != S,
        // different value width, causal.
        let cases: [([Int], Int, Int, Bool)] = [([2, 3, 7, 5], 9, 4, false), ([1, 2, 250, 8], 300, 8, false),
                                                ([2, 2, 250, 8], 250, 6, true), ([1, 1, 6, 4], 10, 3, true)]
        for dtype in [DType.float32, .float64] {
            let tol = dtype == .float32 ? 2e-5 : 1e-12
            for (i, (qs, s, hv, causal)) in cases.enumerated() {
                let q = try tensor(qs, i, dtype: dtype)
                let k = try tensor([qs[0], qs[1], s, qs[3]], i + 10, dtype: dtype)
                let v = try tensor([qs[0], qs[1], s, hv], i + 20, dtype: dtype)
                let weights = try tensor([qs[0], qs[1], qs[2], hv], i + 30, dtype: dtype)
                let scale = 1 / Double(qs[3]).squareRoot()
                func run(_ fused: Bool) throws -> (Tensor, [Tensor]) {
                    let leaves = [q, k, v].map { stopGradient($0) }
                    for t in leaves { t.requiresGrad = true }
                    Tape.push()
                    defer { try? Tape.pop() }
                    let y = fused ? try dotProductAttention(leaves[0], leaves[1], leaves[2], scale: scale, causal: causal)
                        : try reference(leaves[0], leaves[1], leaves[2], scale: scale, causal: causal)
                    let loss = try sum(try multiply(y, weights))
                    return (y, try Tape.gradient(of: loss, wrt: leaves).map { try XCTUnwrap($0) })
                }
                let (y, g) = try run(true), (ry, rg) = try run(false)
                let what = "case \(i) \(dtype)"
                try assertClose(y, ry, tol, what + " values")
                for (name, (a, b)) in zip(["dq", "dk", "dv"], zip(g, rg)) { try assertClose(a, b, tol, what + " " + name) }
            }
        }
    }

    func testSecondDerivativesGoThroughTheOps() throws {
        let k = try f64([1, 2, 5, 3], seed: 2), v = try f64([1, 2, 5, 2], seed: 3)
        for causal in [false, true] {
            try checkSecondOrder("attention wrt q, causal \(causal)", try f64([1, 2, 4, 3], seed: 1)) {
                try dotProductAttention($0, k, v, scale: 0.5, causal: causal)
            }
            // (Linear in v: its second derivative is zero, so k.)
            try checkSecondOrder("attention wrt k, causal \(causal)", k) {
                try dotProductAttention(try f64([1, 2, 4, 3], seed: 1), $0, v, scale: 0.5, causal: causal)
            }
        }
    }

    func testBadShapesAndDtypesAreErrors() throws {
        let q = try tensor([1, 2, 3, 4], 1)
        XCTAssertThrowsError(try dotProductAttention(q, try tensor([1, 2, 3, 5], 2), try tensor([1, 2, 3, 4], 3), scale: 1, causal: false))
        XCTAssertThrowsError(try dotProductAttention(q, q, try tensor([1, 2, 4, 4], 3), scale: 1, causal: false))
        XCTAssertThrowsError(try dotProductAttention(q, q, try tensor([1, 2, 3, 4], 3, dtype: .float64), scale: 1, causal: false))
        XCTAssertThrowsError(try dotProductAttention(try tensor([2, 3, 4], 1), q, q, scale: 1, causal: false))
        XCTAssertThrowsError(try dotProductAttention(q, q, q, scale: .nan, causal: false))
        // Empty sequences are fine.
        let empty = try dotProductAttention(try tensor([1, 2, 0, 4], 1), q, q, scale: 1, causal: false)
        XCTAssertEqual(empty.shape, [1, 2, 0, 4])
    }
}
