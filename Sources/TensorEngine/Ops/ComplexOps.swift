/// complex64 / complex128: casts, arithmetic, the part accessors, reductions and matmul.
///
/// Complex tensors are for computing, not training: no complex op records a gradient.
/// Only ops whose schema lists the complex dtypes accept complex inputs through the
/// registry; the others refuse them by name instead of silently dropping the imaginary part.

/// Calls `visit` with the part type (Float or Double) of a complex dtype.
protocol ComplexVisitor {
    associatedtype Result
    func visit<R: ComplexPart>(_ r: R.Type) throws -> Result
}

func dispatchComplex<V: ComplexVisitor>(_ dt: DType, _ v: V) throws -> V.Result {
    switch dt {
    case .complex64: return try v.visit(Float.self)
    case .complex128: return try v.visit(Double.self)
    default: throw EngineError.internal("no complex kernel for \(dt)")
    }
}

// MARK: - Kernels

private struct ComplexConvert<S: ComplexPart, D: ComplexPart>: UnaryKernel {
    @inline(__always) func callAsFunction(_ z: Complex<S>) -> Complex<D> { Complex(D(z.re), D(z.im)) }
}
private struct Nonzero<R: ComplexPart>: UnaryKernel {
    @inline(__always) func callAsFunction(_ z: Complex<R>) -> Bool { !z.isZero }
}
private struct RealPart<R: ComplexPart>: UnaryKernel {
    @inline(__always) func callAsFunction(_ z: Complex<R>) -> R { z.re }
}
private struct ImagPart<R: ComplexPart>: UnaryKernel {
    @inline(__always) func callAsFunction(_ z: Complex<R>) -> R { z.im }
}
private struct Magnitude<R: ComplexPart>: UnaryKernel {
    @inline(__always) func callAsFunction(_ z: Complex<R>) -> R { z.magnitude }
}
private struct Argument<R: ComplexPart>: UnaryKernel {
    @inline(__always) func callAsFunction(_ z: Complex<R>) -> R { z.argument }
}
private struct MakeComplex<R: ComplexPart>: BinaryKernel {
    @inline(__always) func callAsFunction(_ re: R, _ im: R) -> Complex<R> { Complex(re, im) }
}
private struct ComplexPredicate<R: ComplexPart>: UnaryKernel {
    let op: UnaryOp
    @inline(__always) func callAsFunction(_ z: Complex<R>) -> Bool {
        switch op {
        case .isnan: return z.isNaN
        case .isinf: return z.isInfinite
        default: return z.isFinite
        }
    }
}
private struct ComplexUnary<R: ComplexPart>: UnaryKernel {
    let op: UnaryOp
    @inline(__always) func callAsFunction(_ z: Complex<R>) -> Complex<R> {
        switch op {
        case .negative: return -z
        case .square: return z * z
        case .exp: return .exp(z)
        case .log: return .log(z)
        case .sqrt: return .sqrt(z)
        case .reciprocal: return Complex(1) / z
        case .sign: return .sign(z)
        default: return z  // complexUnary lets no other op through
        }
    }
}
private struct Conjugate<R: ComplexPart>: UnaryKernel {
    @inline(__always) func callAsFunction(_ z: Complex<R>) -> Complex<R> { z.conjugate }
}
private struct ComplexArithmetic<R: ComplexPart>: BinaryKernel {
    let op: BinaryOp
    @inline(__always) func callAsFunction(_ a: Complex<R>, _ b: Complex<R>) -> Complex<R> {
        switch op {
        case .add: return a + b
        case .subtract: return a - b
        case .multiply: return a * b
        case .divide: return a / b
        default: return .pow(a, b)
        }
    }
}
private struct ComplexEqual<R: ComplexPart>: BinaryKernel {
    let equal: Bool
    @inline(__always) func callAsFunction(_ a: Complex<R>, _ b: Complex<R>) -> Bool { (a == b) == equal }
}

// MARK: - Elementwise

