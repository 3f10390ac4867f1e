// The C ABI of programs (te_trace_*, te_graph_*): recording a step on this thread, replaying
// it, saving and loading it. Handles are retained `Program` references; the logic lives in
// TensorEngine/Graph.
import TensorEngine

private func program(_ g: OpaquePointer?) throws -> Program {
    guard let g = g else { throw EngineError.value("null graph handle") }
    return Unmanaged<Program>.fromOpaque(UnsafeRawPointer(g)).takeUnretainedValue()
}

private func graphHandle(_ p: Program) -> OpaquePointer {
    OpaquePointer(Unmanaged.passRetained(p).toOpaque())
}

@_cdecl("te_trace_begin")
public func te_trace_begin() -> Int32 { guarded { try Tracer.begin() } }

@_cdecl("te_trace_input")
public func te_trace_input(_ t: OpaquePointer?) -> Int32 { guarded { try Tracer.declareInput(try tensor(t)) } }

@_cdecl("te_trace_abort")
public func te_trace_abort() { Tracer.abort() }

@_cdecl("te_trace_active")
public func te_trace_active() -> Int32 { Tracer.isActive ? 1 : 0 }

@_cdecl("te_trace_end")
public func te_trace_end(_ outputs: UnsafePointer<OpaquePointer?>?, _ n: Int32, _ graph: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    guarded {
        // The trace ends whatever happens below.
        defer { Tracer.abort() }
        guard let graph = graph else { throw EngineError.value("null graph pointer") }
        graph.pointee = nil
        guard n >= 0, n == 0 || outputs != nil else { throw EngineError.value("bad output array") }
        let outs = try (0..<Int(n)).map { try tensor(outputs![$0]) }
        graph.pointee = graphHandle(try Tracer.end(outputs: outs).optimized())
    }
}

@_cdecl("te_graph_run")
public func te_graph_run(_ graph: OpaquePointer?, _ inputs: UnsafePointer<OpaquePointer?>?, _ nInputs: Int32,
                         _ outputs: UnsafeMutablePointer<OpaquePointer?>?, _ maxOutputs: Int32,
                         _ nOutputs: UnsafeMutablePointer<Int32>?) -> Int32 {
    guarded {
        nOutputs?.pointee = 0
        let p = try program(graph)
        guard nInputs >= 0, nInputs == 0 || inputs != nil else { throw EngineError.value("bad input array") }
        guard p.outputs.count <= Int(maxOutputs), p.outputs.isEmpty || outputs != nil else {
            throw EngineError.value("the graph returns \(p.outputs.count) outputs, room for \(maxOutputs)")
        }
        let ins = try (0..<Int(nInputs)).map { try tensor(inputs![$0]) }
        let results = try p.run(inputs: ins)
        for (i, r) in results.enumerated() { outputs![i] = handle(r) }
        nOutputs?.pointee = Int32(results.count)
    }
}

@_cdecl("te_graph_run_donating")
public func te_graph_run_donating(_ graph: OpaquePointer?, _ inputs: UnsafePointer<OpaquePointer?>?, _ nInputs: Int32,
                                  _ donate: UnsafePointer<UInt8>?, _ outputs: UnsafeMutablePointer<OpaquePointer?>?,
                                  _ maxOutputs: Int32, _ nOutputs: UnsafeMutablePointer<Int32>?) -> Int32 {
    guarded {
        nOutputs?.pointee = 0
        guard nInputs >= 0, nInputs == 0 || inputs != nil else { throw EngineError.value("bad input array") }
        // The donated references first, whatever fails next: the header promises they are
        // the engine's once the array itself is valid.
        var ins: [Tensor?] = (0..<Int(nInputs)).map { i in
            guard let h = inputs![i], let d = donate, d[i] != 0 else { return nil }
            return Unmanaged<Tensor>.fromOpaque(UnsafeRawPointer(h)).takeRetainedValue()
        }
        let p = try program(graph)
        guard p.outputs.count <= Int(maxOutputs), p.outputs.isEmpty || outputs != nil else {
            throw EngineError.value("the graph returns \(p.outputs.count) outputs, room for \(maxOutputs)")
        }
        var args = try ins.indices.map { i in try ins[i] ?? tensor(inputs![i]) }
        ins.removeAll()
        let results = try p.run(consuming: &args)
        for (i, r) in results.enumerated() { outputs![i] = handle(r) }
        nOutputs?.pointee = Int32(results.count)
    }
}

