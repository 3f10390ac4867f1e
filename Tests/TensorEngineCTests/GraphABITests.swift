import XCTest
@testable import TensorEngineC
import TensorEngine
#if canImport(Glibc)
import Glibc
#endif

/// te_trace_* and te_graph_* exactly as a C caller (the Python extension) uses them: an MLP
/// step traced through te_op_call and the tape entry points, replayed, saved and loaded.
final class GraphABITests: XCTestCase {
    override func tearDown() {
        te_trace_abort()
        while te_tape_depth() > 0 { _ = te_tape_pop() }
    }

    private func make(_ values: [Float], _ shape: [Int64]) -> OpaquePointer? { makeFloatTensor(values, shape) }

    private func floats(_ h: OpaquePointer?) -> [Float] { floatValues(h) }

    /// Calls a one-output op with no attributes; the caller releases the result.
    private func call(_ name: String, _ inputs: OpaquePointer?...) throws -> OpaquePointer? {
        var id: Int32 = -1
        XCTAssertEqual(te_op_lookup(name, &id), 0)
        var out: OpaquePointer? = nil
        var n: Int32 = 0
        let st = inputs.withUnsafeBufferPointer { te_op_call(id, $0.baseAddress, Int32(inputs.count), nil, 0, &out, 1, &n) }
        guard st == 0 else { throw EngineError.value(String(cString: te_last_error())) }
        return out
    }

    private func values(_ n: Int, _ seed: Int) -> [Float] {
        (0..<n).map { Float(cos(Double($0 * 5 + seed * 11) * 0.41)) }
    }

    /// One SGD step of a 3-6-2 MLP (mean-squared error); returns new references
    /// [loss, w1, b1, w2, b2] and releases every intermediate, as the extension does.
    private func step(_ x: OpaquePointer?, _ y: OpaquePointer?, _ w: [OpaquePointer?], _ lr: OpaquePointer?) throws -> [OpaquePointer?] {
        XCTAssertEqual(te_tape_push(), 0)
        var temps: [OpaquePointer?] = []
        defer { temps.forEach(te_tensor_release) }
        func t(_ h: OpaquePointer?) -> OpaquePointer? { temps.append(h); return h }
        let h = t(try call("relu", t(try call("add", t(try call("matmul", x, w[0])), w[1]))))
        let p = t(try call("add", t(try call("matmul", h, w[2])), w[3]))
        let d = t(try call("subtract", p, y))
        let loss = try call("mean", t(try call("multiply", d, d)))
        var srcs = w
        var grads = [OpaquePointer?](repeating: nil, count: w.count)
        XCTAssertEqual(te_gradient(loss, nil, &srcs, Int32(w.count), &grads), 0, String(cString: te_last_error()))
        XCTAssertEqual(te_tape_pop(), 0)
        var out = [loss]
        for (wi, gi) in zip(w, grads) {
            _ = t(gi)
            let next = try call("stop_gradient", t(try call("subtract", wi, t(try call("multiply", gi, lr)))))
            XCTAssertEqual(te_set_requires_grad(next, 1), 0)
            out.append(next)
        }
        return out
    }

    private func initialWeights() -> [OpaquePointer?] {
        let w = [make(values(18, 1), [3, 6]), make(values(6, 2), [6]), make(values(12, 3), [6, 2]), make(values(2, 4), [2])]
        for h in w { XCTAssertEqual(te_set_requires_grad(h, 1), 0) }
        return w
    }

    private func batch(_ s: Int) -> (OpaquePointer?, OpaquePointer?) {
        (make(values(12, 50 + s), [4, 3]), make(values(8, 90 + s), [4, 2]))
    }

    private func run(_ g: OpaquePointer?, _ inputs: [OpaquePointer?], max: Int32 = 8) -> (Int32, [OpaquePointer?]) {
        var outs = [OpaquePointer?](repeating: nil, count: Int(max))
        var n: Int32 = -1
        let st = inputs.withUnsafeBufferPointer { te_graph_run(g, $0.baseAddress, Int32(inputs.count), &outs, max, &n) }
        return (st, Array(outs.prefix(Int(n))))
    }

