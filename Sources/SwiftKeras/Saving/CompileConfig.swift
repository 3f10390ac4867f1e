import Foundation
import TensorEngine

// A model's compile state in a `.keras` file, as Keras 3 writes it: config.json's
// "compile_config" (the optimizer's config, losses, loss weights, metrics) and the
// optimizer's variables in model.weights.h5 under optimizer/vars (keras/src/saving/saving_lib.py,
// BaseOptimizer.save_own_variables): iterations, the learning rate (unless a schedule
// gives it), then the slots in the order each optimizer's build creates them.

private func kerasObject(_ module: String, _ className: String, _ config: Any) -> [String: Any] {
    ["module": module, "class_name": className, "config": config, "registered_name": NSNull()]
}

private func json(_ v: Double?) -> Any { v.map { $0 as Any } ?? NSNull() }

/// A serialized Keras object's class name and config (a bare string is its own name).
private func unwrap(_ v: Any, _ what: String) throws -> (name: String, config: [String: Any]) {
    if let s = v as? String { return (s, [:]) }
    guard let d = v as? [String: Any], let c = d["class_name"] as? String else {
        throw EngineError.value("compile_config: \(what) is not a Keras object: \(v)")
    }
    if c == "function", let f = d["config"] as? String { return (f, [:]) }
    if let module = d["module"] as? String, !module.hasPrefix("keras") && module != "builtins" {
        throw EngineError.notImplemented("the custom Python \(what) \(module).\(c) cannot run in Swift")
    }
    return (c, d["config"] as? [String: Any] ?? [:])
}

private func double(_ c: [String: Any], _ key: String, _ fallback: Double) throws -> Double {
    guard let v = c[key], !(v is NSNull) else { return fallback }
    guard let n = v as? NSNumber else { throw EngineError.value("compile_config: '\(key)' should be a number, got \(v)") }
    return n.doubleValue
}

/// A non-negative whole number (a step count), 0 when absent.
private func count(_ c: [String: Any], _ key: String) throws -> Int {
    let n = try double(c, key, 0)
    guard n.isFinite, n >= 0, n < 1e15, n == n.rounded() else { throw EngineError.value("compile_config: '\(key)' should be a step count, got \(n)") }
    return Int(n)
}

private func optionalDouble(_ c: [String: Any], _ key: String) throws -> Double? {
    guard let v = c[key], !(v is NSNull) else { return nil }
    return try double(c, key, 0)
}

// MARK: learning-rate schedules

private func scheduleConfig(_ s: LearningRateSchedule) throws -> [String: Any] {
    let module = "keras.optimizers.schedules"
    switch s {
    case let e as ExponentialDecay:
        return kerasObject(module, "ExponentialDecay", ["initial_learning_rate": e.initialLearningRate, "decay_steps": e.decaySteps,
                                                        "decay_rate": e.decayRate, "staircase": e.staircase, "name": "ExponentialDecay"])
    case let c as CosineDecay:
        return kerasObject(module, "CosineDecay", ["initial_learning_rate": c.initialLearningRate, "decay_steps": c.decaySteps,
                                                   "alpha": c.alpha, "name": "CosineDecay", "warmup_target": json(c.warmupTarget),
                                                   "warmup_steps": c.warmupSteps])
    case let p as PiecewiseConstantDecay:
        return kerasObject(module, "PiecewiseConstantDecay", ["boundaries": p.boundaries, "values": p.values, "name": "PiecewiseConstant"])
    default:
        throw EngineError.notImplemented("the learning-rate schedule \(type(of: s)) has no Keras config")
    }
}

private func makeSchedule(from v: [String: Any]) throws -> LearningRateSchedule {
    let (name, c) = try unwrap(v, "learning-rate schedule")
    func positive(_ key: String) throws -> Int {
        let n = try double(c, key, .nan)
        guard n.isFinite, n > 0, n < 1e15 else { throw EngineError.value("compile_config: \(name) needs a positive \(key)") }
        return Int(n)
    }
    switch name {
    case "ExponentialDecay":
        return ExponentialDecay(initialLearningRate: try double(c, "initial_learning_rate", .nan), decaySteps: try positive("decay_steps"),
                                decayRate: try double(c, "decay_rate", .nan), staircase: c["staircase"] as? Bool ?? false)
    case "CosineDecay":
        return CosineDecay(initialLearningRate: try double(c, "initial_learning_rate", .nan), decaySteps: try positive("decay_steps"),
                           alpha: try double(c, "alpha", 0), warmupTarget: try optionalDouble(c, "warmup_target"),
                           warmupSteps: try count(c, "warmup_steps"))
    case "PiecewiseConstantDecay":
        let b = (c["boundaries"] as? [Any] ?? []).compactMap { ($0 as? NSNumber)?.intValue }
        let values = (c["values"] as? [Any] ?? []).compactMap { ($0 as? NSNumber)?.doubleValue }
        guard values.count == b.count + 1 else { throw EngineError.value("compile_config: PiecewiseConstantDecay needs one more value than boundaries") }
        return PiecewiseConstantDecay(boundaries: b, values: values)
    default:
        throw EngineError.notImplemented("the learning-rate schedule \(name) is not in SwiftKeras yet")
    }
}

