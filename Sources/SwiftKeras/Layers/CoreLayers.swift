import Foundation
import TensorEngine

/// A model input: its shape (batch first, nil for free dimensions) and dtype.
public final class InputLayer: KerasLayer {
    public let batchShape: [Int?]
    public let dtype: DType

    public required init(_ c: LayerConfig) throws {
        let key = c.has("batch_shape") ? "batch_shape" : "batch_input_shape"
        guard let shape = c.raw[key] as? [Any] else {
            throw EngineError.value("InputLayer '\(c.name)' has no batch_shape in its config")
        }
        batchShape = shape.map { ($0 as? NSNumber)?.intValue }
        let name = try c.string("dtype", "float32")
        guard let dt = DType(name: name) else { throw EngineError.type("InputLayer '\(c.name)': unknown dtype '\(name)'") }
        dtype = dt
        try super.init(c)
    }

    public init(shape: [Int?], dtype: DType = .float32, name: String = "input_layer") {
        batchShape = [nil] + shape
        self.dtype = dtype
        super.init(className: "InputLayer", name: name,
                   config: ["batch_shape": batchShape.map { $0.map { $0 as Any } ?? NSNull() }, "dtype": dtype.name,
                            "sparse": false, "ragged": false],
                   buildShape: nil)
        config["dtype"] = dtype.name
    }

    /// Checks a model input against the declared shape and casts it to the declared dtype.
    func accept(_ x: Tensor) throws -> Tensor {
        guard x.rank == batchShape.count,
              zip(x.shape, batchShape).allSatisfy({ n, want in want.map { $0 == n } ?? true }) else {
            let want = "(" + batchShape.map { $0.map(String.init) ?? "None" }.joined(separator: ", ") + ")"
            throw EngineError.value("input '\(name)' expects shape \(want), got \(x.shape)")
        }
        return try Ops.cast(x, to: dtype)
    }

    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] { [try accept(try one(inputs))] }
}

/// Layers that only act in training (noise, regularisation): the identity at inference.
public final class Identity: KerasLayer {
    private lazy var seeds = CallSeeds(seed: (config["seed"] as? NSNumber)?.intValue ?? 0)

    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        let x = try one(inputs)
        guard options.training else { return [x] }
        let rate = (config["rate"] as? NSNumber)?.doubleValue ?? 0
        switch className {
        case "Identity": return [x]
        // Its penalty on x is added by fit and evaluate (Regularization in Regularizers.swift).
        case "ActivityRegularization": return [x]
        case "GaussianNoise":
            let stddev = (config["stddev"] as? NSNumber)?.doubleValue ?? 0
            return [try Ops.add(x, try Ops.randomNormal(0, stddev, shape: x.shape, dtype: x.dtype, seed: try seeds.next()))]
        case "GaussianDropout":
            guard rate > 0 && rate < 1 else { return [x] }
            let noise = try Ops.randomNormal(1, (rate / (1 - rate)).squareRoot(), shape: x.shape, dtype: x.dtype, seed: try seeds.next())
            return [try Ops.multiply(x, noise)]
        case "AlphaDropout":
            guard rate > 0 else { return [x] }
            return [try alphaDropout(x, rate: rate)]
        default:
            throw EngineError.notImplemented("\(className) '\(name)': its training behaviour is not in SwiftKeras yet")
        }
    }

    /// Keras's AlphaDropout: dropped units set to SELU's negative saturation, then an affine
    /// map a x + b that keeps the mean and variance.
    private func alphaDropout(_ x: Tensor, rate: Double) throws -> Tensor {
        guard rate < 1 else { throw EngineError.value("AlphaDropout '\(name)': rate must be below 1, got \(rate)") }
        var shape = x.shape
        if let ns = config["noise_shape"] as? [Any] {
            guard ns.count == x.rank else {
                throw EngineError.value("AlphaDropout '\(name)': noise_shape \(ns) does not fit input \(x.shape)")
            }
            for (k, d) in ns.enumerated() { if let n = d as? NSNumber { shape[k] = n.intValue } }
        }
        let alphaP = -1.6732632423543772848170429916717 * 1.0507009873554804934193349852946
        let u = try Ops.randomUniform(0, 1, shape: shape, dtype: x.dtype, seed: try seeds.next())
        let kept = try Ops.cast(try Ops.binary(.greaterEqual, u, try Ops.scalar(rate, x.dtype)), to: x.dtype)
        let a = Foundation.pow((1 - rate) * (1 + rate * alphaP * alphaP), -0.5), b = -a * alphaP * rate
        let dropped = try Ops.multiply(try Ops.subtract(try Ops.scalar(1, x.dtype), kept), try Ops.scalar(alphaP, x.dtype))
        let y = try Ops.add(try Ops.multiply(x, kept), dropped)
        return try Ops.add(try Ops.multiply(y, try Ops.scalar(a, x.dtype)), try Ops.scalar(b, x.dtype))
    }
}

