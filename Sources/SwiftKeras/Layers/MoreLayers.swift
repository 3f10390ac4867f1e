import Foundation
import TensorEngine

/// The spatial rank of a layer class named like "Conv2DTranspose" or "Cropping1D".
func spatialRank(_ className: String) -> Int {
    for r in 1...3 where className.contains("\(r)D") { return r }
    return 2
}

/// DepthwiseConv1D/2D: each input channel convolved with its own depth_multiplier filters
/// (a grouped conv with one group per channel, which orders outputs as Keras does:
/// channel-major, multiplier-minor).
public final class DepthwiseConv: KerasLayer {
    public let kernel: Parameter, bias: Parameter?
    let strides: [Int], dilation: [Int], padding: String, activation: Activation

    public required init(_ c: LayerConfig) throws {
        try c.requireChannelsLast()
        let rank = spatialRank(c.className)
        let size = try c.ints("kernel_size", count: rank)
        let mult = try c.int("depth_multiplier", 1)
        strides = try c.ints("strides", count: rank, Array(repeating: 1, count: rank))
        dilation = try c.ints("dilation_rate", count: rank, Array(repeating: 1, count: rank))
        padding = try c.string("padding", "valid")
        activation = try Activation(config: c.raw["activation"])
        let channels = try c.inputDim()
        kernel = Parameter("kernel", try zeros(size + [channels, mult]))
        bias = try c.bool("use_bias", true) ? Parameter("bias", try zeros([channels * mult])) : nil
        try super.init(c)
    }

    override public var weights: [Parameter] { [kernel] + (bias.map { [$0] } ?? []) }

    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        let x = try one(inputs)
        let s = kernel.value.shape, r = s.count
        let grouped = try Ops.reshape(kernel.value, Array(s.prefix(r - 2)) + [1, s[r - 2] * s[r - 1]])
        let fused = activation.epilogue
        let y = try Ops.conv(x, grouped, bias: bias?.value, activation: fused ?? .none, strides: strides, padding: padding,
                             dilation: dilation, groups: s[r - 2])
        return [fused == nil ? try activation(y) : y]
    }
}

/// SeparableConv1D/2D: a depthwise conv, then a 1x1 pointwise conv, then bias and activation.
public final class SeparableConv: KerasLayer {
    public let depthwise: Parameter, pointwise: Parameter, bias: Parameter?
    let strides: [Int], dilation: [Int], padding: String, activation: Activation

    public required init(_ c: LayerConfig) throws {
        try c.requireChannelsLast()
        let rank = spatialRank(c.className)
        let size = try c.ints("kernel_size", count: rank)
        let mult = try c.int("depth_multiplier", 1), filters = try c.int("filters")
        strides = try c.ints("strides", count: rank, Array(repeating: 1, count: rank))
        dilation = try c.ints("dilation_rate", count: rank, Array(repeating: 1, count: rank))
        padding = try c.string("padding", "valid")
        activation = try Activation(config: c.raw["activation"])
        let channels = try c.inputDim()
        depthwise = Parameter("depthwise_kernel", try zeros(size + [channels, mult]))
        pointwise = Parameter("pointwise_kernel", try zeros(Array(repeating: 1, count: rank) + [channels * mult, filters]))
        bias = try c.bool("use_bias", true) ? Parameter("bias", try zeros([filters])) : nil
        try super.init(c)
    }

    override public var weights: [Parameter] { [depthwise, pointwise] + (bias.map { [$0] } ?? []) }

    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        let x = try one(inputs)
        let s = depthwise.value.shape, r = s.count
        let grouped = try Ops.reshape(depthwise.value, Array(s.prefix(r - 2)) + [1, s[r - 2] * s[r - 1]])
        let d = try Ops.conv(x, grouped, bias: nil, activation: .none, strides: strides, padding: padding, dilation: dilation,
                             groups: s[r - 2])
        let ones = Array(repeating: 1, count: r - 2), fused = activation.epilogue
        let y = try Ops.conv(d, pointwise.value, bias: bias?.value, activation: fused ?? .none, strides: ones, padding: "valid",
                             dilation: ones, groups: 1)
        return [fused == nil ? try activation(y) : y]
    }
}