/// The complex cases of `cast`: between the two widths, and to bool (true when either part
/// is non-zero). Real <-> complex goes through the generic path, which keeps the real part.
func castComplex(_ x: Tensor, _ out: Tensor) -> Bool {
    switch (x.dtype, out.dtype) {
    case (.complex64, .complex128): mapUnary(x, out, ComplexConvert<Float, Double>())
    case (.complex128, .complex64): mapUnary(x, out, ComplexConvert<Double, Float>())
    case (.complex64, .bool): mapUnary(x, out, Nonzero<Float>())
    case (.complex128, .bool): mapUnary(x, out, Nonzero<Double>())
    default: return false
    }
    return true
}

/// `binary` for operands already promoted to a complex dtype.
func complexBinary(_ op: BinaryOp, _ a: Tensor, _ b: Tensor) throws -> Tensor {
    switch op {
    case .add, .subtract, .multiply, .divide, .power, .equal, .notEqual: break
    default: throw EngineError.type("\(op.rawValue) is not defined for \(a.dtype) (complex numbers have no order)")
    }
    let out = try Tensor(empty: try broadcastShapes(a.shape, b.shape), dtype: op.isComparison ? .bool : a.dtype)
    struct K: ComplexVisitor {
        let op: BinaryOp, a: Tensor, b: Tensor, out: Tensor
        func visit<R: ComplexPart>(_: R.Type) throws {
            if op.isComparison {
                mapBinary(a, b, out, ComplexEqual<R>(equal: op == .equal))
            } else {
                mapBinary(a, b, out, ComplexArithmetic<R>(op: op))
            }
        }
    }
    try dispatchComplex(a.dtype, K(op: op, a: a, b: b, out: out))
    return out
}

/// `unary` on a complex tensor. abs gives the real magnitude, the predicates give bool.
func complexUnary(_ op: UnaryOp, _ x: Tensor) throws -> Tensor {
    let part = x.dtype.complexPart!
    switch op {
    case .abs: return try complexToReal(x, Magnitude<Float>(), Magnitude<Double>())
    case .logicalNot: return try unary(.logicalNot, try cast(x, to: .bool))
    case .isnan, .isinf, .isfinite:
        let out = try Tensor(empty: x.shape, dtype: .bool)
        if part == .float32 { mapUnary(x, out, ComplexPredicate<Float>(op: op)) } else { mapUnary(x, out, ComplexPredicate<Double>(op: op)) }
        return out
    case .negative, .square, .exp, .log, .sqrt, .reciprocal, .sign:
        return try complexMap(x, op)
    default:
        throw EngineError.type("\(op) is not implemented for \(x.dtype)")
    }
}

private func complexMap(_ x: Tensor, _ op: UnaryOp) throws -> Tensor {
    let out = try Tensor(empty: x.shape, dtype: x.dtype)
    if x.dtype == .complex64 { mapUnary(x, out, ComplexUnary<Float>(op: op)) } else { mapUnary(x, out, ComplexUnary<Double>(op: op)) }
    return out
}

private func complexToReal<F: UnaryKernel, D: UnaryKernel>(_ x: Tensor, _ f: F, _ d: D) throws -> Tensor {
    let out = try Tensor(empty: x.shape, dtype: x.dtype.complexPart!)
    if x.dtype == .complex64 { mapUnary(x, out, f) } else { mapUnary(x, out, d) }
    return out
}

/// The real part (a real tensor is its own real part).
public func real(_ x: Tensor) throws -> Tensor {
    guard x.dtype.isComplex else { return x }
    return try complexToReal(x, RealPart<Float>(), RealPart<Double>())
}

/// The imaginary part (zeros for a real tensor).
public func imag(_ x: Tensor) throws -> Tensor {
    guard x.dtype.isComplex else { return try zerosLike(x) }
    return try complexToReal(x, ImagPart<Float>(), ImagPart<Double>())
}

/// The complex conjugate (a real tensor is its own conjugate).
public func conj(_ x: Tensor) throws -> Tensor {
    guard x.dtype.isComplex else { return x }
    let out = try Tensor(empty: x.shape, dtype: x.dtype)
    if x.dtype == .complex64 { mapUnary(x, out, Conjugate<Float>()) } else { mapUnary(x, out, Conjugate<Double>()) }
    return out
}

