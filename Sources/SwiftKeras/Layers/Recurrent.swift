import Foundation
import TensorEngine

/// What LSTM, GRU and SimpleRNN share: the cell's three weights (kept under "cell/vars" as
/// Keras saves them), return_sequences / return_state / go_backwards.
public class RecurrentLayer: KerasLayer {
    public let kernel: Parameter, recurrentKernel: Parameter, bias: Parameter?
    public let units: Int
    let returnSequences: Bool, returnState: Bool, goBackwards: Bool

    /// `gates` blocks of `units` columns per weight; `biasShape` for a given units count.
    init(_ c: LayerConfig, gates: Int, biasShape: [Int]) throws {
        units = try c.int("units")
        returnSequences = try c.bool("return_sequences", false)
        returnState = try c.bool("return_state", false)
        goBackwards = try c.bool("go_backwards", false)
        if try c.bool("stateful", false) {
            throw EngineError.notImplemented("\(c.className) '\(c.name)': stateful recurrent layers are not in SwiftKeras yet")
        }
        let features = try c.inputDim()
        kernel = Parameter("kernel", try zeros([features, gates * units]))
        recurrentKernel = Parameter("recurrent_kernel", try zeros([units, gates * units]))
        bias = try c.bool("use_bias", true) ? Parameter("bias", try zeros(biasShape)) : nil
        try super.init(c)
    }

    public required init(_ c: LayerConfig) throws {
        throw EngineError.internal("RecurrentLayer is abstract")
    }

    override public var weights: [Parameter] { [kernel, recurrentKernel] + (bias.map { [$0] } ?? []) }
    override public var weightGroups: [(path: String, weights: [Parameter])] { [("vars", []), ("cell/vars", weights)] }

    func sequence(_ inputs: [Tensor], _ options: CallOptions) throws -> Tensor {
        try refuseDropoutInTraining(options, ["dropout", "recurrent_dropout"])
        guard inputs.count == 1 else {
            throw EngineError.notImplemented("\(className) '\(name)': initial states as inputs are not in SwiftKeras yet")
        }
        let x = inputs[0]
        guard x.rank == 3, x.shape[2] == kernel.value.shape[0] else {
            throw EngineError.value("\(className) '\(name)' expects (batch, time, \(kernel.value.shape[0])), got \(x.shape)")
        }
        return x
    }

    func initialState(_ x: Tensor) throws -> Tensor { try zeros([x.shape[0], units], dtype: x.dtype) }

    /// Keras's outputs: the sequence (in processing order) or the last output, then the states.
    func finish(_ outputs: Tensor, last: Tensor, states: [Tensor]) -> [Tensor] {
        [returnSequences ? outputs : last] + (returnState ? states : [])
    }

    static func requireActivations(_ c: LayerConfig) throws {
        let act = try c.string("activation", "tanh"), rec = try c.string("recurrent_activation", "sigmoid")
        guard act == "tanh" && rec == "sigmoid" else {
            throw EngineError.notImplemented("\(c.className) '\(c.name)': activation \(act)/\(rec) (SwiftKeras runs tanh/sigmoid)")
        }
    }
}

public final class LSTM: RecurrentLayer {
    public required init(_ c: LayerConfig) throws {
        try RecurrentLayer.requireActivations(c)
        let units = try c.int("units")
        try super.init(c, gates: 4, biasShape: [4 * units])
    }

    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        let x = try sequence(inputs, options)
        let h0 = try initialState(x)
        let r = try lstm(x, h0: h0, c0: h0, kernel: kernel.value, recurrentKernel: recurrentKernel.value,
                         bias: bias?.value, goBackwards: goBackwards)
        return finish(r.outputs, last: r.h, states: [r.h, r.c])
    }
}

public final class GRU: RecurrentLayer {
    public required init(_ c: LayerConfig) throws {
        try RecurrentLayer.requireActivations(c)
        guard try c.bool("reset_after", true) else {
            throw EngineError.notImplemented("GRU '\(c.name)': reset_after=False (SwiftKeras runs Keras 3's default reset_after=True)")
        }
        let units = try c.int("units")
        try super.init(c, gates: 3, biasShape: [2, 3 * units])
    }

    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        let x = try sequence(inputs, options)
        let r = try gru(x, h0: try initialState(x), kernel: kernel.value, recurrentKernel: recurrentKernel.value,
                        bias: bias?.value, goBackwards: goBackwards)
        return finish(r.outputs, last: r.h, states: [r.h])
    }
}

