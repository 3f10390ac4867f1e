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

public enum Activation {
    case linear, relu, sigmoid, tanh, softmax, gelu

    public func callAsFunction(_ x: Tensor) throws -> Tensor {
        switch self {
        case .linear: return x
        case .relu: return try TensorEngine.relu(x)
        case .sigmoid: return try TensorEngine.sigmoid(x)
        case .tanh: return try TensorEngine.tanh(x)
        case .softmax: return try TensorEngine.softmax(x, axis: -1)
        case .gelu: return try unary(.gelu(approximate: false), x)
        }
    }
}

/// Glorot-uniform initial values, a pure function of `seed` (as Keras's initializer).
func glorotUniform(_ shape: [Int], fanIn: Int, fanOut: Int, seed: Int) throws -> Tensor {
    let limit = (6.0 / Double(fanIn + fanOut)).squareRoot()
    return try random(.uniform(-limit, limit), shape: shape, seed: [seed, 0])
}

/// Fully connected layer: activation(x @ kernel + bias).
public final class Dense: Layer {
    public let kernel: Parameter
    public let bias: Parameter
    public let activation: Activation

    public init(inputs: Int, units: Int, activation: Activation = .linear, seed: Int = 0) throws {
        kernel = Parameter("kernel", try glorotUniform([inputs, units], fanIn: inputs, fanOut: units, seed: seed))
        bias = Parameter("bias", try zeros([units]))
        self.activation = activation
    }

    public var parameters: [Parameter] { [kernel, bias] }

    public func callAsFunction(_ x: Tensor, training: Bool = false) throws -> Tensor {
        try activation(try add(try matmul(x, kernel.value), bias.value))
    }
}

/// Inverted dropout: zeroes a `rate` fraction in training and rescales the rest.
public final class Dropout: Layer {
    public let rate: Double
    private var calls = 0
    private let seed: Int

    public init(rate: Double, seed: Int = 0) throws {
        guard rate >= 0 && rate < 1 else { throw EngineError.value("dropout rate must be in [0, 1), got \(rate)") }
        self.rate = rate
        self.seed = seed
    }

    public var parameters: [Parameter] { [] }

    public func callAsFunction(_ x: Tensor, training: Bool = false) throws -> Tensor {
        guard training && rate > 0 else { return x }
        calls += 1
        let u = try random(.uniform(0, 1), shape: x.shape, dtype: x.dtype, seed: [seed, calls])
        let keep = try cast(try binary(.greaterEqual, u, try scalar(rate, x.dtype)), to: x.dtype)
        return try multiply(x, try multiply(keep, try scalar(1 / (1 - rate), x.dtype)))
    }
}
