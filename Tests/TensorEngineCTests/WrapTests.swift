import XCTest
@testable import TensorEngineC
import struct CTensorEngine.te_attr
import var CTensorEngine.TE_ATTR_INTS
#if canImport(Glibc)
import Glibc
#endif

/// te_tensor_wrap: tensors over caller-owned memory (what DLPack and buffers coming in use).
final class WrapTests: XCTestCase {
    /// Counts its calls in the Int that ctx points to.
    private let countRelease: @convention(c) (UnsafeMutableRawPointer?) -> Void = { ctx in
        ctx?.assumingMemoryBound(to: Int.self).pointee += 1
    }

    private func alignedFloats(_ values: [Float]) -> UnsafeMutableRawPointer {
        var p: UnsafeMutableRawPointer? = nil
        XCTAssertEqual(posix_memalign(&p, 64, max(64, values.count * 4)), 0)
        values.withUnsafeBytes { p!.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        return p!
    }

    func testWrapSharesMemoryAndReleasesOnceAfterTheLastTensor() {
        let mem = alignedFloats([1, 2, 3, 4, 5, 6])
        defer { free(mem) }
        var released = 0
        var shape: [Int64] = [2, 3]
        var h: OpaquePointer? = nil
        XCTAssertEqual(te_tensor_wrap(11, &shape, 2, mem, 24, countRelease, &released, &h), 0)
        XCTAssertEqual(te_tensor_data(h), UnsafeRawPointer(mem))
        // An op reads it into a new tensor and leaves it alone.
        var add: Int32 = -1
        XCTAssertEqual(te_op_lookup("add", &add), 0)
        var out: OpaquePointer? = nil
        var n: Int32 = 0
        var ins: [OpaquePointer?] = [h, h]
        XCTAssertEqual(te_op_call(add, &ins, 2, nil, 0, &out, 1, &n), 0)
        XCTAssertEqual(floatValues(out), [2, 4, 6, 8, 10, 12])
        XCTAssertEqual(Array(UnsafeBufferPointer(start: mem.assumingMemoryBound(to: Float.self), count: 6)),
                       [1, 2, 3, 4, 5, 6])
        te_tensor_release(out)
        // A reshape shares the storage: the memory goes back only after both.
        var r: OpaquePointer? = nil
        var rs: Int32 = -1
        XCTAssertEqual(te_op_lookup("reshape", &rs), 0)
        let name = strdup("shape")!
        defer { free(name) }
        var dims: [Int64] = [6]
        dims.withUnsafeBufferPointer { d in
            var a = te_attr()
            a.name = UnsafePointer(name)
            a.kind = Int32(TE_ATTR_INTS.rawValue)
            a.ints = d.baseAddress
            a.n = 1
            var one: [OpaquePointer?] = [h]
            XCTAssertEqual(te_op_call(rs, &one, 1, &a, 1, &r, 1, &n), 0)
        }
        te_tensor_release(h)
        XCTAssertEqual(released, 0)
        XCTAssertEqual(floatValues(r), [1, 2, 3, 4, 5, 6])
        te_tensor_release(r)
        XCTAssertEqual(released, 1)
    }

    func testWrapRefusesBadInputWithoutReleasing() {
        let mem = alignedFloats([1, 2, 3, 4])
        defer { free(mem) }
        var released = 0
        var shape: [Int64] = [4]
        var h: OpaquePointer? = nil
        // Misaligned, a byte count that does not match the shape, a null pointer, a bad dtype.
        XCTAssertEqual(te_tensor_wrap(5, &shape, 1, mem + 1, 4, countRelease, &released, &h), 1)
        XCTAssertTrue(String(cString: te_last_error()).contains("aligned"))
        XCTAssertEqual(te_tensor_wrap(11, &shape, 1, mem, 12, countRelease, &released, &h), 1)
        XCTAssertEqual(te_tensor_wrap(11, &shape, 1, nil, 16, countRelease, &released, &h), 1)
        XCTAssertEqual(te_tensor_wrap(99, &shape, 1, mem, 16, countRelease, &released, &h), 2)
        XCTAssertNil(h)
        XCTAssertEqual(released, 0)
    }
}