// MARK: optimizers

extension KerasOptimizer {
    /// Keras's class name and the hyper-parameters its get_config adds to the base ones.
    private var kerasClass: (String, [String: Any]) {
        switch self {
        case let o as SGD: return ("SGD", ["momentum": o.momentum, "nesterov": o.nesterov])
        case let o as AdamW: return ("AdamW", ["beta_1": o.beta1, "beta_2": o.beta2, "epsilon": o.epsilon, "amsgrad": o.amsgrad])
        case let o as Adam: return ("Adam", ["beta_1": o.beta1, "beta_2": o.beta2, "epsilon": o.epsilon, "amsgrad": o.amsgrad])
        case let o as RMSprop: return ("RMSprop", ["rho": o.rho, "momentum": o.momentum, "epsilon": o.epsilon, "centered": o.centered])
        case let o as Adagrad: return ("Adagrad", ["initial_accumulator_value": o.initialAccumulatorValue, "epsilon": o.epsilon])
        case let o as Nadam: return ("Nadam", ["beta_1": o.beta1, "beta_2": o.beta2, "epsilon": o.epsilon])
        case let o as Lion: return ("Lion", ["beta_1": o.beta1, "beta_2": o.beta2])
        default: return (String(describing: type(of: self)), [:])
        }
    }

