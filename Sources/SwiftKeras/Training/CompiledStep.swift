import Foundation
import TensorEngine

// Compiled train steps: `fit`'s step traced once per input signature into an engine
// program (Tracer.swift) and replayed per batch in one call, as Keras's `fit` on the swift
// backend does (python/keras_swift/src/compiled.py).
//
// The program's inputs are the state the step reads (every model weight, the optimizer's
// slots), the batch, and the host values that change from step to step (a learning rate
// from a schedule, Adam's α_t, Nadam's momentum factors, a dropout layer's seed), declared
// where the step reads them (`StepInputs`). Its outputs are the loss, the model's outputs (for the metrics) and the
// new value of every piece of state the step replaced; a replay assigns those, and redoes
// the step's host-side bookkeeping (the optimizer's step count; the step inputs' producers
// advance their own counters).
//
// The traced call is the eager step itself, so it is always a correct step. What a replay
// could get wrong makes the step run eagerly from then on, with one warning naming the
// cause: the tracer's own reasons (a custom gradient, ...), a tensor the program would
// hold as a constant (a result computed by a typed engine call rather than through the
// registry, so not recorded: see Ops.swift; a replay would reuse the first step's value),
// an optimizer from outside SwiftKeras, a layer from outside SwiftKeras (its call may read
// values on the host). Random draws (Dropout, the RNNs' masks, the noise layers) take their
// seeds as step inputs (`CallSeeds`), so every replay draws anew.

/// Host values a step reads that change from step to step. Outside a trace, `value` is
/// `make()`; while a step is traced, the value is also declared a program input and `make`
/// is kept, to be run again before each replay for that step's value. `make` may advance
/// host state (a seed counter): it runs exactly once per step, traced or replayed.
final class StepInputs {
    private static let key = "SwiftKeras.StepInputs"
    private(set) var producers: [() throws -> Tensor] = []
    /// Values already declared in this trace, by key (one learning rate for every weight).
    private var shared: [String: Tensor] = [:]

    /// The recorder of the step being traced on this thread.
    static var current: StepInputs? { Thread.current.threadDictionary[key] as? StepInputs }

    static func recording<R>(_ recorder: StepInputs, _ body: () throws -> R) rethrows -> R {
        Thread.current.threadDictionary[key] = recorder
        defer { Thread.current.threadDictionary[key] = nil }
        return try body()
    }

    /// This step's value of `make`; `key` (unique to the value's owner) lets several reads in
    /// one step share one value, when `make` has no side effect.
    static func value(_ key: String? = nil, _ make: @escaping () throws -> Tensor) throws -> Tensor {
        guard let r = current else { return try make() }
        if let k = key, let t = r.shared[k] { return t }
        let t = try make()
        try Tracer.declareInput(t)
        r.producers.append(make)
        if let k = key { r.shared[k] = t }
        return t
    }

    /// A 0-d tensor of `dtype` holding `value()`.
    static func scalar(_ key: String, _ dtype: DType, _ value: @escaping () -> Double) throws -> Tensor {
        try self.value("\(key):\(dtype.name)") { try TensorEngine.scalar(value(), dtype) }
    }
}

/// A layer's random draws in training: the seed pair (seed, n) for its n-th call, read as a
/// step input, so that a compiled step draws anew every step as an eager one does.
final class CallSeeds {
    let seed: Int
    private var calls = 0

    init(seed: Int) { self.seed = seed }

    /// The config's "seed", else one derived from the layer's name: two unseeded layers of one
    /// model then draw different masks (FNV-1a, stable across runs, unlike `hashValue`).
    convenience init(config: [String: Any], name: String) {
        if let s = config["seed"] as? NSNumber {
            self.init(seed: s.intValue)
        } else {
            var h: UInt32 = 2166136261
            for b in name.utf8 { h = (h ^ UInt32(b)) &* 16777619 }
            self.init(seed: Int(h))
        }
    }

    /// This call's seed pair (advances the count once per call, traced or replayed).
    func next() throws -> Tensor {
        try StepInputs.value {
            self.calls += 1
            return try Tensor([Int64(self.seed), Int64(self.calls)])
        }
    }
}

/// One piece of state a step reads and may replace.
struct StateRef {
    let get: () -> Tensor
    let set: (Tensor) -> Void
}

/// `fit`'s compiled step for one model and optimizer (created by `compile`).
final class CompiledTrainStep {
    private struct Entry {
        let program: Program
        let producers: [() throws -> Tensor]
        /// The indices (into the state list) of the state the step replaces, in output order.
        let assigned: [Int]
        let outputCount: Int
    }
    private var programs: [String: Entry] = [:]
    /// Why the step runs eagerly; nil while it compiles.
    private(set) var eagerReason: String?
    /// Steps traced (whether or not the trace could be compiled) and steps replayed.
    private(set) var traces = 0, replays = 0
    private var layersChecked = false