/// Conv1D/2D/3D, channels last: kernel (*kernel_size, in / groups, filters), bias (filters).
public final class Conv: KerasLayer {
    public let kernel: Parameter
    public let bias: Parameter?
    let strides: [Int], dilation: [Int], padding: String, groups: Int
    let activation: Activation

    public required init(_ c: LayerConfig) throws {
        try c.requireChannelsLast()
        let rank = Int(String(c.className.dropFirst(4).prefix(1))) ?? 2
        let size = try c.ints("kernel_size", count: rank)
        let filters = try c.int("filters")
        groups = try c.int("groups", 1)
        strides = try c.ints("strides", count: rank, Array(repeating: 1, count: rank))
        dilation = try c.ints("dilation_rate", count: rank, Array(repeating: 1, count: rank))
        padding = try c.string("padding", "valid")
        guard ["valid", "same"].contains(padding) || (padding == "causal" && rank == 1) else {
            throw EngineError.value("\(c.className) '\(c.name)': unknown padding '\(padding)'")
        }
        activation = try Activation(config: c.raw["activation"])
        let inputs = try c.inputDim()
        guard groups >= 1, inputs % groups == 0 else {
            throw EngineError.value("\(c.className) '\(c.name)': \(inputs) input channels do not split into \(groups) groups")
        }
        kernel = Parameter("kernel", try zeros(size + [inputs / groups, filters]))
        bias = try c.bool("use_bias", true) ? Parameter("bias", try zeros([filters])) : nil
        try super.init(c)
    }

    override public var weights: [Parameter] { [kernel] + (bias.map { [$0] } ?? []) }

    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        var x = try one(inputs)
        var mode = padding
        if padding == "causal" {
            // Keras pads the front of the time axis by the kernel's dilated reach.
            let reach = dilation[0] * (kernel.value.shape[0] - 1)
            x = try Ops.pad(x, [0, 0, reach, 0, 0, 0])
            mode = "valid"
        }
        let fused = activation.epilogue
        let y = try Ops.conv(x, kernel.value, bias: bias?.value, activation: fused ?? .none, strides: strides, padding: mode,
                             dilation: dilation, groups: groups)
        return [fused == nil ? try activation(y) : y]
    }
}

/// Max/AveragePooling1D/2D/3D, channels last.
public final class Pooling: KerasLayer {
    let kind: PoolKind, size: [Int], strides: [Int], padding: String

    public required init(_ c: LayerConfig) throws {
        try c.requireChannelsLast()
        let rank = Int(String(c.className.suffix(2).prefix(1))) ?? 2
        kind = c.className.hasPrefix("Max") ? .max : .avg
        size = try c.ints("pool_size", count: rank, Array(repeating: 2, count: rank))
        strides = try c.ints("strides", count: rank, size)
        padding = try c.string("padding", "valid")
        try super.init(c)
    }

    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        [try Ops.pool(kind, try one(inputs), poolSize: size, strides: strides, padding: padding)]
    }
}

/// GlobalAverage/MaxPooling1D/2D/3D: a mean or max over every spatial axis.
public final class GlobalPooling: KerasLayer {
    let op: ReduceOp, keepdims: Bool