    func testTracedStepsReplayAndSurviveAFile() throws {
        let steps = 5
        let lr = make([0.05], [])
        defer { te_tensor_release(lr) }
        // Eager.
        var eager = initialWeights()
        for s in 0..<steps {
            let (x, y) = batch(s)
            let out = try step(x, y, eager, lr)
            (eager + [out[0], x, y]).forEach(te_tensor_release)
            eager = Array(out[1...])
        }
        // Traced first step, then replays.
        let w0 = initialWeights()
        let (x0, y0) = batch(0)
        XCTAssertEqual(te_trace_begin(), 0)
        XCTAssertEqual(te_trace_active(), 1)
        XCTAssertEqual(te_trace_begin(), 1, "traces do not nest")
        for h in [x0, y0] + w0 { XCTAssertEqual(te_trace_input(h), 0) }
        let traced = try step(x0, y0, w0, lr)
        var graph: OpaquePointer? = nil
        XCTAssertEqual(traced.withUnsafeBufferPointer { te_trace_end($0.baseAddress, Int32(traced.count), &graph) }, 0,
                       String(cString: te_last_error()))
        XCTAssertEqual(te_trace_active(), 0)
        defer { te_graph_release(graph) }
        XCTAssertEqual(te_graph_num_inputs(graph), 6)
        XCTAssertEqual(te_graph_num_outputs(graph), 5)
        XCTAssertGreaterThan(te_graph_num_nodes(graph), 10)
        XCTAssertEqual(te_graph_num_inputs(nil), -1)
        // Each input's and output's spec, as traced.
        for (i, h) in ([x0, y0] + w0).enumerated() {
            var dtype: Int32 = -1, shape = [Int64](repeating: -1, count: 8), want = [Int64](repeating: -1, count: 8)
            let rank = te_graph_input_spec(graph, Int32(i), &dtype, &shape, 8)
            XCTAssertEqual(rank, te_tensor_shape(h, &want, 8))
            XCTAssertEqual(dtype, te_tensor_dtype(h))
            XCTAssertEqual(shape, want)
        }
        var dtype: Int32 = -1, dims = [Int64](repeating: -1, count: 2)
        XCTAssertEqual(te_graph_output_spec(graph, 1, &dtype, &dims, 1), te_tensor_ndim(traced[1]))
        XCTAssertEqual(dtype, te_tensor_dtype(traced[1]))
        XCTAssertEqual(dims[1], -1, "writes at most cap dims")
        XCTAssertEqual(te_graph_input_spec(graph, 6, nil, nil, 0), -1)
        XCTAssertEqual(te_graph_output_spec(graph, -1, nil, nil, 0), -1)
        XCTAssertEqual(te_graph_output_spec(nil, 0, nil, nil, 0), -1)
        ([x0, y0, traced[0]] + w0).forEach(te_tensor_release)

        // Through a file, with no trace state behind it.
        let path = "/tmp/graph-abi-\(getpid()).teg"
        defer { unlink(path) }
        XCTAssertEqual(te_graph_save(graph, path), 0, String(cString: te_last_error()))
        var loaded: OpaquePointer? = nil
        XCTAssertEqual(te_graph_load(path, &loaded), 0, String(cString: te_last_error()))
        defer { te_graph_release(loaded) }

        var a = Array(traced[1...]), b = a.map { te_tensor_retain($0) }
        for s in 1..<steps {
            let (x, y) = batch(s)
            let (st, out) = run(graph, [x, y] + a)
            XCTAssertEqual(st, 0, String(cString: te_last_error()))
            XCTAssertEqual(out.count, 5)
            let (st2, out2) = run(loaded, [x, y] + b)
            XCTAssertEqual(st2, 0, String(cString: te_last_error()))
            XCTAssertEqual(floats(out[0]), floats(out2[0]))
            (a + b + [x, y, out[0], out2[0]]).forEach(te_tensor_release)
            a = Array(out[1...])
            b = Array(out2[1...])
        }
        for (r, (l, e)) in zip(a, zip(b, eager)) {
            XCTAssertEqual(te_requires_grad(r), 1)
            for (u, (v, w)) in zip(floats(r), zip(floats(l), floats(e))) {
                XCTAssertEqual(u, w, accuracy: 1e-6)
                XCTAssertEqual(u, v)
            }
        }
        (a + b + eager).forEach(te_tensor_release)
    }

