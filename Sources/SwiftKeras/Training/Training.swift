import Foundation
import TensorEngine

/// What `compile` fixed: one loss per output (weighted), the metrics' names per output.
struct Compiled {
    var losses: [Loss]
    var lossWeights: [Double]
    var metricNames: [[String]]
    var outputUnits: [Int?]
    /// The layers' weight and activity regularizers and weight constraints.
    var regularization = Regularization()

    /// Fresh metric instances (one set per fit epoch or evaluate call), named as Keras names
    /// them: "accuracy", or "<output>_accuracy" when the model has several outputs.
    func makeMetrics(_ outputNames: [String]) throws -> [[Metric]] {
        try metricNames.enumerated().map { k, names in
            try names.map { name in
                let m = try Metrics.named(name, loss: losses[k], outputUnits: outputUnits[k])
                return outputNames.count > 1 ? m.renamed(outputNames[k] + "_" + m.name) : m
            }
        }
    }
}

extension Metric {
    /// The same metric reported under another name.
    func renamed(_ name: String) -> Metric { RenamedMetric(self, name) }
}

private final class RenamedMetric: Metric {
    let inner: Metric, name: String
    init(_ inner: Metric, _ name: String) {
        self.inner = inner
        self.name = name
    }
    func update(_ yTrue: Tensor, _ yPred: Tensor, sampleWeight: Tensor?) throws { try inner.update(yTrue, yPred, sampleWeight: sampleWeight) }
    func result() -> Double { inner.result() }
    func reset() { inner.reset() }
}

/// How `fit` reports progress.
public enum Verbosity {
    /// Nothing.
    case silent
    /// A progress bar on a terminal, one line per epoch otherwise (Keras's "auto").
    case auto
    case progressBar
    case epochLines
}

/// The rows `idx` of each tensor.
private func rows(_ ts: [Tensor], _ idx: Tensor) throws -> [Tensor] { try ts.map { try take($0, idx, axis: 0) } }

/// A permutation of 0..<n, a pure function of (seed, epoch) (Fisher-Yates on a 64-bit LCG).
func shuffledOrder(_ n: Int, seed: UInt64, epoch: Int) -> [Int] {
    var order = Array(0..<n), rng = (seed &+ 0x9E37_79B9_7F4A_7C15) &* UInt64(epoch + 1)
    for i in stride(from: n - 1, to: 0, by: -1) {
        rng = rng &* 6364136223846793005 &+ 1442695040888963407
        order.swapAt(i, Int((rng >> 33) % UInt64(i + 1)))
    }
    return order
}

extension Model {
    // MARK: compile

    /// Sets the optimizer, one loss for every output (or one per output), and metrics by
    /// Keras's names ("accuracy", "mae", "auc", "precision", ...), computed for each output.
    /// With `jitCompile` (Keras's `jit_compile`), `fit` traces its train step once per batch
    /// signature and replays it (CompiledStep.swift); a step that cannot be compiled runs
    /// eagerly, with one warning naming the cause.
    public func compile(optimizer: Optimizer, loss: Loss, metrics: [String] = [], jitCompile: Bool = true) throws {
        try compile(optimizer: optimizer, losses: Array(repeating: loss, count: outputCount), metrics: metrics,
                    jitCompile: jitCompile)
    }

    public func compile(optimizer: Optimizer, losses: [Loss], lossWeights: [Double]? = nil, metrics: [String] = [],
                        jitCompile: Bool = true) throws {
        guard losses.count == outputCount else {
            throw EngineError.value("model '\(name)' has \(outputCount) output(s), compile got \(losses.count) loss(es)")
        }
        let weights = lossWeights ?? Array(repeating: 1, count: outputCount)
        guard weights.count == outputCount else {
            throw EngineError.value("model '\(name)': \(weights.count) loss weights for \(outputCount) output(s)")
        }
        let units = try outputUnits()
        let compiled = Compiled(losses: losses, lossWeights: weights, metricNames: Array(repeating: metrics, count: outputCount),
                                outputUnits: units, regularization: try Regularization(self))
        _ = try compiled.makeMetrics(outputNames)  // unknown names fail here, not in fit
        self.optimizer = optimizer
        self.compiled = compiled
        compiledTrainStep = jitCompile ? CompiledTrainStep() : nil
        compiledInference = jitCompile ? CompiledInference() : nil
    }

    var outputCount: Int { outputNames.count }

