import XCTest
@testable import TensorEngine

final class IndexingTests: XCTestCase {
    func testGradients() throws {
        let x = try f64([3, 4], seed: 30)
        for mode in [PadMode.constant, .reflect, .symmetric, .edge] {
            try checkGradient("pad \(mode)", [x]) { try pad($0[0], [1, 2, 2, 1], mode: mode, value: 0.5) }
        }
        let tuples = try Tensor([Int64(2), 1, 0, 3, 2, 1], shape: [3, 2])
        try checkGradient("gather_nd", [x]) { try gatherND($0[0], tuples) }
        let rows = try Tensor([Int32(1), -1], shape: [2, 1])
        try checkGradient("gather_nd rows", [x]) { try gatherND($0[0], rows) }
        try checkGradient("scatter_nd add", [x, try f64([3], seed: 31)]) { try scatterND($0[0], tuples, $0[1], reduction: .add) }
        let unique = try Tensor([Int64(2), 1, 0, 3, 1, 1], shape: [3, 2])
        try checkGradient("scatter_nd update", [x, try f64([3], seed: 32)]) { try scatterND($0[0], unique, $0[1], reduction: .update) }
        try checkGradient("slice_update", [x, try f64([2, 2], seed: 33)]) { try sliceUpdate($0[0], $0[1], start: [1, 2]) }
        try checkGradient("sort", [x]) { try sort($0[0], axis: 0) }
        try checkGradient("top_k", [x]) { try topK($0[0], k: 2).values }
        try checkGradient("cumsum", [x]) { try cumulative($0[0], axis: 1, product: false) }
        try checkGradient("cumsum reverse flat", [x]) { try cumulative($0[0], axis: nil, product: false, reverse: true) }
        try checkGradient("cumprod", [try f64([2, 3], seed: 34, lo: 0.5, hi: 1.5)]) { try cumulative($0[0], axis: 1, product: true) }
        let ids = try Tensor([Int32(0), 1, 0])
        for op in [ScatterReduction.add, .max, .min] {
            try checkGradient("segment \(op)", [x]) { try segmentReduce(op, $0[0], ids, numSegments: 2) }
        }
        try checkGradient("repeat", [x]) { try `repeat`($0[0], repeats: [1, 0, 2], axis: 0) }
        try checkGradient("triangle", [x]) { try triangle($0[0], k: 1, upper: false) }
    }

    func testForwardValues() throws {
        let x = try Tensor([Float(3), 1, 2, 1], shape: [4])
        XCTAssertEqual(try argsort(x).array(Int32.self), [1, 3, 2, 0], "stable")
        XCTAssertEqual(try argsort(x, descending: true).array(Int32.self), [0, 2, 1, 3])
        XCTAssertEqual(try argsort(try Tensor([Float.nan, 1, 0])).array(Int32.self), [2, 1, 0])
        let (v, i) = try topK(x, k: 2)
        XCTAssertEqual(try v.array(Float.self), [3, 2])
        XCTAssertEqual(try i.array(Int32.self), [0, 2])
        XCTAssertEqual(try nonzero(try Tensor([0, 1, 1, 0, 0, 2] as [Int32], shape: [2, 3])).array(Int64.self), [0, 1, 0, 2, 1, 2])
        XCTAssertEqual(try `repeat`(x, repeats: [2], axis: nil).shape, [8])
        XCTAssertEqual(try eye(2, 3, k: 1).array(Float.self), [0, 1, 0, 0, 0, 1])
        XCTAssertEqual(try pad(try Tensor([Int32(1), 2, 3]), [2, 2], mode: .reflect).array(Int32.self), [3, 2, 1, 2, 3, 2, 1])
        XCTAssertEqual(try pad(try Tensor([Int32(1), 2, 3]), [2, 2], mode: .symmetric).array(Int32.self), [2, 1, 1, 2, 3, 3, 2])
        XCTAssertEqual(try segmentReduce(.max, try Tensor([Float(1), 5, 2]), try Tensor([Int32(1), 1, 0]), numSegments: 3).array(Float.self),
                       [2, 5, -.infinity])
        XCTAssertEqual(try cumulative(try Tensor([Int32(1), 2, 3]), axis: 0, product: true).array(Int32.self), [1, 2, 6])
        XCTAssertThrowsError(try gatherND(x, try Tensor([Int32(4)], shape: [1, 1])))
        XCTAssertThrowsError(try topK(x, k: 5))
        XCTAssertThrowsError(try pad(x, [1]))
    }
}