    public required init(_ c: LayerConfig) throws {
        try c.requireChannelsLast()
        op = c.className.hasPrefix("GlobalMax") ? .max : .mean
        keepdims = try c.bool("keepdims", false)
        try super.init(c)
    }

    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        let x = try one(inputs)
        guard x.rank >= 3 else { throw EngineError.value("\(className) '\(name)' needs (batch, *spatial, channels), got \(x.shape)") }
        return [try Ops.reduce(op, x, axes: Array(1..<(x.rank - 1)), keepdims: keepdims)]
    }
}

/// The axes a normalization config names ("axis": int or list), made non-negative for rank.
private func normAxes(_ c: LayerConfig, rank: Int?) throws -> [Int] {
    let v = c.raw["axis"]
    let axes: [Int]
    if let n = v as? NSNumber { axes = [n.intValue] } else if let a = v as? [NSNumber] { axes = a.map { $0.intValue } } else { axes = [-1] }
    guard let r = rank else { return axes }
    return try axes.map {
        let a = $0 < 0 ? $0 + r : $0
        guard a >= 1 && a < r else { throw EngineError.value("\(c.className) '\(c.name)': axis \($0) out of range for rank \(r)") }
        return a
    }
}

/// A per-feature vector reshaped to broadcast along `axes` of a rank-`rank` tensor.
private func alongAxes(_ v: Tensor, _ axes: [Int], _ x: Tensor) throws -> Tensor {
    if axes == [x.rank - 1] { return v }
    var shape = Array(repeating: 1, count: x.rank)
    for a in axes { shape[a] = x.shape[a] }
    return try Ops.reshape(v, shape)
}

/// BatchNormalization at inference: (x - moving_mean) / sqrt(moving_variance + epsilon) * gamma + beta.
public final class BatchNormalization: KerasLayer {
    public let gamma: Parameter?, beta: Parameter?, movingMean: Parameter, movingVariance: Parameter
    let epsilon: Double, axes: [Int], momentum: Double

    /// Training: normalize with the batch's mean and (biased) variance over every axis but the
    /// feature axes, and move the moving statistics toward them by (1 - momentum).
    private func normalizeWithBatch(_ x: Tensor) throws -> Tensor {
        let reduced = (0..<x.rank).filter { !axes.contains($0) }
        let (m, v) = try Ops.moments(x, axes: reduced, keepdims: true)
        try Tape.paused {
            let featureShape = movingMean.value.shape, dt = movingMean.value.dtype
            let keep = try Ops.scalar(momentum, dt), moveBy = try Ops.scalar(1 - momentum, dt)
            func moved(_ old: Tensor, _ batch: Tensor) throws -> Tensor {
                let b = try Ops.cast(try Ops.reshape(try Ops.stopGradient(batch), featureShape), to: dt)
                return try Ops.add(try Ops.multiply(old, keep), try Ops.multiply(b, moveBy))
            }
            movingMean.value = try moved(movingMean.value, m)
            movingVariance.value = try moved(movingVariance.value, v)
        }
        var y = try Ops.multiply(try Ops.subtract(x, m), try Ops.unary("rsqrt", try Ops.add(v, try Ops.scalar(epsilon, x.dtype))))
        if let g = gamma { y = try Ops.multiply(y, try alongAxes(g.value, axes, x)) }
        if let b = beta { y = try Ops.add(y, try alongAxes(b.value, axes, x)) }
        return y
    }

    public required init(_ c: LayerConfig) throws {
        let shape = try c.buildShape()
        axes = try normAxes(c, rank: shape.count)
        let dims = try axes.map { a -> Int in
            guard let d = shape[a] else { throw EngineError.value("BatchNormalization '\(c.name)': axis \(a) has no known size") }
            return d
        }
        epsilon = try c.double("epsilon", 1e-3)
        momentum = try c.double("momentum", 0.99)
        gamma = try c.bool("scale", true) ? Parameter("gamma", try ones(dims)) : nil
        beta = try c.bool("center", true) ? Parameter("beta", try zeros(dims)) : nil
        movingMean = Parameter("moving_mean", try zeros(dims), trainable: false)
        movingVariance = Parameter("moving_variance", try ones(dims), trainable: false)
        try super.init(c)
    }

