// The C ABI declared in include/tensor_engine.h. Every entry point catches every engine error
// and turns it into a status code plus a thread-local message; handles are retained
// `Tensor` references.
import CTensorEngine
import TensorEngine
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

private let abiVersion: UInt32 = 1


/// The header's te_status codes, as the Int32 every entry point returns.
private enum Status {
    static let ok = Int32(TE_OK.rawValue), value = Int32(TE_ERR_VALUE.rawValue), type = Int32(TE_ERR_TYPE.rawValue)
    static let index = Int32(TE_ERR_INDEX.rawValue), notImplemented = Int32(TE_ERR_NOT_IMPLEMENTED.rawValue)
    static let `internal` = Int32(TE_ERR_INTERNAL.rawValue)
}

/// Runs `body`, mapping any error to a status and the thread-local message.
func guarded(_ body: () throws -> Void) -> Int32 {
    switch ThreadError.catching(body) {
    case nil: return Status.ok
    case .value: return Status.value
    case .type: return Status.type
    case .index: return Status.index
    case .notImplemented: return Status.notImplemented
    case .internal: return Status.internal
    }
}

func tensor(_ h: OpaquePointer?) throws -> Tensor {
    guard let h = h else { throw EngineError.value("null tensor handle") }
    return Unmanaged<Tensor>.fromOpaque(UnsafeRawPointer(h)).takeUnretainedValue()
}

func handle(_ t: Tensor) -> OpaquePointer {
    OpaquePointer(Unmanaged.passRetained(t).toOpaque())
}

@_cdecl("te_abi_version")
public func te_abi_version() -> UInt32 { abiVersion }

@_cdecl("te_last_error")
public func te_last_error() -> UnsafePointer<CChar> { ThreadError.message }

@_cdecl("te_set_num_threads")
public func te_set_num_threads(_ n: Int32) { Threading.numThreads = Int(n) }

@_cdecl("te_get_num_threads")
public func te_get_num_threads() -> Int32 { Int32(Threading.numThreads) }

@_cdecl("te_dtype_itemsize")
public func te_dtype_itemsize(_ dtype: Int32) -> Int32 {
    guard let d = DType(rawValue: dtype) else { return 0 }
    return Int32(d.itemSize)
}

@_cdecl("te_tensor_create")
public func te_tensor_create(_ dtype: Int32, _ shape: UnsafePointer<Int64>?, _ ndim: Int32,
                             _ data: UnsafeRawPointer?, _ nbytes: Int64, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    guarded {
        guard let out = out else { throw EngineError.value("null output pointer") }
        out.pointee = nil
        guard let dt = DType(rawValue: dtype) else { throw EngineError.type("unknown dtype code \(dtype)") }
        guard ndim >= 0, ndim <= 64 else { throw EngineError.value("rank \(ndim) is out of range [0, 64]") }
        guard ndim == 0 || shape != nil else { throw EngineError.value("null shape pointer") }
        let dims = (0..<Int(ndim)).map { Int(shape![$0]) }
        let t = try Tensor(bytes: data, byteCount: Int(nbytes), shape: dims, dtype: dt)
        out.pointee = handle(t)
    }
}

@_cdecl("te_tensor_wrap")
public func te_tensor_wrap(_ dtype: Int32, _ shape: UnsafePointer<Int64>?, _ ndim: Int32, _ data: UnsafeRawPointer?,
                           _ nbytes: Int64, _ release: te_release_fn?, _ ctx: UnsafeMutableRawPointer?,
                           _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    guarded {
        guard let out = out else { throw EngineError.value("null output pointer") }
        out.pointee = nil
        guard let dt = DType(rawValue: dtype) else { throw EngineError.type("unknown dtype code \(dtype)") }
        guard ndim >= 0, ndim <= 64 else { throw EngineError.value("rank \(ndim) is out of range [0, 64]") }
        guard ndim == 0 || shape != nil else { throw EngineError.value("null shape pointer") }
        guard let data = data else { throw EngineError.value("null data pointer") }
        let dims = (0..<Int(ndim)).map { Int(shape![$0]) }
        let t = try Tensor(wrapping: data, byteCount: Int(nbytes), shape: dims, dtype: dt) {
            release?(ctx)
        }
        out.pointee = handle(t)
    }
}