    /// Runs one step, compiled when it can be; returns the loss and the (detached) outputs.
    func step(_ model: Model, _ xs: [Tensor], _ ys: [Tensor], sampleWeight: Tensor?, optimizer: Optimizer,
              compiled: Compiled, parameters: [Parameter]) throws -> (loss: Double, outputs: [Tensor]) {
        func eager() throws -> (loss: Double, outputs: [Tensor]) {
            let (loss, outs) = try model.trainStepTensors(xs, ys, sampleWeight: sampleWeight, optimizer: optimizer,
                                                          compiled: compiled, parameters: parameters)
            return (try loss.double(at: 0), outs.map(stopGradient))
        }
        // A fit called inside someone else's trace is recorded there as it runs.
        guard eagerReason == nil, !Tracer.isActive else { return try eager() }
        if !layersChecked, let reason = CompiledTrainStep.layerBlocker(model) {
            giveUp(reason)
            return try eager()
        }
        layersChecked = true
        guard let keras = optimizer as? KerasOptimizer else {
            giveUp("the optimizer \(type(of: optimizer)) is not one of SwiftKeras's (its update may read values on the host)")
            return try eager()
        }
        // Checked every step: the options are variables, and a program traced without them would ignore them.
        if let reason = keras.compileBlocker {
            giveUp(reason)
            return try eager()
        }
        try keras.createSlots(parameters)
        let state = CompiledTrainStep.state(model, keras, parameters)
        let batch = xs + ys + (sampleWeight.map { [$0] } ?? [])
        let (inputs, aliasing) = unique(state.map { $0.get() } + batch)
        // The signature: the inputs' dtypes and shapes, which are the same tensor, what the batch
        // holds, which weights train, and the optimizer options a trace builds in.
        let key = "\(inputs.map(TensorSpec.init(of:)))|\(aliasing)|\(sampleWeight == nil ? 0 : 1)|\(xs.count),\(ys.count)|"
            + "\(parameters.map { ObjectIdentifier($0).hashValue })|\(keras.tracedOptions)"
        guard let entry = programs[key] else {
            return try trace(key, model, xs, ys, sampleWeight, keras, compiled, parameters, state, inputs)
        }
        replays += 1
        let args = try inputs + entry.producers.map { try $0() }
        let outs = try entry.program.run(inputs: args)
        let n = entry.outputCount
        for (i, s) in entry.assigned.enumerated() { state[s].set(outs[1 + n + i]) }
        keras.finishReplayedStep()
        return (try outs[0].double(at: 0), Array(outs[1..<(1 + n)]))
    }

    private func trace(_ key: String, _ model: Model, _ xs: [Tensor], _ ys: [Tensor], _ sampleWeight: Tensor?,
                       _ optimizer: KerasOptimizer, _ compiled: Compiled, _ parameters: [Parameter], _ state: [StateRef],
                       _ inputs: [Tensor]) throws -> (loss: Double, outputs: [Tensor]) {
        traces += 1
        let before = state.map { $0.get() }
        let recorder = StepInputs()
        try Tracer.begin()
        let result: (loss: Tensor, outputs: [Tensor])
        do {
            for t in inputs { try Tracer.declareInput(t) }
            result = try StepInputs.recording(recorder) {
                try model.trainStepTensors(xs, ys, sampleWeight: sampleWeight, optimizer: optimizer, compiled: compiled,
                                           parameters: parameters)
            }
        } catch {
            Tracer.abort()
            throw error
        }
        let (loss, outs) = result
        let program: Program
        // The step has run (eagerly, while recording); what follows only decides whether
        // later steps replay it.
        let assigned = state.indices.filter { state[$0].get() !== before[$0] }
        do {
            program = try Tracer.end(outputs: [loss] + outs + assigned.map { state[$0].get() })
        } catch {
            giveUp(describe(error))
            return (try loss.double(at: 0), outs.map(stopGradient))
        }
        if let c = program.constants.first {
            giveUp("a tensor of \(TensorSpec(of: c.tensor)) was computed outside the engine's op registry (a layer, loss or "
                   + "optimizer SwiftKeras cannot compile yet), so a replay would reuse the first step's value")
        } else {
            do {
                programs[key] = Entry(program: try program.optimized(), producers: recorder.producers, assigned: assigned,
                                      outputCount: outs.count)
            } catch {
                giveUp(describe(error))
            }
        }
        return (try loss.double(at: 0), outs.map(stopGradient))
    }

    private func describe(_ error: Error) -> String { (error as? EngineError)?.message ?? "\(error)" }

    private func giveUp(_ reason: String) {
        eagerReason = reason
        programs = [:]
        FileHandle.standardError.write(Data(("SwiftKeras: fit runs its train step eagerly instead of compiled: \(reason). "
                                             + "Pass jitCompile: false to compile() to silence this.\n").utf8))
    }