@_cdecl("te_graph_save")
public func te_graph_save(_ graph: OpaquePointer?, _ path: UnsafePointer<CChar>?) -> Int32 {
    guarded {
        guard let path = path else { throw EngineError.value("null path") }
        try program(graph).save(to: String(cString: path))
    }
}

@_cdecl("te_graph_load")
public func te_graph_load(_ path: UnsafePointer<CChar>?, _ graph: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    guarded {
        guard let graph = graph else { throw EngineError.value("null graph pointer") }
        graph.pointee = nil
        guard let path = path else { throw EngineError.value("null path") }
        graph.pointee = graphHandle(try Program.load(from: String(cString: path)))
    }
}

@_cdecl("te_graph_release")
public func te_graph_release(_ graph: OpaquePointer?) {
    guard let g = graph else { return }
    Unmanaged<Program>.fromOpaque(UnsafeRawPointer(g)).release()
}

@_cdecl("te_graph_num_inputs")
public func te_graph_num_inputs(_ graph: OpaquePointer?) -> Int32 { (try? Int32(program(graph).inputs.count)) ?? -1 }

@_cdecl("te_graph_num_outputs")
public func te_graph_num_outputs(_ graph: OpaquePointer?) -> Int32 { (try? Int32(program(graph).outputs.count)) ?? -1 }

@_cdecl("te_graph_num_nodes")
public func te_graph_num_nodes(_ graph: OpaquePointer?) -> Int32 { (try? Int32(program(graph).nodes.count)) ?? -1 }

@_cdecl("te_graph_num_constants")
public func te_graph_num_constants(_ graph: OpaquePointer?) -> Int32 { (try? Int32(program(graph).constants.count)) ?? -1 }

/// Input (or output) i's dtype into *dtype and up to `cap` dims into shape; the rank, or -1
/// for a null handle or an index out of range.
private func graphSpec(_ graph: OpaquePointer?, _ i: Int32, output: Bool, _ dtype: UnsafeMutablePointer<Int32>?,
                       _ shape: UnsafeMutablePointer<Int64>?, _ cap: Int32) -> Int32 {
    guard let p = try? program(graph) else { return -1 }
    let specs = output ? p.outputs.map(\.spec) : p.inputs.map(\.spec)
    guard i >= 0, Int(i) < specs.count else { return -1 }
    let spec = specs[Int(i)]
    dtype?.pointee = spec.dtype.rawValue
    if let shape = shape {
        for d in 0..<Swift.min(Int(Swift.max(cap, 0)), spec.shape.count) { shape[d] = Int64(spec.shape[d]) }
    }
    return Int32(spec.shape.count)
}

@_cdecl("te_graph_input_spec")
public func te_graph_input_spec(_ graph: OpaquePointer?, _ i: Int32, _ dtype: UnsafeMutablePointer<Int32>?,
                                _ shape: UnsafeMutablePointer<Int64>?, _ cap: Int32) -> Int32 {
    graphSpec(graph, i, output: false, dtype, shape, cap)
}

@_cdecl("te_graph_output_spec")
public func te_graph_output_spec(_ graph: OpaquePointer?, _ i: Int32, _ dtype: UnsafeMutablePointer<Int32>?,
                                 _ shape: UnsafeMutablePointer<Int64>?, _ cap: Int32) -> Int32 {
    graphSpec(graph, i, output: true, dtype, shape, cap)
}

@_cdecl("te_graph_json")
public func te_graph_json(_ graph: OpaquePointer?, _ buf: UnsafeMutablePointer<CChar>?, _ cap: Int,
                          _ len: UnsafeMutablePointer<Int>?) -> Int32 {
    guarded {
        guard let len = len else { throw EngineError.value("null length pointer") }
        let text = Array(try program(graph).describedAsJSON().utf8)
        len.pointee = text.count
        guard let buf = buf else { return }
        guard cap > text.count else {
            throw EngineError.value("graph JSON needs \(text.count + 1) bytes, the buffer has \(cap)")
        }
        for (k, byte) in text.enumerated() { buf[k] = CChar(bitPattern: byte) }
        buf[text.count] = 0
    }
}

@_cdecl("te_graph_constant")
public func te_graph_constant(_ graph: OpaquePointer?, _ i: Int32, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    guarded {
        guard let out = out else { throw EngineError.value("null output pointer") }
        out.pointee = nil
        let p = try program(graph)
        guard i >= 0, Int(i) < p.constants.count else {
            throw EngineError.index("constant \(i) is out of range: the graph has \(p.constants.count)")
        }
        out.pointee = handle(p.constants[Int(i)].tensor)
    }
}