/// SimpleRNN: h_t = activation(x_t @ kernel + h_{t-1} @ recurrent_kernel + bias), step by step
/// on the engine's ops (the input projection is one matmul for the whole sequence).
public final class SimpleRNN: RecurrentLayer {
    let activation: Activation

    public required init(_ c: LayerConfig) throws {
        activation = try Activation(config: c.raw["activation"] ?? "tanh")
        let units = try c.int("units")
        try super.init(c, gates: 1, biasShape: [units])
    }

    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        let x = try sequence(inputs, options)
        let (b, steps, u) = (x.shape[0], x.shape[1], units)
        var projected = try matmul(x, kernel.value)
        if let bias { projected = try add(projected, bias.value) }
        var h = try initialState(x)
        var outputs: [Tensor] = []
        for i in 0..<steps {
            let t = goBackwards ? steps - 1 - i : i
            let xt = try reshape(try stridedSlice(projected, begin: [0, t, 0], end: [b, t + 1, u], strides: [1, 1, 1]), [b, u])
            h = try activation(try add(xt, try matmul(h, recurrentKernel.value)))
            outputs.append(h)
        }
        let seq = outputs.isEmpty ? try zeros([b, 0, u], dtype: x.dtype) : try stack(outputs, axis: 1)
        return finish(seq, last: h, states: [h])
    }
}

/// Bidirectional: a forward and a backward recurrent layer over the same sequence, merged.
public final class Bidirectional: KerasLayer {
    public let forward: RecurrentLayer, backward: RecurrentLayer
    let mergeMode: String?

    public required init(_ c: LayerConfig) throws {
        guard let inner = c.raw["layer"] as? [String: Any] else {
            throw EngineError.value("Bidirectional '\(c.name)' has no wrapped layer in its config")
        }
        func build(_ entry: [String: Any]) throws -> RecurrentLayer {
            var e = entry
            if e["build_config"] == nil, let shape = c.buildShapes.first {
                e["build_config"] = ["input_shape": shape.map { $0.map { $0 as Any } ?? NSNull() }]
            }
            guard let layer = try LayerRegistry.layer(from: e) as? RecurrentLayer else {
                throw EngineError.notImplemented("Bidirectional '\(c.name)' wraps a \(entry["class_name"] ?? "?"), not LSTM/GRU/SimpleRNN")
            }
            return layer
        }
        forward = try build(inner)
        if let back = c.raw["backward_layer"] as? [String: Any] {
            backward = try build(back)
        } else {
            var back = inner
            var cfg = inner["config"] as? [String: Any] ?? [:]
            cfg["go_backwards"] = !((cfg["go_backwards"] as? Bool) ?? false)
            cfg["name"] = "backward_" + ((cfg["name"] as? String) ?? "layer")
            back["config"] = cfg
            backward = try build(back)
        }
        mergeMode = c.raw["merge_mode"] as? String
        if forward.returnState {
            throw EngineError.notImplemented("Bidirectional '\(c.name)': return_state is not in SwiftKeras yet")
        }
        try super.init(c)
    }

    override public var weightGroups: [(path: String, weights: [Parameter])] {
        [("vars", [])] + forward.weightGroups.map { ("forward_layer/" + $0.path, $0.weights) }
            + backward.weightGroups.map { ("backward_layer/" + $0.path, $0.weights) }
    }

    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        let y = try forward.call(inputs, options)[0]
        var yr = try backward.call(inputs, options)[0]
        if backward.returnSequences {
            // Keras flips the backward layer's sequence back into input order before merging.
            let steps = yr.shape[1]
            yr = try take(yr, try Tensor((0..<steps).reversed().map { Int64($0) }), axis: 1)
        }
        switch mergeMode {
        case "concat": return [try concatenate([y, yr], axis: -1)]
        case "sum": return [try add(y, yr)]
        case "mul": return [try multiply(y, yr)]
        case "ave": return [try divide(try add(y, yr), try scalar(2, y.dtype))]
        case nil: return [y, yr]
        default: throw EngineError.value("Bidirectional '\(name)': unknown merge_mode '\(mergeMode ?? "")'")
        }
    }
}
