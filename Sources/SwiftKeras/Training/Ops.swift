import TensorEngine

/// The engine ops SwiftKeras's training path calls, through the op registry.
///
/// The engine's typed functions (`add`, `matmul`, ...) run their kernels directly; only a
/// registry call is recorded by a trace (Tracer.swift). A compiled train step replays what
/// the trace recorded, so every op whose result the step depends on must come through here:
/// a typed call on that path would leave its result behind as a constant of the program,
/// which the compiled step refuses (CompiledStep.swift), running eagerly instead. Outside a
/// trace these are the typed functions plus a registry lookup; the results are the same.
enum Ops {
    private static func call(_ name: String, _ inputs: [Tensor], _ attrs: Attrs = Attrs()) throws -> Tensor {
        let outs = try OpRegistry.call(name, inputs, attrs)
        guard let first = outs.first else { throw EngineError.internal("op \(name) returned no output") }
        return first
    }

    /// All outputs of a multi-output registry op, checked against `count`.
    private static func callAll(_ name: String, _ inputs: [Tensor], _ attrs: Attrs, count: Int) throws -> [Tensor] {
        let r = try OpRegistry.call(name, inputs, attrs)
        guard r.count == count else { throw EngineError.internal("\(name) returned \(r.count) outputs, not \(count)") }
        return r
    }

    static func binary(_ op: BinaryOp, _ a: Tensor, _ b: Tensor) throws -> Tensor { try call(op.rawValue, [a, b]) }
    static func add(_ a: Tensor, _ b: Tensor) throws -> Tensor { try binary(.add, a, b) }
    static func subtract(_ a: Tensor, _ b: Tensor) throws -> Tensor { try binary(.subtract, a, b) }
    static func multiply(_ a: Tensor, _ b: Tensor) throws -> Tensor { try binary(.multiply, a, b) }
    static func divide(_ a: Tensor, _ b: Tensor) throws -> Tensor { try binary(.divide, a, b) }
    static func maximum(_ a: Tensor, _ b: Tensor) throws -> Tensor { try binary(.maximum, a, b) }
    static func minimum(_ a: Tensor, _ b: Tensor) throws -> Tensor { try binary(.minimum, a, b) }

    static func concatenate(_ xs: [Tensor], axis: Int) throws -> Tensor {
        try call("concatenate", xs, Attrs(["axis": .int(axis)]))
    }
    /// Slices of `x` at `indices` along `axis` (an out-of-range index is an error).
    static func take(_ x: Tensor, _ indices: Tensor, axis: Int) throws -> Tensor {
        try call("take", [x, indices], Attrs(["axis": .int(axis)]))
    }

    /// A one-input op of the registry's unary table ("relu", "log", "rsqrt", ...).
    static func unary(_ name: String, _ x: Tensor) throws -> Tensor { try call(name, [x]) }
    static func negative(_ x: Tensor) throws -> Tensor { try unary("negative", x) }
    static func square(_ x: Tensor) throws -> Tensor { try unary("square", x) }
    static func sqrt(_ x: Tensor) throws -> Tensor { try unary("sqrt", x) }
    static func log(_ x: Tensor) throws -> Tensor { try unary("log", x) }
    static func exp(_ x: Tensor) throws -> Tensor { try unary("exp", x) }
    static func tanh(_ x: Tensor) throws -> Tensor { try unary("tanh", x) }

    static func gelu(_ x: Tensor, approximate: Bool) throws -> Tensor {
        try call("gelu", [x], Attrs(["approximate": .bool(approximate)]))
    }
    static func elu(_ x: Tensor, alpha: Double) throws -> Tensor { try call("elu", [x], Attrs(["alpha": .float(alpha)])) }
    static func leakyRelu(_ x: Tensor, slope: Double) throws -> Tensor {
        try call("leaky_relu", [x], Attrs(["negative_slope": .float(slope)]))
    }

    /// A 0-d tensor holding `v`: recorded as a `full` op, so a trace holds no constant for it.
    /// Only for values fixed for the life of the step; a value that changes from step to
    /// step is a `StepInputs` value.
    static func scalar(_ v: Double, _ dtype: DType) throws -> Tensor { try full([], v, dtype) }