// MARK: - Control flow while tracing (docs/graph-format.md, "Control flow")

private func tensors(_ p: UnsafePointer<OpaquePointer?>?, _ n: Int32, _ what: String) throws -> [Tensor] {
    guard n >= 0, n == 0 || p != nil else { throw EngineError.value("bad \(what) array") }
    return try (0..<Int(n)).map { try tensor(p![$0]) }
}

/// Hands `ts` out into `out` (room checked by the caller) as new references.
private func handOut(_ ts: [Tensor], _ out: UnsafeMutablePointer<OpaquePointer?>?) throws {
    guard ts.isEmpty || out != nil else { throw EngineError.value("null output array") }
    for (i, t) in ts.enumerated() { out![i] = handle(t) }
}

@_cdecl("te_trace_cond_begin")
public func te_trace_cond_begin(_ selector: OpaquePointer?, _ nBranches: Int32, _ taken: UnsafeMutablePointer<Int32>?,
                                _ recording: UnsafeMutablePointer<Int32>?) -> Int32 {
    guarded {
        guard let taken = taken, let recording = recording else { throw EngineError.value("null output pointer") }
        let (k, rec) = try Tracer.beginCond(selector: try tensor(selector), count: Int(nBranches))
        taken.pointee = Int32(k)
        recording.pointee = rec ? 1 : 0
    }
}

@_cdecl("te_trace_cond_next")
public func te_trace_cond_next() -> Int32 { guarded { try Tracer.nextBranch() } }

@_cdecl("te_trace_cond_end")
public func te_trace_cond_end(_ results: UnsafePointer<OpaquePointer?>?, _ nBranches: Int32, _ nResults: Int32,
                              _ outputs: UnsafeMutablePointer<OpaquePointer?>?, _ recorded: UnsafeMutablePointer<Int32>?) -> Int32 {
    guarded {
        guard let recorded = recorded else { throw EngineError.value("null output pointer") }
        recorded.pointee = 0
        guard nBranches >= 0, nResults >= 0, Int(nBranches) * Int(nResults) <= Int(Int32.max) else {
            throw EngineError.value("bad result counts")
        }
        let flat = try tensors(results, nBranches * nResults, "result")
        let m = Int(nResults)
        let perBranch = (0..<Int(nBranches)).map { Array(flat[($0 * m)..<($0 * m + m)]) }
        guard let outs = try Tracer.endCond(results: perBranch) else { return }
        try handOut(outs, outputs)
        recorded.pointee = 1
    }
}

@_cdecl("te_trace_while_begin")
public func te_trace_while_begin(_ initial: UnsafePointer<OpaquePointer?>?, _ n: Int32,
                                 _ params: UnsafeMutablePointer<OpaquePointer?>?, _ recording: UnsafeMutablePointer<Int32>?) -> Int32 {
    guarded {
        guard let recording = recording else { throw EngineError.value("null output pointer") }
        recording.pointee = 0
        guard let ps = try Tracer.beginWhile(initial: try tensors(initial, n, "initial value")) else { return }
        try handOut(ps, params)
        recording.pointee = 1
    }
}

@_cdecl("te_trace_while_body")
public func te_trace_while_body(_ pred: OpaquePointer?, _ holds: UnsafeMutablePointer<Int32>?) -> Int32 {
    guarded {
        guard let holds = holds else { throw EngineError.value("null output pointer") }
        holds.pointee = try Tracer.whileBody(pred: try tensor(pred)) ? 1 : 0
    }
}

@_cdecl("te_trace_while_end")
public func te_trace_while_end(_ results: UnsafePointer<OpaquePointer?>?, _ n: Int32, _ maxIterations: Int64,
                               _ outputs: UnsafeMutablePointer<OpaquePointer?>?, _ recorded: UnsafeMutablePointer<Int32>?) -> Int32 {
    guarded {
        guard let recorded = recorded else { throw EngineError.value("null output pointer") }
        recorded.pointee = 0
        let limit = maxIterations < 0 ? nil : Int(maxIterations)
        guard let outs = try Tracer.endWhile(results: try tensors(results, n, "result"), maxIterations: limit) else { return }
        try handOut(outs, outputs)
        recorded.pointee = 1
    }
}

@_cdecl("te_trace_block_abort")
public func te_trace_block_abort() -> Int32 { guarded { try Tracer.abortBlock() } }

@_cdecl("te_trace_unreplayable")
public func te_trace_unreplayable(_ reason: UnsafePointer<CChar>?) {
    Tracer.unreplayable(reason.map { String(cString: $0) } ?? "the caller marked it so")
}
