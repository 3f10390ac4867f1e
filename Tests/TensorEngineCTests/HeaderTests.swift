import CTensorEngine
import TensorEngine
import XCTest

/// The engine's numbering against the header's: a C caller passes these codes.
final class HeaderTests: XCTestCase {
    func testDTypeCodesAreTheHeaders() {
        let header: [(DType, te_dtype)] = [
            (.bool, TE_BOOL), (.int8, TE_INT8), (.int16, TE_INT16), (.int32, TE_INT32), (.int64, TE_INT64),
            (.uint8, TE_UINT8), (.uint16, TE_UINT16), (.uint32, TE_UINT32), (.uint64, TE_UINT64),
            (.float16, TE_FLOAT16), (.bfloat16, TE_BFLOAT16), (.float32, TE_FLOAT32), (.float64, TE_FLOAT64),
            (.float8_e4m3fn, TE_FLOAT8_E4M3FN), (.float8_e5m2, TE_FLOAT8_E5M2),
            (.complex64, TE_COMPLEX64), (.complex128, TE_COMPLEX128),
        ]
        XCTAssertEqual(header.count, DType.allCases.count)
        for (d, c) in header { XCTAssertEqual(d.rawValue, Int32(c.rawValue), d.name) }
        XCTAssertEqual(MemoryLayout<te_attr>.size, 64)
    }

    /// Every op's schema is valid JSON-shaped text naming the op (the C ABI hands it out).
    func testEverySchemaNamesItsOp() {
        for i in 0..<te_op_count() {
            guard let name = te_op_name(i), let schema = te_op_schema(i) else { return XCTFail("op \(i)") }
            let s = String(cString: schema)
            XCTAssertTrue(s.hasPrefix("{\"name\": \"\(String(cString: name))\", \"doc\": "), s)
            XCTAssertTrue(s.hasSuffix("}"), s)
        }
        XCTAssertNil(te_op_schema(-1))
        XCTAssertNil(te_op_schema(te_op_count()))
    }
}
