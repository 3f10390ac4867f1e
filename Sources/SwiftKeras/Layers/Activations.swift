import Foundation
import TensorEngine

/// Keras's activation functions by their serialized names (`keras.activations.get`).
public enum Activation: Equatable {
    case linear, relu, sigmoid, tanh, softmax, gelu
    case elu, selu, swish, softplus, softsign, exponential, hardSigmoid, hardSwish, leakyRelu, relu6, mish, logSoftmax

    public init(name: String) throws {
        switch name {
        case "linear": self = .linear
        case "relu": self = .relu
        case "sigmoid": self = .sigmoid
        case "tanh": self = .tanh
        case "softmax": self = .softmax
        case "gelu": self = .gelu
        case "elu": self = .elu
        case "selu": self = .selu
        case "swish", "silu": self = .swish
        case "softplus": self = .softplus
        case "softsign": self = .softsign
        case "exponential": self = .exponential
        case "hard_sigmoid": self = .hardSigmoid
        case "hard_silu", "hard_swish": self = .hardSwish
        case "leaky_relu": self = .leakyRelu
        case "relu6": self = .relu6
        case "mish": self = .mish
        case "log_softmax": self = .logSoftmax
        default: throw EngineError.notImplemented("SwiftKeras has no activation '\(name)'")
        }
    }

    /// The value of a layer config's "activation" entry: a name, null, or a serialized function.
    init(config value: Any?) throws {
        switch value {
        case nil, is NSNull: self = .linear
        case let s as String: try self.init(name: s)
        case let d as [String: Any]:
            if let s = d["config"] as? String { try self.init(name: s) }
            else { throw EngineError.notImplemented("SwiftKeras cannot rebuild the custom activation \(d["class_name"] ?? d)") }
        default: throw EngineError.value("bad activation in layer config: \(value.map { "\($0)" } ?? "nil")")
        }
    }

    /// The activation as a GEMM/convolution epilogue (applied in the product's blocks), where the engine has it.
    var epilogue: EpilogueActivation? {
        switch self {
        case .linear: return EpilogueActivation.none
        case .relu: return .relu
        case .sigmoid: return .sigmoid
        case .tanh: return .tanh
        default: return nil
        }
    }

    public var name: String {
        switch self {
        case .linear: return "linear"
        case .relu: return "relu"
        case .sigmoid: return "sigmoid"
        case .tanh: return "tanh"
        case .softmax: return "softmax"
        case .gelu: return "gelu"
        case .elu: return "elu"
        case .selu: return "selu"
        case .swish: return "swish"
        case .softplus: return "softplus"
        case .softsign: return "softsign"
        case .exponential: return "exponential"
        case .hardSigmoid: return "hard_sigmoid"
        case .hardSwish: return "hard_silu"
        case .leakyRelu: return "leaky_relu"
        case .relu6: return "relu6"
        case .mish: return "mish"
        case .logSoftmax: return "log_softmax"
        }
    }

    public func callAsFunction(_ x: Tensor) throws -> Tensor {
        switch self {
        case .linear: return x
        case .relu: return try Ops.unary("relu", x)
        case .sigmoid: return try Ops.unary("sigmoid", x)
        case .tanh: return try Ops.tanh(x)
        case .softmax: return try Ops.softmax(x, axis: -1)
        case .logSoftmax: return try Ops.softmax(x, axis: -1, log: true)
        case .gelu: return try Ops.gelu(x, approximate: false)
        case .elu: return try Ops.elu(x, alpha: 1)
        case .selu: return try Ops.unary("selu", x)
        case .swish: return try Ops.unary("silu", x)
        case .softplus: return try Ops.unary("softplus", x)
        case .softsign: return try Ops.unary("softsign", x)
        case .exponential: return try Ops.exp(x)
        // Keras 3: hard_sigmoid(x) = relu6(x + 3) / 6.
        case .hardSigmoid: return try hardSigmoid(x)
        case .hardSwish: return try Ops.multiply(x, try hardSigmoid(x))
        case .leakyRelu: return try Ops.leakyRelu(x, slope: 0.2)
        case .relu6: return try Ops.unary("relu6", x)
        case .mish: return try Ops.multiply(x, try Ops.tanh(try Ops.unary("softplus", x)))
        }
    }

    private func hardSigmoid(_ x: Tensor) throws -> Tensor {
        try Ops.divide(try Ops.unary("relu6", try Ops.add(x, try Ops.scalar(3, x.dtype))), try Ops.scalar(6, x.dtype))
    }
}
