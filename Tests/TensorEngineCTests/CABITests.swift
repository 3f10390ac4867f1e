import XCTest
@testable import TensorEngineC
// The record as the header declares it, so a layout change there breaks this test's build.
import struct CTensorEngine.te_attr
import var CTensorEngine.TE_ATTR_INTS
import var CTensorEngine.TE_ATTR_STRING
#if canImport(Glibc)
import Glibc
#endif

/// Exercises the exported C entry points exactly as a C caller would: raw handles, 64-byte
/// te_attr records, status codes and the thread-local message.
final class CABITests: XCTestCase {
    private func make(_ values: [Float], _ shape: [Int64]) -> OpaquePointer? { makeFloatTensor(values, shape) }

    private func floats(_ h: OpaquePointer?) -> [Float] { floatValues(h) }

    private func op(_ name: String) -> Int32 {
        var id: Int32 = -1
        XCTAssertEqual(te_op_lookup(name, &id), 0)
        return id
    }

    /// Calls op `name` with ints attributes given as (name, values) pairs.
    private func call(_ name: String, _ inputs: [OpaquePointer?], ints: [(String, [Int64])] = []) -> (Int32, OpaquePointer?) {
        let names = ints.map { strdup($0.0)! }
        defer { names.forEach { free($0) } }
        let lists = ints.map { $0.1 }
        var rec = [te_attr](repeating: te_attr(), count: max(1, ints.count))
        var storage: [UnsafeMutablePointer<Int64>] = []
        defer { storage.forEach { $0.deallocate() } }
        for (i, l) in lists.enumerated() {
            let p = UnsafeMutablePointer<Int64>.allocate(capacity: max(1, l.count))
            p.initialize(from: l, count: l.count)
            storage.append(p)
            rec[i].name = UnsafePointer(names[i])
            rec[i].kind = Int32(TE_ATTR_INTS.rawValue)
            rec[i].ints = UnsafePointer(p)
            rec[i].n = Int64(l.count)
        }
        var out: OpaquePointer? = nil
        var n: Int32 = 0
        let st = inputs.withUnsafeBufferPointer { ins in
            te_op_call(op(name), ins.baseAddress, Int32(inputs.count), rec, Int32(ints.count), &out, 1, &n)
        }
        return (st, out)
    }

    func testCreateReadRelease() {
        XCTAssertEqual(te_abi_version(), 1)
        let h = make([1, 2, 3, 4, 5, 6], [2, 3])
        XCTAssertEqual(te_tensor_ndim(h), 2)
        var shape = [Int64](repeating: 0, count: 4)
        XCTAssertEqual(te_tensor_shape(h, &shape, 4), 2)
        XCTAssertEqual(Array(shape.prefix(2)), [2, 3])
        XCTAssertEqual(te_tensor_dtype(h), 11)
        XCTAssertEqual(te_tensor_nbytes(h), 24)
        XCTAssertEqual(Int(bitPattern: te_tensor_data(h)) % 64, 0, "storage is 64-byte aligned")
        XCTAssertEqual(te_tensor_retain(h), h)
        te_tensor_release(h)
        te_tensor_release(h)
        te_tensor_release(nil)
        XCTAssertEqual(te_tensor_ndim(nil), -1)
    }

    func testOpCallWithAttributes() {
        let a = make([1, 2, 3, 4, 5, 6], [2, 3])
        defer { te_tensor_release(a) }
        let (st, t) = call("transpose", [a], ints: [("perm", [1, 0])])
        XCTAssertEqual(st, 0)
        XCTAssertEqual(floats(t), [1, 4, 2, 5, 3, 6])
        let (st2, s) = call("sum", [t], ints: [("axes", [0])])
        XCTAssertEqual(st2, 0)
        XCTAssertEqual(floats(s), [6, 15])
        te_tensor_release(t)
        te_tensor_release(s)
        XCTAssertGreaterThan(te_op_count(), 80)
        XCTAssertNotNil(te_op_name(0))
        XCTAssertNil(te_op_name(-1))
    }