/// Conv1D/2D/3DTranspose with Keras's output size and padding rules (output_padding unset):
/// "valid" gives (in - 1) * stride + max(kernel, stride), "same" gives in * stride.
public final class ConvTranspose: KerasLayer {
    public let kernel: Parameter, bias: Parameter?
    let strides: [Int], dilation: [Int], padding: String, activation: Activation

    public required init(_ c: LayerConfig) throws {
        try c.requireChannelsLast()
        let rank = spatialRank(c.className)
        if c.has("output_padding") {
            throw EngineError.notImplemented("\(c.className) '\(c.name)': output_padding is not in SwiftKeras yet")
        }
        let size = try c.ints("kernel_size", count: rank), filters = try c.int("filters")
        strides = try c.ints("strides", count: rank, Array(repeating: 1, count: rank))
        dilation = try c.ints("dilation_rate", count: rank, Array(repeating: 1, count: rank))
        padding = try c.string("padding", "valid")
        guard ["valid", "same"].contains(padding) else {
            throw EngineError.value("\(c.className) '\(c.name)': unknown padding '\(padding)'")
        }
        activation = try Activation(config: c.raw["activation"])
        kernel = Parameter("kernel", try zeros(size + [filters, try c.inputDim()]))
        bias = try c.bool("use_bias", true) ? Parameter("bias", try zeros([filters])) : nil
        try super.init(c)
    }

    override public var weights: [Parameter] { [kernel] + (bias.map { [$0] } ?? []) }

    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        let x = try one(inputs)
        let rank = strides.count
        guard x.rank == rank + 2 else { throw EngineError.value("\(className) '\(name)': input \(x.shape) has the wrong rank") }
        var sizes: [Int] = [], before: [Int] = []
        for d in 0..<rank {
            let k = (kernel.value.shape[d] - 1) * dilation[d] + 1, s = strides[d], n = x.shape[d + 1]
            // Keras's (JAX's) transposed-conv padding, as the pad of the conv this is the adjoint of.
            let left: Int
            if padding == "valid" {
                left = k - 1
                sizes.append((n - 1) * s + max(k, s))
            } else {
                let total = s + k - 2
                left = min(total / 2 + total % 2, k - 1)
                sizes.append(n * s)
            }
            before.append(k - 1 - left)
        }
        var y = try Ops.convTranspose(x, kernel.value, strides: strides, padsBefore: before, outputSize: sizes, dilation: dilation)
        if let b = bias { y = try Ops.add(y, b.value) }
        return [try activation(y)]
    }
}

/// Cropping1D/2D/3D, channels last: ((before, after) per spatial axis).
public final class Cropping: KerasLayer {
    let crops: [(Int, Int)]

    public required init(_ c: LayerConfig) throws {
        try c.requireChannelsLast()
        let rank = spatialRank(c.className)
        let v = c.raw["cropping"]
        var pairs: [(Int, Int)] = []
        if let n = v as? NSNumber {
            pairs = Array(repeating: (n.intValue, n.intValue), count: rank)
        } else if let a = v as? [Any] {
            if rank == 1, a.count == 2, let p = a as? [NSNumber] {
                pairs = [(p[0].intValue, p[1].intValue)]
            } else {
                for item in a {
                    if let n = item as? NSNumber { pairs.append((n.intValue, n.intValue)) } else if let p = item as? [NSNumber], p.count == 2 {
                        pairs.append((p[0].intValue, p[1].intValue))
                    }
                }
            }
        }
        guard pairs.count == rank, pairs.allSatisfy({ $0.0 >= 0 && $0.1 >= 0 }) else {
            throw EngineError.value("\(c.className) '\(c.name)': bad cropping \(v ?? "nil")")
        }
        crops = pairs
        try super.init(c)
    }

    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        let x = try one(inputs)
        guard x.rank == crops.count + 2 else { throw EngineError.value("\(className) '\(name)': input \(x.shape) has the wrong rank") }
        var begin = Array(repeating: 0, count: x.rank), end = x.shape
        for (d, (a, b)) in crops.enumerated() {
            guard a + b <= x.shape[d + 1] else {
                throw EngineError.value("\(className) '\(name)': cropping \(a)+\(b) exceeds axis \(d + 1) of \(x.shape)")
            }
            begin[d + 1] = a
            end[d + 1] = x.shape[d + 1] - b
        }
        return [try Ops.stridedSlice(x, begin: begin, end: end, strides: Array(repeating: 1, count: x.rank))]
    }
}