    func testErrorsHandNothingOut() throws {
        let x = make([1, 2, 3], [3])
        defer { te_tensor_release(x) }
        XCTAssertEqual(te_trace_begin(), 0)
        XCTAssertEqual(te_trace_input(x), 0)
        XCTAssertEqual(te_trace_input(x), 1)
        XCTAssertEqual(te_trace_input(nil), 1)
        let y = try call("negative", x)
        defer { te_tensor_release(y) }
        var graph: OpaquePointer? = nil
        var outs: [OpaquePointer?] = [y]
        XCTAssertEqual(te_trace_end(&outs, 1, nil), 1)
        XCTAssertEqual(te_trace_active(), 0, "a failed end still ends the trace")
        XCTAssertEqual(te_trace_end(&outs, 1, &graph), 1, "no trace is active")
        XCTAssertNil(graph)

        XCTAssertEqual(te_trace_begin(), 0)
        XCTAssertEqual(te_trace_input(x), 0)
        let z = try call("exp", x)
        defer { te_tensor_release(z) }
        outs = [z]
        XCTAssertEqual(te_trace_end(&outs, 1, &graph), 0)
        defer { te_graph_release(graph) }
        // Wrong input count or shape, or no room: an error and no outputs.
        let wrong = make([1, 2], [2])
        defer { te_tensor_release(wrong) }
        for (ins, room) in [([x, x], Int32(1)), ([wrong], 1), ([x], 0)] {
            var out: OpaquePointer? = nil
            var n: Int32 = 7
            let st = ins.withUnsafeBufferPointer { te_graph_run(graph, $0.baseAddress, Int32(ins.count), &out, room, &n) }
            XCTAssertEqual(st, 1)
            XCTAssertNil(out)
            XCTAssertEqual(n, 0)
        }
        let (st, ok) = run(graph, [x])
        XCTAssertEqual(st, 0)
        XCTAssertEqual(floats(ok[0]), floats(z))
        ok.forEach(te_tensor_release)
        XCTAssertEqual(run(nil, [x]).0, 1)

        // Files: missing, truncated, foreign.
        var loaded: OpaquePointer? = OpaquePointer(bitPattern: 1)
        XCTAssertEqual(te_graph_load("/nonexistent/g.teg", &loaded), 1)
        XCTAssertNil(loaded)
        XCTAssertEqual(te_graph_load(nil, &loaded), 1)
        XCTAssertEqual(te_graph_save(graph, "/nonexistent/g.teg"), 1)
        let path = "/tmp/graph-abi-bad-\(getpid()).teg"
        defer { unlink(path) }
        XCTAssertEqual(te_graph_save(graph, path), 0)
        let f = fopen(path, "r+b")
        fseek(f, 0, SEEK_END)
        let size = ftell(f)
        fclose(f)
        XCTAssertEqual(truncate(path, size - 3), 0)
        XCTAssertEqual(te_graph_load(path, &loaded), 1)
        XCTAssertTrue(String(cString: te_last_error()).contains("truncated"), String(cString: te_last_error()))
        XCTAssertNil(loaded)
        let g = fopen(path, "wb")
        fputs("not a graph", g)
        fclose(g)
        XCTAssertEqual(te_graph_load(path, &loaded), 1)
        XCTAssertNil(loaded)
    }

    /// A handle whose tensor the test watches through `alive` (nil once the last reference went).
    private func watched(_ values: [Float]) throws -> (OpaquePointer?, () -> Bool) {
        let t = try Tensor(values, shape: [values.count])
        weak var w = t
        return (OpaquePointer(Unmanaged.passRetained(t).toOpaque()), { w != nil })
    }