    /// The optimizer as Keras serializes it.
    func kerasConfig() throws -> [String: Any] {
        let (className, own) = kerasClass
        guard ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Nadam", "Lion"].contains(className) else {
            throw EngineError.notImplemented("the optimizer \(className) has no Keras config")
        }
        var c: [String: Any] = [
            "name": snakeCase(className),
            "learning_rate": try schedule.map(scheduleConfig) ?? learningRate,
            "weight_decay": json(weightDecay), "clipnorm": json(clipnorm), "global_clipnorm": json(globalClipnorm),
            "clipvalue": json(clipvalue), "use_ema": false, "ema_momentum": 0.99, "ema_overwrite_frequency": NSNull(),
            "loss_scale_factor": NSNull(), "gradient_accumulation_steps": NSNull(),
        ]
        for (k, v) in own { c[k] = v }
        return kerasObject("keras.optimizers", className, c)
    }

    /// An optimizer from its Keras config (or name, "adam").
    static func from(keras v: Any) throws -> KerasOptimizer {
        let (name, c) = try unwrap(v, "optimizer")
        for (key, off) in [("use_ema", false as Any), ("loss_scale_factor", NSNull()), ("gradient_accumulation_steps", NSNull())] {
            if let set = c[key], !(set is NSNull), !((set as? Bool) == false && off is Bool) {
                throw EngineError.notImplemented("the optimizer option \(key)=\(set) is not in SwiftKeras yet")
            }
        }
        var rate = 0.001, sched: LearningRateSchedule?
        switch c["learning_rate"] {
        case let n as NSNumber: rate = n.doubleValue
        case let d as [String: Any]: sched = try makeSchedule(from: d)
        default: if ["sgd", "SGD"].contains(name) { rate = 0.01 }
        }
        let (cn, cv, gc, wd) = (try optionalDouble(c, "clipnorm"), try optionalDouble(c, "clipvalue"),
                                try optionalDouble(c, "global_clipnorm"), try optionalDouble(c, "weight_decay"))
        func d(_ key: String, _ fallback: Double) throws -> Double { try double(c, key, fallback) }
        let o: KerasOptimizer
        switch name {
        case "SGD", "sgd":
            o = SGD(learningRate: rate, momentum: try d("momentum", 0), nesterov: c["nesterov"] as? Bool ?? false, schedule: sched,
                    clipnorm: cn, clipvalue: cv, globalClipnorm: gc, weightDecay: wd)
        case "Adam", "adam":
            o = Adam(learningRate: rate, beta1: try d("beta_1", 0.9), beta2: try d("beta_2", 0.999), epsilon: try d("epsilon", 1e-7),
                     amsgrad: c["amsgrad"] as? Bool ?? false, schedule: sched, clipnorm: cn, clipvalue: cv, globalClipnorm: gc,
                     weightDecay: wd)
        case "AdamW", "adamw":
            o = AdamW(learningRate: rate, weightDecay: wd ?? 0.004, beta1: try d("beta_1", 0.9), beta2: try d("beta_2", 0.999),
                      epsilon: try d("epsilon", 1e-7), amsgrad: c["amsgrad"] as? Bool ?? false, schedule: sched, clipnorm: cn,
                      clipvalue: cv, globalClipnorm: gc)
        case "RMSprop", "rmsprop":
            o = RMSprop(learningRate: rate, rho: try d("rho", 0.9), momentum: try d("momentum", 0), epsilon: try d("epsilon", 1e-7),
                        centered: c["centered"] as? Bool ?? false, schedule: sched, clipnorm: cn, clipvalue: cv, globalClipnorm: gc,
                        weightDecay: wd)
        case "Adagrad", "adagrad":
            o = Adagrad(learningRate: rate, initialAccumulatorValue: try d("initial_accumulator_value", 0.1),
                        epsilon: try d("epsilon", 1e-7), schedule: sched, clipnorm: cn, clipvalue: cv, globalClipnorm: gc, weightDecay: wd)
        case "Nadam", "nadam":
            o = Nadam(learningRate: rate, beta1: try d("beta_1", 0.9), beta2: try d("beta_2", 0.999), epsilon: try d("epsilon", 1e-7),
                      schedule: sched, clipnorm: cn, clipvalue: cv, globalClipnorm: gc, weightDecay: wd)
        case "Lion", "lion":
            o = Lion(learningRate: rate, beta1: try d("beta_1", 0.9), beta2: try d("beta_2", 0.99), schedule: sched, clipnorm: cn,
                     clipvalue: cv, globalClipnorm: gc, weightDecay: wd)
        default:
            throw EngineError.notImplemented("the optimizer \(name) is not in SwiftKeras yet")
        }
        return o
    }

    /// Keras's build: which slots each `add_optimizer_variables` call creates, in call order
    /// (interleaved per weight within a call).
    private var kerasSlotCalls: [[Int]] {
        switch self {
        case let o as SGD: return o.momentum != 0 ? [[0]] : []
        case let o as Adam: return o.amsgrad ? [[0, 1], [2]] : [[0, 1]]
        case let o as RMSprop: return [[0]] + (o.momentum > 0 ? [[1]] : []) + (o.centered ? [[2]] : [])
        case is Nadam: return [[0, 1]]
        default: return [[0]]  // Adagrad, Lion
        }
    }

    /// Where each of Keras's variables lives here, in Keras's order.
    private func kerasVariables(_ parameters: [Parameter]) throws -> [VariableRef] {
        try createSlots(parameters)
        // Keras's iterations is an int32 variable on JAX, which writes the files compared against.
        var refs = [VariableRef(get: { try TensorEngine.scalar(Double(self.iterations), .int32) },
                                set: { self.iterations = try count(["iterations": $0.double(at: 0)], "iterations") })]
        if schedule == nil {
            refs.append(VariableRef(get: { try TensorEngine.scalar(self.learningRate, .float32) },
                                    set: { self.learningRate = try $0.double(at: 0) }))
        }
        for call in kerasSlotCalls {
            for p in parameters {
                let key = ObjectIdentifier(p)
                for i in call {
                    refs.append(VariableRef(get: {
                        guard let s = self.slots[key], i < s.count else { throw EngineError.internal("optimizer slot \(i) missing") }
                        return s[i]
                    }, set: { self.slots[key]?[i] = $0 }))
                }
            }
        }
        if let n = self as? Nadam {
            let dtype = parameters.first?.value.dtype ?? .float32
            refs.append(VariableRef(get: { try TensorEngine.scalar(n.uProduct, dtype) }, set: { n.uProduct = try $0.double(at: 0) }))
        }
        return refs
    }

    /// Writes Keras's optimizer/vars for `parameters` (the model's trainable weights).
    func save(to file: H5File, _ parameters: [Parameter]) throws {
        try file.makeGroups("optimizer/vars")
        for (i, v) in try kerasVariables(parameters).enumerated() { try file.write("optimizer/vars/\(i)", try v.get()) }
    }

    /// Restores optimizer/vars. A file whose count differs (an optimizer that never stepped
    /// holds only its iterations and learning rate) leaves the slots fresh, as Keras does,
    /// with a warning when the state is neither complete nor that.
    func load(from file: H5File, _ parameters: [Parameter], path: String) throws {
        guard file.exists("optimizer/vars") else { return }
        let stored = try file.members("optimizer/vars").filter { Int($0) != nil }.count
        let refs = try kerasVariables(parameters)
        let base = schedule == nil ? 2 : 1
        let count = stored == refs.count ? refs.count : (stored == base ? base : 0)
        if count == 0 {
            FileHandle.standardError.write(Data(("SwiftKeras: '\(path)': the optimizer state holds \(stored) variables, "
                                                 + "this optimizer has \(refs.count): its state starts fresh\n").utf8))
        }
        for i in 0..<count {
            let t = try file.read("optimizer/vars/\(i)")
            let want = try refs[i].get()
            guard t.shape == want.shape else {
                throw EngineError.value("'\(path)': optimizer/vars/\(i) has shape \(t.shape), the optimizer expects \(want.shape)")
            }
            try refs[i].set(t.dtype == want.dtype ? t : try cast(t, to: want.dtype))
        }
    }
}

