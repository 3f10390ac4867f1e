// A program described as JSON, for tools that translate it (the ONNX exporter in
// python/keras_swift/src/export.py): inputs, outputs and constants with their specs, and
// every node in order with its op name, typed attributes and value ids. Constants' bytes
// are not in the text; the C ABI hands each one out as a tensor (te_graph_constant).
// Written by hand: the engine does not use Foundation.

extension Program {
    /// The program as one JSON object (docs/graph-format.md, "Describing a program").
    public func describedAsJSON() -> String {
        var s = "{\"version\":1,\"value_count\":\(valueCount),\"inputs\":["
        for (i, input) in inputs.enumerated() {
            if i > 0 { s += "," }
            s += "{\"value\":\(input.value),\(jsonSpec(input.spec)),\"requires_grad\":\(input.requiresGrad)}"
        }
        s += "],\"outputs\":["
        for (i, output) in outputs.enumerated() {
            if i > 0 { s += "," }
            s += "{\"value\":\(output.value),\(jsonSpec(output.spec))}"
        }
        s += "],\"constants\":["
        for (i, c) in constants.enumerated() {
            if i > 0 { s += "," }
            s += "{\"value\":\(c.value),\(jsonSpec(TensorSpec(of: c.tensor)))}"
        }
        s += "],\"nodes\":" + jsonNodes(nodes)
        return s + "}"
    }
}

private func jsonNodes(_ nodes: [GraphNode]) -> String {
    var s = "["
    for (i, node) in nodes.enumerated() {
        if i > 0 { s += "," }
        switch node {
        case .op(_, let name, let attrs, let ins, let outs):
            s += "{\"kind\":\"op\",\"op\":\(jsonString(name)),\"attrs\":{"
            // Sorted, as in the file format: the same program gives the same text.
            for (j, (k, v)) in attrs.values.sorted(by: { $0.key < $1.key }).enumerated() {
                if j > 0 { s += "," }
                s += "\(jsonString(k)):\(jsonAttr(v))"
            }
            s += "},\"inputs\":\(jsonInts(ins)),\"outputs\":\(jsonInts(outs))}"
        case .tapePush:
            s += "{\"kind\":\"tape_push\"}"
        case .tapePop:
            s += "{\"kind\":\"tape_pop\"}"
        case .setRequiresGrad(let v, let flag):
            s += "{\"kind\":\"set_requires_grad\",\"value\":\(v),\"flag\":\(flag)}"
        case .gradient(let target, let seed, let sources, let createGraph, let outs):
            s += "{\"kind\":\"gradient\",\"target\":\(target),\"seed\":\(seed.map { String($0) } ?? "null")"
            s += ",\"sources\":\(jsonInts(sources)),\"create_graph\":\(createGraph),\"outputs\":\(jsonOptionalInts(outs))}"
        case .vjp(let step):
            s += "{\"kind\":\"vjp\",\"op\":\(step.op),\"tape_nodes\":\(step.tapeNodes)"
            s += ",\"output_nodes\":\(jsonOptionalInts(step.outputNodes)),\"seeds\":\(jsonOptionalInts(step.seeds))"
            s += ",\"targets\":\(jsonInts(step.targets)),\"outputs\":\(jsonInts(step.outputs)),\"releases\":\(step.releases)}"
        case .cond(let selector, let branches, let outs):
            s += "{\"kind\":\"cond\",\"selector\":\(selector),\"branches\":["
            s += branches.map(jsonBlock).joined(separator: ",") + "],\"outputs\":\(jsonInts(outs))}"
        case .whileLoop(let initial, let params, let condition, let body, let outs, let maxIterations):
            s += "{\"kind\":\"while\",\"initial\":\(jsonInts(initial)),\"parameters\":\(jsonInts(params))"
            s += ",\"condition\":\(jsonBlock(condition)),\"body\":\(jsonBlock(body)),\"outputs\":\(jsonInts(outs))"
            s += ",\"max_iterations\":\(maxIterations.map { String($0) } ?? "null")}"
        }
    }
    return s + "]"
}

private func jsonBlock(_ b: GraphBlock) -> String {
    "{\"nodes\":\(jsonNodes(b.nodes)),\"results\":\(jsonInts(b.results))}"
}

private func jsonSpec(_ spec: TensorSpec) -> String {
    "\"dtype\":\"\(spec.dtype.name)\",\"shape\":\(jsonInts(spec.shape))"
}

private func jsonInts(_ v: [Int]) -> String {
    "[" + v.map { String($0) }.joined(separator: ",") + "]"
}

private func jsonOptionalInts(_ v: [Int?]) -> String {
    "[" + v.map { $0.map { String($0) } ?? "null" }.joined(separator: ",") + "]"
}

/// `{"type": ..., "value": ...}`, the type named as in the op schema.
private func jsonAttr(_ v: AttrValue) -> String {
    switch v {
    case .int(let i): return "{\"type\":\"int\",\"value\":\(i)}"
    case .float(let d): return "{\"type\":\"float\",\"value\":\(jsonDouble(d))}"
    case .bool(let b): return "{\"type\":\"bool\",\"value\":\(b)}"
    case .string(let str): return "{\"type\":\"string\",\"value\":\(jsonString(str))}"
    case .ints(let a): return "{\"type\":\"ints\",\"value\":\(jsonInts(a))}"
    case .floats(let a): return "{\"type\":\"floats\",\"value\":[\(a.map(jsonDouble).joined(separator: ","))]}"
    }
}
