import TensorEngine

/// Keras's losses. `perSample` gives one value per sample (per time step for sequence
/// outputs): the crossentropies over the class axis, the regression losses averaged over the
/// last axis. `callAsFunction` reduces as Keras's "sum_over_batch_size": the sum of the
/// (weighted) values over their count.
public enum Loss {
    /// Integer labels against class probabilities (or logits when `fromLogits`).
    case sparseCategoricalCrossentropy(fromLogits: Bool)
    /// One-hot labels against class probabilities (or logits when `fromLogits`).
    case categoricalCrossentropy(fromLogits: Bool)
    /// 0/1 labels against probabilities (or logits when `fromLogits`).
    case binaryCrossentropy(fromLogits: Bool)
    case meanSquaredError
    case meanAbsoluteError
    case huber(delta: Double)

    /// The loss Keras names `name` ("mse", "sparse_categorical_crossentropy", ...).
    public init(_ name: String) throws {
        switch name {
        case "sparse_categorical_crossentropy": self = .sparseCategoricalCrossentropy(fromLogits: false)
        case "categorical_crossentropy": self = .categoricalCrossentropy(fromLogits: false)
        case "binary_crossentropy": self = .binaryCrossentropy(fromLogits: false)
        case "mse", "mean_squared_error": self = .meanSquaredError
        case "mae", "mean_absolute_error": self = .meanAbsoluteError
        case "huber", "huber_loss": self = .huber(delta: 1)
        default: throw EngineError.notImplemented("the loss '\(name)' is not in SwiftKeras yet")
        }
    }

    public func callAsFunction(_ yTrue: Tensor, _ yPred: Tensor, sampleWeight: Tensor? = nil) throws -> Tensor {
        var values = try perSample(yTrue, yPred)
        let count = Double(values.count)
        if let w = sampleWeight { values = try Ops.multiply(values, try Loss.broadcastWeight(w, to: values)) }
        return try Ops.divide(try Ops.sum(values), try Ops.scalar(Swift.max(count, 1), values.dtype))
    }

    /// A (batch,) weight shaped to multiply (batch, ...) values.
    static func broadcastWeight(_ w: Tensor, to values: Tensor) throws -> Tensor {
        var w = w.dtype == values.dtype ? w : try Ops.cast(w, to: values.dtype)
        while w.rank < values.rank { w = try Ops.expandDims(w, axis: -1) }
        return w
    }

    public func perSample(_ yTrue: Tensor, _ yPred: Tensor) throws -> Tensor {
        switch self {
        case .sparseCategoricalCrossentropy(let fromLogits):
            var labels = yTrue
            // Keras accepts (batch, 1) labels for (batch, classes) predictions.
            if labels.rank == yPred.rank, labels.shape.last == 1 { labels = try Ops.squeeze(labels, axes: [-1]) }
            guard labels.shape == Array(yPred.shape.dropLast()) else {
                throw EngineError.value("sparse_categorical_crossentropy: labels \(yTrue.shape) do not match predictions \(yPred.shape)")
            }
            let logp = try logProbabilities(yPred, fromLogits: fromLogits)
            let index = try Ops.expandDims(try Ops.cast(labels, to: .int64), axis: -1)
            return try Ops.negative(try Ops.squeeze(try Ops.takeAlongAxis(logp, index, axis: -1), axes: [-1]))
        case .categoricalCrossentropy(let fromLogits):
            try sameShape(yTrue, yPred, "categorical_crossentropy")
            let logp = try logProbabilities(yPred, fromLogits: fromLogits)
            return try Ops.negative(try Ops.sum(try Ops.multiply(try Ops.cast(yTrue, to: logp.dtype), logp), axes: [-1]))
        case .binaryCrossentropy(let fromLogits):
            try sameShape(yTrue, yPred, "binary_crossentropy")
            let y = try Ops.cast(yTrue, to: yPred.dtype), one = try Ops.scalar(1, yPred.dtype)
            let logP: Tensor, logNotP: Tensor
            if fromLogits {
                logP = try Ops.negative(try Ops.unary("softplus", try Ops.negative(yPred)))
                logNotP = try Ops.negative(try Ops.unary("softplus", yPred))
            } else {
                let p = try Ops.clip(yPred, min: 1e-7, max: 1 - 1e-7)
                logP = try Ops.log(p)
                logNotP = try Ops.log(try Ops.subtract(one, p))
            }
            let bce = try Ops.add(try Ops.multiply(y, logP), try Ops.multiply(try Ops.subtract(one, y), logNotP))
            return try Ops.negative(try Ops.mean(bce, axes: [-1]))
        case .meanSquaredError:
            try sameShape(yTrue, yPred, "mean_squared_error")
            return try Ops.mean(try Ops.square(try Ops.subtract(yPred, try Ops.cast(yTrue, to: yPred.dtype))), axes: [-1])
        case .meanAbsoluteError:
            try sameShape(yTrue, yPred, "mean_absolute_error")
            return try Ops.mean(try Ops.unary("abs", try Ops.subtract(yPred, try Ops.cast(yTrue, to: yPred.dtype))), axes: [-1])
        case .huber(let delta):
            try sameShape(yTrue, yPred, "huber")
            let e = try Ops.unary("abs", try Ops.subtract(yPred, try Ops.cast(yTrue, to: yPred.dtype)))
            let d = try Ops.scalar(delta, e.dtype), half = try Ops.scalar(0.5, e.dtype)
            let quadratic = try Ops.multiply(half, try Ops.square(e))
            let linear = try Ops.subtract(try Ops.multiply(d, e), try Ops.multiply(half, try Ops.square(d)))
            return try Ops.mean(try Ops.`where`(try Ops.binary(.lessEqual, e, d), quadratic, linear), axes: [-1])
        }
    }

    private func sameShape(_ a: Tensor, _ b: Tensor, _ name: String) throws {
        guard a.shape == b.shape else { throw EngineError.value("\(name): labels \(a.shape) and predictions \(b.shape) differ in shape") }
    }

    private func logProbabilities(_ y: Tensor, fromLogits: Bool) throws -> Tensor {
        if fromLogits { return try Ops.softmax(y, axis: -1, log: true) }
        // Keras renormalises probabilities and clips them away from 0 and 1 before the log.
        let p = try Ops.divide(y, try Ops.sum(y, axes: [-1], keepdims: true))
        return try Ops.log(try Ops.clip(p, min: 1e-7, max: 1 - 1e-7))
    }

    /// Whether the loss takes integer class labels (what "accuracy" resolves against).
    var isSparse: Bool { if case .sparseCategoricalCrossentropy = self { return true } else { return false } }
    var isBinary: Bool { if case .binaryCrossentropy = self { return true } else { return false } }

    var name: String {
        switch self {
        case .sparseCategoricalCrossentropy: return "sparse_categorical_crossentropy"
        case .categoricalCrossentropy: return "categorical_crossentropy"
        case .binaryCrossentropy: return "binary_crossentropy"
        case .meanSquaredError: return "mean_squared_error"
        case .meanAbsoluteError: return "mean_absolute_error"
        case .huber: return "huber"
        }
    }
}

/// Fraction of rows whose argmax equals the integer label.
public func sparseAccuracy(_ yTrue: Tensor, _ yPred: Tensor) throws -> Double {
    let predicted = try argReduce(.argmax, yPred, axis: -1)
    let hits = try binary(.equal, predicted, try cast(yTrue, to: .int32))
    return try mean(try cast(hits, to: .float64)).double(at: 0)
}
