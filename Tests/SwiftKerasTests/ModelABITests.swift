import CTensorEngine
import Foundation
import SwiftKerasC
import TensorEngine
import XCTest

/// The model C ABI (te_model.h) on good and bad input: statuses and messages, never a crash,
/// no handle handed out on failure.
final class ModelABITests: XCTestCase {
    let mlp = KerasFileTests.fixtures.appendingPathComponent("mlp.keras").path

    private func message() -> String { te_model_last_error().map { String(cString: $0) } ?? "" }

    func testLoadDescribePredictFree() throws {
        var model: OpaquePointer?
        XCTAssertEqual(mlp.withCString { te_model_load($0, &model) }, TE_OK)
        defer { te_model_free(model) }
        XCTAssertEqual(te_model_num_inputs(model), 1)
        XCTAssertEqual(te_model_num_outputs(model), 1)
        var dtype: Int32 = -1
        var shape = [Int64](repeating: 0, count: 4)
        XCTAssertEqual(te_model_input_spec(model, 0, &dtype, &shape, 4), 2)
        XCTAssertEqual(dtype, Int32(TE_FLOAT32.rawValue))
        XCTAssertEqual(Array(shape.prefix(2)), [-1, 8])
        XCTAssertEqual(te_model_input_spec(model, 1, &dtype, &shape, 4), -1)
        XCTAssertNil(te_model_input_name(model, 5))

        let x = [Float](repeating: 0.5, count: 16)
        let xShape: [Int64] = [2, 8]
        var result: OpaquePointer?
        let status = x.withUnsafeBytes { xb in
            xShape.withUnsafeBufferPointer { sb in
                var dtypes = [Int32(TE_FLOAT32.rawValue)], ranks: [Int32] = [2]
                var shapes: [UnsafePointer<Int64>?] = [sb.baseAddress]
                var data: [UnsafeRawPointer?] = [xb.baseAddress]
                return te_model_predict(model, 1, &dtypes, &ranks, &shapes, &data, &result)
            }
        }
        XCTAssertEqual(status, TE_OK, message())
        defer { te_model_result_free(result) }
        XCTAssertEqual(te_model_result_count(result), 1)
        var values: UnsafeRawPointer?
        XCTAssertEqual(te_model_result_output(result, 0, &dtype, &shape, 4, &values), 2)
        XCTAssertEqual(Array(shape.prefix(2)), [2, 4])
        let probs = UnsafeBufferPointer(start: values?.assumingMemoryBound(to: Float.self), count: 8)
        XCTAssertEqual(Double(probs.prefix(4).reduce(0, +)), 1, accuracy: 1e-5)  // a softmax row
        XCTAssertEqual(te_model_result_output(result, 1, &dtype, &shape, 4, &values), -1)
    }

    func testBadInputIsAStatusNotACrash() {
        var model: OpaquePointer?
        XCTAssertEqual(te_model_load(nil, &model), TE_ERR_VALUE)
        XCTAssertNil(model)
        XCTAssertEqual("/no/such.keras".withCString { te_model_load($0, &model) }, TE_ERR_VALUE)
        XCTAssertNil(model)
        XCTAssertTrue(message().contains("/no/such.keras"), message())
        XCTAssertEqual(te_model_num_inputs(nil), 0)
        XCTAssertEqual(te_model_input_spec(nil, 0, nil, nil, 0), -1)
        te_model_free(nil)
        te_model_result_free(nil)

        XCTAssertEqual(mlp.withCString { te_model_load($0, &model) }, TE_OK)
        defer { te_model_free(model) }
        var result: OpaquePointer?
        // Wrong input count, null arrays, a negative rank, an unknown dtype, a wrong shape.
        XCTAssertEqual(te_model_predict(model, 2, nil, nil, nil, nil, &result), TE_ERR_VALUE)
        XCTAssertEqual(te_model_predict(model, 1, nil, nil, nil, nil, &result), TE_ERR_VALUE)
        let x = [Float](repeating: 1, count: 8)
        func predict(dtype: Int32, rank: Int32, shape: [Int64]) -> te_status {
            x.withUnsafeBytes { xb in
                shape.withUnsafeBufferPointer { sb in
                    var dtypes = [dtype], ranks = [rank]
                    var shapes: [UnsafePointer<Int64>?] = [sb.baseAddress]
                    var data: [UnsafeRawPointer?] = [xb.baseAddress]
                    return te_model_predict(model, 1, &dtypes, &ranks, &shapes, &data, &result)
                }
            }
        }
        XCTAssertEqual(predict(dtype: Int32(TE_FLOAT32.rawValue), rank: -1, shape: [1, 8]), TE_ERR_VALUE)
        XCTAssertEqual(predict(dtype: 99, rank: 2, shape: [1, 8]), TE_ERR_TYPE)
        XCTAssertEqual(predict(dtype: Int32(TE_FLOAT32.rawValue), rank: 2, shape: [1, 7]), TE_ERR_VALUE)
        XCTAssertTrue(message().contains("expects shape (None, 8)"), message())
        XCTAssertNil(result)
    }
}