@_cdecl("te_tensor_retain")
public func te_tensor_retain(_ h: OpaquePointer?) -> OpaquePointer? {
    guard let h = h else { return nil }
    _ = Unmanaged<Tensor>.fromOpaque(UnsafeRawPointer(h)).retain()
    return h
}

@_cdecl("te_tensor_release")
public func te_tensor_release(_ h: OpaquePointer?) {
    guard let h = h else { return }
    Unmanaged<Tensor>.fromOpaque(UnsafeRawPointer(h)).release()
}

@_cdecl("te_tensor_dtype")
public func te_tensor_dtype(_ h: OpaquePointer?) -> Int32 { (try? tensor(h).dtype.rawValue) ?? -1 }

@_cdecl("te_tensor_ndim")
public func te_tensor_ndim(_ h: OpaquePointer?) -> Int32 { (try? Int32(tensor(h).rank)) ?? -1 }

@_cdecl("te_tensor_shape")
public func te_tensor_shape(_ h: OpaquePointer?, _ out: UnsafeMutablePointer<Int64>?, _ cap: Int32) -> Int32 {
    guard let t = try? tensor(h) else { return -1 }
    if let out = out {
        for i in 0..<Swift.min(Int(Swift.max(cap, 0)), t.rank) { out[i] = Int64(t.shape[i]) }
    }
    return Int32(t.rank)
}

@_cdecl("te_tensor_size")
public func te_tensor_size(_ h: OpaquePointer?) -> Int64 { (try? Int64(tensor(h).count)) ?? -1 }

@_cdecl("te_tensor_nbytes")
public func te_tensor_nbytes(_ h: OpaquePointer?) -> Int64 { (try? Int64(tensor(h).nbytes)) ?? -1 }

@_cdecl("te_tensor_data")
public func te_tensor_data(_ h: OpaquePointer?) -> UnsafeRawPointer? {
    guard let t = try? tensor(h) else { return nil }
    // The caller reads values on the host, where a trace cannot see what it does with them
    // (a Python branch, a number baked into an attribute): replaying would be silently wrong.
    Tracer.unreplayable("a tensor's values were read on the host (numpy(), float(), bool(), printing)")
    return UnsafeRawPointer(t.rawPointer)
}

@_cdecl("te_op_lookup")
public func te_op_lookup(_ name: UnsafePointer<CChar>?, _ op: UnsafeMutablePointer<Int32>?) -> Int32 {
    guarded {
        guard let name = name, let op = op else { throw EngineError.value("null argument to te_op_lookup") }
        let s = String(cString: name)
        guard let i = OpRegistry.lookup(s) else { throw EngineError.value("unknown op '\(s)'") }
        op.pointee = Int32(i)
    }
}

@_cdecl("te_op_count")
public func te_op_count() -> Int32 { Int32(OpRegistry.ops.count) }

private let opNames: [UnsafeMutablePointer<CChar>] = OpRegistry.ops.map { strdup($0.name) }

@_cdecl("te_op_name")
public func te_op_name(_ op: Int32) -> UnsafePointer<CChar>? {
    guard op >= 0, Int(op) < opNames.count else { return nil }
    return UnsafePointer(opNames[Int(op)])
}

private let opSchemas: [UnsafeMutablePointer<CChar>] = OpRegistry.ops.map { strdup($0.schema.json) }

@_cdecl("te_op_schema")
public func te_op_schema(_ op: Int32) -> UnsafePointer<CChar>? {
    guard op >= 0, Int(op) < opSchemas.count else { return nil }
    return UnsafePointer(opSchemas[Int(op)])
}

