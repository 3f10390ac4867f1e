import XCTest
@testable import TensorEngineC

/// A float32 tensor made through the C ABI, as a C caller would.
func makeFloatTensor(_ values: [Float], _ shape: [Int64], file: StaticString = #filePath, line: UInt = #line) -> OpaquePointer? {
    var h: OpaquePointer? = nil
    let st = values.withUnsafeBytes { buf in
        shape.withUnsafeBufferPointer { s in
            te_tensor_create(11, s.baseAddress, Int32(shape.count), buf.baseAddress, Int64(buf.count), &h)
        }
    }
    XCTAssertEqual(st, 0, String(cString: te_last_error()), file: file, line: line)
    return h
}

/// A float32 tensor's elements, read through te_tensor_data.
func floatValues(_ h: OpaquePointer?) -> [Float] {
    let n = Int(te_tensor_size(h))
    let p = te_tensor_data(h)!.assumingMemoryBound(to: Float.self)
    return Array(UnsafeBufferPointer(start: p, count: n))
}
