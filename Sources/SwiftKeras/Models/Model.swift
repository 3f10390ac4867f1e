import Foundation
import TensorEngine

/// One tensor of the model graph: output `index` of call `node` of layer `layer`.
struct TensorRef: Hashable {
    let layer: String, node: Int, index: Int
}

/// One call of a layer in the model graph.
struct GraphNode {
    var args: [TensorRef] = []
    var kwargTensors: [String: TensorRef] = [:]
    var kwargValues: [String: Any] = [:]
}

/// A Keras model rebuilt from its config: Sequential or functional (several inputs and
/// outputs, shared layers, nested models), run for inference on the engine's ops.
///
///     let model = try Model.load("m.keras")
///     let y = try model.predict(x)
///
/// Predicting never mutates the model, so one model may serve several threads at once.
public final class Model {
    public let name: String
    /// "Sequential" or "Functional".
    public let className: String
    /// The layers in Keras's `model.layers` order (the order of their weights in the file).
    public let layers: [KerasLayer]
    /// The model's inputs, in the order `predict` takes them.
    public let inputs: [InputLayer]
    /// Names of the outputs `predict` returns, in order: the keys of a model built with a
    /// dict of outputs, else the names of the layers that compute them.
    public var outputNames: [String] {
        if let keys = (config["config"] as? [String: Any])?["output_layers"] as? [String: Any] { return keys.keys.sorted() }
        return outputRefs.map { $0.layer }
    }
    /// The config entry Keras wrote ({"module", "class_name", "config", ...}).
    public let config: [String: Any]

    /// Set by `compile`; `fit` and `evaluate` use them.
    public internal(set) var optimizer: Optimizer?
    var compiled: Compiled?
    /// `fit`'s compiled step (nil when compiled with jitCompile false).
    var compiledTrainStep: CompiledTrainStep?
    /// `evaluate`'s and `predict(_:batchSize:)`'s compiled batches (nil when compiled with jitCompile false).
    var compiledInference: CompiledInference?
    /// Why `fit` (or else `evaluate` and `predict`) runs eagerly although compiled with
    /// jitCompile (nil while they compile, or before the first step).
    public var jitFallbackReason: String? { compiledTrainStep?.eagerReason ?? compiledInference?.eagerReason }
    /// A callback sets this to end `fit` after the current epoch.
    public var stopTraining = false

    private let byName: [String: KerasLayer]
    private let nodes: [String: [GraphNode]]
    private let inputRefs: [TensorRef]
    private let outputRefs: [TensorRef]

    // MARK: Loading

    /// Loads a `.keras` file saved by Keras 3 (any backend) or by `save`.
    public static func load(_ path: String) throws -> Model {
        let archive = try Zip.open(path)
        let configData = try Zip.read(archive, "config.json", in: path)
        let model = try Model(config: try parseJSON(configData, "\(path):config.json"))
        let weights = TemporaryFile(suffix: ".h5")
        try Zip.read(archive, "model.weights.h5", in: path).write(to: URL(fileURLWithPath: weights.path))
        try model.loadWeights(weights.path)
        try model.restoreCompile(weightsPath: weights.path, in: path)
        return model
    }

    /// Keras's compile_from_config and optimizer state: a compile_config SwiftKeras cannot
    /// follow (an optimizer, loss or metric it lacks) leaves the model uncompiled with one
    /// warning, as Keras does when compile fails on load.
    private func restoreCompile(weightsPath: String, in path: String) throws {
        // An uncompiled model's file holds null or {} (Keras skips both).
        guard let c = config["compile_config"] as? [String: Any], !c.isEmpty else { return }
        do {
            try compile(fromKeras: c)
            if let keras = optimizer as? KerasOptimizer { try keras.load(from: try H5File.open(weightsPath), trainableWeights, path: path) }
        } catch {
            optimizer = nil
            compiled = nil
            compiledTrainStep = nil
            compiledInference = nil
            let reason = (error as? EngineError)?.message ?? "\(error)"
            FileHandle.standardError.write(Data("SwiftKeras: '\(path)' loads uncompiled (call compile to train it): \(reason)\n".utf8))
        }
    }