/// Reads a te_attr array through the header's own declaration of the record.
private func readAttrs(_ attrs: UnsafePointer<te_attr>?, _ n: Int32) throws -> Attrs {
    guard n >= 0 else { throw EngineError.value("negative attribute count") }
    guard n == 0 || attrs != nil else { throw EngineError.value("null attribute array") }
    var out = Attrs(capacity: Int(n))
    for i in 0..<Int(n) {
        let rec = attrs![i]
        guard let namePtr = rec.name else { throw EngineError.value("attribute \(i) has no name") }
        let name = String(cString: namePtr)
        let count = Int(rec.n)
        switch UInt32(bitPattern: rec.kind) {
        case TE_ATTR_INT.rawValue: out.set(name, .int(Int(rec.i)))
        case TE_ATTR_FLOAT.rawValue: out.set(name, .float(rec.f))
        case TE_ATTR_BOOL.rawValue: out.set(name, .bool(rec.i != 0))
        case TE_ATTR_STRING.rawValue:
            guard let s = rec.s else { throw EngineError.value("attribute '\(name)' has a null string") }
            out.set(name, .string(String(cString: s)))
        case TE_ATTR_INTS.rawValue:
            guard count >= 0, count <= 1 << 20 else { throw EngineError.value("attribute '\(name)' has a bad length \(count)") }
            guard count == 0 || rec.ints != nil else { throw EngineError.value("attribute '\(name)' has a null list") }
            let p = rec.ints
            out.set(name, .ints((0..<count).map { Int(p![$0]) }))
        case TE_ATTR_FLOATS.rawValue:
            guard count >= 0, count <= 1 << 20 else { throw EngineError.value("attribute '\(name)' has a bad length \(count)") }
            guard count == 0 || rec.floats != nil else { throw EngineError.value("attribute '\(name)' has a null list") }
            let p = rec.floats
            out.set(name, .floats((0..<count).map { p![$0] }))
        default: throw EngineError.type("attribute '\(name)' has unknown kind \(rec.kind)")
        }
    }
    return out
}

@_cdecl("te_op_call")
public func te_op_call(_ op: Int32, _ inputs: UnsafePointer<OpaquePointer?>?, _ nInputs: Int32,
                       _ attrs: UnsafePointer<te_attr>?, _ nAttrs: Int32,
                       _ outputs: UnsafeMutablePointer<OpaquePointer?>?, _ maxOutputs: Int32,
                       _ nOutputs: UnsafeMutablePointer<Int32>?) -> Int32 {
    guarded {
        nOutputs?.pointee = 0
        guard op >= 0, Int(op) < OpRegistry.ops.count else { throw EngineError.value("unknown op handle \(op)") }
        guard nInputs >= 0, nInputs == 0 || inputs != nil else { throw EngineError.value("bad input array") }
        Tracer.opStarting()
        func oneOutput() throws -> UnsafeMutablePointer<OpaquePointer?> {
            guard maxOutputs >= 1, let outputs = outputs else {
                throw EngineError.value("op \(OpRegistry.ops[Int(op)].name) returns 1 output, room for \(maxOutputs)")
            }
            return outputs
        }
        // Fields, not the whole OpDef: copying it retained and released each of them. Outputs
        // are written only once nothing can fail (the header promises none on failure).
        if nInputs == 1, let unary = OpRegistry.ops[Int(op)].runUnary {
            let x = try tensor(inputs![0])
            let a = try readAttrs(attrs, nAttrs)
            let dest = try oneOutput()
            dest[0] = handle(Tracer.traced(op, try unary(x, a), [x], a))
            nOutputs?.pointee = 1
            return
        }
        let ins = try (0..<Int(nInputs)).map { try tensor(inputs![$0]) }
        let a = try readAttrs(attrs, nAttrs)
        if let one = OpRegistry.ops[Int(op)].runOne {
            let dest = try oneOutput()
            dest[0] = handle(Tracer.traced(op, try one(ins, a), ins, a))
            nOutputs?.pointee = 1
            return
        }
        let results = Tracer.traced(op, try OpRegistry.ops[Int(op)].run(ins, a), ins, a)
        guard results.count <= Int(maxOutputs), results.isEmpty || outputs != nil else {
            throw EngineError.value("op \(OpRegistry.ops[Int(op)].name) returns \(results.count) outputs, room for \(maxOutputs)")
        }
        for (i, r) in results.enumerated() { outputs![i] = handle(r) }
        nOutputs?.pointee = Int32(results.count)
    }
}

@_cdecl("te_tape_push")
public func te_tape_push() -> Int32 { guarded { Tape.push() } }

@_cdecl("te_tape_pop")
public func te_tape_pop() -> Int32 { guarded { try Tape.pop() } }

@_cdecl("te_tape_depth")
public func te_tape_depth() -> Int32 { Int32(Tape.depth) }

@_cdecl("te_set_requires_grad")
public func te_set_requires_grad(_ h: OpaquePointer?, _ flag: Int32) -> Int32 {
    guarded { try tensor(h).requiresGrad = flag != 0 }
}

@_cdecl("te_requires_grad")
public func te_requires_grad(_ h: OpaquePointer?) -> Int32 { ((try? tensor(h).requiresGrad) ?? false) ? 1 : 0 }