    static func cast(_ x: Tensor, to dtype: DType) throws -> Tensor {
        x.dtype == dtype ? x : try call("cast", [x], Attrs(["dtype": .string(dtype.name)]))
    }
    static func reshape(_ x: Tensor, _ shape: [Int]) throws -> Tensor { try call("reshape", [x], Attrs(["shape": .ints(shape)])) }
    static func stopGradient(_ x: Tensor) throws -> Tensor { try call("stop_gradient", [x]) }

    /// x without the size-1 axes `axes` (negative from the end).
    static func squeeze(_ x: Tensor, axes: [Int]) throws -> Tensor {
        let drop = Set(axes.map { $0 < 0 ? $0 + x.rank : $0 })
        for a in drop where a < 0 || a >= x.rank || x.shape[a] != 1 {
            throw EngineError.value("squeeze: axis \(a) of shape \(x.shape) is not of size 1")
        }
        return try reshape(x, x.shape.indices.filter { !drop.contains($0) }.map { x.shape[$0] })
    }

    /// x with a new size-1 axis at `axis` (negative counts from the end of the result).
    static func expandDims(_ x: Tensor, axis: Int) throws -> Tensor {
        let a = axis < 0 ? axis + x.rank + 1 : axis
        guard a >= 0 && a <= x.rank else { throw EngineError.value("expand_dims: axis \(axis) out of range for rank \(x.rank)") }
        var shape = x.shape
        shape.insert(1, at: a)
        return try reshape(x, shape)
    }

    private static func reduceAttrs(_ axes: [Int]?, _ keepdims: Bool) -> Attrs {
        var a = Attrs(["keepdims": .bool(keepdims)])
        if let axes = axes { a.set("axes", .ints(axes)) }
        return a
    }
    static func sum(_ x: Tensor, axes: [Int]? = nil, keepdims: Bool = false) throws -> Tensor {
        try call("sum", [x], reduceAttrs(axes, keepdims))
    }
    static func mean(_ x: Tensor, axes: [Int]? = nil, keepdims: Bool = false) throws -> Tensor {
        try call("mean", [x], reduceAttrs(axes, keepdims))
    }
    static func reduce(_ op: ReduceOp, _ x: Tensor, axes: [Int]?, keepdims: Bool) throws -> Tensor {
        try call(op.rawValue, [x], reduceAttrs(axes, keepdims))
    }
    static func moments(_ x: Tensor, axes: [Int], keepdims: Bool) throws -> (mean: Tensor, variance: Tensor) {
        let r = try callAll("moments", [x], reduceAttrs(axes, keepdims), count: 2)
        return (r[0], r[1])
    }

    static func softmax(_ x: Tensor, axis: Int = -1, log: Bool = false) throws -> Tensor {
        try call(log ? "log_softmax" : "softmax", [x], Attrs(["axis": .int(axis)]))
    }
    static func takeAlongAxis(_ x: Tensor, _ indices: Tensor, axis: Int) throws -> Tensor {
        try call("take_along_axis", [x, indices], Attrs(["axis": .int(axis)]))
    }
    static func clip(_ x: Tensor, min lo: Double, max hi: Double) throws -> Tensor {
        try call("clip", [x], Attrs(["min": .float(lo), "max": .float(hi)]))
    }
    static func `where`(_ c: Tensor, _ x: Tensor, _ y: Tensor) throws -> Tensor { try call("where", [c, x, y]) }

    static func matmul(_ a: Tensor, _ b: Tensor, bias: Tensor?, activation: EpilogueActivation) throws -> Tensor {
        try call("matmul", [a, b] + (bias.map { [$0] } ?? []), Attrs(["activation": .string(activation.rawValue)]))
    }

    static func conv(_ x: Tensor, _ kernel: Tensor, bias: Tensor?, activation: EpilogueActivation, strides: [Int], padding: String,
                     dilation: [Int], groups: Int) throws -> Tensor {
        try call("conv", [x, kernel] + (bias.map { [$0] } ?? []),
                 Attrs(["strides": .ints(strides), "padding": .string(padding), "dilation": .ints(dilation), "groups": .int(groups),
                        "activation": .string(activation.rawValue)]))
    }
    static func pool(_ kind: PoolKind, _ x: Tensor, poolSize: [Int], strides: [Int], padding: String) throws -> Tensor {
        try call(kind == .max ? "max_pool" : "avg_pool", [x],
                 Attrs(["pool_size": .ints(poolSize), "strides": .ints(strides), "padding": .string(padding)]))
    }

