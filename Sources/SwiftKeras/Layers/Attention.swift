import Foundation
import TensorEngine

/// Keras's MultiHeadAttention over (batch, time, features) inputs, attention along time:
/// the query/key/value/output EinsumDense weights as Keras lays them out ((features, heads,
/// dim) kernels, (heads, dim) biases), scaled dot-product attention, optional causal mask or
/// attention_mask.
public final class MultiHeadAttention: KerasLayer {
    public let query: (kernel: Parameter, bias: Parameter?)
    public let key: (kernel: Parameter, bias: Parameter?)
    public let value: (kernel: Parameter, bias: Parameter?)
    public let output: (kernel: Parameter, bias: Parameter?)
    let heads: Int, keyDim: Int, valueDim: Int, outputShape: [Int]

    public required init(_ c: LayerConfig) throws {
        heads = try c.int("num_heads")
        keyDim = try c.int("key_dim")
        valueDim = try c.int("value_dim", keyDim)
        if let axes = c.raw["attention_axes"] as? [NSNumber], axes.map({ $0.intValue }) != [1] {
            throw EngineError.notImplemented("MultiHeadAttention '\(c.name)': attention_axes \(axes) (SwiftKeras attends over axis 1)")
        }
        if try c.bool("use_gate", false) {
            throw EngineError.notImplemented("MultiHeadAttention '\(c.name)': use_gate is not in SwiftKeras yet")
        }
        let q = try c.buildShape(0), v = try c.buildShape(1)
        let k = c.buildShapes.count > 2 ? try c.buildShape(2) : v
        guard let cq = q.last ?? nil, let cv = v.last ?? nil, let ck = k.last ?? nil, q.count == 3 else {
            throw EngineError.value("MultiHeadAttention '\(c.name)': build shapes \(c.buildShapes) need known features on rank-3 inputs")
        }
        if let n = c.raw["output_shape"] as? NSNumber {
            outputShape = [n.intValue]
        } else if let a = c.raw["output_shape"] as? [NSNumber] {
            outputShape = a.map { $0.intValue }
        } else {
            outputShape = [cq]
        }
        let useBias = try c.bool("use_bias", true)
        func dense(_ kernelShape: [Int], _ biasShape: [Int]) throws -> (Parameter, Parameter?) {
            (Parameter("kernel", try zeros(kernelShape)), useBias ? Parameter("bias", try zeros(biasShape)) : nil)
        }
        query = try dense([cq, heads, keyDim], [heads, keyDim])
        key = try dense([ck, heads, keyDim], [heads, keyDim])
        value = try dense([cv, heads, valueDim], [heads, valueDim])
        output = try dense([heads, valueDim] + outputShape, outputShape)
        try super.init(c)
    }

    override public var weightGroups: [(path: String, weights: [Parameter])] {
        func group(_ p: (kernel: Parameter, bias: Parameter?)) -> [Parameter] { [p.kernel] + (p.bias.map { [$0] } ?? []) }
        return [("vars", []), ("query_dense/vars", group(query)), ("key_dense/vars", group(key)),
                ("value_dense/vars", group(value)), ("output_dense/vars", group(output))]
    }

    /// x (B, T, C) through a (C, H, D) kernel → (B, H, T, D).
    private func project(_ x: Tensor, _ p: (kernel: Parameter, bias: Parameter?)) throws -> Tensor {
        let (c, h, d) = (p.kernel.value.shape[0], p.kernel.value.shape[1], p.kernel.value.shape[2])
        guard x.rank == 3, x.shape[2] == c else {
            throw EngineError.value("MultiHeadAttention '\(name)' expects (batch, time, \(c)) inputs, got \(x.shape)")
        }
        let y = try Ops.matmul(x, try Ops.reshape(p.kernel.value, [c, h * d]), bias: try p.bias.map { try Ops.reshape($0.value, [h * d]) },
                               activation: .none)
        return try Ops.transpose(try Ops.reshape(y, [x.shape[0], x.shape[1], h, d]), [0, 2, 1, 3])
    }

    private lazy var seeds = CallSeeds(config: config, name: name)

    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        guard inputs.count >= 2 && inputs.count <= 3 else {
            throw EngineError.value("MultiHeadAttention '\(name)' takes (query, value[, key]), got \(inputs.count) tensors")
        }
        let qIn = inputs[0], vIn = inputs[1]
        let kIn = inputs.count == 3 ? inputs[2] : options.tensors["key"] ?? vIn
        if (options.values["return_attention_scores"] as? Bool) == true {
            throw EngineError.notImplemented("MultiHeadAttention '\(name)': return_attention_scores is not in SwiftKeras yet")
        }
        let q = try Ops.multiply(try project(qIn, query), try Ops.scalar(1 / Double(keyDim).squareRoot(), qIn.dtype))
        let k = try project(kIn, key), v = try project(vIn, value)
        var scores = try Ops.matmul(q, try Ops.transpose(k, [0, 1, 3, 2]), bias: nil, activation: .none)  // (B, H, T, S)
        var mask: Tensor?
        if let m = options.tensors["attention_mask"] {
            mask = try Ops.cast(try Ops.expandDims(m, axis: -3), to: scores.dtype)
        }
        if (options.values["use_causal_mask"] as? Bool) == true {
            let (t, s) = (scores.shape[2], scores.shape[3])
            let causal = try Ops.triangle(try Ops.full([t, s], 1, scores.dtype), k: 0, upper: false)
            mask = try mask.map { try Ops.multiply($0, causal) } ?? causal
        }
        if let m = mask {
            // Keras's masked softmax adds a large negative number where the mask is 0.
            let adder = try Ops.multiply(try Ops.subtract(try Ops.scalar(1, m.dtype), m), try Ops.scalar(-1e9, m.dtype))
            scores = try Ops.add(scores, adder)
        }
        var probabilities = try Ops.softmax(scores, axis: -1)
        // Keras's dropout layer on the attention probabilities (a mask over (B, H, T, S)).
        let rate = (config["dropout"] as? NSNumber)?.doubleValue ?? 0
        if options.training && rate > 0 {
            guard rate < 1 else { throw EngineError.value("MultiHeadAttention '\(name)': dropout must be below 1, got \(rate)") }
            let m = try Ops.dropoutMask(rate: rate, shape: probabilities.shape, dtype: probabilities.dtype, seed: try seeds.next())
            probabilities = try Ops.multiply(probabilities, m)
        }
        let attended = try Ops.matmul(probabilities, v, bias: nil, activation: .none)  // (B, H, T, Dv)
        let (b, t) = (qIn.shape[0], qIn.shape[1])
        let merged = try Ops.reshape(try Ops.transpose(attended, [0, 2, 1, 3]), [b, t, heads * valueDim])
        let outFeatures = outputShape.reduce(1, *)
        let y = try Ops.matmul(merged, try Ops.reshape(output.kernel.value, [heads * valueDim, outFeatures]),
                               bias: try output.bias.map { try Ops.reshape($0.value, [outFeatures]) }, activation: .none)
        return [try Ops.reshape(y, [b, t] + outputShape)]
    }
}
