// The model C ABI declared in include/te_model.h: handles are retained Swift objects, every
// entry point catches every error and turns it into a te_status plus a thread-local message.
import CSwiftKerasModel
import CTensorEngine
import SwiftKeras
import TensorEngine
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif


private func guarded(_ body: () throws -> Void) -> te_status {
    switch ThreadError.catching(body) {
    case nil: return TE_OK
    case .value: return TE_ERR_VALUE
    case .type: return TE_ERR_TYPE
    case .index: return TE_ERR_INDEX
    case .notImplemented: return TE_ERR_NOT_IMPLEMENTED
    case .internal: return TE_ERR_INTERNAL
    }
}

/// A loaded model with its names as C strings (owned here, freed with the model).
final class ModelBox {
    let model: Model
    let inputNames: [UnsafeMutablePointer<CChar>?]
    let outputNames: [UnsafeMutablePointer<CChar>?]

    init(_ model: Model) {
        self.model = model
        inputNames = model.inputs.map { strdup($0.name) }
        outputNames = model.outputNames.map { strdup($0) }
    }

    deinit { (inputNames + outputNames).forEach { free($0) } }
}

final class ResultBox {
    let outputs: [Tensor]
    init(_ outputs: [Tensor]) { self.outputs = outputs }
}

private func box(_ m: OpaquePointer?) -> ModelBox? {
    m.map { Unmanaged<ModelBox>.fromOpaque(UnsafeRawPointer($0)).takeUnretainedValue() }
}

private func resultBox(_ r: OpaquePointer?) -> ResultBox? {
    r.map { Unmanaged<ResultBox>.fromOpaque(UnsafeRawPointer($0)).takeUnretainedValue() }
}

@_cdecl("te_model_last_error")
public func te_model_last_error() -> UnsafePointer<CChar>? {
    ThreadError.message
}

@_cdecl("te_model_load")
public func te_model_load(_ path: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> te_status {
    out?.pointee = nil
    return guarded {
        guard let path, let out else { throw EngineError.value("te_model_load: null path or output pointer") }
        let model = try Model.load(String(cString: path))
        out.pointee = OpaquePointer(Unmanaged.passRetained(ModelBox(model)).toOpaque())
    }
}

@_cdecl("te_model_free")
public func te_model_free(_ m: OpaquePointer?) {
    if let m { Unmanaged<ModelBox>.fromOpaque(UnsafeRawPointer(m)).release() }
}

@_cdecl("te_model_num_inputs")
public func te_model_num_inputs(_ m: OpaquePointer?) -> Int32 { Int32(box(m)?.model.inputs.count ?? 0) }

@_cdecl("te_model_num_outputs")
public func te_model_num_outputs(_ m: OpaquePointer?) -> Int32 { Int32(box(m)?.outputNames.count ?? 0) }

@_cdecl("te_model_input_spec")
public func te_model_input_spec(_ m: OpaquePointer?, _ i: Int32, _ dtype: UnsafeMutablePointer<Int32>?,
                                _ shape: UnsafeMutablePointer<Int64>?, _ maxRank: Int32) -> Int32 {
    guard let b = box(m), i >= 0, Int(i) < b.model.inputs.count else { return -1 }
    let input = b.model.inputs[Int(i)]
    dtype?.pointee = input.dtype.rawValue
    if let shape {
        for (d, n) in input.batchShape.prefix(Int(max(maxRank, 0))).enumerated() { shape[d] = Int64(n ?? -1) }
    }
    return Int32(input.batchShape.count)
}

@_cdecl("te_model_input_name")
public func te_model_input_name(_ m: OpaquePointer?, _ i: Int32) -> UnsafePointer<CChar>? {
    guard let b = box(m), i >= 0, Int(i) < b.inputNames.count else { return nil }
    return UnsafePointer(b.inputNames[Int(i)])
}

@_cdecl("te_model_output_name")
public func te_model_output_name(_ m: OpaquePointer?, _ i: Int32) -> UnsafePointer<CChar>? {
    guard let b = box(m), i >= 0, Int(i) < b.outputNames.count else { return nil }
    return UnsafePointer(b.outputNames[Int(i)])
}

@_cdecl("te_model_predict")
public func te_model_predict(_ m: OpaquePointer?, _ n: Int32, _ dtypes: UnsafePointer<Int32>?, _ ranks: UnsafePointer<Int32>?,
                             _ shapes: UnsafePointer<UnsafePointer<Int64>?>?, _ data: UnsafePointer<UnsafeRawPointer?>?,
                             _ out: UnsafeMutablePointer<OpaquePointer?>?) -> te_status {
    out?.pointee = nil
    return guarded {
        guard let b = box(m), let out else { throw EngineError.value("te_model_predict: null model or result pointer") }
        guard n == Int32(b.model.inputs.count) else {
            throw EngineError.value("te_model_predict: the model takes \(b.model.inputs.count) input(s), got \(n)")
        }
        var xs: [Tensor] = []
        if n > 0 {
            guard let dtypes, let ranks, let shapes, let data else {
                throw EngineError.value("te_model_predict: null dtypes, ranks, shapes or data array")
            }
            for k in 0..<Int(n) {
                let rank = Int(ranks[k])
                guard rank >= 0 && rank <= 64 else { throw EngineError.value("te_model_predict: input \(k) has rank \(rank)") }
                guard let dt = DType(rawValue: dtypes[k]) else {
                    throw EngineError.type("te_model_predict: input \(k) has unknown dtype \(dtypes[k])")
                }
                var shape: [Int] = []
                if rank > 0 {
                    guard let s = shapes[k] else { throw EngineError.value("te_model_predict: input \(k) has no shape") }
                    shape = (0..<rank).map { Int(s[$0]) }
                }
                guard shape.allSatisfy({ $0 >= 0 }) else { throw EngineError.value("te_model_predict: input \(k) has a negative dimension") }
                let count = try elementCount(shape)
                guard count == 0 || data[k] != nil else { throw EngineError.value("te_model_predict: input \(k) has no data") }
                xs.append(try Tensor(bytes: data[k], byteCount: count * dt.itemSize, shape: shape, dtype: dt))
            }
        }
        let ys = try b.model.predict(xs)
        out.pointee = OpaquePointer(Unmanaged.passRetained(ResultBox(ys)).toOpaque())
    }
}

@_cdecl("te_model_result_count")
public func te_model_result_count(_ r: OpaquePointer?) -> Int32 { Int32(resultBox(r)?.outputs.count ?? 0) }

@_cdecl("te_model_result_output")
public func te_model_result_output(_ r: OpaquePointer?, _ i: Int32, _ dtype: UnsafeMutablePointer<Int32>?,
                                   _ shape: UnsafeMutablePointer<Int64>?, _ maxRank: Int32,
                                   _ data: UnsafeMutablePointer<UnsafeRawPointer?>?) -> Int32 {
    guard let b = resultBox(r), i >= 0, Int(i) < b.outputs.count else { return -1 }
    let t = b.outputs[Int(i)]
    dtype?.pointee = t.dtype.rawValue
    if let shape {
        for (d, n) in t.shape.prefix(Int(max(maxRank, 0))).enumerated() { shape[d] = Int64(n) }
    }
    data?.pointee = UnsafeRawPointer(t.rawPointer)
    return Int32(t.rank)
}

@_cdecl("te_model_result_free")
public func te_model_result_free(_ r: OpaquePointer?) {
    if let r { Unmanaged<ResultBox>.fromOpaque(UnsafeRawPointer(r)).release() }
}