/// One optimizer variable as Keras lists it.
private struct VariableRef {
    let get: () throws -> Tensor
    let set: (Tensor) throws -> Void
}

// MARK: losses and metrics

extension Loss {
    /// As Keras serializes it: the name, or the class with its options.
    var kerasConfig: Any {
        let base: [String: Any] = ["name": name, "reduction": "sum_over_batch_size"]
        func object(_ className: String, _ extra: [String: Any]) -> Any {
            kerasObject("keras.losses", className, base.merging(extra) { _, b in b })
        }
        switch self {
        case .sparseCategoricalCrossentropy(true): return object("SparseCategoricalCrossentropy", ["from_logits": true, "ignore_class": NSNull()])
        case .categoricalCrossentropy(true):
            return object("CategoricalCrossentropy", ["from_logits": true, "label_smoothing": 0.0, "axis": -1])
        case .binaryCrossentropy(true): return object("BinaryCrossentropy", ["from_logits": true, "label_smoothing": 0.0, "axis": -1])
        case .huber(let delta) where delta != 1: return object("Huber", ["name": "huber_loss", "delta": delta])
        default: return name
        }
    }

    /// A loss from a compile_config entry: a name, a function, or a Keras loss object.
    init(keras v: Any) throws {
        let (name, c) = try unwrap(v, "loss")
        let classes = ["SparseCategoricalCrossentropy": "sparse_categorical_crossentropy",
                       "CategoricalCrossentropy": "categorical_crossentropy", "BinaryCrossentropy": "binary_crossentropy",
                       "MeanSquaredError": "mean_squared_error", "MeanAbsoluteError": "mean_absolute_error", "Huber": "huber"]
        guard let snake = classes[name] else {
            try self.init(name)
            return
        }
        if let r = c["reduction"] as? String, r != "sum_over_batch_size" {
            throw EngineError.notImplemented("the loss \(name) with reduction '\(r)' is not in SwiftKeras yet")
        }
        if try double(c, "label_smoothing", 0) != 0 { throw EngineError.notImplemented("the loss \(name) with label_smoothing is not in SwiftKeras yet") }
        if let a = c["axis"] as? NSNumber, a.intValue != -1 { throw EngineError.notImplemented("the loss \(name) with axis \(a) is not in SwiftKeras yet") }
        if let i = c["ignore_class"], !(i is NSNull) { throw EngineError.notImplemented("the loss \(name) with ignore_class is not in SwiftKeras yet") }
        let logits = c["from_logits"] as? Bool ?? false
        switch snake {
        case "sparse_categorical_crossentropy": self = .sparseCategoricalCrossentropy(fromLogits: logits)
        case "categorical_crossentropy": self = .categoricalCrossentropy(fromLogits: logits)
        case "binary_crossentropy": self = .binaryCrossentropy(fromLogits: logits)
        case "huber": self = .huber(delta: try double(c, "delta", 1))
        default: try self.init(snake)
        }
    }
}

