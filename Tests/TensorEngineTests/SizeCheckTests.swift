import XCTest
@testable import TensorEngine

/// The checked size arithmetic every op uses before it allocates (issue 20).
final class SizeCheckTests: XCTestCase {
    private func assertValueError(_ body: () throws -> Any, mentions word: String,
                                  file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: line) { error in
            guard case EngineError.value(let m) = error else {
                return XCTFail("expected EngineError.value, got \(error)", file: file, line: line)
            }
            XCTAssertTrue(m.contains(word), "\(m) does not mention \(word)", file: file, line: line)
        }
    }

    func testArithmeticReportsOverflowWithTheOpName() throws {
        let c = SizeCheck("myop")
        XCTAssertEqual(try c.add(2, 3), 5)
        XCTAssertEqual(try c.multiply(-4, 3), -12)
        XCTAssertEqual(try c.subtract(Int.min + 1, 1), Int.min)
        assertValueError({ try c.add(Int.max, 1) }, mentions: "myop")
        assertValueError({ try c.multiply(1 << 62, 4) }, mentions: "overflows")
        assertValueError({ try c.subtract(Int.min, 1) }, mentions: "myop")
        XCTAssertEqual(try c.sum([1, 2, 3]), 6)
        assertValueError({ try c.sum([Int.max, 1]) }, mentions: "overflows")
        assertValueError({ try c.sum([1, -1]) }, mentions: "negative")
    }

    func testCountChecksSignOverflowAndPhysicalMemory() throws {
        let c = SizeCheck("op")
        XCTAssertEqual(try c.count([]), 1)
        XCTAssertEqual(try c.count([2, 0, 1 << 61]), 0)
        // numpy's rule: an empty shape whose other dimensions' byte size overflows is refused.
        assertValueError({ try c.count([2, 0, 1 << 62]) }, mentions: "too large")
        assertValueError({ try c.count([0, 1 << 61], itemSize: 8) }, mentions: "too large")
        XCTAssertEqual(try c.count([3, 4], itemSize: 8), 12)
        assertValueError({ try c.count([-1, 2]) }, mentions: "negative")
        XCTAssertEqual(try c.count(repeatedInts(1, count: maxRank)), 1)
        assertValueError({ try c.count(repeatedInts(1, count: maxRank + 1)) }, mentions: "rank")
        assertValueError({ try c.count([1 << 32, 1 << 32]) }, mentions: "too large")
        // Fits in Int but not in memory: one element past physical memory, and a byte size that
        // overflows only once multiplied by the item size.
        assertValueError({ try c.count([maxTensorBytes + 1]) }, mentions: "physical memory")
        assertValueError({ try c.count([1 << 61], itemSize: 8) }, mentions: "physical memory")
        XCTAssertNoThrow(try c.fits(maxTensorBytes / 8, itemSize: 8))
        assertValueError({ try c.fits(maxTensorBytes / 8 + 1, itemSize: 8) }, mentions: "physical memory")
    }

    func testTensorAllocationUsesTheSameBound() throws {
        assertValueError({ try Tensor(zeros: [1 << 40, 1 << 30]) }, mentions: "too large")
        assertValueError({ try Tensor(zeros: [maxTensorBytes / 2], dtype: .float32) }, mentions: "physical memory")
    }

    func testOpsRefuseHugeSizesBeforeAllocating() throws {
        let x = try Tensor([Float](repeating: 1, count: 3))
        assertValueError({ try reshape(x, [-1, 1 << 62, 4]) }, mentions: "reshape")
        assertValueError({ try `repeat`(x, repeats: [1 << 62], axis: nil) }, mentions: "repeat")
        assertValueError({ try `repeat`(x, repeats: [1 << 40, 1 << 40, 1 << 40], axis: 0) }, mentions: "repeat")
        assertValueError({ try pad(x, [1 << 62, 1 << 62]) }, mentions: "pad")
        assertValueError({ try pad(x, [1 << 40, 0]) }, mentions: "pad")
        assertValueError({ try broadcastTo(x, [1 << 40, 1 << 30, 3]) }, mentions: "broadcast_to")
        let deep = try Tensor([Float(1)], shape: repeatedInts(1, count: maxRank))
        assertValueError({ try stack([deep, deep]) }, mentions: "rank")
        assertValueError({ try full([1 << 40, 1 << 40], value: 1) }, mentions: "full")
        assertValueError({ try eye(1 << 40, 1 << 40) }, mentions: "eye")
        // An empty tensor whose long axis holds 2^41 empty slices (a fuzz finding: unique
        // sized its sort order by them).
        let emptyButLong = try Tensor(zeros: [0, 1 << 41], dtype: .bool)
        assertValueError({ try unique(emptyButLong, axis: -1) }, mentions: "unique")
        XCTAssertEqual(try pad(emptyButLong, [0, 0, 4, 0]).shape, [0, (1 << 41) + 4])
        assertValueError({ try pad(emptyButLong, [1, 0, 0, 0]) }, mentions: "pad")
        let img = try Tensor([Float](repeating: 1, count: 48), shape: [1, 4, 4, 3])
        let w = try Tensor([Float](repeating: 1, count: 324), shape: [3, 3, 3, 12])
        assertValueError({ try conv(img, w, padding: "same", dilation: [1 << 62]) }, mentions: "conv")
        XCTAssertThrowsError(try conv(img, w, dilation: [0]))
        // A huge stride is valid: one output position.
        XCTAssertEqual(try conv(img, w, strides: [1 << 62], padding: "same").shape, [1, 1, 1, 12])
        // eye's diagonal offset is compared without forming i + k.
        XCTAssertEqual(try eye(2, 2, k: Int.max).doubles(), [0, 0, 0, 0])
        XCTAssertEqual(try eye(2, 2, k: Int.min + 1).doubles(), [0, 0, 0, 0])
    }
}