    override public var weights: [Parameter] { [gamma, beta].compactMap { $0 } + [movingMean, movingVariance] }

    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        let x = try one(inputs)
        // A frozen layer (trainable false) keeps its moving statistics in training, as Keras's.
        if options.training && (config["trainable"] as? Bool ?? true) { return [try normalizeWithBatch(x)] }
        var inv = try Ops.unary("rsqrt", try Ops.add(movingVariance.value, try Ops.scalar(epsilon, movingVariance.value.dtype)))
        if let g = gamma { inv = try Ops.multiply(inv, g.value) }
        var shift = try Ops.negative(try Ops.multiply(movingMean.value, inv))
        if let b = beta { shift = try Ops.add(shift, b.value) }
        return [try Ops.add(try Ops.multiply(x, try alongAxes(inv, axes, x)), try alongAxes(shift, axes, x))]
    }
}

/// LayerNormalization over `axis` (default the last), with Keras's epsilon 1e-3 default.
public final class LayerNormalization: KerasLayer {
    public let gamma: Parameter?, beta: Parameter?
    let epsilon: Double, rawAxes: [Int], rms: Bool

    public required init(_ c: LayerConfig) throws {
        let shape = try c.buildShape()
        let axes = try normAxes(c, rank: shape.count)
        let dims = try axes.map { a -> Int in
            guard let d = shape[a] else { throw EngineError.value("LayerNormalization '\(c.name)': axis \(a) has no known size") }
            return d
        }
        rawAxes = axes
        epsilon = try c.double("epsilon", 1e-3)
        rms = try c.bool("rms_scaling", false)
        gamma = try c.bool("scale", true) || rms ? Parameter("gamma", try ones(dims)) : nil
        beta = try c.bool("center", true) && !rms ? Parameter("beta", try zeros(dims)) : nil
        try super.init(c)
    }

    override public var weights: [Parameter] { [gamma, beta].compactMap { $0 } }

    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        let x = try one(inputs)
        let eps = try Ops.scalar(epsilon, x.dtype)
        var y: Tensor
        if rms {
            // Keras's (deprecated) rms_scaling divides the uncentred input by the standard deviation.
            let v = try Ops.moments(x, axes: rawAxes, keepdims: true).variance
            y = try Ops.multiply(x, try Ops.unary("rsqrt", try Ops.add(v, eps)))
        } else {
            let (m, v) = try Ops.moments(x, axes: rawAxes, keepdims: true)
            y = try Ops.multiply(try Ops.subtract(x, m), try Ops.unary("rsqrt", try Ops.add(v, eps)))
        }
        if let g = gamma { y = try Ops.multiply(y, try alongAxes(g.value, rawAxes, x)) }
        if let b = beta { y = try Ops.add(y, try alongAxes(b.value, rawAxes, x)) }
        return [y]
    }
}

public final class Flatten: KerasLayer {
    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        let x = try one(inputs)
        guard x.rank >= 1 else { throw EngineError.value("Flatten '\(name)' needs a batch dimension") }
        return [try Ops.reshape(x, [x.shape[0], x.shape.dropFirst().reduce(1, *)])]
    }
}

public final class Reshape: KerasLayer {
    let target: [Int]

    public required init(_ c: LayerConfig) throws {
        guard let t = c.raw["target_shape"] as? [NSNumber] else {
            throw EngineError.value("Reshape '\(c.name)' has no target_shape")
        }
        target = t.map { $0.intValue }
        try super.init(c)
    }

    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        let x = try one(inputs)
        guard x.rank >= 1 else { throw EngineError.value("Reshape '\(name)' needs a batch dimension") }
        return [try Ops.reshape(x, [x.shape[0]] + target)]
    }
}

public final class Permute: KerasLayer {
    let dims: [Int]