    func testErrorsAreStatusesNotCrashes() {
        let a = make([1, 2, 3], [3]), b = make([1, 2], [2])
        defer { te_tensor_release(a); te_tensor_release(b) }
        XCTAssertEqual(call("add", [a, b]).0, 1)
        XCTAssertTrue(String(cString: te_last_error()).contains("broadcast"))
        XCTAssertEqual(call("add", [a]).0, 1)
        XCTAssertEqual(call("add", [a, nil]).0, 1)
        XCTAssertEqual(call("reshape", [a], ints: [("shape", [4])]).0, 1)
        var id: Int32 = 0
        XCTAssertEqual(te_op_lookup("no_such_op", &id), 1)
        XCTAssertEqual(te_op_lookup(nil, &id), 1)
        var out: OpaquePointer? = nil
        var n: Int32 = 0
        XCTAssertEqual(te_op_call(9999, nil, 0, nil, 0, &out, 1, &n), 1)
        XCTAssertEqual(te_op_call(0, nil, -1, nil, 0, &out, 1, &n), 1)
        var h: OpaquePointer? = nil
        XCTAssertEqual(te_tensor_create(99, nil, 0, nil, 0, &h), 2)
        var shape: [Int64] = [-3]
        XCTAssertEqual(te_tensor_create(11, &shape, 1, nil, 0, &h), 1)
        shape = [1 << 62]
        XCTAssertEqual(te_tensor_create(11, &shape, 1, nil, 0, &h), 1)
        shape = [4]
        var bytes: [UInt8] = [1, 2]
        XCTAssertEqual(te_tensor_create(11, &shape, 1, &bytes, 2, &h), 1)
        let idx = make([5], [1])
        var idxI: OpaquePointer? = nil
        let castName = strdup("dtype")!, castValue = strdup("int32")!
        defer { free(castName); free(castValue); te_tensor_release(idx); te_tensor_release(idxI) }
        var rec = te_attr()
        rec.name = UnsafePointer(castName)
        rec.kind = Int32(TE_ATTR_STRING.rawValue)
        rec.s = UnsafePointer(castValue)
        var ins: [OpaquePointer?] = [idx]
        XCTAssertEqual(te_op_call(op("cast"), &ins, 1, &rec, 1, &idxI, 1, &n), 0)
        XCTAssertEqual(call("take", [a, idxI]).0, 3, "out-of-range index is TE_ERR_INDEX")
        // A one-output op with no room for its output, or no output array, is an error.
        var one: [OpaquePointer?] = [a]
        out = nil
        n = 7
        XCTAssertEqual(te_op_call(op("negative"), &one, 1, nil, 0, &out, 0, &n), 1)
        XCTAssertEqual(n, 0)
        XCTAssertNil(out)
        XCTAssertEqual(te_op_call(op("negative"), &one, 1, nil, 0, nil, 1, &n), 1)
        XCTAssertTrue(String(cString: te_last_error()).contains("room"))
        // One input reaches a one-input op without an inputs array; the registry's checks
        // still hold there and on the array path, and a failure hands nothing out.
        var two: [OpaquePointer?] = [a, a]
        XCTAssertEqual(te_op_call(op("negative"), &two, 2, nil, 0, &out, 1, &n), 1)
        XCTAssertTrue(String(cString: te_last_error()).contains("takes 1 input"))
        var cshape: [Int64] = [2]
        var c: OpaquePointer? = nil
        XCTAssertEqual(te_tensor_create(15, &cshape, 1, nil, 0, &c), 0)  // complex64
        defer { te_tensor_release(c) }
        var cin: [OpaquePointer?] = [c]
        XCTAssertEqual(te_op_call(op("relu"), &cin, 1, nil, 0, &out, 1, &n), 2)
        XCTAssertTrue(String(cString: te_last_error()).contains("complex"))
        XCTAssertNil(out)
        XCTAssertEqual(n, 0)
    }

    func testGradientThroughTheABI() {
        let x = make([1, 2, 3], [3])
        defer { te_tensor_release(x) }
        XCTAssertEqual(te_tape_push(), 0)
        XCTAssertEqual(te_set_requires_grad(x, 1), 0)
        let (_, sq) = call("multiply", [x, x])
        let (_, s) = call("sum", [sq])
        var srcs: [OpaquePointer?] = [x]
        var grads: [OpaquePointer?] = [nil]
        XCTAssertEqual(te_gradient(s, nil, &srcs, 1, &grads), 0)
        XCTAssertEqual(floats(grads[0]), [2, 4, 6])
        te_tensor_release(grads[0])
        te_tensor_release(sq)
        te_tensor_release(s)
        XCTAssertEqual(te_tape_pop(), 0)
        XCTAssertEqual(te_tape_pop(), 1)
        XCTAssertEqual(te_gradient(nil, nil, nil, 0, nil), 1)
    }

    func testCustomVJPThroughTheABI() {
        // ctx counts releases; the callback returns 10 * g (and fails when g sums to 0).
        final class Box { var released = 0 }
        let box = Box()
        let ctx = Unmanaged.passRetained(box).toOpaque()
        let vjp: VJPCallback = { _, g, out, n in
            var id: Int32 = -1
            _ = te_op_lookup("multiply", &id)
            var ten: OpaquePointer? = nil
            var v: Float = 10
            _ = te_tensor_create(11, nil, 0, &v, 4, &ten)
            var ins: [OpaquePointer?] = [g, ten]
            var n1: Int32 = 0
            let st = te_op_call(id, &ins, 2, nil, 0, out, n, &n1)
            te_tensor_release(ten)
            return st
        }
        let release: ReleaseCallback = { ctx in
            Unmanaged<Box>.fromOpaque(ctx!).takeUnretainedValue().released += 1
        }
        let x = make([1, 2, 3], [3])
        defer { te_tensor_release(x) }
        XCTAssertEqual(te_tape_push(), 0)
        XCTAssertEqual(te_set_requires_grad(x, 1), 0)
        var ins: [OpaquePointer?] = [x]
        var y: OpaquePointer? = nil
        XCTAssertEqual(te_record_custom(x, &ins, 1, vjp, ctx, release, &y), 0, String(cString: te_last_error()))
        let (_, s) = call("sum", [y])
        var grads: [OpaquePointer?] = [nil]
        XCTAssertEqual(te_gradient(s, nil, &ins, 1, &grads), 0, String(cString: te_last_error()))
        XCTAssertEqual(floats(grads[0]), [10, 10, 10])
        te_tensor_release(grads[0])
        te_tensor_release(s)
        te_tensor_release(y)
        XCTAssertEqual(box.released, 0)
        XCTAssertEqual(te_tape_pop(), 0)
        XCTAssertEqual(box.released, 1, "popping the tape releases the context once")
        // Without a callback: an error status, and the context is still released.
        XCTAssertEqual(te_record_custom(x, &ins, 1, nil, ctx, release, &y), 1)
        XCTAssertEqual(box.released, 2)
        Unmanaged<Box>.fromOpaque(ctx).release()
    }
}
