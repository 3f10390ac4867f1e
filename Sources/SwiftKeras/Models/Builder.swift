import Foundation
import TensorEngine

/// A layer to build: its Keras class name and config, as config.json writes them. Any class
/// SwiftKeras rebuilds works (`LayerSpec("Conv1D", ["filters": 8, "kernel_size": 3])`); the
/// static functions cover the common ones with Keras's argument names and defaults. Keras
/// fills the entries a spec leaves out with its defaults when it loads the saved file.
public struct LayerSpec {
    public let className: String
    public var config: [String: Any]

    public init(_ className: String, _ config: [String: Any] = [:]) {
        self.className = className
        self.config = config
    }

    private static func make(_ cls: String, _ name: String?, _ config: [String: Any]) -> LayerSpec {
        var c = config
        if let name { c["name"] = name }
        return LayerSpec(cls, c)
    }

    public static func dense(_ units: Int, activation: String = "linear", useBias: Bool = true, name: String? = nil) -> LayerSpec {
        make("Dense", name, ["units": units, "activation": activation, "use_bias": useBias])
    }

    public static func conv2D(_ filters: Int, kernelSize: [Int], strides: [Int] = [1, 1], padding: String = "valid",
                              activation: String = "linear", useBias: Bool = true, name: String? = nil) -> LayerSpec {
        make("Conv2D", name, ["filters": filters, "kernel_size": kernelSize, "strides": strides, "padding": padding,
                              "activation": activation, "use_bias": useBias])
    }

    public static func conv1D(_ filters: Int, kernelSize: Int, strides: Int = 1, padding: String = "valid",
                              activation: String = "linear", name: String? = nil) -> LayerSpec {
        make("Conv1D", name, ["filters": filters, "kernel_size": [kernelSize], "strides": [strides], "padding": padding,
                              "activation": activation])
    }

    public static func maxPooling2D(poolSize: [Int] = [2, 2], strides: [Int]? = nil, padding: String = "valid", name: String? = nil) -> LayerSpec {
        make("MaxPooling2D", name, ["pool_size": poolSize, "strides": strides ?? poolSize, "padding": padding])
    }

    public static func averagePooling2D(poolSize: [Int] = [2, 2], strides: [Int]? = nil, padding: String = "valid", name: String? = nil) -> LayerSpec {
        make("AveragePooling2D", name, ["pool_size": poolSize, "strides": strides ?? poolSize, "padding": padding])
    }

    public static func globalAveragePooling2D(name: String? = nil) -> LayerSpec { make("GlobalAveragePooling2D", name, [:]) }

    public static func batchNormalization(axis: Int = -1, momentum: Double = 0.99, epsilon: Double = 1e-3, name: String? = nil) -> LayerSpec {
        make("BatchNormalization", name, ["axis": axis, "momentum": momentum, "epsilon": epsilon])
    }

    public static func layerNormalization(epsilon: Double = 1e-3, name: String? = nil) -> LayerSpec {
        make("LayerNormalization", name, ["axis": [-1], "epsilon": epsilon])
    }

    public static func dropout(_ rate: Double, seed: Int? = nil, name: String? = nil) -> LayerSpec {
        make("Dropout", name, ["rate": rate] .merging(seed.map { ["seed": $0] } ?? [:]) { a, _ in a })
    }

    public static func flatten(name: String? = nil) -> LayerSpec { make("Flatten", name, [:]) }

    public static func reshape(_ targetShape: [Int], name: String? = nil) -> LayerSpec {
        make("Reshape", name, ["target_shape": targetShape])
    }

    public static func activation(_ activation: String, name: String? = nil) -> LayerSpec {
        make("Activation", name, ["activation": activation])
    }

    public static func embedding(inputDim: Int, outputDim: Int, name: String? = nil) -> LayerSpec {
        make("Embedding", name, ["input_dim": inputDim, "output_dim": outputDim])
    }

    public static func lstm(_ units: Int, returnSequences: Bool = false, goBackwards: Bool = false, name: String? = nil) -> LayerSpec {
        make("LSTM", name, ["units": units, "return_sequences": returnSequences, "go_backwards": goBackwards])
    }

    public static func gru(_ units: Int, returnSequences: Bool = false, goBackwards: Bool = false, name: String? = nil) -> LayerSpec {
        make("GRU", name, ["units": units, "return_sequences": returnSequences, "go_backwards": goBackwards, "reset_after": true])
    }

    public static func simpleRNN(_ units: Int, activation: String = "tanh", returnSequences: Bool = false, name: String? = nil) -> LayerSpec {
        make("SimpleRNN", name, ["units": units, "activation": activation, "return_sequences": returnSequences])
    }