    public required init(_ c: LayerConfig) throws {
        guard let d = c.raw["dims"] as? [NSNumber] else { throw EngineError.value("Permute '\(c.name)' has no dims") }
        dims = d.map { $0.intValue }
        try super.init(c)
    }

    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        [try Ops.transpose(try one(inputs), [0] + dims)]
    }
}

public final class RepeatVector: KerasLayer {
    let n: Int

    public required init(_ c: LayerConfig) throws {
        n = try c.int("n")
        try super.init(c)
    }

    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        let x = try one(inputs)
        guard x.rank == 2 else { throw EngineError.value("RepeatVector '\(name)' needs (batch, features), got \(x.shape)") }
        return [try Ops.broadcastTo(try Ops.expandDims(x, axis: 1), [x.shape[0], n, x.shape[1]])]
    }
}

public final class ActivationLayer: KerasLayer {
    let activation: Activation

    public required init(_ c: LayerConfig) throws {
        activation = try Activation(config: c.raw["activation"])
        try super.init(c)
    }

    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] { [try activation(try one(inputs))] }
}

/// Keras's ReLU layer: x >= threshold ? x : negative_slope * (x - threshold), capped at max_value.
public final class ReLU: KerasLayer {
    let maxValue: Double?, slope: Double, threshold: Double

    public required init(_ c: LayerConfig) throws {
        maxValue = try c.optionalDouble("max_value")
        slope = try c.double("negative_slope", 0)
        threshold = try c.double("threshold", 0)
        try super.init(c)
    }

    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        let x = try one(inputs)
        var y: Tensor
        if slope == 0 && threshold == 0 {
            y = try Ops.unary("relu", x)
        } else {
            let t = try Ops.scalar(threshold, x.dtype)
            let below = slope == 0 ? try Ops.full(x.shape, 0, x.dtype)
                : try Ops.multiply(try Ops.scalar(slope, x.dtype), try Ops.subtract(x, t))
            y = try Ops.where(try Ops.binary(.greaterEqual, x, t), x, below)
        }
        if let m = maxValue { y = try Ops.minimum(y, try Ops.scalar(m, x.dtype)) }
        return [y]
    }
}

public final class LeakyReLU: KerasLayer {
    let slope: Double

    public required init(_ c: LayerConfig) throws {
        slope = try c.has("negative_slope") ? c.double("negative_slope") : c.double("alpha", 0.3)
        try super.init(c)
    }

    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        [try Ops.leakyRelu(try one(inputs), slope: slope)]
    }
}

public final class ELU: KerasLayer {
    let alpha: Double

    public required init(_ c: LayerConfig) throws {
        alpha = try c.double("alpha", 1)
        try super.init(c)
    }

    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        [try Ops.elu(try one(inputs), alpha: alpha)]
    }
}

public final class SoftmaxLayer: KerasLayer {
    let axis: Int

    public required init(_ c: LayerConfig) throws {
        axis = try c.int("axis", -1)
        try super.init(c)
    }

    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        [try Ops.softmax(try one(inputs), axis: axis)]
    }
}

/// Embedding: a lookup of integer ids in embeddings (input_dim, output_dim).
public final class Embedding: KerasLayer {
    public let embeddings: Parameter

    public required init(_ c: LayerConfig) throws {
        if try c.bool("mask_zero", false) {
            throw EngineError.notImplemented("Embedding '\(c.name)': mask_zero (masking) is not in SwiftKeras yet")
        }
        embeddings = Parameter("embeddings", try zeros([try c.int("input_dim"), try c.int("output_dim")]))
        try super.init(c)
    }

    override public var weights: [Parameter] { [embeddings] }

    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        let ids = try one(inputs)
        return [try Ops.take(embeddings.value, ids.dtype.isInteger ? ids : try Ops.cast(ids, to: .int64), axis: 0)]
    }
}

/// Rescaling: x * scale + offset (scalars or per-channel lists).
public final class Rescaling: KerasLayer {
    let scale: [Double], offset: [Double]
    /// The per-channel lists as tensors (float64, cast to the input's dtype in the call).
    private let scaleTensor: Parameter?, offsetTensor: Parameter?