    /// The last dimension of each output, from one forward pass on a single zero sample.
    private func outputUnits() throws -> [Int?] {
        // Free dimensions (sequence lengths) get size 1; a model that cannot run on that
        // leaves the units unknown, which only affects how "accuracy" resolves.
        let xs = try inputs.map { try zeros([1] + $0.batchShape.dropFirst().map { $0 ?? 1 }, dtype: $0.dtype) }
        guard let ys = try? Tape.paused({ try predict(xs) }) else { return Array(repeating: nil, count: outputCount) }
        return ys.map { $0.shape.last }
    }

    /// The weights `fit` trains: trainable parameters of layers whose config leaves them trainable.
    public var trainableWeights: [Parameter] {
        var seen = Set<ObjectIdentifier>()
        return layerPaths.filter { ($0.layer.config["trainable"] as? Bool) ?? true }
            .flatMap { $0.layer.weightGroups.flatMap { $0.weights } }
            .filter { $0.trainable && seen.insert(ObjectIdentifier($0)).inserted }
    }

    private func requireCompiled() throws -> (Optimizer, Compiled) {
        guard let o = optimizer, let c = compiled else { throw EngineError.value("model '\(name)' is not compiled: call compile first") }
        return (o, c)
    }

    private func checkData(_ xs: [Tensor], _ ys: [Tensor], _ sampleWeight: Tensor?) throws -> Int {
        guard xs.count == inputs.count else { throw EngineError.value("model '\(name)' takes \(inputs.count) input(s), got \(xs.count)") }
        guard ys.count == outputCount else { throw EngineError.value("model '\(name)' has \(outputCount) output(s), got \(ys.count) target(s)") }
        guard let n = xs.first?.shape.first else { throw EngineError.value("model inputs need a batch dimension") }
        for t in xs + ys + (sampleWeight.map { [$0] } ?? []) where t.shape.first != n {
            throw EngineError.value("inputs, targets and sample weights need the same number of rows (\(n)), got \(t.shape)")
        }
        return n
    }

    // MARK: fit

    /// One gradient step on a batch; returns the weighted loss and the (detached) outputs.
    func trainStep(_ xs: [Tensor], _ ys: [Tensor], sampleWeight: Tensor?, optimizer: Optimizer, compiled: Compiled,
                   parameters: [Parameter]) throws -> (loss: Double, outputs: [Tensor]) {
        if let step = compiledTrainStep {
            return try step.step(self, xs, ys, sampleWeight: sampleWeight, optimizer: optimizer, compiled: compiled,
                                 parameters: parameters)
        }
        let (loss, outs) = try trainStepTensors(xs, ys, sampleWeight: sampleWeight, optimizer: optimizer, compiled: compiled,
                                                parameters: parameters)
        return (try loss.double(at: 0), outs.map(stopGradient))
    }

    /// The step itself, eager (or being traced): the weighted loss and the outputs, as tensors.
    func trainStepTensors(_ xs: [Tensor], _ ys: [Tensor], sampleWeight: Tensor?, optimizer: Optimizer, compiled: Compiled,
                          parameters: [Parameter]) throws -> (loss: Tensor, outputs: [Tensor]) {
        Tape.push()
        var pushed = true
        defer { if pushed { try? Tape.pop() } }
        let (outs, activity) = try ActivityLosses.run(self, xs, training: true, compiled.regularization.activity)
        var total: Tensor?
        for (k, out) in outs.enumerated() {
            var l = try compiled.losses[k](ys[k], out, sampleWeight: sampleWeight)
            if compiled.lossWeights[k] != 1 { l = try Ops.multiply(l, try Ops.scalar(compiled.lossWeights[k], l.dtype)) }
            total = try total.map { try Ops.add($0, l) } ?? l
        }
        guard var loss = total else { throw EngineError.value("model '\(name)' has no outputs") }
        if let extra = try compiled.regularization.penalty(activity) { loss = try Ops.add(loss, try Ops.cast(extra, to: loss.dtype)) }
        let grads = try Tape.gradient(of: loss, wrt: parameters.map { $0.value })
        // Popped before the update (which runs untaped): a trace must end with no tape it pushed.
        pushed = false
        try Tape.pop()
        try optimizer.apply(grads, to: parameters)
        // Keras projects the constrained weights after the update, every step.
        try compiled.regularization.applyConstraints(parameters)
        return (loss, outs)
    }

