import TensorEngine

/// A trainable tensor. Optimizers replace `value` with a new tensor after each step, which
/// keeps the tape's leaves immutable.
public final class Parameter {
    public let name: String
    public var value: Tensor {
        didSet { value.requiresGrad = trainable }
    }
    public var trainable: Bool {
        didSet { value.requiresGrad = trainable }
    }

    public init(_ name: String, _ value: Tensor, trainable: Bool = true) {
        self.name = name
        self.value = value
        self.trainable = trainable
        value.requiresGrad = trainable
    }
}

/// A layer maps a batch to a batch and owns its parameters.
public protocol Layer: AnyObject {
    var parameters: [Parameter] { get }
    func callAsFunction(_ x: Tensor, training: Bool) throws -> Tensor
}

/// Glorot-uniform initial values, a pure function of `seed` (as Keras's initializer).
func glorotUniform(_ shape: [Int], fanIn: Int, fanOut: Int, seed: Int) throws -> Tensor {
    let limit = (6.0 / Double(fanIn + fanOut)).squareRoot()
    return try random(.uniform(-limit, limit), shape: shape, seed: [seed, 0])
}

/// Fully connected layer: activation(x @ kernel + bias), Keras's `Dense`.
public final class Dense: KerasLayer, Layer {
    public let kernel: Parameter
    public let bias: Parameter?
    public let activation: Activation

    public init(inputs: Int, units: Int, activation: Activation = .linear, useBias: Bool = true, seed: Int = 0,
                name: String = "dense") throws {
        kernel = Parameter("kernel", try glorotUniform([inputs, units], fanIn: inputs, fanOut: units, seed: seed))
        bias = useBias ? Parameter("bias", try zeros([units])) : nil
        self.activation = activation
        super.init(className: "Dense", name: name,
                   config: ["units": units, "activation": activation.name, "use_bias": useBias],
                   buildShape: [nil, inputs])
    }

    required init(_ c: LayerConfig) throws {
        let units = try c.int("units")
        let inputs = try c.inputDim()
        activation = try Activation(config: c.raw["activation"])
        kernel = Parameter("kernel", try zeros([inputs, units]))
        bias = try c.bool("use_bias", true) ? Parameter("bias", try zeros([units])) : nil
        try super.init(c)
    }

    public var parameters: [Parameter] { [kernel] + (bias.map { [$0] } ?? []) }
    override public var weights: [Parameter] { parameters }

    public func callAsFunction(_ x: Tensor, training: Bool = false) throws -> Tensor {
        if let e = activation.epilogue { return try Ops.matmul(x, kernel.value, bias: bias?.value, activation: e) }
        return try activation(try Ops.matmul(x, kernel.value, bias: bias?.value, activation: .none))
    }

    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        [try self(try one(inputs), training: options.training)]
    }
}

/// Inverted dropout: zeroes a `rate` fraction in training and rescales the rest.
public final class Dropout: KerasLayer, Layer {
    public let rate: Double
    private var calls = 0
    private let seed: Int

    public init(rate: Double, seed: Int = 0, name: String = "dropout") throws {
        guard rate >= 0 && rate < 1 else { throw EngineError.value("dropout rate must be in [0, 1), got \(rate)") }
        self.rate = rate
        self.seed = seed
        super.init(className: "Dropout", name: name, config: ["rate": rate], buildShape: nil)
    }

    required init(_ c: LayerConfig) throws {
        rate = try c.double("rate")
        seed = try c.int("seed", 0)
        try super.init(c)
    }

    public var parameters: [Parameter] { [] }

    public func callAsFunction(_ x: Tensor, training: Bool = false) throws -> Tensor {
        guard training && rate > 0 else { return x }
        // SpatialDropout drops whole channels: one draw per (sample, channel), broadcast.
        var shape = x.shape
        if className.hasPrefix("SpatialDropout"), x.rank >= 3 {
            for a in 1..<(x.rank - 1) { shape[a] = 1 }
        }
        // The seed advances once per call: a step input, so a compiled step draws anew each step.
        let seedPair = try StepInputs.value {
            self.calls += 1
            return try Tensor([Int64(self.seed), Int64(self.calls)])
        }
        return try Ops.multiply(x, try Ops.dropoutMask(rate: rate, shape: shape, dtype: x.dtype, seed: seedPair))
    }

    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        [try self(try one(inputs), training: options.training)]
    }
}