    func testDonatedInputsAreTakenOver() throws {
        let x = make(values(40, 7), [40])
        defer { te_tensor_release(x) }
        XCTAssertEqual(te_trace_begin(), 0)
        XCTAssertEqual(te_trace_input(x), 0)
        let z = try call("exp", x)
        defer { te_tensor_release(z) }
        var outs: [OpaquePointer?] = [z]
        var graph: OpaquePointer? = nil
        XCTAssertEqual(te_trace_end(&outs, 1, &graph), 0)
        defer { te_graph_release(graph) }
        func runDonating(_ g: OpaquePointer?, _ ins: [OpaquePointer?], _ donate: [UInt8]?, n: Int32? = nil,
                         room: Int32 = 1) -> (Int32, OpaquePointer?) {
            var out: OpaquePointer? = nil
            var count: Int32 = 7
            let st = ins.withUnsafeBufferPointer { i in
                if let d = donate {
                    return d.withUnsafeBufferPointer { te_graph_run_donating(g, i.baseAddress, n ?? Int32(ins.count), $0.baseAddress, &out, room, &count) }
                }
                return te_graph_run_donating(g, i.baseAddress, n ?? Int32(ins.count), nil, &out, room, &count)
            }
            XCTAssertEqual(count, st == 0 ? 1 : 0)
            return (st, out)
        }

        // Donated and otherwise unreferenced: exp writes over it, and the engine releases it.
        let (d, alive) = try watched(values(40, 7))
        let data = te_tensor_data(d)
        let (st, y) = runDonating(graph, [d], [1])
        XCTAssertEqual(st, 0, String(cString: te_last_error()))
        XCTAssertEqual(te_tensor_data(y), data, "the output took the donated buffer")
        XCTAssertEqual(floats(y), floats(z))
        XCTAssertFalse(alive(), "the engine released the donated reference")
        te_tensor_release(y)

        // Donated but also held by a second reference: only read.
        let shared = make(values(40, 7), [40])
        defer { te_tensor_release(shared) }
        _ = te_tensor_retain(shared)  // the reference the call takes over
        let (st2, y2) = runDonating(graph, [shared], [1])
        XCTAssertEqual(st2, 0)
        XCTAssertNotEqual(te_tensor_data(y2), te_tensor_data(shared))
        XCTAssertEqual(floats(shared), values(40, 7))
        te_tensor_release(y2)

        // Not flagged (or no flags at all): as te_graph_run.
        for flags in [[UInt8(0)], nil] {
            let (st3, y3) = runDonating(graph, [x], flags)
            XCTAssertEqual(st3, 0)
            XCTAssertEqual(floats(x), values(40, 7))
            te_tensor_release(y3)
        }

        // Errors hand nothing out, and a flagged handle is the engine's whatever the status.
        let wrong = make([1, 2], [2])
        defer { te_tensor_release(wrong) }
        for (g, extra, room) in [(nil, false, Int32(1)), (graph, true, 1), (graph, false, 0)] {
            let (h, alive) = try watched(values(40, 7))
            let (st, out) = runDonating(g, extra ? [h, wrong] : [h], extra ? [1, 0] : [1], room: room)
            XCTAssertEqual(st, 1)
            XCTAssertNil(out)
            XCTAssertFalse(alive(), "released on failure")
        }
        let (w, wrongAlive) = try watched([1, 2])
        XCTAssertEqual(runDonating(graph, [w], [1]).0, 1, "wrong shape")
        XCTAssertFalse(wrongAlive())
        XCTAssertEqual(runDonating(graph, [nil], [1]).0, 1, "a null handle")
        XCTAssertEqual(runDonating(graph, [x], [1], n: -1).0, 1, "a negative count takes nothing")
        XCTAssertEqual(floats(x), values(40, 7))
        var none: OpaquePointer? = nil
        var n: Int32 = 0
        XCTAssertEqual(te_graph_run_donating(graph, nil, 1, nil, &none, 1, &n), 1, "no input array")
    }

    func testUnreplayableTraceIsNotImplemented() throws {
        let x = make([1, 2], [2])
        defer { te_tensor_release(x) }
        XCTAssertEqual(te_tape_push(), 0)
        XCTAssertEqual(te_trace_begin(), 0)
        XCTAssertEqual(te_tape_pop(), 0)
        var graph: OpaquePointer? = nil
        XCTAssertEqual(te_trace_end(nil, 0, &graph), 4)
        XCTAssertTrue(String(cString: te_last_error()).contains("before the trace"))
        XCTAssertNil(graph)
    }

    func testGraphDescribesItselfAsJSONAndHandsOutConstants() throws {
        let x = make([1, -2, 3], [1, 3]), w = make(values(6, 1), [3, 2])
        defer { [x, w].forEach(te_tensor_release) }
        XCTAssertEqual(te_trace_begin(), 0)
        XCTAssertEqual(te_trace_input(x), 0)
        let y = try call("relu", x)
        let z = try call("matmul", y, w)
        defer { [y, z].forEach(te_tensor_release) }
        var graph: OpaquePointer? = nil
        var outs = [z]
        XCTAssertEqual(te_trace_end(&outs, 1, &graph), 0, String(cString: te_last_error()))
        defer { te_graph_release(graph) }

        var len = 0
        XCTAssertEqual(te_graph_json(graph, nil, 0, &len), 0)
        var buf = [CChar](repeating: 1, count: len)
        XCTAssertEqual(te_graph_json(graph, &buf, len, &len), 1, "no room for the NUL")
        XCTAssertEqual(buf[0], 1, "nothing written on failure")
        buf = [CChar](repeating: 1, count: len + 1)
        XCTAssertEqual(te_graph_json(graph, &buf, len + 1, &len), 0)
        XCTAssertEqual(buf[len], 0)
        let text = String(cString: buf)
        XCTAssertEqual(text.utf8.count, len)
        XCTAssertTrue(text.hasPrefix("{\"version\":1,\"value_count\":4,\"inputs\":[{\"value\":0,\"dtype\":\"float32\",\"shape\":[1,3]"), text)
        XCTAssertTrue(text.contains("\"constants\":[{\"value\":1,\"dtype\":\"float32\",\"shape\":[3,2]}]"), text)
        XCTAssertTrue(text.contains("{\"kind\":\"op\",\"op\":\"relu\",\"attrs\":{},\"inputs\":[0],\"outputs\":[2]}"), text)
        XCTAssertTrue(text.contains("\"op\":\"matmul\",\"attrs\":{},\"inputs\":[2,1],\"outputs\":[3]"), text)

        XCTAssertEqual(te_graph_num_constants(graph), 1)
        var c: OpaquePointer? = nil
        XCTAssertEqual(te_graph_constant(graph, 0, &c), 0)
        XCTAssertEqual(floats(c), values(6, 1))
        te_tensor_release(c)
        XCTAssertEqual(te_graph_constant(graph, 1, &c), 3)
        XCTAssertNil(c)
        XCTAssertEqual(te_graph_json(nil, nil, 0, &len), 1)
    }

