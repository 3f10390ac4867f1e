/// GEMM and convolution epilogues: `act(y + bias)` applied to a block of a conv's or
/// matmul's output right after its kernel wrote it, while the block is still in cache, instead
/// of two more passes over the whole output (a Keras Conv2D + ReLU of 128x26x26x32 float32
/// wrote and re-read 11 MB twice: bias and ReLU were a fifth of a convnet's predict step).
///
/// The graph pass `Program.fusingEpilogues` rewrites `conv`/`matmul` → `add` → activation into
/// one `conv`/`matmul` node with a `bias` input and an `activation` attribute. The fused form
/// runs in the kernel where the bias is one row of the output's channels (float32/float64) and
/// records one tape node whose gradient is that of the three ops; anywhere else it runs as the
/// ops it stands for. Values and gradients are the same bits either way: the same additions,
/// activation functors and VJPs.

/// The activations an epilogue applies.
public enum EpilogueActivation: String, CaseIterable, Sendable {
    case none, relu, sigmoid, tanh

    /// The elementwise op the activation is.
    var unaryOp: UnaryOp? {
        switch self {
        case .none: return nil
        case .relu: return .relu
        case .sigmoid: return .sigmoid
        case .tanh: return .tanh
        }
    }
}

/// A bias along the output's last axis (or none) and an activation, over `T`'s pointers.
struct Epilogue<T: BLASFloat> {
    let bias: UnsafePointer<T>?
    let activation: EpilogueActivation

    /// `rows` rows of `width` elements from `c` (rows `ld` apart); the block's first column is
    /// column `column` of the output (and of the bias).
    @inline(__always)
    func apply(_ c: UnsafeMutablePointer<T>, rows: Int, width: Int, ld: Int, column: Int = 0) {
        if let b = bias.map({ $0 + column }) {
            // Its own loop: fused with the activation's select, LLVM kept a branch per element
            // (the bias could alias the output), 4x slower than the two passes over L1.
            for r in 0..<rows {
                let p = c + r * ld
                for j in 0..<width { p[j] += b[j] }
            }
        }
        // The activation's functor is chosen as `unary` chooses it, so fused and unfused
        // results are the same bits.
        switch activation {
        case .none: return
        case .relu: Self.run(Relu<T>(), c, rows, width, ld)
        case .sigmoid:
            if T.self == Float.self {
                Self.run(SigmoidF32(), Self.float(c), rows, width, ld)
            } else {
                Self.run(Sigmoid<T>(), c, rows, width, ld)
            }
        case .tanh:
            if T.self == Float.self {
                Self.run(TanhF32(), Self.float(c), rows, width, ld)
            } else {
                Self.run(Tanh<T>(), c, rows, width, ld)
            }
        }
    }

    @inline(__always)
    private static func float(_ p: UnsafeMutablePointer<T>) -> UnsafeMutablePointer<Float> {
        UnsafeMutableRawPointer(p).assumingMemoryBound(to: Float.self)
    }

    /// `f` over the rows, in place. Through a small buffer: written straight back, relu's
    /// select of a value with itself became a conditional store, a branch per element (4x
    /// slower than two passes).
    @inline(__always)
    private static func run<F: UnaryKernel>(_ f: F, _ c: UnsafeMutablePointer<F.A>, _ rows: Int, _ width: Int,
                                            _ ld: Int) where F.A == F.R {
        let (lines, n) = ld == width ? (1, rows * width) : (rows, width)
        withUnsafeTemporaryAllocation(of: F.A.self, capacity: Swift.min(n, 512)) { buffer in
            guard let tmp = buffer.baseAddress else { return }
            for r in 0..<lines {
                var p = c + r * ld, left = n
                while left > 0 {
                    let k = Swift.min(left, buffer.count)
                    for j in 0..<k { tmp[j] = f(p[j]) }
                    p.update(from: tmp, count: k)
                    p += k
                    left -= k
                }
            }
        }
    }
}

/// Whether `act(y + bias)` can run inside the kernel writing y (dtype `dtype`, `channels` in
/// its last axis, rank `rank`): float32/float64, and a bias of that dtype that is one row of
/// channels, or none.
func epilogueFits(bias: Tensor?, dtype: DType, channels: Int, rank: Int) -> Bool {
    guard dtype == .float32 || dtype == .float64 else { return false }
    guard let b = bias else { return true }
    return b.dtype == dtype && b.count == channels && b.rank <= rank && b.shape.dropLast().allSatisfy { $0 == 1 }
}

/// Records `y = act(base(inputs) + bias)`, computed with an epilogue, as one tape node:
/// `base` maps the gradient at `base`'s output to the inputs' gradients. The activation's
/// gradient is read off y alone: relu's, sigmoid's and tanh's derivatives need y only (relu's
/// the sign of its input, which y shares), so the pre-activation is never kept.
func recordEpilogue(_ y: Tensor, _ inputs: [Tensor], bias: Tensor?, activation: EpilogueActivation,
                    _ base: @escaping (Tensor) throws -> [Tensor?]) {
    Tape.record(y, inputs + (bias.map { [$0] } ?? [])) { g in
        let gz = try activation.unaryOp.map { try unaryVJP($0, g, x: y, y: y) } ?? g
        var grads = try base(gz)
        if let b = bias { grads.append(Tape.needsInputGrad(inputs.count) ? try sumToShape(gz, b.shape) : nil) }
        return grads
    }
}

/// `act(y + bias)` as the ops it stands for (each recorded on the tape as usual).
func epilogueByOps(_ y: Tensor, bias: Tensor?, activation: EpilogueActivation) throws -> Tensor {
    var r = y
    if let b = bias { r = try add(r, b) }
    if let op = activation.unaryOp { r = try unary(op, r) }
    return r
}

/// The schema's attribute for an op that takes an epilogue.
let epilogueActivationAttr = AttrSpec.string("activation", default: "none",
                                              choices: EpilogueActivation.allCases.map(\.rawValue))

extension Attrs {
    /// The `activation` attribute of an op with an epilogue.
    func epilogueActivation() throws -> EpilogueActivation {
        let name = try string("activation")
        guard let a = EpilogueActivation(rawValue: name) else { throw EngineError.value("unknown activation '\(name)'") }
        return a
    }
}
