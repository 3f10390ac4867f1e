import Foundation
import TensorEngine

/// What LSTM, GRU and SimpleRNN share: the cell's three weights (kept under "cell/vars" as
/// Keras saves them), return_sequences / return_state / go_backwards, and Keras's RNN dropout:
/// in training, one mask per sequence on the inputs (`dropout`) and one on the previous state
/// (`recurrent_dropout`), drawn once per call and reused at every timestep.
public class RecurrentLayer: KerasLayer {
    public let kernel: Parameter, recurrentKernel: Parameter, bias: Parameter?
    public let units: Int
    let returnSequences: Bool, returnState: Bool, goBackwards: Bool
    let dropout: Double, recurrentDropout: Double
    private lazy var seeds = CallSeeds(config: config, name: name)

    /// `gates` blocks of `units` columns per weight; `biasShape` for a given units count.
    init(_ c: LayerConfig, gates: Int, biasShape: [Int]) throws {
        units = try c.int("units")
        returnSequences = try c.bool("return_sequences", false)
        returnState = try c.bool("return_state", false)
        goBackwards = try c.bool("go_backwards", false)
        // Keras clips the rates to [0, 1]; a rate of 1 it treats as no dropout (0 < rate < 1).
        dropout = min(1, max(0, try c.double("dropout", 0)))
        recurrentDropout = min(1, max(0, try c.double("recurrent_dropout", 0)))
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

    func sequence(_ inputs: [Tensor]) throws -> Tensor {
        guard inputs.count == 1 else {
            throw EngineError.notImplemented("\(className) '\(name)': initial states as inputs are not in SwiftKeras yet")
        }
        let x = inputs[0]
        guard x.rank == 3, x.shape[2] == kernel.value.shape[0] else {
            throw EngineError.value("\(className) '\(name)' expects (batch, time, \(kernel.value.shape[0])), got \(x.shape)")
        }
        return x
    }

    func initialState(_ x: Tensor) throws -> Tensor { try Ops.full([x.shape[0], units], 0, x.dtype) }

    /// This call's dropout masks: `count` (B, F) masks on the inputs and `count` (B, U) masks on
    /// the state, each list empty where its rate is 0 or not in training. Keras draws one mask
    /// shared by every gate, or one per gate where the cell runs gate by gate (its
    /// implementation 1, forced by recurrent_dropout); all come from one draw here, sliced.
    func dropoutMasks(_ x: Tensor, training: Bool, count: Int) throws -> (input: [Tensor], state: [Tensor]) {
        let useInput = training && dropout > 0 && dropout < 1
        let useState = training && recurrentDropout > 0 && recurrentDropout < 1
        guard useInput || useState else { return ([], []) }
        let (b, f, u) = (x.shape[0], x.shape[2], units)
        let nIn = useInput ? count * f : 0, nState = useState ? count * u : 0
        let draws = try Ops.randomUniform(0, 1, shape: [b, nIn + nState], dtype: x.dtype, seed: try seeds.next())
        func masks(_ at: Int, _ width: Int, _ rate: Double) throws -> [Tensor] {
            try (0..<count).map { k in try Ops.keepMask(try Ops.slice(draws, axis: 1, at + k * width, at + (k + 1) * width), rate: rate) }
        }
        return (useInput ? try masks(0, f, dropout) : [], useState ? try masks(nIn, u, recurrentDropout) : [])
    }

    /// x with a (B, F) mask applied at every timestep.
    func masked(_ x: Tensor, _ mask: Tensor?) throws -> Tensor {
        guard let m = mask else { return x }
        return try Ops.multiply(x, try Ops.expandDims(m, axis: 1))
    }

    /// Time step `t` of a (B, T, C) tensor, as (B, C).
    func timeStep(_ x: Tensor, _ t: Int) throws -> Tensor {
        try Ops.reshape(try Ops.slice(x, axis: 1, t, t + 1), [x.shape[0], x.shape[2]])
    }

    /// Columns [k U, (k + 1) U) of a weight or bias (gate k's block).
    func gateBlock(_ w: Tensor, _ k: Int) throws -> Tensor { try Ops.slice(w, axis: w.rank - 1, k * units, (k + 1) * units) }

    /// Runs `step` over the timesteps in processing order; the stacked outputs and the last.
    func unrolled(_ x: Tensor, _ step: (Int) throws -> Tensor) throws -> (outputs: Tensor, last: Tensor) {
        let steps = x.shape[1]
        guard steps > 0 else { throw EngineError.value("\(className) '\(name)': a sequence of length 0") }
        var outs: [Tensor] = []
        for i in 0..<steps { outs.append(try step(goBackwards ? steps - 1 - i : i)) }
        return (try Ops.stack(outs, axis: 1), outs[steps - 1])
    }

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
        let x = try sequence(inputs)
        let h0 = try initialState(x)
        // recurrent_dropout needs the state masked inside the loop: Keras then runs the cell
        // gate by gate (its implementation 1) instead of the fused kernel, and so does this.
        let gateByGate = options.training && recurrentDropout > 0 && recurrentDropout < 1
        let (inMasks, stateMasks) = try dropoutMasks(x, training: options.training, count: gateByGate ? 4 : 1)
        guard gateByGate else {
            let r = try Ops.lstm(try masked(x, inMasks.first), h0: h0, c0: h0, kernel: kernel.value,
                                 recurrentKernel: recurrentKernel.value, bias: bias?.value, goBackwards: goBackwards)
            return finish(r.outputs, last: r.h, states: [r.h, r.c])
        }
        // Gates i, f, c, o: each its own input projection (over the whole sequence) and recurrent block.
        let projections = try (0..<4).map { k -> Tensor in
            let b = try bias.map { try gateBlock($0.value, k) }
            return try Ops.matmul(try masked(x, inMasks.isEmpty ? nil : inMasks[k]), try gateBlock(kernel.value, k), bias: b,
                                  activation: .none)
        }
        let recurrent = try (0..<4).map { try gateBlock(recurrentKernel.value, $0) }
        var (h, c) = (h0, h0)
        let run = try unrolled(x) { t in
            let z = try (0..<4).map { k in
                let hk = stateMasks.isEmpty ? h : try Ops.multiply(h, stateMasks[k])
                return try Ops.add(try timeStep(projections[k], t), try Ops.matmul(hk, recurrent[k], bias: nil, activation: .none))
            }
            let (i, f, o) = (try Ops.sigmoid(z[0]), try Ops.sigmoid(z[1]), try Ops.sigmoid(z[3]))
            c = try Ops.add(try Ops.multiply(f, c), try Ops.multiply(i, try Ops.tanh(z[2])))
            h = try Ops.multiply(o, try Ops.tanh(c))
            return h
        }
        return finish(run.outputs, last: run.last, states: [h, c])
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
        let x = try sequence(inputs)
        let h0 = try initialState(x)
        let gateByGate = options.training && recurrentDropout > 0 && recurrentDropout < 1
        let (inMasks, stateMasks) = try dropoutMasks(x, training: options.training, count: gateByGate ? 3 : 1)
        guard gateByGate else {
            let r = try Ops.gru(try masked(x, inMasks.first), h0: h0, kernel: kernel.value, recurrentKernel: recurrentKernel.value,
                                bias: bias?.value, goBackwards: goBackwards)
            return finish(r.outputs, last: r.h, states: [r.h])
        }
        // Keras's GRU cell, implementation 1 with reset_after: gates z, r, h; the bias's rows
        // are the input and the recurrent biases.
        let (inputBias, recurrentBias) = try bias.map { b -> (Tensor?, Tensor?) in
            (try Ops.reshape(try Ops.slice(b.value, axis: 0, 0, 1), [3 * units]),
             try Ops.reshape(try Ops.slice(b.value, axis: 0, 1, 2), [3 * units]))
        } ?? (nil, nil)
        let projections = try (0..<3).map { k -> Tensor in
            try Ops.matmul(try masked(x, inMasks.isEmpty ? nil : inMasks[k]), try gateBlock(kernel.value, k),
                           bias: try inputBias.map { try gateBlock($0, k) }, activation: .none)
        }
        let recurrent = try (0..<3).map { try gateBlock(recurrentKernel.value, $0) }
        let recBias = try (0..<3).map { k in try recurrentBias.map { try gateBlock($0, k) } }
        var h = h0
        let run = try unrolled(x) { t in
            let inner = try (0..<3).map { k in
                try Ops.matmul(try Ops.multiply(h, stateMasks[k]), recurrent[k], bias: recBias[k], activation: .none)
            }
            let z = try Ops.sigmoid(try Ops.add(try timeStep(projections[0], t), inner[0]))
            let r = try Ops.sigmoid(try Ops.add(try timeStep(projections[1], t), inner[1]))
            let hh = try Ops.tanh(try Ops.add(try timeStep(projections[2], t), try Ops.multiply(r, inner[2])))
            // h = z h + (1 - z) hh
            h = try Ops.add(try Ops.multiply(z, h), try Ops.multiply(try Ops.subtract(try Ops.scalar(1, z.dtype), z), hh))
            return h
        }
        return finish(run.outputs, last: run.last, states: [h])
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
        let x = try sequence(inputs)
        let (inMasks, stateMasks) = try dropoutMasks(x, training: options.training, count: 1)
        let projected = try Ops.matmul(try masked(x, inMasks.first), kernel.value, bias: bias?.value, activation: .none)
        var h = try initialState(x)
        let run = try unrolled(x) { t in
            let prev = try stateMasks.first.map { try Ops.multiply(h, $0) } ?? h
            h = try activation(try Ops.add(try timeStep(projected, t), try Ops.matmul(prev, recurrentKernel.value, bias: nil, activation: .none)))
            return h
        }
        return finish(run.outputs, last: run.last, states: [h])
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
            yr = try Ops.reversed(yr, axis: 1)
        }
        switch mergeMode {
        case "concat": return [try Ops.concatenate([y, yr], axis: -1)]
        case "sum": return [try Ops.add(y, yr)]
        case "mul": return [try Ops.multiply(y, yr)]
        case "ave": return [try Ops.divide(try Ops.add(y, yr), try Ops.scalar(2, y.dtype))]
        case nil: return [y, yr]
        default: throw EngineError.value("Bidirectional '\(name)': unknown merge_mode '\(mergeMode ?? "")'")
        }
    }
}