    /// Uniform samples in [lo, hi), a pure function of `seed` (two integers, a tensor so that
    /// a compiled step reads each step's seed).
    static func randomUniform(_ lo: Double, _ hi: Double, shape: [Int], dtype: DType, seed: Tensor) throws -> Tensor {
        try call("random_uniform", [seed], Attrs(["shape": .ints(shape), "dtype": .string(dtype.name),
                                                  "minval": .float(lo), "maxval": .float(hi)]))
    }
    static func randomNormal(_ mean: Double, _ stddev: Double, shape: [Int], dtype: DType, seed: Tensor) throws -> Tensor {
        try call("random_normal", [seed], Attrs(["shape": .ints(shape), "dtype": .string(dtype.name),
                                                 "mean": .float(mean), "stddev": .float(stddev)]))
    }

    // MARK: recurrent, attention, einsum and noise layers; gradient clipping

    /// A tensor of `shape` filled with `value` (recorded, so a trace holds no constant for it).
    static func full(_ shape: [Int], _ value: Double, _ dtype: DType) throws -> Tensor {
        try call("full", [], Attrs(["shape": .ints(shape), "value": .float(value), "dtype": .string(dtype.name)]))
    }
    static func transpose(_ x: Tensor, _ perm: [Int]) throws -> Tensor { try call("transpose", [x], Attrs(["perm": .ints(perm)])) }
    static func stack(_ xs: [Tensor], axis: Int) throws -> Tensor { try call("stack", xs, Attrs(["axis": .int(axis)])) }
    static func stridedSlice(_ x: Tensor, begin: [Int], end: [Int], strides: [Int]) throws -> Tensor {
        try call("strided_slice", [x], Attrs(["begin": .ints(begin), "end": .ints(end), "strides": .ints(strides)]))
    }
    /// x[..., lo..<hi, ...] along `axis`.
    static func slice(_ x: Tensor, axis: Int, _ lo: Int, _ hi: Int) throws -> Tensor {
        var begin = Array(repeating: 0, count: x.rank), end = x.shape
        begin[axis] = lo
        end[axis] = hi
        return try stridedSlice(x, begin: begin, end: end, strides: Array(repeating: 1, count: x.rank))
    }
    /// x with `axis` reversed.
    static func reversed(_ x: Tensor, axis: Int) throws -> Tensor {
        var begin = Array(repeating: 0, count: x.rank), end = x.shape, strides = Array(repeating: 1, count: x.rank)
        (begin[axis], end[axis], strides[axis]) = (x.shape[axis] - 1, -1, -1)
        return try stridedSlice(x, begin: begin, end: end, strides: strides)
    }
    static func triangle(_ x: Tensor, k: Int, upper: Bool) throws -> Tensor {
        try call("triangle", [x], Attrs(["k": .int(k), "upper": .bool(upper)]))
    }
    static func sigmoid(_ x: Tensor) throws -> Tensor { try unary("sigmoid", x) }

    /// The engine's fused LSTM over (B, T, F): outputs (B, T, U) in processing order, last h and c.
    static func lstm(_ x: Tensor, h0: Tensor, c0: Tensor, kernel: Tensor, recurrentKernel: Tensor, bias: Tensor?,
                     goBackwards: Bool) throws -> (outputs: Tensor, h: Tensor, c: Tensor) {
        let r = try callAll("lstm", [x, h0, c0, kernel, recurrentKernel] + (bias.map { [$0] } ?? []),
                            Attrs(["go_backwards": .bool(goBackwards)]), count: 3)
        return (r[0], r[1], r[2])
    }
    /// The engine's fused GRU (reset_after): outputs (B, T, U) in processing order and the last h.
    static func gru(_ x: Tensor, h0: Tensor, kernel: Tensor, recurrentKernel: Tensor, bias: Tensor?,
                    goBackwards: Bool) throws -> (outputs: Tensor, h: Tensor) {
        let r = try callAll("gru", [x, h0, kernel, recurrentKernel] + (bias.map { [$0] } ?? []),
                            Attrs(["go_backwards": .bool(goBackwards)]), count: 2)
        return (r[0], r[1])
    }