    /// A recurrent layer run both ways over the sequence, merged ("concat", "sum", "mul", "ave").
    public static func bidirectional(_ layer: LayerSpec, mergeMode: String = "concat", name: String? = nil) -> LayerSpec {
        var inner = layer.config
        if inner["name"] == nil { inner["name"] = snakeCase(layer.className) }
        return make("Bidirectional", name, ["merge_mode": mergeMode, "layer": [
            "module": "keras.layers", "class_name": layer.className, "config": inner, "registered_name": NSNull(),
        ] as [String: Any]])
    }
}

/// Builds Keras config entries for layer specs, inferring each layer's build shape by
/// running it on a one-sample zero batch.
struct ConfigBuilder {
    private var used: Set<String> = []

    /// The layer's unique name: its spec's, or the snake_case class name numbered as Keras numbers them.
    mutating func uniqueName(_ spec: LayerSpec) -> String {
        let base = spec.config["name"] as? String ?? snakeCase(spec.className)
        var name = base, n = 0
        while used.contains(name) {
            n += 1
            name = "\(base)_\(n)"
        }
        used.insert(name)
        return name
    }

    static func shapeJSON(_ shape: [Int]) -> [Any] { [NSNull()] + shape.dropFirst().map { $0 as Any } }

    /// The config entry for `spec` called on `inputs` (one-sample batches), and its outputs.
    mutating func entry(_ spec: LayerSpec, inputs: [Tensor], extra: [String: Any] = [:]) throws -> ([String: Any], [Tensor]) {
        var config = spec.config
        config["name"] = uniqueName(spec)
        config["trainable"] = config["trainable"] ?? true
        config["dtype"] = config["dtype"] ?? "float32"
        let shapes = inputs.map { ConfigBuilder.shapeJSON($0.shape) }
        var entry: [String: Any] = ["module": "keras.layers", "class_name": spec.className, "config": config,
                                    "registered_name": NSNull(),
                                    "build_config": ["input_shape": shapes.count == 1 ? shapes[0] : shapes as Any]]
        for (k, v) in extra { entry[k] = v }
        let layer = try LayerRegistry.layer(from: entry)
        let outputs = try Tape.paused { try layer.call(inputs, CallOptions()) }
        return (entry, outputs)
    }
}

extension Model {
    /// A new Sequential model of `layers` on inputs of `inputShape` (batch dimension left
    /// out), with fresh weights from Keras's initializers seeded by `seed`.
    ///
    ///     let model = try Model(inputShape: [8, 8, 1], layers: [
    ///         .conv2D(16, kernelSize: [3, 3], activation: "relu"), .batchNormalization(),
    ///         .maxPooling2D(), .flatten(), .dense(10, activation: "softmax")])
    public convenience init(inputShape: [Int], inputDType: DType = .float32, layers specs: [LayerSpec],
                            name: String = "sequential", seed: Int = 0) throws {
        var builder = ConfigBuilder()
        let inputName = builder.uniqueName(LayerSpec("InputLayer", ["name": "input_layer"]))
        var entries: [[String: Any]] = [[
            "module": "keras.layers", "class_name": "InputLayer", "registered_name": NSNull(),
            "config": ["name": inputName, "batch_shape": [NSNull()] + inputShape.map { $0 as Any },
                       "dtype": inputDType.name, "sparse": false, "ragged": false],
        ]]
        var x = try zeros([1] + inputShape, dtype: inputDType)
        for spec in specs {
            let (entry, outs) = try builder.entry(spec, inputs: [x])
            guard outs.count == 1 else {
                throw EngineError.value("\(spec.className) in a Sequential model must have one output, it has \(outs.count)")
            }
            entries.append(entry)
            x = outs[0]
        }
        try self.init(config: ["module": "keras", "class_name": "Sequential", "registered_name": NSNull(),
                               "config": ["name": name, "trainable": true, "layers": entries],
                               "build_config": ["input_shape": [NSNull()] + inputShape.map { $0 as Any }]])
        try initializeWeights(seed: seed)
    }
}

/// A symbolic tensor of a functional model under construction: which layer call made it,
/// and its shape on a one-sample batch.
public final class KerasTensor {
    let graph: FunctionalGraph
    let ref: TensorRef
    let sample: Tensor

    init(_ graph: FunctionalGraph, _ ref: TensorRef, _ sample: Tensor) {
        self.graph = graph
        self.ref = ref
        self.sample = sample
    }

    /// The shape, batch dimension left out.
    public var shape: [Int] { Array(sample.shape.dropFirst()) }
}

/// The layers and calls recorded while a functional model is built.
final class FunctionalGraph {
    var builder = ConfigBuilder()
    var entries: [[String: Any]] = []
    var positions: [String: Int] = [:]
}