    public required init(_ c: LayerConfig) throws {
        func values(_ key: String, _ fallback: Double) throws -> [Double] {
            if !c.has(key) { return [fallback] }
            if let n = c.raw[key] as? NSNumber { return [n.doubleValue] }
            if let a = c.raw[key] as? [NSNumber] { return a.map { $0.doubleValue } }
            throw EngineError.value("Rescaling '\(c.name)': \(key) should be a number or a list of numbers")
        }
        scale = try values("scale", 1)
        offset = try values("offset", 0)
        scaleTensor = scale.count == 1 ? nil : Parameter("scale", try Tensor(scale), trainable: false)
        offsetTensor = offset.count == 1 ? nil : Parameter("offset", try Tensor(offset), trainable: false)
        try super.init(c)
    }

    override var configTensors: [Parameter] { [scaleTensor, offsetTensor].compactMap { $0 } }

    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        var x = try one(inputs)
        if !x.dtype.isFloatingPoint { x = try Ops.cast(x, to: .float32) }
        let s = try scaleTensor.map { try Ops.cast($0.value, to: x.dtype) } ?? Ops.scalar(scale[0], x.dtype)
        let o = try offsetTensor.map { try Ops.cast($0.value, to: x.dtype) } ?? Ops.scalar(offset[0], x.dtype)
        return [try Ops.add(try Ops.multiply(x, s), o)]
    }
}

public final class Concatenate: KerasLayer {
    let axis: Int

    public required init(_ c: LayerConfig) throws {
        axis = try c.int("axis", -1)
        try super.init(c)
    }

    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        guard !inputs.isEmpty else { throw EngineError.value("Concatenate '\(name)' got no inputs") }
        return [try Ops.concatenate(inputs, axis: axis)]
    }
}

/// Add, Subtract, Multiply, Average, Maximum, Minimum of several inputs.
public final class Merge: KerasLayer {
    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        guard let first = inputs.first, inputs.count >= (className == "Subtract" ? 2 : 1) else {
            throw EngineError.value("\(className) '\(name)' got \(inputs.count) inputs")
        }
        if className == "Subtract" {
            guard inputs.count == 2 else { throw EngineError.value("Subtract '\(name)' takes exactly 2 inputs") }
            return [try Ops.subtract(inputs[0], inputs[1])]
        }
        let op: (Tensor, Tensor) throws -> Tensor
        switch className {
        case "Multiply": op = Ops.multiply
        case "Maximum": op = Ops.maximum
        case "Minimum": op = Ops.minimum
        default: op = Ops.add
        }
        var y = try inputs.dropFirst().reduce(first, op)
        if className == "Average" { y = try Ops.divide(y, try Ops.scalar(Double(inputs.count), y.dtype)) }
        return [y]
    }
}

/// ZeroPadding1D/2D/3D, channels last.
public final class ZeroPadding: KerasLayer {
    let pads: [Int]

    public required init(_ c: LayerConfig) throws {
        try c.requireChannelsLast()
        let rank = spatialRank(c.className)
        let v = c.raw["padding"]
        var p: [Int] = []
        if let n = v as? NSNumber {
            p = Array(repeating: n.intValue, count: 2 * rank)
        } else if let a = v as? [Any] {
            for item in a {
                if let n = item as? NSNumber { p += rank == 1 ? [n.intValue] : [n.intValue, n.intValue] } else if let pair = item as? [NSNumber], pair.count == 2 {
                    p += pair.map { $0.intValue }
                }
            }
        }
        guard p.count == 2 * rank else { throw EngineError.value("\(c.className) '\(c.name)': bad padding \(v ?? "nil")") }
        pads = p
        try super.init(c)
    }

    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        let x = try one(inputs)
        guard x.rank == pads.count / 2 + 2 else { throw EngineError.value("\(className) '\(name)': input \(x.shape) has the wrong rank") }
        return [try Ops.pad(x, [0, 0] + pads + [0, 0])]
    }
}