    /// Keras's dropout of a tensor of ones: 1 / (1 - rate) where a uniform draw is >= rate, 0 elsewhere.
    static func dropoutMask(rate: Double, shape: [Int], dtype: DType, seed: Tensor) throws -> Tensor {
        try keepMask(try randomUniform(0, 1, shape: shape, dtype: dtype, seed: seed), rate: rate)
    }
    /// The same from uniform draws `u` already made.
    static func keepMask(_ u: Tensor, rate: Double) throws -> Tensor {
        let keep = try cast(try binary(.greaterEqual, u, try scalar(rate, u.dtype)), to: u.dtype)
        return try multiply(keep, try scalar(1 / (1 - rate), u.dtype))
    }

    /// Keras's clip_by_norm: g * c / max(‖g‖, c).
    static func clipByNorm(_ g: Tensor, _ c: Double) throws -> Tensor {
        let norm = try sqrt(try sum(try square(g)))
        return try divide(try multiply(g, try scalar(c, g.dtype)), try maximum(norm, try scalar(c, g.dtype)))
    }
    /// Keras's clip_by_global_norm: each g * c * min(1 / ‖all‖, 1 / c), NaN for a non-finite norm.
    static func clipByGlobalNorm(_ grads: [Tensor?], _ c: Double) throws -> [Tensor?] {
        let present = grads.compactMap { $0 }
        guard let dt = present.first?.dtype else { return grads }
        var total = try scalar(0, dt)
        for g in present { total = try add(total, try cast(try sum(try square(g)), to: dt)) }
        let norm = try sqrt(total)
        let bounded = try multiply(try minimum(try divide(try scalar(1, dt), norm), try scalar(1 / c, dt)), try scalar(c, dt))
        // norm - norm is 0, or NaN when the norm is not finite (Keras's trick).
        let scale = try add(bounded, try subtract(norm, norm))
        return try grads.map { g in try g.map { try multiply($0, try cast(scale, to: $0.dtype)) } }
    }

    // MARK: optimizers

    /// The engine's fused Adam step with α_t given as a 0-d tensor.
    static func adamUpdate(variable x: Tensor, grad g: Tensor, m: Tensor, v: Tensor, alpha: Tensor,
                           beta1: Double, beta2: Double, epsilon: Double) throws -> (Tensor, Tensor, Tensor) {
        let r = try callAll("adam_update", [x, g, m, v, alpha],
                            Attrs(["beta1": .float(beta1), "beta2": .float(beta2), "epsilon": .float(epsilon)]), count: 3)
        return (r[0], r[1], r[2])
    }

    // Regularizers and constraints (Regularizers.swift).

    /// x with its axes reversed (a matrix transposed).
    static func transpose(_ x: Tensor) throws -> Tensor { try call("transpose", [x]) }

    // MARK: padding, resampling, transposed-conv and the other shape layers

    /// x padded with zeros by `pads` (before and after, per axis: 2 * rank ints).
    static func pad(_ x: Tensor, _ pads: [Int]) throws -> Tensor { try call("pad", [x], Attrs(["pads": .ints(pads)])) }
    /// Each slice of x along `axis` repeated `repeats` times in place (nearest upsampling).
    static func `repeat`(_ x: Tensor, _ repeats: Int, axis: Int) throws -> Tensor {
        try call("repeat", [x], Attrs(["repeats": .ints([repeats]), "axis": .int(axis)]))
    }
    static func broadcastTo(_ x: Tensor, _ shape: [Int]) throws -> Tensor {
        try call("broadcast_to", [x], Attrs(["shape": .ints(shape)]))
    }
    /// The adjoint of `conv` with respect to its input, of spatial size `outputSize`.
    static func convTranspose(_ x: Tensor, _ kernel: Tensor, strides: [Int], padsBefore: [Int], outputSize: [Int],
                              dilation: [Int]) throws -> Tensor {
        try call("conv_transpose", [x, kernel], Attrs(["strides": .ints(strides), "pads_before": .ints(padsBefore),
                                                       "output_size": .ints(outputSize), "dilation": .ints(dilation)]))
    }
}
