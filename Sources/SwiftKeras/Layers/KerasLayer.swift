import Foundation
import TensorEngine

/// A layer's Keras config (the "config" object of config.json), with typed accessors that
/// throw a clear error naming the layer when an entry is missing or of the wrong kind.
public struct LayerConfig {
    public let className: String
    public let raw: [String: Any]
    /// The input shapes Keras built the layer for (build_config), batch dimension included.
    public let buildShapes: [[Int?]]

    public init(className: String, raw: [String: Any], buildShapes: [[Int?]] = []) {
        self.className = className
        self.raw = raw
        self.buildShapes = buildShapes
    }

    public var name: String { raw["name"] as? String ?? className.lowercased() }

    private func fail(_ key: String, _ want: String) -> EngineError {
        .value("\(className) '\(name)': config entry '\(key)' should be \(want), got \(raw[key].map { "\($0)" } ?? "nothing")")
    }

    func has(_ key: String) -> Bool { raw[key] != nil && !(raw[key] is NSNull) }

    public func int(_ key: String, _ fallback: Int? = nil) throws -> Int {
        if !has(key), let f = fallback { return f }
        if let n = raw[key] as? NSNumber, Double(n.intValue) == n.doubleValue { return n.intValue }
        if let a = raw[key] as? [Any], a.count == 1, let n = a[0] as? NSNumber { return n.intValue }
        throw fail(key, "an integer")
    }

    public func double(_ key: String, _ fallback: Double? = nil) throws -> Double {
        if !has(key), let f = fallback { return f }
        guard let n = raw[key] as? NSNumber else { throw fail(key, "a number") }
        return n.doubleValue
    }

    public func optionalDouble(_ key: String) throws -> Double? { has(key) ? try double(key) : nil }

    public func bool(_ key: String, _ fallback: Bool? = nil) throws -> Bool {
        if !has(key), let f = fallback { return f }
        guard let b = raw[key] as? Bool else { throw fail(key, "true or false") }
        return b
    }

    public func string(_ key: String, _ fallback: String? = nil) throws -> String {
        if !has(key), let f = fallback { return f }
        guard let s = raw[key] as? String else { throw fail(key, "a string") }
        return s
    }

    /// An int or a list of ints, as Keras's conv/pool arguments; a bare int repeats `count` times.
    public func ints(_ key: String, count: Int, _ fallback: [Int]? = nil) throws -> [Int] {
        if !has(key), let f = fallback { return f }
        if let n = raw[key] as? NSNumber { return Array(repeating: n.intValue, count: count) }
        let v = (raw[key] as? [Any])?.compactMap { ($0 as? NSNumber)?.intValue } ?? []
        guard let a = raw[key] as? [Any], v.count == a.count else { throw fail(key, "an integer or a list of integers") }
        if v.count == 1 && count > 1 { return Array(repeating: v[0], count: count) }
        guard v.count == count else { throw fail(key, "\(count) integers") }
        return v
    }

    /// The last dimension of the (first) input the layer was built for.
    public func inputDim(_ index: Int = 0) throws -> Int {
        guard index < buildShapes.count, let last = buildShapes[index].last, let d = last else {
            throw EngineError.value("\(className) '\(name)': config has no build shape with a known last dimension")
        }
        return d
    }

    public func buildShape(_ index: Int = 0) throws -> [Int?] {
        guard index < buildShapes.count else {
            throw EngineError.value("\(className) '\(name)': config has no build shape for input \(index)")
        }
        return buildShapes[index]
    }

    /// A channels_last layer; channels_first configs are refused rather than misread.
    func requireChannelsLast() throws {
        let format = try string("data_format", "channels_last")
        guard format == "channels_last" else {
            throw EngineError.notImplemented("\(className) '\(name)': data_format '\(format)' (SwiftKeras runs channels_last)")
        }
    }
}

/// What a node of the model graph passes to a layer besides its positional tensors:
/// tensor keyword arguments (MultiHeadAttention's `key`, `attention_mask`) and plain ones.
public struct CallOptions {
    public var training = false
    public var tensors: [String: Tensor] = [:]
    public var values: [String: Any] = [:]
    /// Where a nested model's layers add their activity penalties (fit and evaluate set it).
    var activity: ActivityLosses?

    public init(training: Bool = false) { self.training = training }
}

/// A Keras layer rebuilt in Swift: its class name and config (kept for saving), its weights
/// in Keras's order and HDF5 layout, and its call.
open class KerasLayer {
    public let className: String
    public let name: String
    /// The config Keras wrote (or, for a layer built in Swift, the config Keras needs).
    public internal(set) var config: [String: Any]
    public let buildShapes: [[Int?]]