    /// Trains for `epochs`, Keras's `fit`: mini-batches of `batchSize` (reshuffled each epoch
    /// unless `shuffle` is false), validation on the last `validationSplit` of the rows (taken
    /// before shuffling) or on `validationData`, per-sample weights from `sampleWeight` times
    /// `classWeight[label]`. Returns the History (also passed to the callbacks).
    @discardableResult
    public func fit(x: [Tensor], y: [Tensor], batchSize: Int = 32, epochs: Int = 1, verbose: Verbosity = .auto,
                    callbacks: [Callback] = [], validationSplit: Double = 0, validationData: (x: [Tensor], y: [Tensor])? = nil,
                    shuffle: Bool = true, classWeight: [Int: Double]? = nil, sampleWeight: Tensor? = nil,
                    initialEpoch: Int = 0, seed: UInt64 = 0) throws -> History {
        let (optimizer, compiled) = try requireCompiled()
        var n = try checkData(x, y, sampleWeight)
        guard batchSize > 0, epochs >= 0, initialEpoch >= 0 else {
            throw EngineError.value("fit: batchSize must be positive, epochs and initialEpoch non-negative")
        }
        guard validationSplit >= 0 && validationSplit < 1 else { throw EngineError.value("fit: validationSplit must be in [0, 1)") }
        var (xs, ys, weights) = (x, y, sampleWeight)
        if let cw = classWeight {
            guard ys.count == 1 else { throw EngineError.value("fit: classWeight needs a model with one output") }
            let perClass = try Model.classWeights(ys[0], cw)
            weights = try weights.map { try multiply(try cast($0, to: .float32), perClass) } ?? perClass
        }
        var validation = validationData
        if validationSplit > 0 {
            guard validationData == nil else { throw EngineError.value("fit: give validationSplit or validationData, not both") }
            let cut = Int(Double(n) * (1 - validationSplit))
            guard cut > 0 && cut < n else { throw EngineError.value("fit: validationSplit \(validationSplit) leaves no rows on one side of \(n)") }
            let head = try arange(start: 0, stop: Double(cut), dtype: .int64)
            let tail = try arange(start: Double(cut), stop: Double(n), dtype: .int64)
            validation = (try rows(xs, tail), try rows(ys, tail))
            (xs, ys) = (try rows(xs, head), try rows(ys, head))
            weights = try weights.map { try take($0, head, axis: 0) }
            n = cut
        }
        if let v = validation { _ = try checkData(v.x, v.y, nil) }

        let steps = (n + batchSize - 1) / batchSize
        let history = History()
        var all: [Callback] = [history] + callbacks
        switch verbose {
        case .silent: break
        case .auto: all.append(ProgressBar(steps: steps, epochs: epochs, interactive: ProgressBar.stdoutIsTerminal))
        case .progressBar: all.append(ProgressBar(steps: steps, epochs: epochs, interactive: true))
        case .epochLines: all.append(ProgressBar(steps: steps, epochs: epochs, interactive: false))
        }
        let parameters = trainableWeights
        stopTraining = false
        for c in all { try c.onTrainBegin(self) }
        var logs: Logs = [:]
        for epoch in initialEpoch..<max(initialEpoch, epochs) {
            for c in all { try c.onEpochBegin(self, epoch: epoch) }
            let order = shuffle ? shuffledOrder(n, seed: seed, epoch: epoch) : Array(0..<n)
            let lossTracker = MeanMetric(name: "loss") { _, _ in [] }
            let metrics = try compiled.makeMetrics(outputNames)
            for step in 0..<steps {
                let idx = try Tensor(order[(step * batchSize)..<min(n, (step + 1) * batchSize)].map { Int64($0) })
                let by = try rows(ys, idx), bw = try weights.map { try take($0, idx, axis: 0) }
                let (loss, outs) = try trainStep(try rows(xs, idx), by, sampleWeight: bw, optimizer: optimizer,
                                                 compiled: compiled, parameters: parameters)
                lossTracker.add(loss, weight: Double(idx.count))
                for (k, out) in outs.enumerated() { for m in metrics[k] { try m.update(by[k], out, sampleWeight: bw) } }
                logs = Model.logs(lossTracker, metrics)
                for c in all { try c.onBatchEnd(self, batch: step, logs: logs) }
            }
            if let v = validation {
                for (k, value) in try evaluate(x: v.x, y: v.y, batchSize: batchSize) { logs["val_" + k] = value }
            }
            for c in all { try c.onEpochEnd(self, epoch: epoch, logs: logs) }
            if stopTraining { break }
        }
        for c in all { try c.onTrainEnd(self, logs: logs) }
        return history
    }

    /// One-input, one-output `fit`.
    @discardableResult
    public func fit(x: Tensor, y: Tensor, batchSize: Int = 32, epochs: Int = 1, verbose: Verbosity = .auto,
                    callbacks: [Callback] = [], validationSplit: Double = 0, validationData: (x: Tensor, y: Tensor)? = nil,
                    shuffle: Bool = true, classWeight: [Int: Double]? = nil, sampleWeight: Tensor? = nil,
                    initialEpoch: Int = 0, seed: UInt64 = 0) throws -> History {
        try fit(x: [x], y: [y], batchSize: batchSize, epochs: epochs, verbose: verbose, callbacks: callbacks,
                validationSplit: validationSplit, validationData: validationData.map { ([$0.x], [$0.y]) }, shuffle: shuffle,
                classWeight: classWeight, sampleWeight: sampleWeight, initialEpoch: initialEpoch, seed: seed)
    }