/// A model input of `shape` (batch dimension left out), Keras's `keras.Input`; call layers on
/// it and pass the inputs and outputs to `Model(inputs:outputs:)`. Inputs of one model must
/// come from the same `graph` (pass the first input's).
public func Input(shape: [Int], dtype: DType = .float32, name: String? = nil, graph: KerasTensor? = nil) throws -> KerasTensor {
    let g = graph?.graph ?? FunctionalGraph()
    let layerName = g.builder.uniqueName(LayerSpec("InputLayer", ["name": name ?? "input_layer"]))
    g.positions[layerName] = g.entries.count
    g.entries.append(["module": "keras.layers", "class_name": "InputLayer", "registered_name": NSNull(), "name": layerName,
                      "config": ["name": layerName, "batch_shape": [NSNull()] + shape.map { $0 as Any }, "dtype": dtype.name,
                                 "sparse": false, "ragged": false],
                      "inbound_nodes": [Any]()])
    return KerasTensor(g, TensorRef(layer: layerName, node: 0, index: 0), try zeros([1] + shape, dtype: dtype))
}

/// A layer of a functional model: built on its first call, the same weights on later calls
/// (a shared layer).
public final class FunctionalLayer {
    public let spec: LayerSpec
    private var name: String?
    private var calls = 0

    public init(_ spec: LayerSpec) { self.spec = spec }

    /// Calls the layer on `inputs` (several for merge layers and MultiHeadAttention's query,
    /// value[, key]); returns its outputs.
    public func callAsFunction(_ inputs: [KerasTensor]) throws -> [KerasTensor] {
        guard let g = inputs.first?.graph, inputs.allSatisfy({ $0.graph === g }) else {
            throw EngineError.value("\(spec.className): inputs must come from one model under construction (create later inputs with Input(shape:graph: firstInput))")
        }
        let history: [Any] = inputs.map { t in
            ["class_name": "__keras_tensor__",
             "config": ["shape": ConfigBuilder.shapeJSON(t.sample.shape), "dtype": t.sample.dtype.name,
                        "keras_history": [t.ref.layer, t.ref.node, t.ref.index] as [Any]] as [String: Any]] as [String: Any]
        }
        // Merge layers take their inputs as one list argument; MultiHeadAttention takes
        // (query, value[, key]) positionally.
        let positional = inputs.count == 1 || spec.className == "MultiHeadAttention"
        let args: [Any] = positional ? history : [history as Any]
        let node: [String: Any] = ["args": args, "kwargs": [String: Any]()]
        let outs: [Tensor]
        if let name, let i = g.positions[name] {
            var entry = g.entries[i]
            let layer = try LayerRegistry.layer(from: entry)
            outs = try Tape.paused { try layer.call(inputs.map { $0.sample }, CallOptions()) }
            entry["inbound_nodes"] = (entry["inbound_nodes"] as? [Any] ?? []) + [node]
            g.entries[i] = entry
        } else {
            let (built, o) = try g.builder.entry(spec, inputs: inputs.map { $0.sample }, extra: ["inbound_nodes": [node]])
            var entry = built
            let layerName = (entry["config"] as? [String: Any])?["name"] as? String ?? spec.className
            entry["name"] = layerName
            name = layerName
            g.positions[layerName] = g.entries.count
            g.entries.append(entry)
            outs = o
        }
        defer { calls += 1 }
        return outs.enumerated().map { KerasTensor(g, TensorRef(layer: name!, node: calls, index: $0.offset), $0.element) }
    }

    /// A one-output call.
    public func callAsFunction(_ inputs: KerasTensor...) throws -> KerasTensor {
        let outs = try self(inputs)
        guard outs.count == 1 else { throw EngineError.value("\(spec.className) has \(outs.count) outputs; call it with an array") }
        return outs[0]
    }
}

extension LayerSpec {
    /// Calls a new layer of this spec once (use `FunctionalLayer` to share one).
    public func callAsFunction(_ inputs: KerasTensor...) throws -> KerasTensor { try FunctionalLayer(self)(inputs)[0] }
}

extension Model {
    /// A functional model from its inputs and outputs, with fresh weights seeded by `seed`.
    public convenience init(inputs: [KerasTensor], outputs: [KerasTensor], name: String = "functional", seed: Int = 0) throws {
        guard let g = inputs.first?.graph, (inputs + outputs).allSatisfy({ $0.graph === g }) else {
            throw EngineError.value("Model(inputs:outputs:): every tensor must come from the same construction (pass graph: to Input)")
        }
        func refs(_ ts: [KerasTensor]) -> [Any] { ts.map { [$0.ref.layer, $0.ref.node, $0.ref.index] as [Any] } }
        try self.init(config: ["module": "keras", "class_name": "Functional", "registered_name": "Functional",
                               "config": ["name": name, "trainable": true, "layers": g.entries,
                                          "input_layers": refs(inputs), "output_layers": refs(outputs)]])
        try initializeWeights(seed: seed)
    }
}