    /// Rebuilds a model (with zero weights) from a config.json object.
    public init(config entry: [String: Any]) throws {
        guard let className = entry["class_name"] as? String, let config = entry["config"] as? [String: Any],
              let layerEntries = config["layers"] as? [[String: Any]] else {
            throw EngineError.value("model config needs class_name, config and config.layers")
        }
        self.className = className
        self.config = entry
        name = config["name"] as? String ?? className.lowercased()
        var built: [KerasLayer] = []
        for e in layerEntries { built.append(try LayerRegistry.layer(from: e)) }
        var nodes: [String: [GraphNode]] = [:]
        var inputs: [InputLayer] = []
        var outputs: [TensorRef] = []
        if className == "Sequential" {
            var chain = built
            if !(chain.first is InputLayer) {
                let shape = LayerRegistry.shapes(entry["build_config"]).first
                    ?? LayerRegistry.shapes(layerEntries.first?["build_config"]).first
                guard let s = shape else {
                    throw EngineError.value("Sequential '\(name)' has no InputLayer and no build shape: it was never built")
                }
                chain.insert(InputLayer(shape: Array(s.dropFirst()), name: "__input__"), at: 0)
            }
            guard let first = chain.first as? InputLayer else { throw EngineError.internal("Sequential without input") }
            inputs = [first]
            nodes[first.name] = [GraphNode()]
            for (prev, layer) in zip(chain, chain.dropFirst()) {
                nodes[layer.name, default: []].append(GraphNode(args: [TensorRef(layer: prev.name, node: 0, index: 0)]))
            }
            outputs = [TensorRef(layer: chain[chain.count - 1].name, node: 0, index: 0)]
            // Keras's Sequential.layers leaves the input layer out (so do its weight files).
            layers = built.filter { !($0 is InputLayer) }
        } else {
            for (layer, e) in zip(built, layerEntries) {
                nodes[layer.name] = try (e["inbound_nodes"] as? [Any] ?? []).map { try Model.parseNode($0, layer.name) }
                if layer is InputLayer { nodes[layer.name] = [GraphNode()] }
            }
            let byName = Dictionary(built.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
            for ref in try Model.parseRefs(config["input_layers"], "input_layers") {
                guard let input = byName[ref.layer] as? InputLayer else {
                    throw EngineError.value("model input '\(ref.layer)' is not an InputLayer of the config")
                }
                inputs.append(input)
            }
            outputs = try Model.parseRefs(config["output_layers"], "output_layers")
            layers = built
        }
        let byName = Dictionary((layers + inputs).map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        guard byName.count == Set((layers + inputs).map { $0.name }).count else {
            throw EngineError.value("model config has duplicate layer names")
        }
        for ref in outputs where byName[ref.layer] == nil {
            throw EngineError.value("model output names the unknown layer '\(ref.layer)'")
        }
        self.byName = byName
        self.nodes = nodes
        self.inputs = inputs
        inputRefs = inputs.map { TensorRef(layer: $0.name, node: 0, index: 0) }
        outputRefs = outputs
    }

    static func parseJSON(_ data: Data, _ what: String) throws -> [String: Any] {
        guard let obj = try? JSONSerialization.jsonObject(with: data), let dict = obj as? [String: Any] else {
            throw EngineError.value("\(what) is not a JSON object")
        }
        return dict
    }

    /// [[name, node, index], ...], a single [name, node, index], or {key: [name, node, index]}
    /// (a model built on dicts: Keras flattens them in sorted key order).
    private static func parseRefs(_ v: Any?, _ what: String) throws -> [TensorRef] {
        func ref(_ a: [Any]) -> TensorRef? {
            guard a.count >= 3, let n = a[0] as? String, let node = a[1] as? NSNumber, let i = a[2] as? NSNumber else { return nil }
            return TensorRef(layer: n, node: node.intValue, index: i.intValue)
        }
        if let dict = v as? [String: Any] {
            return try dict.keys.sorted().map { key in
                guard let a = dict[key] as? [Any], let r = ref(a) else { throw EngineError.value("model config: bad \(what) entry '\(key)'") }
                return r
            }
        }
        guard let list = v as? [Any] else { throw EngineError.value("model config has no \(what)") }
        if let single = ref(list) { return [single] }
        let refs = list.compactMap { ($0 as? [Any]).flatMap(ref) }
        guard refs.count == list.count, !refs.isEmpty else { throw EngineError.value("model config: bad \(what)") }
        return refs
    }

    private static func kerasTensor(_ v: Any) -> TensorRef? {
        guard let d = v as? [String: Any], d["class_name"] as? String == "__keras_tensor__",
              let c = d["config"] as? [String: Any], let h = c["keras_history"] as? [Any], h.count == 3,
              let n = h[0] as? String, let node = h[1] as? NSNumber, let i = h[2] as? NSNumber else { return nil }
        return TensorRef(layer: n, node: node.intValue, index: i.intValue)
    }

    private static func flatten(_ v: Any, into refs: inout [TensorRef]) {
        if let r = kerasTensor(v) { refs.append(r) } else if let a = v as? [Any] { for x in a { flatten(x, into: &refs) } }
    }

    private static func parseNode(_ v: Any, _ layer: String) throws -> GraphNode {
        var node = GraphNode()
        if let d = v as? [String: Any] {
            flatten(d["args"] ?? [], into: &node.args)
            for (k, value) in d["kwargs"] as? [String: Any] ?? [:] {
                if let r = kerasTensor(value) { node.kwargTensors[k] = r } else if !(value is NSNull) { node.kwargValues[k] = value }
            }
        } else if let list = v as? [Any] {
            // The older form: [[name, node, index, kwargs], ...].
            for item in list {
                guard let a = item as? [Any], a.count >= 3, let n = a[0] as? String, let nd = a[1] as? NSNumber,
                      let i = a[2] as? NSNumber else { throw EngineError.value("layer '\(layer)': bad inbound node") }
                node.args.append(TensorRef(layer: n, node: nd.intValue, index: i.intValue))
            }
        } else {
            throw EngineError.value("layer '\(layer)': bad inbound node")
        }
        return node
    }

    // MARK: Running

    /// The model's outputs for one tensor per input (batch first).
    public func predict(_ xs: [Tensor]) throws -> [Tensor] { try self(xs, training: false) }

    /// The model's outputs; `training` switches Dropout, BatchNormalization (batch statistics,
    /// moving averages updated) and the noise layers to their training behaviour.
    public func callAsFunction(_ xs: [Tensor], training: Bool = false) throws -> [Tensor] {
        var memo: [TensorRef: Tensor] = [:]
        return try run(xs, &memo, training: training)
    }

    /// The outputs, with the activity penalties of the layers `activity` names collected into it.
    func callAsFunction(_ xs: [Tensor], training: Bool, activity: ActivityLosses?) throws -> [Tensor] {
        var memo: [TensorRef: Tensor] = [:]
        return try run(xs, &memo, training: training, activity: activity)
    }

    /// Runs the graph, leaving every tensor it computed in `memo`.
    func run(_ xs: [Tensor], _ memo: inout [TensorRef: Tensor], training: Bool = false,
             activity: ActivityLosses? = nil) throws -> [Tensor] {
        guard xs.count == inputs.count else {
            throw EngineError.value("model '\(name)' takes \(inputs.count) input(s), got \(xs.count)")
        }
        for (ref, (layer, x)) in zip(inputRefs, zip(inputs, xs)) { memo[ref] = try layer.accept(x) }
        var active: Set<TensorRef> = []
        return try outputRefs.map { try value($0, &memo, &active, training, activity) }
    }

    /// Every layer the model runs: its inputs and layers, and those of the models nested in it.
    var allLayers: [KerasLayer] {
        inputs.map { $0 as KerasLayer } + layers.flatMap { layer -> [KerasLayer] in
            guard let nested = layer as? ModelLayer else { return [layer] }
            return [layer] + nested.model.allLayers
        }
    }

    /// The inbound tensors of each call of a layer ("name[node][index]"), for summary().
    func connections(_ layer: String) -> [String] {
        (nodes[layer] ?? []).flatMap { n in (n.args + n.kwargTensors.values).map { "\($0.layer)[\($0.node)][\($0.index)]" } }
    }

    /// The output of a one-input, one-output model.
    public func predict(_ x: Tensor) throws -> Tensor {
        let ys = try predict([x])
        guard ys.count == 1 else { throw EngineError.value("model '\(name)' has \(ys.count) outputs; use predict([...])") }
        return ys[0]
    }

    private func value(_ ref: TensorRef, _ memo: inout [TensorRef: Tensor], _ active: inout Set<TensorRef>,
                       _ training: Bool, _ activity: ActivityLosses?) throws -> Tensor {
        if let t = memo[ref] { return t }
        guard let layer = byName[ref.layer] else { throw EngineError.value("model graph names the unknown layer '\(ref.layer)'") }
        guard let calls = nodes[ref.layer], ref.node >= 0, ref.node < calls.count else {
            throw EngineError.value("model graph: layer '\(ref.layer)' has no call #\(ref.node)")
        }
        let key = TensorRef(layer: ref.layer, node: ref.node, index: -1)
        guard active.insert(key).inserted else { throw EngineError.value("model graph has a cycle through '\(ref.layer)'") }
        defer { active.remove(key) }
        let node = calls[ref.node]
        if layer is InputLayer { throw EngineError.value("input '\(ref.layer)' is not an input of model '\(name)'") }
        let args = try node.args.map { try value($0, &memo, &active, training, activity) }
        var options = CallOptions(training: training)
        options.activity = activity
        options.values = node.kwargValues
        for (k, r) in node.kwargTensors { options.tensors[k] = try value(r, &memo, &active, training, activity) }
        let outs = try layer.call(args, options)
        try activity?.record(layer, outs)
        for (i, t) in outs.enumerated() { memo[TensorRef(layer: ref.layer, node: ref.node, index: i)] = t }
        guard let t = memo[ref] else {
            throw EngineError.value("layer '\(ref.layer)' has \(outs.count) output(s), the graph wants #\(ref.index)")
        }
        return t
    }

    // MARK: Weights

    /// Keras's HDF5 group of each layer: the snake_case class name, numbered on repeats.
    var layerPaths: [(path: String, layer: KerasLayer)] {
        var used: [String: Int] = [:]
        return layers.map { layer in
            let base = snakeCase(layer is ModelLayer ? ((layer as? ModelLayer)?.model.className ?? "") : layer.className)
            let n = used[base].map { $0 + 1 } ?? 0
            used[base] = n
            return ("layers/" + (n == 0 ? base : "\(base)_\(n)"), layer)
        }
    }

    /// Every weight group of the model with its full HDF5 path.
    var weightGroups: [(path: String, weights: [Parameter])] {
        [("vars", [])] + layerPaths.flatMap { entry in entry.layer.weightGroups.map { (entry.path + "/" + $0.path, $0.weights) } }
    }

    public var weights: [Parameter] { weightGroups.flatMap { $0.weights } }

    /// Loads a `.weights.h5` file (or the model.weights.h5 inside a .keras file).
    public func loadWeights(_ path: String) throws {
        let file = try H5File.open(path)
        for (group, params) in weightGroups {
            let stored = try file.members(group).filter { Int($0) != nil }
            guard stored.count == params.count else {
                throw EngineError.value("'\(path)': \(group) holds \(stored.count) weight(s), the layer has \(params.count)")
            }
            for (i, p) in params.enumerated() {
                let t = try file.read("\(group)/\(i)")
                guard t.shape == p.value.shape else {
                    throw EngineError.value("'\(path)': \(group)/\(i) (\(p.name)) has shape \(t.shape), the layer expects \(p.value.shape)")
                }
                p.value = t.dtype == p.value.dtype ? t : try cast(t, to: p.value.dtype)
            }
        }
    }

    /// Writes the weights as Keras's `.weights.h5` layout.
    public func saveWeights(_ path: String) throws { try saveWeights(path, optimizer: nil) }

    /// The weights, and with `optimizer` its variables (a `.keras` file's model.weights.h5).
    private func saveWeights(_ path: String, optimizer: KerasOptimizer?) throws {
        let file = try H5File.create(path)
        try file.makeGroups("layers")
        for (group, params) in weightGroups {
            try file.makeGroups(group)
            for (i, p) in params.enumerated() { try file.write("\(group)/\(i)", p.value) }
        }
        try optimizer?.save(to: file, trainableWeights)
    }

    /// The config to save and whether the optimizer's state goes with it: a model compiled in
    /// Swift writes its compile_config (Keras loads it compiled); one whose compile Keras
    /// cannot express (an optimizer or schedule defined outside SwiftKeras) is saved
    /// uncompiled, with a warning.
    private func savedConfig() -> (entry: [String: Any], optimizer: KerasOptimizer?) {
        var entry = config
        guard compiled != nil else { return (entry, nil) }
        do {
            entry["compile_config"] = try compileConfig()
            return (entry, optimizer as? KerasOptimizer)
        } catch {
            entry["compile_config"] = nil
            let reason = (error as? EngineError)?.message ?? "\(error)"
            FileHandle.standardError.write(Data("SwiftKeras: model '\(name)' is saved uncompiled: \(reason)\n".utf8))
            return (entry, nil)
        }
    }

    /// Writes a `.keras` file (config.json, metadata.json, model.weights.h5) Keras 3 loads,
    /// compiled (with the optimizer's state) when the model is.
    public func save(_ path: String) throws {
        guard path.hasSuffix(".keras") else { throw EngineError.value("save writes .keras files, got '\(path)'") }
        let weights = TemporaryFile(suffix: ".h5")
        let (entry, optimizer) = savedConfig()
        try saveWeights(weights.path, optimizer: optimizer)
        guard let h5 = FileManager.default.contents(atPath: weights.path) else {
            throw EngineError.value("cannot read back the weights written to \(weights.path)")
        }
        let metadata: [String: Any] = ["keras_version": "3.15.1", "date_saved": ISO8601DateFormatter().string(from: Date())]
        try Zip.write(path, [("metadata.json", try JSONSerialization.data(withJSONObject: metadata)),
                             ("config.json", try JSONSerialization.data(withJSONObject: entry)),
                             ("model.weights.h5", h5)], compress: true)
    }
}

/// Keras's `naming.to_snake_case`.
func snakeCase(_ name: String) -> String {
    var s = name.replacingOccurrences(of: "\\W+", with: "", options: .regularExpression)
    s = s.replacingOccurrences(of: "(.)([A-Z][a-z]+)", with: "$1_$2", options: .regularExpression)
    s = s.replacingOccurrences(of: "([a-z])([A-Z])", with: "$1_$2", options: .regularExpression)
    return s.lowercased()
}

/// A model used as a layer of another model.
public final class ModelLayer: KerasLayer {
    public let model: Model

    init(_ model: Model) throws {
        self.model = model
        try super.init(LayerConfig(className: model.className, raw: model.config["config"] as? [String: Any] ?? [:]))
    }

    public required init(_ c: LayerConfig) throws {
        model = try Model(config: ["class_name": c.className, "config": c.raw])
        try super.init(c)
    }

    override public var weightGroups: [(path: String, weights: [Parameter])] { model.weightGroups }

    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        try model(inputs, training: options.training, activity: options.activity)
    }
}

extension Model {
    /// A trained `Sequential` as a Keras model (its layers' configs and current weights), to
    /// `save` as a `.keras` file Keras 3 loads. `inputShape` excludes the batch dimension.
    public convenience init(_ sequential: Sequential, inputShape: [Int], name: String = "sequential") throws {
        var used: Set<String> = ["input_layer"]
        var entries: [[String: Any]] = [[
            "module": "keras.layers", "class_name": "InputLayer", "registered_name": NSNull(),
            "config": ["name": "input_layer", "batch_shape": [NSNull()] + inputShape.map { $0 as Any },
                       "dtype": "float32", "sparse": false, "ragged": false],
        ]]
        var sources: [KerasLayer] = []
        for layer in sequential.layers {
            guard let k = layer as? KerasLayer else {
                throw EngineError.notImplemented("\(type(of: layer)) has no Keras config, so the model cannot be saved")
            }
            var config = k.config
            var unique = k.name, n = 0
            while used.contains(unique) {
                n += 1
                unique = "\(k.name)_\(n)"
            }
            used.insert(unique)
            config["name"] = unique
            var entry: [String: Any] = ["module": "keras.layers", "class_name": k.className, "config": config,
                                        "registered_name": NSNull()]
            if let b = k.buildConfig { entry["build_config"] = b }
            entries.append(entry)
            sources.append(k)
        }
        try self.init(config: ["module": "keras", "class_name": "Sequential", "registered_name": NSNull(),
                               "config": ["name": name, "trainable": true, "layers": entries],
                               "build_config": ["input_shape": [NSNull()] + inputShape.map { $0 as Any }]])
        for (mine, source) in zip(layers, sources) {
            for (to, from) in zip(mine.weightGroups, source.weightGroups) {
                guard to.weights.count == from.weights.count else {
                    throw EngineError.internal("\(source.name): weight groups differ after rebuilding from config")
                }
                for (p, q) in zip(to.weights, from.weights) {
                    guard p.value.shape == q.value.shape else {
                        throw EngineError.value("layer '\(source.name)': weight \(q.name) has shape \(q.value.shape), its config builds \(p.value.shape)")
                    }
                    p.value = q.value
                }
            }
        }
    }
}