    /// Rebuilds the layer from its Keras config.
    public required init(_ c: LayerConfig) throws {
        className = c.className
        name = c.name
        config = c.raw
        buildShapes = c.buildShapes
    }

    init(className: String, name: String, config: [String: Any], buildShape: [Int?]?) {
        self.className = className
        self.name = name
        var full = config
        full["name"] = name
        full["trainable"] = true
        full["dtype"] = "float32"
        self.config = full
        buildShapes = buildShape.map { [$0] } ?? []
    }

    /// The layer's own weights, in Keras's order (trainable ones first).
    open var weights: [Parameter] { [] }

    /// Weight groups as Keras's saving library lays them out under the layer's HDF5 group:
    /// "vars" for the layer's own variables, "cell/vars" or "query_dense/vars" for those of
    /// the sub-layers Keras tracks as attributes.
    open var weightGroups: [(path: String, weights: [Parameter])] { [("vars", weights)] }

    /// Tensors the call reads that are not weights, as Keras does not save them (values its
    /// config holds). A compiled step or inference program takes them as inputs, as it takes
    /// the weights, since it refuses to hold a constant (CompiledStep.swift).
    var configTensors: [Parameter] { [] }

    open var parameterCount: Int { weightGroups.reduce(0) { $0 + $1.weights.reduce(0) { $0 + $1.value.count } } }

    /// The layer's outputs for a node's inputs (the flattened positional tensors).
    open func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        throw EngineError.notImplemented("\(className) '\(name)' cannot be called")
    }

    /// Whether `fit` may compile a train step through this layer (CompiledStep.swift). A
    /// compiled step replays the registry ops the layer's call ran, with no host code between
    /// them: a layer defined outside SwiftKeras is trusted to allow that only when it says
    /// so, since its call may read values on the host (which a replay would not redo). Its
    /// ops must go through `OpRegistry.call` to be recorded; a typed engine call's result
    /// would make the step run eagerly anyway.
    open var compilesInTrainStep: Bool { String(reflecting: type(of: self)).hasPrefix("SwiftKeras.") }

    func one(_ inputs: [Tensor]) throws -> Tensor {
        guard inputs.count == 1 else {
            throw EngineError.value("\(className) '\(name)' takes one input, got \(inputs.count)")
        }
        return inputs[0]
    }

    /// Keras's build_config for this layer (what config.json stores beside "config").
    var buildConfig: [String: Any]? {
        guard let first = buildShapes.first else { return nil }
        let json: ([Int?]) -> [Any] = { $0.map { $0.map { $0 as Any } ?? NSNull() } }
        return ["input_shape": buildShapes.count == 1 ? json(first) : buildShapes.map(json) as Any]
    }
}

/// Class name → layer type, for rebuilding a model from its config.
public enum LayerRegistry {
    private static let lock = NSLock()
    private static var types: [String: KerasLayer.Type] = [
        "InputLayer": InputLayer.self, "Dense": Dense.self, "Dropout": Dropout.self,
        "SpatialDropout1D": Dropout.self, "SpatialDropout2D": Dropout.self, "GaussianNoise": Identity.self,
        "GaussianDropout": Identity.self, "AlphaDropout": Identity.self, "ActivityRegularization": Identity.self,
        "Identity": Identity.self,
        "Conv1D": Conv.self, "Conv2D": Conv.self, "Conv3D": Conv.self,
        "MaxPooling1D": Pooling.self, "MaxPooling2D": Pooling.self, "MaxPooling3D": Pooling.self,
        "AveragePooling1D": Pooling.self, "AveragePooling2D": Pooling.self, "AveragePooling3D": Pooling.self,
        "GlobalAveragePooling1D": GlobalPooling.self, "GlobalAveragePooling2D": GlobalPooling.self,
        "GlobalAveragePooling3D": GlobalPooling.self, "GlobalMaxPooling1D": GlobalPooling.self,
        "GlobalMaxPooling2D": GlobalPooling.self, "GlobalMaxPooling3D": GlobalPooling.self,
        "BatchNormalization": BatchNormalization.self, "LayerNormalization": LayerNormalization.self,
        "Flatten": Flatten.self, "Reshape": Reshape.self, "Permute": Permute.self, "RepeatVector": RepeatVector.self,
        "Activation": ActivationLayer.self, "ReLU": ReLU.self, "LeakyReLU": LeakyReLU.self, "ELU": ELU.self,
        "Softmax": SoftmaxLayer.self, "Embedding": Embedding.self, "Rescaling": Rescaling.self,
        "LSTM": LSTM.self, "GRU": GRU.self, "SimpleRNN": SimpleRNN.self, "Bidirectional": Bidirectional.self,
        "MultiHeadAttention": MultiHeadAttention.self,
        "Concatenate": Concatenate.self, "Add": Merge.self, "Subtract": Merge.self, "Multiply": Merge.self,
        "Average": Merge.self, "Maximum": Merge.self, "Minimum": Merge.self,
        "ZeroPadding1D": ZeroPadding.self, "ZeroPadding2D": ZeroPadding.self, "ZeroPadding3D": ZeroPadding.self,
        "DepthwiseConv1D": DepthwiseConv.self, "DepthwiseConv2D": DepthwiseConv.self,
        "SeparableConv1D": SeparableConv.self, "SeparableConv2D": SeparableConv.self,
        "Conv1DTranspose": ConvTranspose.self, "Conv2DTranspose": ConvTranspose.self,
        "Conv3DTranspose": ConvTranspose.self, "Cropping1D": Cropping.self, "Cropping2D": Cropping.self,
        "Cropping3D": Cropping.self, "UpSampling1D": UpSampling.self, "UpSampling2D": UpSampling.self,
        "UpSampling3D": UpSampling.self, "PReLU": PReLU.self, "GroupNormalization": GroupNormalization.self,
        "Normalization": Normalization.self, "EinsumDense": EinsumDense.self,
    ]