    /// A cond on the sign of sum(x) (exp(x) or -x), then a loop doubling the result until its
    /// sum reaches 100, traced through te_trace_cond_* and te_trace_while_* and replayed.
    func testControlFlowThroughTheCABI() throws {
        let x = make([1, -2, 3], [3]), zero = make([0], []), hundred = make([100], []), two = make([2], [])
        var temps: [OpaquePointer?] = [x, zero, hundred, two]
        defer { temps.forEach(te_tensor_release) }
        func t(_ h: OpaquePointer?) -> OpaquePointer? { temps.append(h); return h }
        XCTAssertEqual(te_trace_begin(), 0)
        XCTAssertEqual(te_trace_input(x), 0)
        let p = t(try call("greater", t(try call("sum", x)), zero))
        var taken: Int32 = -1, recording: Int32 = -1
        XCTAssertEqual(te_trace_cond_begin(p, 2, &taken, &recording), 0, String(cString: te_last_error()))
        XCTAssertEqual([taken, recording], [1, 1])
        let a = t(try call("negative", x))
        XCTAssertEqual(te_trace_cond_next(), 0)
        let b = t(try call("exp", x))
        var results = [a, b], outs: [OpaquePointer?] = [nil], recorded: Int32 = -1
        XCTAssertEqual(te_trace_cond_end(&results, 2, 1, &outs, &recorded), 0, String(cString: te_last_error()))
        XCTAssertEqual(recorded, 1)
        var initial = [t(outs[0])], params: [OpaquePointer?] = [nil]
        XCTAssertEqual(te_trace_while_begin(&initial, 1, &params, &recording), 0)
        _ = t(params[0])
        var holds: Int32 = -1
        XCTAssertEqual(te_trace_while_body(t(try call("less", t(try call("sum", params[0])), hundred)), &holds), 0)
        XCTAssertEqual(holds, 1)
        var next = [t(try call("multiply", params[0], two))], final: [OpaquePointer?] = [nil]
        XCTAssertEqual(te_trace_while_end(&next, 1, -1, &final, &recorded), 0, String(cString: te_last_error()))
        XCTAssertEqual(recorded, 1)
        _ = t(final[0])
        func expected(_ v: [Float]) -> [Float] {
            var y = v.reduce(0, +) > 0 ? v.map { Float(Foundation.exp(Double($0))) } : v.map { -$0 }
            while y.reduce(0, +) < 100 { y = y.map { $0 * 2 } }
            return y
        }
        var graph: OpaquePointer? = nil
        XCTAssertEqual(te_trace_end(&final, 1, &graph), 0, String(cString: te_last_error()))
        defer { te_graph_release(graph) }
        // Read after the trace (a read during it is a host read).
        XCTAssertEqual(floats(final[0]), expected([1, -2, 3]), "the traced call ran the loop to its end")
        for v: [Float] in [[-1, -1, -1], [0.5, 0.25, 2], [1, -2, 3]] {
            let input = t(make(v, [3]))
            let (st, out) = run(graph, [input])
            XCTAssertEqual(st, 0)
            guard out.count == 1 else { return XCTFail("no output") }
            out.forEach { _ = t($0) }
            let got = floats(out[0]), want = expected(v)
            for (g, w) in zip(got, want) { XCTAssertEqual(g, w, accuracy: 1e-4 * abs(w)) }
        }
        // Misuse is an error, never a crash.
        XCTAssertNotEqual(te_trace_cond_next(), 0, "no cond is open")
        XCTAssertNotEqual(te_trace_block_abort(), 0)
        XCTAssertNotEqual(te_trace_cond_begin(p, 2, nil, nil), 0)
    }
}