/// UpSampling1D/2D/3D with nearest-neighbour interpolation (each row repeated `size` times).
public final class UpSampling: KerasLayer {
    let sizes: [Int]

    public required init(_ c: LayerConfig) throws {
        try c.requireChannelsLast()
        let rank = spatialRank(c.className)
        let interpolation = try c.string("interpolation", "nearest")
        guard interpolation == "nearest" else {
            throw EngineError.notImplemented("\(c.className) '\(c.name)': interpolation '\(interpolation)' (SwiftKeras has nearest)")
        }
        sizes = try c.ints("size", count: rank, Array(repeating: 2, count: rank))
        try super.init(c)
    }

    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        var x = try one(inputs)
        guard x.rank == sizes.count + 2 else { throw EngineError.value("\(className) '\(name)': input \(x.shape) has the wrong rank") }
        for (d, n) in sizes.enumerated() { x = try Ops.repeat(x, n, axis: d + 1) }
        return [x]
    }
}

/// PReLU: relu(x) - alpha * relu(-x), alpha per element of the input (shared_axes set to 1).
public final class PReLU: KerasLayer {
    public let alpha: Parameter

    public required init(_ c: LayerConfig) throws {
        let shape = try c.buildShape()
        var dims = try shape.dropFirst().map { d -> Int in
            guard let d else { throw EngineError.value("PReLU '\(c.name)': build shape \(shape) has a free dimension") }
            return d
        }
        for a in (c.raw["shared_axes"] as? [NSNumber])?.map({ $0.intValue }) ?? [] where a >= 1 && a <= dims.count {
            dims[a - 1] = 1
        }
        alpha = Parameter("alpha", try zeros(dims))
        try super.init(c)
    }

    override public var weights: [Parameter] { [alpha] }

    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        let x = try one(inputs)
        return [try Ops.subtract(try Ops.unary("relu", x), try Ops.multiply(alpha.value, try Ops.unary("relu", try Ops.negative(x))))]
    }
}

/// GroupNormalization over the last axis: channels split into `groups`, each normalized
/// over its channels and every spatial position.
public final class GroupNormalization: KerasLayer {
    public let gamma: Parameter?, beta: Parameter?
    let groups: Int, epsilon: Double

    public required init(_ c: LayerConfig) throws {
        let axis = try c.int("axis", -1)
        let shape = try c.buildShape()
        guard axis == -1 || axis == shape.count - 1 else {
            throw EngineError.notImplemented("GroupNormalization '\(c.name)': axis \(axis) (SwiftKeras normalizes the last axis)")
        }
        groups = try c.int("groups", 32)
        epsilon = try c.double("epsilon", 1e-3)
        let channels = try c.inputDim()
        guard groups > 0, channels % groups == 0 else {
            throw EngineError.value("GroupNormalization '\(c.name)': \(channels) channels do not split into \(groups) groups")
        }
        gamma = try c.bool("scale", true) ? Parameter("gamma", try ones([channels])) : nil
        beta = try c.bool("center", true) ? Parameter("beta", try zeros([channels])) : nil
        try super.init(c)
    }

