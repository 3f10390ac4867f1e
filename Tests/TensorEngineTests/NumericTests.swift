import XCTest
@testable import TensorEngine

final class NumericTests: XCTestCase {
    func testBitcast() throws {
        let x = try Tensor([Int16(1), 2, 3, 4, 5, 6, 7, 8], shape: [2, 4])
        let w = try bitcast(x, to: .int32)
        XCTAssertEqual(w.shape, [2, 2])
        XCTAssertEqual(try w.array(Int32.self), [131073, 262147, 393221, 524295])
        let n = try bitcast(x, to: .uint8)
        XCTAssertEqual(n.shape, [2, 8])
        XCTAssertEqual(try n.array(UInt8.self).prefix(4), [1, 0, 2, 0])
        XCTAssertEqual(try bitcast(try Tensor([Float(1)]), to: .uint32).array(UInt32.self), [0x3F80_0000])
        XCTAssertThrowsError(try bitcast(try Tensor(scalar: Int16(1)), to: .int8))
        XCTAssertThrowsError(try bitcast(try Tensor([Int16(1), 2, 3]), to: .int32))
        XCTAssertThrowsError(try bitcast(try Tensor([UInt8(3)]), to: .bool))
    }

    func testCorrelateMatchesNumpy() throws {
        let a = try Tensor([1.0, 2, 3]), v = try Tensor([0.0, 1, 0.5])
        XCTAssertEqual(try correlate(a, v, mode: "valid").doubles(), [3.5])
        XCTAssertEqual(try correlate(a, v, mode: "same").doubles(), [2, 3.5, 3])
        XCTAssertEqual(try correlate(a, v, mode: "full").doubles(), [0.5, 2, 3.5, 3, 0])
        // A shorter first input: numpy swaps and reverses.
        let b = try Tensor([7.0, 9]), c = try Tensor([1.0, 3, 5])
        XCTAssertEqual(try correlate(b, c, mode: "valid").doubles(), [66, 34])
        XCTAssertEqual(try correlate(b, c, mode: "same").doubles(), [66, 34, 9])
        XCTAssertThrowsError(try correlate(a, v, mode: "bogus"))
        XCTAssertThrowsError(try correlate(try Tensor([1.0], shape: [1, 1]), v))
    }

    func testCorrelateGradient() throws {
        for mode in ["valid", "same", "full"] {
            try checkGradient("correlate \(mode)", [try f64([6], seed: 1), try f64([4], seed: 2)]) { try correlate($0[0], $0[1], mode: mode) }
            try checkGradient("correlate \(mode) swapped", [try f64([3], seed: 3), try f64([5], seed: 4)]) { try correlate($0[0], $0[1], mode: mode) }
        }
    }

    func testHistogram() throws {
        let x = try Tensor([0.0, 2, 4, 8, 10])
        let (counts, edges) = try histogram(x, bins: 5)
        XCTAssertEqual(try counts.array(Int32.self), [1, 1, 1, 0, 2])
        XCTAssertEqual(edges.doubles(), [0, 2, 4, 6, 8, 10])
        let (c2, _) = try histogram(x, bins: 2, range: (1, 5))
        XCTAssertEqual(try c2.array(Int32.self), [1, 1])
        let (c3, e3) = try histogram(try Tensor([3.0, 3]), bins: 2)
        XCTAssertEqual(try c3.array(Int32.self), [0, 2])
        XCTAssertEqual(e3.doubles(), [2.5, 3, 3.5])
        XCTAssertThrowsError(try histogram(try Tensor([1.0, 2], shape: [1, 2]), bins: 2))
        XCTAssertThrowsError(try histogram(x, bins: 2, range: (5, 1)))
    }

    func testUnique() throws {
        let x = try Tensor([Int32(3), 1, 2, 1, 4, 2])
        let r = try unique(x)
        XCTAssertEqual(try r.values.array(Int32.self), [1, 2, 3, 4])
        XCTAssertEqual(try r.index.array(Int32.self), [1, 2, 0, 4])
        XCTAssertEqual(try r.inverse.array(Int32.self), [2, 0, 1, 0, 3, 1])
        XCTAssertEqual(try r.counts.array(Int32.self), [2, 2, 1, 1])
        let padded = try unique(x, size: 6, fill: -1)
        XCTAssertEqual(try padded.values.array(Int32.self), [1, 2, 3, 4, -1, -1])
        XCTAssertEqual(try padded.counts.array(Int32.self), [2, 2, 1, 1, 0, 0])
        XCTAssertEqual(try unique(x, size: 2).values.array(Int32.self), [1, 2])
        XCTAssertEqual(try unique(x, size: 5).values.array(Int32.self), [1, 2, 3, 4, 1])
        let m = try Tensor([Int32(1), 0, 1, 0, 1, 0], shape: [2, 3])
        let cols = try unique(m, axis: 1)
        XCTAssertEqual(cols.values.shape, [2, 2])
        XCTAssertEqual(try cols.values.array(Int32.self), [0, 1, 1, 0])
        XCTAssertEqual(try cols.inverse.array(Int32.self), [1, 0, 1])
        let nans = try unique(try Tensor([Float(1), .nan, 2, .nan]))
        XCTAssertEqual(nans.values.count, 4)
        XCTAssertThrowsError(try unique(m, axis: 2))
    }