    /// Why a step through `model` cannot be compiled, found before tracing (the layers are fixed).
    static func layerBlocker(_ model: Model) -> String? {
        for layer in model.allLayers where !layer.compilesInTrainStep {
            return "layer '\(layer.name)' is a \(String(reflecting: type(of: layer))), defined outside SwiftKeras "
                + "(its call may read values on the host; it may say otherwise with compilesInTrainStep)"
        }
        return nil
    }

    /// The state a step reads: every weight of the model and the layers' config tensors, then the optimizer's slots.
    private static func state(_ model: Model, _ optimizer: KerasOptimizer, _ parameters: [Parameter]) -> [StateRef] {
        var seen = Set<ObjectIdentifier>()
        let all = model.layers.flatMap { $0.weightGroups.flatMap { $0.weights } } + model.allLayers.flatMap(\.configTensors)
            + parameters
        let weights = all.filter { seen.insert(ObjectIdentifier($0)).inserted }
        return weights.map { p in StateRef(get: { p.value }, set: { p.value = $0 }) } + optimizer.slotRefs(parameters)
    }

    /// Each tensor once (the program takes each once), and for every position the index of
    /// its first occurrence (part of the signature).
    private func unique(_ ts: [Tensor]) -> ([Tensor], [Int]) {
        var first: [ObjectIdentifier: Int] = [:], out: [Tensor] = [], pattern: [Int] = []
        for (i, t) in ts.enumerated() {
            let id = ObjectIdentifier(t)
            if let j = first[id] { pattern.append(j); continue }
            first[id] = i
            pattern.append(i)
            out.append(t)
        }
        return (out, pattern)
    }
}

/// `evaluate`'s and `predict`'s batches compiled (with `compile(..., jitCompile: true)`): the
/// forward pass at inference, and for evaluate the losses, traced per batch signature and
/// replayed. The program reads the model's weights and the batch and assigns nothing. Runs
/// are serialised by a lock, since `predict` may be called from several threads.
final class CompiledInference {
    private var programs: [String: Program] = [:]
    private(set) var eagerReason: String?
    private(set) var traces = 0, replays = 0
    private var layersChecked = false
    private let lock = NSLock()

    /// `body()`'s outputs; `batch` holds every tensor `body` reads besides the weights, and
    /// `kind` tells apart bodies that differ for one batch signature.
    func run(_ model: Model, _ batch: [Tensor], kind: String, _ body: () throws -> [Tensor]) throws -> [Tensor] {
        lock.lock()
        defer { lock.unlock() }
        guard eagerReason == nil, !Tracer.isActive else { return try body() }
        if !layersChecked, let reason = CompiledTrainStep.layerBlocker(model) {
            giveUp(reason)
            return try body()
        }
        layersChecked = true
        var seen = Set<ObjectIdentifier>()
        let weights = (model.layers.flatMap { $0.weightGroups.flatMap { $0.weights } } + model.allLayers.flatMap(\.configTensors))
            .filter { seen.insert(ObjectIdentifier($0)).inserted }
        var firstAt: [ObjectIdentifier: Int] = [:], inputs: [Tensor] = [], pattern: [Int] = []
        for (i, t) in (weights.map { $0.value } + batch).enumerated() {
            if let j = firstAt[ObjectIdentifier(t)] { pattern.append(j); continue }
            firstAt[ObjectIdentifier(t)] = i
            pattern.append(i)
            inputs.append(t)
        }
        let key = "\(kind)|\(inputs.map(TensorSpec.init(of:)))|\(pattern)|\(inputs.map(\.requiresGrad))"
        if let program = programs[key] {
            replays += 1
            return try program.run(inputs: inputs)
        }
        traces += 1
        try Tracer.begin()
        let outs: [Tensor]
        do {
            for t in inputs { try Tracer.declareInput(t) }
            outs = try body()
        } catch {
            Tracer.abort()
            throw error
        }
        let program: Program
        do {
            program = try Tracer.end(outputs: outs)
        } catch {
            giveUp((error as? EngineError)?.message ?? "\(error)")
            return outs
        }
        if let c = program.constants.first {
            giveUp("a tensor of \(TensorSpec(of: c.tensor)) was computed outside the engine's op registry (a layer or loss "
                   + "SwiftKeras cannot compile yet), so a replay would reuse the first batch's value")
        } else {
            do { programs[key] = try program.optimized() } catch { giveUp((error as? EngineError)?.message ?? "\(error)") }
        }
        return outs
    }

    private func giveUp(_ reason: String) {
        eagerReason = reason
        programs = [:]
        FileHandle.standardError.write(Data(("SwiftKeras: evaluate and predict run eagerly instead of compiled: \(reason). "
                                             + "Pass jitCompile: false to compile() to silence this.\n").utf8))
    }
}