/// The argument (phase) of each element, in radians.
public func angle(_ x: Tensor) throws -> Tensor {
    guard x.dtype.isComplex else {
        // numpy's angle of a real x: arctan2(0, x), so -0.0 gives pi.
        let f = x.dtype.isFloatingPoint ? x : try cast(x, to: .float32)
        return try binary(.arctan2, try Tensor(zeros: [], dtype: f.dtype), f)
    }
    return try complexToReal(x, Argument<Float>(), Argument<Double>())
}

/// re + i·im with broadcasting; float64 parts give complex128, any other real dtype complex64.
public func complex(_ re0: Tensor, _ im0: Tensor) throws -> Tensor {
    let (re1, im1) = try promote(re0, im0)
    let part: DType = re1.dtype == .float64 ? .float64 : .float32
    let re = try cast(re1, to: part), im = try cast(im1, to: part)
    let out = try Tensor(empty: try broadcastShapes(re.shape, im.shape), dtype: part == .float64 ? .complex128 : .complex64)
    if part == .float32 { mapBinary(re, im, out, MakeComplex<Float>()) } else { mapBinary(re, im, out, MakeComplex<Double>()) }
    return out
}

// MARK: - Reductions and matmul

/// A complex tensor's storage seen as real (…, 2) pairs, without copying.
func complexAsPairs(_ x: Tensor) -> Tensor {
    Tensor(storage: x.storage, shape: x.shape + [2], dtype: x.dtype.complexPart!, count: x.count * 2)
}

/// Real (…, 2) pairs seen as complex, without copying.
func pairsAsComplex(_ x: Tensor) -> Tensor {
    Tensor(storage: x.storage, shape: Array(x.shape.dropLast()), dtype: x.dtype == .float64 ? .complex128 : .complex64,
           count: x.count / 2)
}

/// Sum and mean act on the two parts independently, so they reduce the pairs view.
func complexReduce(_ op: ReduceOp, _ x: Tensor, axes: [Int]?, keepdims: Bool) throws -> Tensor {
    guard op == .sum || op == .mean else {
        throw EngineError.type("\(op.rawValue) is not defined for \(x.dtype) (complex numbers have no order)")
    }
    let axes = try normalizeAxes(axes, rank: x.rank)
    return pairsAsComplex(try reduce(op, complexAsPairs(x), axes: axes, keepdims: keepdims))
}

/// (a + ib)(c + id) = (ac - bd) + i(ad + bc): four real matmuls through OpenBLAS.
func complexMatmul(_ x: Tensor, _ y: Tensor) throws -> Tensor {
    let a = try real(x), b = try imag(x), c = try real(y), d = try imag(y)
    return try complex(try subtract(try matmul(a, c), try matmul(b, d)), try add(try matmul(a, d), try matmul(b, c)))
}

/// Ops whose registry entry accepts complex inputs: dtype-blind data movement plus the ops
/// above. Every other op refuses a complex input by name (see `OpDef`).
let complexOps: [OpDef] = [
    OpDef(unary: "real", dtypes: .all, grad: .no, doc: "Real part (x itself for real x)") { x, _ in try real(x) },
    OpDef(unary: "imag", dtypes: .all, grad: .no, doc: "Imaginary part (zeros for real x)") { x, _ in try imag(x) },
    OpDef(unary: "conj", dtypes: .all, grad: .no, doc: "Complex conjugate (x itself for real x)") { x, _ in try conj(x) },
    OpDef(unary: "angle", dtypes: .all, grad: .no, doc: "Argument in (-pi, pi] (0 or pi for real x)") { x, _ in try angle(x) },
    OpDef("complex", inputs: ["real", "imag"], grad: .no,
          doc: "real + imag * i: complex64 from float32 parts, complex128 from float64") { t, _ in try complex(t[0], t[1]) },
]