    /// Adds (or replaces) the Swift type that rebuilds layers of a Keras class name, or of a
    /// custom layer's registered name ("my_package>MyLayer", as Keras writes it).
    public static func register(_ className: String, _ type: KerasLayer.Type) {
        lock.lock()
        defer { lock.unlock() }
        types[className] = type
    }

    public static var classNames: [String] {
        lock.lock()
        defer { lock.unlock() }
        return types.keys.sorted()
    }

    static func type(_ className: String) -> KerasLayer.Type? {
        lock.lock()
        defer { lock.unlock() }
        return types[className]
    }

    /// Rebuilds a layer from one entry of a config's "layers" list (or a nested "layer").
    public static func layer(from entry: [String: Any]) throws -> KerasLayer {
        guard let className = entry["class_name"] as? String, let config = entry["config"] as? [String: Any] else {
            throw EngineError.value("a layer entry in the model config has no class_name/config: \(entry.keys.sorted())")
        }
        let name = config["name"] as? String ?? "?"
        // A custom Python layer reimplemented in Swift and registered under its Keras name
        // ("package>ClassName") is rebuilt like a built-in one.
        if let registered = entry["registered_name"] as? String, let custom = type(registered) {
            return try custom.init(LayerConfig(className: className, raw: config, buildShapes: shapes(entry["build_config"])))
        }
        if className == "Lambda" {
            throw EngineError.notImplemented("layer '\(name)' is a Lambda layer: its Python function cannot run in Swift")
        }
        if let registered = entry["registered_name"] as? String, registered != className, !registered.hasPrefix("keras") {
            throw EngineError.notImplemented("layer '\(name)' is the custom Python layer '\(registered)', which SwiftKeras cannot rebuild")
        }
        if let module = entry["module"] as? String, !module.hasPrefix("keras") {
            throw EngineError.notImplemented("layer '\(name)' is the custom Python layer \(module).\(className), which SwiftKeras cannot rebuild")
        }
        if ["Functional", "Sequential", "Model"].contains(className) {
            return try ModelLayer(Model(config: entry))
        }
        guard let type = type(className) else {
            throw EngineError.notImplemented("layer '\(name)' is a \(className), which SwiftKeras does not have yet")
        }
        return try type.init(LayerConfig(className: className, raw: config, buildShapes: shapes(entry["build_config"])))
    }

    /// The input shapes of a build_config: {"input_shape": [...]} or a shapes_dict.
    static func shapes(_ buildConfig: Any?) -> [[Int?]] {
        guard let b = buildConfig as? [String: Any] else { return [] }
        func shape(_ v: Any?) -> [Int?]? {
            guard let a = v as? [Any], a.allSatisfy({ $0 is NSNumber || $0 is NSNull }) else { return nil }
            return a.map { ($0 as? NSNumber)?.intValue }
        }
        if let s = shape(b["input_shape"]) { return [s] }
        if let list = b["input_shape"] as? [Any] { return list.compactMap(shape) }
        if let d = b["shapes_dict"] as? [String: Any] {
            return ["query_shape", "value_shape", "key_shape"].compactMap { shape(d[$0]) }
        }
        return []
    }
}