/// A metric entry of a compile_config: its Keras name (a string, or a metric object's name).
private func metricName(_ v: Any) throws -> String {
    if let s = v as? String { return s }
    let (className, c) = try unwrap(v, "metric")
    if (v as? [String: Any])?["class_name"] as? String == "function" { return className }  // keras.metrics.mae, ...
    let known = ["MeanAbsoluteError": "mean_absolute_error", "MeanSquaredError": "mean_squared_error", "AUC": "auc",
                 "Precision": "precision", "Recall": "recall", "SparseCategoricalAccuracy": "sparse_categorical_accuracy",
                 "CategoricalAccuracy": "categorical_accuracy", "BinaryAccuracy": "binary_accuracy"]
    // (keras.metrics.Accuracy counts exact equality, not what the name "accuracy" resolves to: not mapped.)
    // Only the default options: SwiftKeras's metrics by name take none.
    guard let name = known[className], c.keys.allSatisfy({ ["name", "dtype"].contains($0) }) else {
        throw EngineError.notImplemented("the metric \(className) with options \(c.keys.sorted()) is not in SwiftKeras yet")
    }
    return name
}

// MARK: the model's compile state

extension Model {
    /// Keras's compile_config for the current compile (nil when not compiled).
    func compileConfig() throws -> [String: Any]? {
        guard let compiled = compiled, let optimizer = optimizer else { return nil }
        guard let keras = optimizer as? KerasOptimizer else {
            throw EngineError.notImplemented("the optimizer \(type(of: optimizer)) is not one of Keras's")
        }
        let single = outputCount == 1
        let losses = compiled.losses.map { $0.kerasConfig }
        return [
            "optimizer": try keras.kerasConfig(),
            "loss": single ? losses[0] : losses,
            "loss_weights": compiled.lossWeights.allSatisfy({ $0 == 1 }) ? NSNull() : (single ? compiled.lossWeights[0] : compiled.lossWeights) as Any,
            "metrics": single ? compiled.metricNames[0] : compiled.metricNames,
            "weighted_metrics": NSNull(), "run_eagerly": false, "steps_per_execution": 1,
            "jit_compile": compiledTrainStep != nil,
        ]
    }

    /// Compiles as a compile_config says (Keras's compile_from_config).
    func compile(fromKeras c: [String: Any]) throws {
        guard let opt = c["optimizer"], !(opt is NSNull) else { throw EngineError.value("compile_config has no optimizer") }
        let optimizer = try KerasOptimizer.from(keras: opt)
        let names = outputNames
        /// One entry per output: from a dict by output name, a list with one entry per output
        /// (`isList`), or one value for every output.
        func perOutput(_ v: Any?, _ what: String, isList: ([Any]) -> Bool) throws -> [Any?] {
            guard let v = v, !(v is NSNull) else { return Array(repeating: nil, count: outputCount) }
            if let d = v as? [String: Any], d["class_name"] == nil {
                for k in d.keys where !names.contains(k) { throw EngineError.value("compile_config: \(what) names the unknown output '\(k)'") }
                return names.map { d[$0] }
            }
            if let a = v as? [Any], isList(a) {
                guard a.count == outputCount else { throw EngineError.value("compile_config: \(a.count) \(what) for \(outputCount) output(s)") }
                return a
            }
            return Array(repeating: v, count: outputCount)
        }
        // A list of losses is per output; a list of metrics is per output when it holds lists.
        let losses = try perOutput(c["loss"], "losses", isList: { _ in true }).map { v -> Loss in
            guard let v = v, !(v is NSNull) else { throw EngineError.notImplemented("an output without a loss is not in SwiftKeras yet") }
            return try Loss(keras: v)
        }
        let weights = try perOutput(c["loss_weights"], "loss weights", isList: { _ in true }).map { v -> Double in
            guard let v = v, !(v is NSNull) else { return 1 }
            guard let n = v as? NSNumber else { throw EngineError.value("compile_config: a loss weight is \(v)") }
            return n.doubleValue
        }
        let metrics = try perOutput(c["metrics"], "metrics", isList: { $0.contains { $0 is [Any] || $0 is NSNull } }).map { v -> [String] in
            guard let v = v, !(v is NSNull) else { return [] }
            return try (v as? [Any] ?? [v]).map(metricName)
        }
        if let w = c["weighted_metrics"], !(w is NSNull), !((w as? [Any])?.isEmpty ?? false) {
            throw EngineError.notImplemented("weighted_metrics are not in SwiftKeras yet")
        }
        let jit = (c["jit_compile"] as? Bool) ?? true
        try compile(optimizer: optimizer, losses: losses, lossWeights: weights, metrics: metrics[0], jitCompile: jit)
        compiled?.metricNames = metrics
        _ = try compiled?.makeMetrics(outputNames)
    }
}