    func testFrameAndOverlapAdd() throws {
        let x = try Tensor((0..<7).map { Double($0) }, shape: [1, 7])
        let f = try frame(x, length: 3, stride: 2)
        XCTAssertEqual(f.shape, [1, 3, 3])
        XCTAssertEqual(f.doubles(), [0, 1, 2, 2, 3, 4, 4, 5, 6])
        XCTAssertEqual(try overlapAdd(f, stride: 2).doubles(), [0, 1, 4, 3, 8, 5, 6])
        XCTAssertEqual(try overlapAdd(f, stride: 2, length: 4).doubles(), [0, 1, 4, 3])
        XCTAssertEqual(try frame(x, length: 9, stride: 1).shape, [1, 0, 9])
        XCTAssertThrowsError(try frame(x, length: 0, stride: 1))
        try checkGradient("frame", [try f64([2, 9], seed: 5)]) { try frame($0[0], length: 4, stride: 3) }
        try checkGradient("overlap_add", [try f64([2, 3, 4], seed: 6)]) { try overlapAdd($0[0], stride: 3) }
        try checkGradient("overlap_add short", [try f64([3, 4], seed: 7)]) { try overlapAdd($0[0], stride: 2, length: 5) }
    }

    private func moments(_ v: [Double]) -> (mean: Double, variance: Double) {
        let m = v.reduce(0, +) / Double(v.count)
        return (m, v.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(v.count))
    }

    func testGammaSampler() throws {
        for alpha in [0.3, 1.0, 4.5] {
            let v = try randomSample(.gamma, [try scalar(alpha, .float64)], shape: [40000], dtype: .float64, seed: [3, 4]).doubles()
            XCTAssertTrue(v.allSatisfy { $0 > 0 })
            let (m, s2) = moments(v)
            XCTAssertEqual(m, alpha, accuracy: 0.03 * Swift.max(1, alpha))
            XCTAssertEqual(s2, alpha, accuracy: 0.08 * Swift.max(1, alpha))
        }
        let a = try randomSample(.gamma, [try scalar(2.0, .float64)], shape: [10], seed: [1, 2]).doubles()
        let b = try randomSample(.gamma, [try scalar(2.0, .float64)], shape: [10], seed: [1, 2]).doubles()
        XCTAssertEqual(a, b)
    }

    func testBetaSampler() throws {
        let (al, be) = (0.5, 2.0)
        let v = try randomSample(.beta, [try scalar(al, .float64), try scalar(be, .float64)], shape: [40000], dtype: .float64, seed: [5, 6]).doubles()
        XCTAssertTrue(v.allSatisfy { $0 >= 0 && $0 <= 1 })
        let (m, s2) = moments(v)
        XCTAssertEqual(m, al / (al + be), accuracy: 0.01)
        XCTAssertEqual(s2, al * be / ((al + be) * (al + be) * (al + be + 1)), accuracy: 0.005)
    }

    func testBinomialSampler() throws {
        // Small counts take the Bernoulli path, large counts the beta splitting.
        for (n, p) in [(10.0, 0.3), (100000.0, 0.25), (1000.0, 0.999)] {
            let v = try randomSample(.binomial, [try scalar(n, .float64), try scalar(p, .float64)], shape: [20000], dtype: .float64, seed: [7, 8]).doubles()
            XCTAssertTrue(v.allSatisfy { $0 >= 0 && $0 <= n && $0 == $0.rounded() })
            let (m, s2) = moments(v)
            XCTAssertEqual(m, n * p, accuracy: 5 * (n * p * (1 - p) / 20000).squareRoot())
            XCTAssertEqual(s2, n * p * (1 - p), accuracy: 0.06 * n * p * (1 - p) + 0.01)
        }
        // Per-element parameters broadcast to the sample shape.
        let counts = try Tensor([5.0, 50.0]), probs = try Tensor([1.0, 0.0])
        XCTAssertEqual(try randomSample(.binomial, [counts, probs], shape: [3, 2], dtype: .float64, seed: [1, 1]).doubles(), [5, 0, 5, 0, 5, 0])
        XCTAssertThrowsError(try randomSample(.binomial, [counts, probs], shape: [3], seed: [1, 1]))
    }
}