    override public var weights: [Parameter] { [gamma, beta].compactMap { $0 } }

    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        let x = try one(inputs)
        guard x.rank >= 2, let channels = x.shape.last, channels % groups == 0 else {
            throw EngineError.value("GroupNormalization '\(name)': input \(x.shape) does not split into \(groups) groups")
        }
        let grouped = try Ops.reshape(x, Array(x.shape.dropLast()) + [groups, channels / groups])
        let r = grouped.rank
        let axes = Array(1..<(r - 2)) + [r - 1]
        let (m, v) = try Ops.moments(grouped, axes: axes, keepdims: true)
        let perGroup = Array(repeating: 1, count: r - 2) + [groups, channels / groups]
        var inv = try Ops.unary("rsqrt", try Ops.add(v, try Ops.scalar(epsilon, v.dtype)))
        if let g = gamma { inv = try Ops.multiply(inv, try Ops.reshape(g.value, perGroup)) }
        var shift = try Ops.negative(try Ops.multiply(m, inv))
        if let b = beta { shift = try Ops.add(shift, try Ops.reshape(b.value, perGroup)) }
        return [try Ops.reshape(try Ops.add(try Ops.multiply(grouped, inv), shift), x.shape)]
    }
}

/// Normalization (the preprocessing layer): (x - mean) / max(sqrt(variance), 1e-7), or its
/// inverse; mean and variance from the config or from the adapted weights (mean, variance,
/// count), kept along `axis` and broadcast over the other axes.
public final class Normalization: KerasLayer {
    let mean: Parameter, variance: Parameter, count: Parameter?
    let broadcastShape: [Int], invert: Bool

    public required init(_ c: LayerConfig) throws {
        let shape = try c.buildShape()
        let rank = shape.count
        var keep: [Int]
        if let n = c.raw["axis"] as? NSNumber { keep = [n.intValue] } else if let a = c.raw["axis"] as? [NSNumber] { keep = a.map { $0.intValue } } else { keep = [] }
        keep = try keep.map {
            let a = $0 < 0 ? $0 + rank : $0
            guard a >= 0 && a < rank else { throw EngineError.value("Normalization '\(c.name)': axis \($0) out of range for rank \(rank)") }
            return a
        }.sorted()
        let dims = try keep.map { a -> Int in
            guard let d = shape[a] else { throw EngineError.value("Normalization '\(c.name)': kept axis \(a) has no known size") }
            return d
        }
        broadcastShape = (0..<rank).map { a in keep.firstIndex(of: a).map { dims[$0] } ?? 1 }
        invert = try c.bool("invert", false)
        if c.has("mean") || c.has("variance") {
            func values(_ key: String) throws -> Tensor {
                func flat(_ v: Any?) -> [Double]? {
                    if let n = v as? NSNumber { return [n.doubleValue] }
                    guard let a = v as? [Any] else { return nil }
                    var out: [Double] = []
                    for item in a {
                        guard let f = flat(item) else { return nil }
                        out += f
                    }
                    return out
                }
                guard let v = flat(c.raw[key]) else { throw EngineError.value("Normalization '\(c.name)': bad \(key) in config") }
                let t = try Tensor(v.map { Float($0) })
                return v.count == 1 ? try reshape(t, []) : try reshape(t, dims)
            }
            mean = Parameter("mean", try values("mean"), trainable: false)
            variance = Parameter("variance", try values("variance"), trainable: false)
            count = nil
        } else {
            mean = Parameter("mean", try zeros(dims), trainable: false)
            variance = Parameter("variance", try ones(dims), trainable: false)
            count = Parameter("count", try zeros([], dtype: .int64), trainable: false)
        }
        try super.init(c)
    }

    override public var weights: [Parameter] { count == nil ? [] : [mean, variance] + (count.map { [$0] } ?? []) }
    // Keras keeps a mean and variance given in the config as constants, not weights.
    override var configTensors: [Parameter] { count == nil ? [mean, variance] : [] }

    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        let x = try Ops.cast(try one(inputs), to: .float32)
        guard x.rank == broadcastShape.count else {
            throw EngineError.value("Normalization '\(name)': input \(x.shape) does not have rank \(broadcastShape.count)")
        }
        let m = mean.value.rank == 0 ? mean.value : try Ops.reshape(mean.value, broadcastShape)
        let v = variance.value.rank == 0 ? variance.value : try Ops.reshape(variance.value, broadcastShape)
        let scale = try Ops.maximum(try Ops.sqrt(v), try Ops.scalar(1e-7, v.dtype))
        return [invert ? try Ops.add(m, try Ops.multiply(x, scale)) : try Ops.divide(try Ops.subtract(x, m), scale)]
    }
}