@_cdecl("te_gradient")
public func te_gradient(_ target: OpaquePointer?, _ seed: OpaquePointer?, _ sources: UnsafePointer<OpaquePointer?>?,
                        _ nSources: Int32, _ grads: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    gradient(target, seed, sources, nSources, grads, createGraph: false)
}

@_cdecl("te_gradient_create_graph")
public func te_gradient_create_graph(_ target: OpaquePointer?, _ seed: OpaquePointer?, _ sources: UnsafePointer<OpaquePointer?>?,
                                     _ nSources: Int32, _ grads: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    gradient(target, seed, sources, nSources, grads, createGraph: true)
}

private func gradient(_ target: OpaquePointer?, _ seed: OpaquePointer?, _ sources: UnsafePointer<OpaquePointer?>?,
                      _ nSources: Int32, _ grads: UnsafeMutablePointer<OpaquePointer?>?, createGraph: Bool) -> Int32 {
    guarded {
        guard nSources >= 0, nSources == 0 || (sources != nil && grads != nil) else {
            throw EngineError.value("bad source or gradient array")
        }
        let t = try tensor(target)
        let s = try seed.map { try tensor($0) }
        let srcs = try (0..<Int(nSources)).map { try tensor(sources![$0]) }
        let gs = try Tape.gradient(of: t, seed: s, wrt: srcs, createGraph: createGraph)
        for (i, g) in gs.enumerated() { grads![i] = g.map(handle) }
    }
}

@_cdecl("te_set_last_error")
public func te_set_last_error(_ message: UnsafePointer<CChar>?) {
    ThreadError.set(message.map { String(cString: $0) } ?? "")
}

public typealias VJPCallback = @convention(c) (UnsafeMutableRawPointer?, OpaquePointer?, UnsafeMutablePointer<OpaquePointer?>?, Int32) -> Int32
public typealias ReleaseCallback = @convention(c) (UnsafeMutableRawPointer?) -> Void

/// Owns a foreign VJP context: the tape node's closure holds it, so the context is released
/// exactly when the node (or the unrecorded closure) goes away.
private final class ForeignVJP {
    let vjp: VJPCallback, ctx: UnsafeMutableRawPointer?, release: ReleaseCallback?
    init(_ vjp: VJPCallback, _ ctx: UnsafeMutableRawPointer?, _ release: ReleaseCallback?) {
        (self.vjp, self.ctx, self.release) = (vjp, ctx, release)
    }
    deinit { release?(ctx) }

    func callAsFunction(_ g: Tensor, count: Int) throws -> [Tensor?] {
        var out = [OpaquePointer?](repeating: nil, count: count)
        let status = withExtendedLifetime(g) {
            vjp(ctx, OpaquePointer(Unmanaged.passUnretained(g).toOpaque()), &out, Int32(count))
        }
        // Take ownership first, so a failing callback's partial results are released too.
        let grads = out.map { $0.map { Unmanaged<Tensor>.fromOpaque(UnsafeRawPointer($0)).takeRetainedValue() } }
        guard status == Status.ok else {
            let text = String(cString: te_last_error())
            throw EngineError.value(text.isEmpty ? "custom gradient callback failed (status \(status))" : text)
        }
        return grads
    }
}

@_cdecl("te_record_custom")
public func te_record_custom(_ output: OpaquePointer?, _ inputs: UnsafePointer<OpaquePointer?>?, _ nInputs: Int32,
                             _ vjp: VJPCallback?, _ ctx: UnsafeMutableRawPointer?, _ release: ReleaseCallback?,
                             _ result: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    // The context is owned from here on, whatever happens below.
    let foreign = vjp.map { ForeignVJP($0, ctx, release) }
    if foreign == nil { release?(ctx) }
    return guarded {
        guard let foreign = foreign else { throw EngineError.value("te_record_custom needs a vjp callback") }
        guard let result = result else { throw EngineError.value("te_record_custom needs a result pointer") }
        result.pointee = nil
        guard nInputs >= 0, nInputs == 0 || inputs != nil else { throw EngineError.value("bad input array") }
        let out = try tensor(output)
        let ins = try (0..<Int(nInputs)).map { try tensor(inputs![$0]) }
        let n = ins.count
        result.pointee = handle(Tape.recordCustom(out, inputs: ins) { g in try foreign(g, count: n) })
    }
}
