import TensorEngine

/// Losses take (labels, predictions) and return a 0-d mean over the batch.
public enum Loss {
    /// Integer labels against class probabilities (or logits when `fromLogits`).
    case sparseCategoricalCrossentropy(fromLogits: Bool)
    /// One-hot labels against class probabilities (or logits when `fromLogits`).
    case categoricalCrossentropy(fromLogits: Bool)
    case meanSquaredError

    public func callAsFunction(_ yTrue: Tensor, _ yPred: Tensor) throws -> Tensor {
        switch self {
        case .sparseCategoricalCrossentropy(let fromLogits):
            let logp = try logProbabilities(yPred, fromLogits: fromLogits)
            let labels = try reshape(try cast(yTrue, to: .int64), [yPred.shape[0], 1])
            return try negative(try mean(try takeAlongAxis(logp, labels, axis: -1)))
        case .categoricalCrossentropy(let fromLogits):
            let logp = try logProbabilities(yPred, fromLogits: fromLogits)
            return try negative(try mean(try sum(try multiply(try cast(yTrue, to: logp.dtype), logp), axes: [-1])))
        case .meanSquaredError:
            return try mean(try square(try subtract(yPred, try cast(yTrue, to: yPred.dtype))))
        }
    }

    private func logProbabilities(_ y: Tensor, fromLogits: Bool) throws -> Tensor {
        if fromLogits { return try softmax(y, axis: -1, log: true) }
        // Keras clips probabilities away from 0 and 1 before the log.
        return try log(try clip(y, min: 1e-7, max: 1 - 1e-7))
    }
}

/// Fraction of rows whose argmax equals the integer label.
public func sparseAccuracy(_ yTrue: Tensor, _ yPred: Tensor) throws -> Double {
    let predicted = try argReduce(.argmax, yPred, axis: -1)
    let hits = try binary(.equal, predicted, try cast(yTrue, to: .int32))
    return try mean(try cast(hits, to: .float64)).double(at: 0)
}