    private static func logs(_ loss: MeanMetric, _ metrics: [[Metric]]) -> Logs {
        var logs: Logs = ["loss": loss.result()]
        for m in metrics.joined() { logs[m.name] = m.result() }
        return logs
    }

    /// Keras's class_weight: each row weighted by its class (the label, or the argmax of a
    /// one-hot row), 1 for classes the dictionary leaves out.
    static func classWeights(_ y: Tensor, _ classWeight: [Int: Double]) throws -> Tensor {
        var labels = y
        if y.rank > 1 { labels = y.shape.last == 1 ? try reshape(y, [y.shape[0]]) : try argReduce(.argmax, y, axis: -1) }
        let classes = try cast(labels, to: .float64).doubles().map { Int($0.rounded()) }
        return try Tensor(classes.map { Float(classWeight[$0] ?? 1) })
    }

    // MARK: evaluate, predict

    /// The compiled loss and metrics over (x, y), in batches, at inference.
    public func evaluate(x: [Tensor], y: [Tensor], batchSize: Int = 32, sampleWeight: Tensor? = nil) throws -> Logs {
        let (_, compiled) = try requireCompiled()
        let n = try checkData(x, y, sampleWeight)
        guard batchSize > 0 else { throw EngineError.value("evaluate: batchSize must be positive") }
        let lossTracker = MeanMetric(name: "loss") { _, _ in [] }
        let metrics = try compiled.makeMetrics(outputNames)
        try Tape.paused {
            for start in stride(from: 0, to: n, by: batchSize) {
                let idx = try arange(start: Double(start), stop: Double(min(n, start + batchSize)), dtype: .int64)
                let xb = try rows(x, idx), by = try rows(y, idx), bw = try sampleWeight.map { try take($0, idx, axis: 0) }
                // The losses, the regularization penalty (Keras's evaluate reports it too), then the outputs.
                let regularized = !compiled.regularization.isEmpty
                let body = { () throws -> [Tensor] in
                    let (outs, activity) = try ActivityLosses.run(self, xb, training: false, compiled.regularization.activity)
                    let losses = try outs.enumerated().map { k, out in try compiled.losses[k](by[k], out, sampleWeight: bw) }
                    let penalty = regularized ? [try compiled.regularization.penalty(activity) ?? Ops.scalar(0, .float32)] : []
                    return losses + penalty + outs
                }
                let results = try compiledInference.map { try $0.run(self, xb + by + (bw.map { [$0] } ?? []), kind: "evaluate", body) }
                    ?? body()
                let outs = Array(results.dropFirst(outputCount + (regularized ? 1 : 0)))
                var total = regularized ? try results[outputCount].double(at: 0) : 0
                for (k, out) in outs.enumerated() {
                    total += compiled.lossWeights[k] * (try results[k].double(at: 0))
                    for m in metrics[k] { try m.update(by[k], out, sampleWeight: bw) }
                }
                lossTracker.add(total, weight: Double(idx.count))
            }
        }
        return Model.logs(lossTracker, metrics)
    }

    public func evaluate(x: Tensor, y: Tensor, batchSize: Int = 32, sampleWeight: Tensor? = nil) throws -> Logs {
        try evaluate(x: [x], y: [y], batchSize: batchSize, sampleWeight: sampleWeight)
    }

    /// Predictions in batches of `batchSize` rows, concatenated.
    public func predict(_ xs: [Tensor], batchSize: Int) throws -> [Tensor] {
        guard batchSize > 0 else { throw EngineError.value("predict: batchSize must be positive") }
        guard let n = xs.first?.shape.first else { return try predict(xs) }
        var parts: [[Tensor]] = []
        try Tape.paused {
            for start in stride(from: 0, to: n, by: batchSize) {
                let idx = try arange(start: Double(start), stop: Double(min(n, start + batchSize)), dtype: .int64)
                let xb = try rows(xs, idx)
                parts.append(try compiledInference.map { try $0.run(self, xb, kind: "predict") { try self.predict(xb) } } ?? predict(xb))
            }
        }
        guard let first = parts.first else { return try predict(xs) }
        return try first.indices.map { k in try concatenate(parts.map { $0[k] }, axis: 0) }
    }
}
