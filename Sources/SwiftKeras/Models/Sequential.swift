import TensorEngine

/// A stack of layers trained with a loss and an optimizer, Keras-style.
public final class Sequential {
    public let layers: [Layer]
    public var loss: Loss = .sparseCategoricalCrossentropy(fromLogits: false)
    public var optimizer: Optimizer = Adam()

    public init(_ layers: [Layer]) { self.layers = layers }

    public var parameters: [Parameter] { layers.flatMap { $0.parameters } }

    public func compile(optimizer: Optimizer, loss: Loss) {
        self.optimizer = optimizer
        self.loss = loss
    }

    public func callAsFunction(_ x: Tensor, training: Bool = false) throws -> Tensor {
        try layers.reduce(x) { try $1($0, training: training) }
    }

    /// One gradient step on a batch; returns the batch loss.
    @discardableResult
    public func trainStep(_ x: Tensor, _ y: Tensor) throws -> Double {
        Tape.push()
        defer { try? Tape.pop() }
        let params = parameters.filter { $0.trainable }
        let l = try loss(y, try self(x, training: true))
        let grads = try Tape.gradient(of: l, wrt: params.map { $0.value })
        try optimizer.apply(grads, to: params)
        return try l.double(at: 0)
    }

    /// Trains for `epochs` over shuffled mini-batches; returns the mean loss of each epoch.
    @discardableResult
    public func fit(x: Tensor, y: Tensor, epochs: Int, batchSize: Int = 32, seed: UInt64 = 0,
                    verbose: Bool = false) throws -> [Double] {
        guard x.rank >= 1, y.rank >= 1, x.shape[0] == y.shape[0] else {
            throw EngineError.value("x and y need the same number of rows, got \(x.shape) and \(y.shape)")
        }
        guard batchSize > 0, epochs >= 0 else { throw EngineError.value("batchSize must be positive and epochs non-negative") }
        let n = x.shape[0]
        var history: [Double] = []
        for epoch in 0..<epochs {
            let order = shuffledOrder(n, seed: seed, epoch: epoch)
            var total = 0.0, batches = 0
            for start in stride(from: 0, to: n, by: batchSize) {
                let idx = try Tensor(order[start..<min(n, start + batchSize)].map { Int64($0) })
                total += try trainStep(try take(x, idx, axis: 0), try take(y, idx, axis: 0))
                batches += 1
            }
            history.append(total / Double(max(batches, 1)))
            if verbose { print("epoch \(epoch + 1)/\(epochs) - loss: \(history.last!)") }
        }
        return history
    }

    /// Predictions for `x`, in batches.
    public func predict(_ x: Tensor, batchSize: Int = 256) throws -> Tensor {
        var parts: [Tensor] = []
        for start in stride(from: 0, to: x.shape[0], by: batchSize) {
            let idx = try arange(start: Double(start), stop: Double(min(x.shape[0], start + batchSize)), dtype: .int64)
            parts.append(try self(try take(x, idx, axis: 0)))
        }
        return try concatenate(parts, axis: 0)
    }

    /// (loss, accuracy) on integer labels.
    public func evaluate(x: Tensor, y: Tensor) throws -> (loss: Double, accuracy: Double) {
        let p = try predict(x)
        return (try loss(y, p).double(at: 0), try sparseAccuracy(y, p))
    }
}
