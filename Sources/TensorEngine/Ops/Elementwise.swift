import COpenBLAS
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
#if arch(x86_64)
// SSE2 square roots: `Float.squareRoot()` lowers to a libm call that sets errno for
// negative inputs, which keeps LLVM from vectorising loops over it.
import _Builtin_intrinsics.intel
#endif

// MARK: - Loop drivers
//
// Kernels are functor structs, not closures: a closure captured by the threaded loop body
// stays an indirect call per element (no inlining, no vectorisation), while a functor's
// concrete type is known wherever the driver is specialised.

protocol UnaryKernel {
    associatedtype A
    associatedtype R
    func callAsFunction(_ x: A) -> R
}

protocol BinaryKernel {
    associatedtype A
    associatedtype B
    associatedtype R
    func callAsFunction(_ a: A, _ b: B) -> R
}

/// A kernel of a few instructions per element, so that a loop over it streams memory
/// (`Threading.streamingGrain` decides its threads).
protocol Streaming {}

/// out[i] = f(x[i]) over contiguous memory, threaded above the grain.
@inline(__always)
func mapUnary<F: UnaryKernel>(_ x: Tensor, _ out: Tensor, _ f: F) {
    let px = x.pointer(F.A.self), po = out.pointer(F.R.self)
    parallelFor(out.count, streaming: f is Streaming) { r in for i in r { po[i] = f(px[i]) } }
}

/// out = g · f(a, b) over same-shaped contiguous operands: a VJP's incoming gradient times
/// its derivative, the product `multiply` would form, without the derivative's buffer.
@inline(__always)
func mapScaled<F: BinaryKernel>(_ g: Tensor, _ a: Tensor, _ b: Tensor, _ out: Tensor, _ f: F) where F.A: FloatElem, F.B == F.A, F.R == F.A {
    let pg = g.pointer(F.R.self), pa = a.pointer(F.A.self), pb = b.pointer(F.B.self), po = out.pointer(F.R.self)
    parallelFor(out.count, streaming: f is Streaming) { r in for i in r { po[i] = pg[i] * f(pa[i], pb[i]) } }
}

/// out = f(a, b) with numpy broadcasting; `out` already has the broadcast shape.
@inline(__always)
func mapBinary<F: BinaryKernel>(_ a: Tensor, _ b: Tensor, _ out: Tensor, _ f: F) {
    let pa = a.pointer(F.A.self), pb = b.pointer(F.B.self), po = out.pointer(F.R.self)
    let n = out.count, streaming = f is Streaming
    if a.count == n && b.count == n {
        parallelFor(n, streaming: streaming) { r in for i in r { po[i] = f(pa[i], pb[i]) } }
        return
    }
    if b.count == 1 && a.count == n {
        let s = pb[0]
        parallelFor(n, streaming: streaming) { r in for i in r { po[i] = f(pa[i], s) } }
        return
    }
    if a.count == 1 && b.count == n {
        let s = pa[0]
        parallelFor(n, streaming: streaming) { r in for i in r { po[i] = f(s, pb[i]) } }
        return
    }
    if n == 0 { return }
    let (shape, st) = coalesce(out.shape, [broadcastStrides(a.shape, to: out.shape), broadcastStrides(b.shape, to: out.shape)])
    let inner = shape.last!, sa = st[0].last!, sb = st[1].last!
    let outerShape = Array(shape.dropLast())
    let outerA = Array(st[0].dropLast()), outerB = Array(st[1].dropLast())
    let outer = n / inner
    parallelFor(outer, cost: inner, streaming: streaming && sa <= 1 && sb <= 1) { range in
        var idx = repeatedInts(0, count: outerShape.count)
        var rem = range.lowerBound, offA = 0, offB = 0
        for d in stride(from: outerShape.count - 1, through: 0, by: -1) {
            idx[d] = rem % outerShape[d]
            rem /= outerShape[d]
            offA += idx[d] * outerA[d]
            offB += idx[d] * outerB[d]
        }
        for o in range {
            let base = o * inner
            if sa == 1 && sb == 1 {
                // Row-broadcast operands (x + bias, x * scale): both contiguous, so it vectorises.
                let ra = pa + offA, rb = pb + offB, ro = po + base
                for i in 0..<inner { ro[i] = f(ra[i], rb[i]) }
            } else if sa == 1 && sb == 0 {
                // Row pointers, not `po[base + i]`: the overflow check on each index sum kept
                // these column-broadcast loops (x * rsqrt(var), softmax's backward) scalar.
                let s = pb[offB], ra = pa + offA, ro = po + base
                for i in 0..<inner { ro[i] = f(ra[i], s) }
            } else if sa == 0 && sb == 1 {
                let s = pa[offA], rb = pb + offB, ro = po + base
                for i in 0..<inner { ro[i] = f(s, rb[i]) }
            } else {
                let ra = pa + offA, rb = pb + offB, ro = po + base
                for i in 0..<inner { ro[i] = f(ra[i &* sa], rb[i &* sb]) }
            }
            var d = outerShape.count - 1
            while d >= 0 {
                idx[d] += 1
                offA += outerA[d]
                offB += outerB[d]
                if idx[d] < outerShape[d] { break }
                offA -= outerA[d] * outerShape[d]
                offB -= outerB[d] * outerShape[d]
                idx[d] = 0
                d -= 1
            }
        }
    }
}

// MARK: - Cast

/// Calls `visit` with the storage type of any dtype.
protocol ElementVisitor {
    associatedtype Result
    func visit<T: TensorElement>(_ t: T.Type) throws -> Result
}

func dispatchElement<V: ElementVisitor>(_ dt: DType, _ v: V) throws -> V.Result {
    switch dt {
    case .bool: return try v.visit(Bool.self)
    case .int8: return try v.visit(Int8.self)
    case .int16: return try v.visit(Int16.self)
    case .int32: return try v.visit(Int32.self)
    case .int64: return try v.visit(Int64.self)
    case .uint8: return try v.visit(UInt8.self)
    case .uint16: return try v.visit(UInt16.self)
    case .uint32: return try v.visit(UInt32.self)
    case .uint64: return try v.visit(UInt64.self)
    case .float16: return try v.visit(Float16.self)
    case .bfloat16: return try v.visit(BFloat16.self)
    case .float8_e4m3fn: return try v.visit(Float8E4M3FN.self)
    case .float8_e5m2: return try v.visit(Float8E5M2.self)
    case .float32: return try v.visit(Float.self)
    case .float64: return try v.visit(Double.self)
    case .complex64: return try v.visit(Complex<Float>.self)
    case .complex128: return try v.visit(Complex<Double>.self)
    }
}

private struct ViaInt64<S: TensorElement, D: TensorElement>: UnaryKernel, Streaming {
    @inline(__always) func callAsFunction(_ v: S) -> D { D(fromInt64: v.int64Value) }
}
private struct ViaDouble<S: TensorElement, D: TensorElement>: UnaryKernel, Streaming {
    @inline(__always) func callAsFunction(_ v: S) -> D { D(fromDouble: v.doubleValue) }
}
private struct Int32ToFloat: UnaryKernel, Streaming {
    @inline(__always) func callAsFunction(_ v: Int32) -> Float { Float(v) }
}
private struct FloatToDouble: UnaryKernel, Streaming {
    @inline(__always) func callAsFunction(_ v: Float) -> Double { Double(v) }
}
private struct DoubleToFloat: UnaryKernel, Streaming {
    @inline(__always) func callAsFunction(_ v: Double) -> Float { Float(v) }
}

private struct CastInner<S: TensorElement>: ElementVisitor {
    let x: Tensor, out: Tensor
    func visit<D: TensorElement>(_: D.Type) throws {
        if S.dtype.isInteger || S.dtype == .bool, D.dtype.isInteger || D.dtype == .bool {
            mapUnary(x, out, ViaInt64<S, D>())
        } else if S.self == Int32.self, D.self == Float.self {
            // Labels and masks: one conversion instead of two through Double.
            mapUnary(x, out, Int32ToFloat())
        } else if S.self == Float.self, D.self == Double.self {
            mapUnary(x, out, FloatToDouble())
        } else if S.self == Double.self, D.self == Float.self {
            mapUnary(x, out, DoubleToFloat())
        } else {
            mapUnary(x, out, ViaDouble<S, D>())
        }
    }
}

/// `x` converted to `dtype`: floats to ints truncate toward zero and saturate (NaN → 0),
/// ints wrap, anything to bool is `!= 0`. Differentiable between float dtypes.
public func cast(_ x: Tensor, to dtype: DType) throws -> Tensor {
    if x.dtype == dtype { return x }
    let out = try Tensor(empty: x.shape, dtype: dtype)
    struct Outer: ElementVisitor {
        let x: Tensor, out: Tensor
        func visit<S: TensorElement>(_: S.Type) throws {
            try dispatchElement(out.dtype, CastInner<S>(x: x, out: out))
        }
    }
    if !castComplex(x, out) { try dispatchElement(x.dtype, Outer(x: x, out: out)) }
    if x.dtype.isFloatingPoint && dtype.isFloatingPoint {
        let src = x.dtype
        Tape.record(out, [x]) { g in [try cast(g, to: src)] }
    }
    return out
}

/// Identity that is never recorded: gradients stop here.
public func stopGradient(_ x: Tensor) -> Tensor {
    Tensor(storage: x.storage, shape: x.shape, dtype: x.dtype, count: x.count)
}

// MARK: - Kernel functors

struct Add<T: NumElem>: BinaryKernel, Streaming { @inline(__always) func callAsFunction(_ a: T, _ b: T) -> T { T.add(a, b) } }
struct Sub<T: NumElem>: BinaryKernel, Streaming { @inline(__always) func callAsFunction(_ a: T, _ b: T) -> T { T.sub(a, b) } }
struct Mul<T: NumElem>: BinaryKernel, Streaming { @inline(__always) func callAsFunction(_ a: T, _ b: T) -> T { T.mul(a, b) } }
struct Div<T: NumElem>: BinaryKernel { @inline(__always) func callAsFunction(_ a: T, _ b: T) -> T { T.div(a, b) } }
struct Pow<T: NumElem>: BinaryKernel { @inline(__always) func callAsFunction(_ a: T, _ b: T) -> T { T.pow(a, b) } }
struct Max<T: NumElem>: BinaryKernel, Streaming { @inline(__always) func callAsFunction(_ a: T, _ b: T) -> T { T.maxOrNaN(a, b) } }
struct Min<T: NumElem>: BinaryKernel, Streaming { @inline(__always) func callAsFunction(_ a: T, _ b: T) -> T { T.minOrNaN(a, b) } }
struct FloorDiv<T: NumElem>: BinaryKernel { @inline(__always) func callAsFunction(_ a: T, _ b: T) -> T { T.floorDiv(a, b) } }
struct Mod<T: NumElem>: BinaryKernel { @inline(__always) func callAsFunction(_ a: T, _ b: T) -> T { T.mod(a, b) } }
struct Eq<T: NumElem>: BinaryKernel, Streaming { @inline(__always) func callAsFunction(_ a: T, _ b: T) -> Bool { a == b } }
struct Ne<T: NumElem>: BinaryKernel, Streaming { @inline(__always) func callAsFunction(_ a: T, _ b: T) -> Bool { a != b } }
struct Lt<T: NumElem>: BinaryKernel, Streaming { @inline(__always) func callAsFunction(_ a: T, _ b: T) -> Bool { a < b } }
struct Le<T: NumElem>: BinaryKernel, Streaming { @inline(__always) func callAsFunction(_ a: T, _ b: T) -> Bool { a <= b } }
struct Gt<T: NumElem>: BinaryKernel, Streaming { @inline(__always) func callAsFunction(_ a: T, _ b: T) -> Bool { a > b } }
struct Ge<T: NumElem>: BinaryKernel, Streaming { @inline(__always) func callAsFunction(_ a: T, _ b: T) -> Bool { a >= b } }
struct Atan2<T: FloatElem>: BinaryKernel { @inline(__always) func callAsFunction(_ y: T, _ x: T) -> T { T.atan2(y, x) } }
/// The next representable value after a in the direction of b.
struct NextAfter<T: FloatElem>: BinaryKernel {
    @inline(__always) func callAsFunction(_ a: T, _ b: T) -> T {
        if a.isNaN || b.isNaN { return .nan }
        return a == b ? b : (a < b ? a.nextUp : a.nextDown)
    }
}
struct BoolAnd: BinaryKernel, Streaming { @inline(__always) func callAsFunction(_ a: Bool, _ b: Bool) -> Bool { a && b } }
struct BoolOr: BinaryKernel, Streaming { @inline(__always) func callAsFunction(_ a: Bool, _ b: Bool) -> Bool { a || b } }
struct BoolXor: BinaryKernel, Streaming { @inline(__always) func callAsFunction(_ a: Bool, _ b: Bool) -> Bool { a != b } }
struct First<T>: BinaryKernel, Streaming { @inline(__always) func callAsFunction(_ a: T, _ b: UInt8) -> T { a } }

struct Neg<T: NumElem>: UnaryKernel, Streaming { @inline(__always) func callAsFunction(_ x: T) -> T { T.neg(x) } }
struct Abs<T: NumElem>: UnaryKernel, Streaming { @inline(__always) func callAsFunction(_ x: T) -> T { T.abs(x) } }
struct Sign<T: NumElem>: UnaryKernel, Streaming { @inline(__always) func callAsFunction(_ x: T) -> T { T.sign(x) } }
struct Square<T: NumElem>: UnaryKernel, Streaming { @inline(__always) func callAsFunction(_ x: T) -> T { T.mul(x, x) } }
/// max(x, 0), NaN-propagating for floats.
/// NaN stays NaN (`NaN <= 0` is false). One comparison and a select, no `||`: its short circuit
/// made an in-place loop (a GEMM epilogue) a branch and a conditional store per element.
struct Relu<T: NumElem>: UnaryKernel, Streaming { @inline(__always) func callAsFunction(_ x: T) -> T { x <= T.zeroValue ? T.zeroValue : x } }
struct Identity<T>: UnaryKernel, Streaming { @inline(__always) func callAsFunction(_ x: T) -> T { x } }
struct Not: UnaryKernel, Streaming { @inline(__always) func callAsFunction(_ x: Bool) -> Bool { !x } }
struct AlwaysTrue: UnaryKernel, Streaming { @inline(__always) func callAsFunction(_ x: Bool) -> Bool { true } }
struct IsNaN<T: FloatElem>: UnaryKernel, Streaming { @inline(__always) func callAsFunction(_ x: T) -> Bool { x.isNaN } }
struct IsInf<T: FloatElem>: UnaryKernel, Streaming { @inline(__always) func callAsFunction(_ x: T) -> Bool { x.isInfinite } }
struct IsFinite<T: FloatElem>: UnaryKernel, Streaming { @inline(__always) func callAsFunction(_ x: T) -> Bool { x.isFinite } }
struct Sqrt<T: FloatElem>: UnaryKernel { @inline(__always) func callAsFunction(_ x: T) -> T { T.sqrt(x) } }
struct Rsqrt<T: FloatElem>: UnaryKernel { @inline(__always) func callAsFunction(_ x: T) -> T { 1 / T.sqrt(x) } }
struct Reciprocal<T: FloatElem>: UnaryKernel { @inline(__always) func callAsFunction(_ x: T) -> T { 1 / x } }
struct Exp<T: FloatElem>: UnaryKernel { @inline(__always) func callAsFunction(_ x: T) -> T { T.exp(x) } }
struct Log<T: FloatElem>: UnaryKernel { @inline(__always) func callAsFunction(_ x: T) -> T { T.log(x) } }
struct Tanh<T: FloatElem>: UnaryKernel { @inline(__always) func callAsFunction(_ x: T) -> T { T.tanh(x) } }
struct Sigmoid<T: FloatElem>: UnaryKernel { @inline(__always) func callAsFunction(_ x: T) -> T { UnaryOp.sigmoid.apply(x) } }
/// Any unary op; the switch runs per element, so the hot ops above have their own functors.
struct Apply<T: FloatElem>: UnaryKernel {
    let op: UnaryOp
    @inline(__always) func callAsFunction(_ x: T) -> T { op.apply(x) }
}
struct Derivative<T: FloatElem>: BinaryKernel {
    let op: UnaryOp
    @inline(__always) func callAsFunction(_ x: T, _ y: T) -> T { op.derivative(x, y) }
}

// MARK: - Float32 fast paths
//
// libm's expf/tanhf/powf are opaque calls, so loops over them run one element at a time.
// The float32 training hot spots (exp, tanh, sigmoid, erf, both gelus and power) use the
// branch-free polynomials below instead, which LLVM vectorises; they stay within ~1.3 ulp
// (erf 2.5) of the correctly rounded result and keep libm's NaN/inf/overflow behaviour.
// Their multiply-adds fuse on a CPU with FMA (the x86-64-v3 build), so the engine builds
// may differ in the last bit there.

enum VecMath {
    /// a * b + c, fused where the build targets a CPU with FMA (a constant, so it folds).
    @inline(__always)
    static func muladd(_ a: Float, _ b: Float, _ c: Float) -> Float { TE_HAS_FMA != 0 ? c.addingProduct(a, b) : a * b + c }
    @inline(__always)
    static func muladd(_ a: Double, _ b: Double, _ c: Double) -> Double { TE_HAS_FMA != 0 ? c.addingProduct(a, b) : a * b + c }

    /// e^x (Cephes expf: x = n ln2 + r, degree-6 polynomial in r, then 2^n).
    @inline(__always)
    static func exp(_ x: Float) -> Float {
        let e = expClamped(x)
        return x > 88.72283 ? .infinity : (x < -103.0 ? 0 : (x != x ? x : e))
    }

    /// e^x for x clamped to [-103, 88.72] (NaN stays NaN): without `exp`'s overflow and
    /// underflow selects, for callers whose formula already saturates at those ends.
    @inline(__always)
    static func expClamped(_ x: Float) -> Float {
        let c = Swift.min(Swift.max(x, -103.0), 88.72283)
        // Adding 1.5 * 2^23 rounds to an integer held in the low mantissa bits.
        let magic: Float = 12582912.0
        let t = c * 1.44269504088896341 + magic
        let n = t - magic
        let r = (c - n * 0.693359375) - n * -2.12194440e-4
        var p: Float = 1.9875691500e-4
        p = muladd(p, r, 1.3981999507e-3)
        p = muladd(p, r, 8.3334519073e-3)
        p = muladd(p, r, 4.1665795894e-2)
        p = muladd(p, r, 1.6666665459e-1)
        p = muladd(p, r, 5.0000001201e-1)
        let y = p * (r * r) + r + 1
        // 2^n as two factors so that n in [-150, 128] needs no denormal/inf exponent field.
        let ni = Int32(bitPattern: t.bitPattern &- magic.bitPattern)
        let h = ni &>> 1
        let s1 = Float(bitPattern: UInt32(bitPattern: (h &+ 127) &<< 23))
        let s2 = Float(bitPattern: UInt32(bitPattern: (ni &- h &+ 127) &<< 23))
        return y * s1 * s2
    }

    /// tanh(x): odd polynomial below |x| = 0.625 (Cephes tanhf), 1 - 2 / (e^2|x| + 1) above.
    @inline(__always)
    static func tanh(_ x: Float) -> Float {
        let a = Swift.abs(x)
        let z = a * a
        var p: Float = -5.70498872745e-3
        p = muladd(p, z, 2.06390887954e-2)
        p = muladd(p, z, -5.37397155531e-2)
        p = muladd(p, z, 1.33314422036e-1)
        p = muladd(p, z, -3.33332819422e-1)
        let small = p * z * a + a
        // 2 / (e^2a + 1) is already 0 (to float32) where e^2a would overflow.
        let big = 1 - 2 / (expClamped(2 * a) + 1)
        let m = a < 0.625 ? small : big
        return Float(bitPattern: m.bitPattern | (x.bitPattern & 0x8000_0000))
    }

    /// 1 / (1 + e^-x); below -88.72 e^-x overflows and the result is 0, as with `exp`.
    @inline(__always)
    static func sigmoid(_ x: Float) -> Float {
        let s = 1 / (1 + expClamped(-x))
        return x < -88.72283 ? 0 : s
    }

    /// erf(x): a·P(a²) below |x| = 0.9, 1 − e^(−a²)·Q(1 / (1 + a/2)) below 4, ±1 beyond
    /// (P and Q least-squares fits to erf in float64); within 2.5 ulp of the true value.
    @inline(__always)
    static func erf(_ x: Float) -> Float {
        let a = Swift.abs(x), z = a * a
        var p: Float = 8.53412311489453e-05
        p = muladd(p, z, -0.000818078364283439)
        p = muladd(p, z, 0.0052043320752948735)
        p = muladd(p, z, -0.026860709299953527)
        p = muladd(p, z, 0.11283718901361472)
        p = muladd(p, z, -0.3761263525394434)
        p = muladd(p, z, 1.128379166796314)
        let t = 1 / (1 + 0.5 * a)
        var q: Float = 0.02880880589460104
        q = muladd(q, t, -0.22878220367561836)
        q = muladd(q, t, 0.7163572733283892)
        q = muladd(q, t, -1.112963539971567)
        q = muladd(q, t, 0.8507582564148808)
        q = muladd(q, t, -0.37284357014725467)
        q = muladd(q, t, 0.3429451245905174)
        q = muladd(q, t, 0.20540257553561547)
        q = muladd(q, t, 0.28883678720223316)
        q = muladd(q, t, 0.28144536624670935)
        q = muladd(q, t, 2.8131667371313813e-05)
        let m = a < 0.9 ? a * p : (a < 4 ? 1 - expClamped(-z) * q : 1)
        let r = x != x ? x : m
        return Float(bitPattern: r.bitPattern | (x.bitPattern & 0x8000_0000))
    }

    /// Sign bit set unless lo <= x <= hi (all below 2^31).
    @inline(__always)
    static func outside(_ x: UInt32, _ lo: UInt32, _ hi: UInt32) -> UInt32 {
        let d = x &- lo
        return d | ((hi &- lo) &- d)
    }
    /// All ones where x's sign bit is set, else zero.
    @inline(__always)
    static func lanes(_ x: UInt32) -> UInt32 { UInt32(bitPattern: Int32(bitPattern: x) &>> 31) }

    /// The bit pattern (a quiet NaN) `pow` returns for a lane it leaves to libm.
    static let powMiss: UInt32 = 0x7fc0_0bad

    /// a^b as 2^(b log2|a|), both steps in double (log2 of the mantissa through
    /// s = (m - 1)/(m + 1), relative error 4e-12; 2^f on |f| <= 1/2, 2e-9), so the float32
    /// result is within 0.55 ulp. It covers normal a > 0, a < 0 with an integral b (below
    /// 2^22), and a = +0 (or -0 with such a b) with b > 0, while the result stays within
    /// 2^±126; every other lane (NaN, infinities, subnormals, zero to a power <= 0, overflow,
    /// underflow, a negative base with a fractional exponent) returns `powMiss`, for powf.
    @inline(__always)
    static func pow(_ a: Float, _ b: Float) -> Float {
        let ua = a.bitPattern & 0x7fff_ffff
        // |a| = 2^e m with m in [sqrt(1/2), sqrt(2)).
        let e = Int32(bitPattern: ua &- 0x3f35_04f3) &>> 23
        let m = Double(Float(bitPattern: ua &- UInt32(bitPattern: e &<< 23)))
        let s = (m - 1) / (m + 1)
        let z = s * s
        // Estrin's scheme: a shorter dependency chain than Horner's, so more lanes overlap.
        let z2 = z * z
        let p = muladd(muladd(0.34056504272078675, z, 0.41168323407798496), z2,
                       muladd(0.5770833658978479, z, 0.9617966749648917))
        let pz = muladd(p, z, 2.8853900817872105)
        // Clamped so that 2^t below cannot wrap; results beyond 2^±126 go to powf anyway.
        // (Written as the x86 min/max select, one instruction each; NaN lanes fail below.)
        let bl = Double(b) * muladd(s, pz, Double(e))
        let tl = bl > -127 ? bl : -127
        let t = tl < 127 ? tl : 127
        // t = n + f with n an integer (held in the low bits of t + 1.5 * 2^52), |f| <= 1/2.
        let magic = 6755399441055744.0
        let k = t + magic
        let f = t - (k - magic)
        let f2 = f * f
        let q = muladd(f2 * f2, muladd(0.0001537173641691413, f2, muladd(0.0013399690321869524, f, 0.009618369911904857)),
                       muladd(f2, muladd(0.05550329602225805, f, 0.2402264848467342), muladd(0.6931472051156929, f, 1)))
        // The low 12 bits of magic's pattern are zero, so this shift leaves n << 52.
        let ur = Float(Double(bitPattern: q.bitPattern &+ (k.bitPattern &<< 52))).bitPattern
        // Each test leaves its verdict in the sign bit (set: the lane fails), so the tests
        // combine with | and & on integers. Written with comparisons and && (a branch),
        // LLVM narrows the lane masks to 16 bits and back, or stops vectorising.
        let ub = b.bitPattern & 0x7fff_ffff
        let kb = b + 12582912
        // b is an integer, and odd, by the same rounding in float32 (|b| < 2^22 only).
        let notSmallInt = (0 &- (((kb - 12582912) - b).bitPattern & 0x7fff_ffff)) | (0x4a7f_ffff &- ub)
        let fail = outside(ua, 0x0080_0000, 0x7f7f_ffff)    // a not normal
            | (0x7f7f_ffff &- ub)                              // b not finite
            | outside(ur, 0x0080_0000, 0x7e7f_ffff)             // |a^b| not in [2^-126, 2^126)
            | (a.bitPattern & notSmallInt)                     // a < 0, b not an integer
        // a = +0, or -0 with a small integral b; b > 0.
        let zero = (ua &- 1) & ~(a.bitPattern & notSmallInt) & ~outside(b.bitPattern, 1, 0x7f80_0000)
        let sign = a.bitPattern & ~notSmallInt & (kb.bitPattern &<< 31) & 0x8000_0000
        let failing = lanes(fail), zeroing = lanes(zero)
        return Float(bitPattern: (~failing & (ur | sign)) | (zeroing & sign) | (failing & ~zeroing & powMiss))
    }

    @inline(__always)
    static func geluTanh(_ x: Float) -> Float {
        0.5 * x * (1 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))
    }
}

struct ExpF32: UnaryKernel { @inline(__always) func callAsFunction(_ x: Float) -> Float { VecMath.exp(x) } }
struct TanhF32: UnaryKernel { @inline(__always) func callAsFunction(_ x: Float) -> Float { VecMath.tanh(x) } }
struct SigmoidF32: UnaryKernel { @inline(__always) func callAsFunction(_ x: Float) -> Float { VecMath.sigmoid(x) } }
struct GeluTanhF32: UnaryKernel { @inline(__always) func callAsFunction(_ x: Float) -> Float { VecMath.geluTanh(x) } }
struct ErfF32: UnaryKernel { @inline(__always) func callAsFunction(_ x: Float) -> Float { VecMath.erf(x) } }
struct GeluErfF32: UnaryKernel {
    @inline(__always) func callAsFunction(_ x: Float) -> Float { 0.5 * x * (1 + VecMath.erf(x * 0.7071067811865476)) }
}
/// d erf / dx and d gelu / dx (exact form), given x.
struct ErfGradF32: BinaryKernel {
    @inline(__always) func callAsFunction(_ x: Float, _ y: Float) -> Float { 1.1283791670955126 * VecMath.exp(-x * x) }
}
struct GeluErfGradF32: BinaryKernel {
    @inline(__always) func callAsFunction(_ x: Float, _ y: Float) -> Float {
        0.5 * (1 + VecMath.erf(x * 0.7071067811865476)) + x * VecMath.exp(-0.5 * x * x) * 0.3989422804014327
    }
}
/// d gelu_tanh / dx, given x (the forward output is not needed).
struct GeluTanhGradF32: BinaryKernel {
    @inline(__always) func callAsFunction(_ x: Float, _ y: Float) -> Float {
        let k: Float = 0.7978845608028654, c: Float = 0.044715
        let t = VecMath.tanh(k * (x + c * x * x * x))
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * c * x * x)
    }
}
/// Derivatives that only need y = f(x); generic, so any float dtype gets a vectorised loop.
struct TanhGrad<T: FloatElem>: BinaryKernel, Streaming { @inline(__always) func callAsFunction(_ x: T, _ y: T) -> T { 1 - y * y } }
struct SigmoidGrad<T: FloatElem>: BinaryKernel, Streaming { @inline(__always) func callAsFunction(_ x: T, _ y: T) -> T { y * (1 - y) } }
struct ExpGrad<T: FloatElem>: BinaryKernel, Streaming { @inline(__always) func callAsFunction(_ x: T, _ y: T) -> T { y } }
struct SqrtGrad<T: FloatElem>: BinaryKernel { @inline(__always) func callAsFunction(_ x: T, _ y: T) -> T { T(0.5) / y } }
struct ReluGrad<T: FloatElem>: BinaryKernel, Streaming { @inline(__always) func callAsFunction(_ x: T, _ y: T) -> T { x > 0 ? 1 : 0 } }

/// out = sqrt(x) or 1 / sqrt(x) over contiguous float32.
func mapSqrtF32(_ x: Tensor, _ out: Tensor, reciprocal: Bool) {
    let px = x.pointer(Float.self), po = out.pointer(Float.self)
    parallelFor(out.count) { r in
        sqrtF32Loop(px + r.lowerBound, po + r.lowerBound, r.count, reciprocal: reciprocal)
    }
}

/// `mapSqrtF32` over `n` elements from `x` (a fused chain's block runs it too, for the same bits).
@inline(__always)
func sqrtF32Loop(_ x: UnsafePointer<Float>, _ o: UnsafeMutablePointer<Float>, _ n: Int, reciprocal: Bool) {
    var i = 0
    #if arch(x86_64)
    let one = _mm_set1_ps(1)
    while i + 4 <= n {
        let v = _mm_sqrt_ps(_mm_loadu_ps(x + i))
        _mm_storeu_ps(o + i, reciprocal ? _mm_div_ps(one, v) : v)
        i += 4
    }
    #endif
    while i < n {
        let v = x[i].squareRoot()
        o[i] = reciprocal ? 1 / v : v
        i += 1
    }
}

/// out = a ** b over float32 where each operand is contiguous or a single value (false
/// otherwise): `VecMath.pow` over each thread's range, then powf for the lanes it left.
func mapPowF32(_ a: Tensor, _ b: Tensor, _ out: Tensor) -> Bool {
    let n = out.count
    guard a.count == n || a.count == 1, b.count == n || b.count == 1 else { return false }
    let pa = a.pointer(Float.self), pb = b.pointer(Float.self), po = out.pointer(Float.self)
    let sa = a.count == n ? 1 : 0, sb = b.count == n ? 1 : 0
    parallelFor(n, cost: 4) { r in
        powF32Block(pa + r.lowerBound * sa, sa, pb + r.lowerBound * sb, sb, po + r.lowerBound, r.count)
    }
    return true
}

/// o = a ** b over `n` elements, each operand contiguous (stride 1) or one value (stride 0),
/// not both one value: `VecMath.pow`, then powf for the lanes it left. `mapPowF32` runs it
/// over each thread's range, a fused chain over each block.
func powF32Block(_ a: UnsafePointer<Float>, _ sa: Int, _ b: UnsafePointer<Float>, _ sb: Int,
                 _ o: UnsafeMutablePointer<Float>, _ n: Int) {
    if sa == 1 && sb == 1 {
        powLoop(a, b, o, n)
    } else if sa == 1 {
        powLoop(a, scalar: b[0], o, n)
    } else {
        powLoop(scalar: a[0], b, o, n)
    }
    if anyPowMiss(o, n) {
        for i in 0..<n where o[i].bitPattern == VecMath.powMiss { o[i] = powf(a[i * sa], b[i * sb]) }
    }
}

// Each loop in a function of its own, over 0..<n: written inline in the threaded closure
// (over its Range), LLVM left the scan below scalar (a sixth of the op's time) and compiled
// the pow loops 5% slower. The scan is not folded into the pow loops either: there LLVM
// turns the test into a branch on pow's lane mask and stops vectorising.
@inline(never)
private func anyPowMiss(_ o: UnsafePointer<Float>, _ n: Int) -> Bool {
    var missed: UInt32 = 0
    for i in 0..<n { missed |= o[i].bitPattern == VecMath.powMiss ? 1 : 0 }
    return missed != 0
}
@inline(never)
private func powLoop(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ o: UnsafeMutablePointer<Float>, _ n: Int) {
    for i in 0..<n { o[i] = VecMath.pow(a[i], b[i]) }
}
@inline(never)
private func powLoop(_ a: UnsafePointer<Float>, scalar b: Float, _ o: UnsafeMutablePointer<Float>, _ n: Int) {
    for i in 0..<n { o[i] = VecMath.pow(a[i], b) }
}
@inline(never)
private func powLoop(scalar a: Float, _ b: UnsafePointer<Float>, _ o: UnsafeMutablePointer<Float>, _ n: Int) {
    for i in 0..<n { o[i] = VecMath.pow(a, b[i]) }
}

/// Runs the float32 fast path of `op`, if it has one.
func unaryFloat32Fast(_ op: UnaryOp, _ x: Tensor, _ out: Tensor) -> Bool {
    switch op {
    case .exp: mapUnary(x, out, ExpF32())
    case .tanh: mapUnary(x, out, TanhF32())
    case .sigmoid: mapUnary(x, out, SigmoidF32())
    case .gelu(approximate: true): mapUnary(x, out, GeluTanhF32())
    case .gelu(approximate: false): mapUnary(x, out, GeluErfF32())
    case .erf: mapUnary(x, out, ErfF32())
    case .sqrt: mapSqrtF32(x, out, reciprocal: false)
    case .rsqrt: mapSqrtF32(x, out, reciprocal: true)
    default: return false
    }
    return true
}

// MARK: - Binary ops

public enum BinaryOp: String, CaseIterable {
    case add, subtract, multiply, divide, power, maximum, minimum
    case floorDivide = "floor_divide", mod, arctan2, nextafter
    case equal, notEqual = "not_equal", less, lessEqual = "less_equal", greater, greaterEqual = "greater_equal"
    case logicalAnd = "logical_and", logicalOr = "logical_or", logicalXor = "logical_xor"

    var isComparison: Bool {
        switch self {
        case .equal, .notEqual, .less, .lessEqual, .greater, .greaterEqual: return true
        default: return false
        }
    }
    var isLogical: Bool { self == .logicalAnd || self == .logicalOr || self == .logicalXor }
    /// Whether the output may be written over an operand of its shape (`InPlace`): not for a
    /// bool result, nor power, whose float32 kernel re-reads its operands after writing (the
    /// lanes `VecMath.pow` leaves to powf).
    var inPlace: Bool { !isComparison && !isLogical && self != .power }
    var floatOnly: Bool { self == .arctan2 || self == .nextafter }
}

/// Promotes two operands to their common dtype (Keras's lattice), recording the casts.
func promote(_ a: Tensor, _ b: Tensor) throws -> (Tensor, Tensor) {
    if a.dtype == b.dtype { return (a, b) }
    let dt = DType.result(a.dtype, b.dtype)
    return (try cast(a, to: dt), try cast(b, to: dt))
}

/// Applies a binary op with broadcasting and dtype promotion. Comparisons and logical ops
/// return bool; half types compute in float32; bool arithmetic computes in uint8.
public func binary(_ op: BinaryOp, _ a0: Tensor, _ b0: Tensor) throws -> Tensor {
    if op.isLogical {
        let a = try cast(a0, to: .bool), b = try cast(b0, to: .bool)
        let out = try Tensor(empty: try broadcastShapes(a.shape, b.shape), dtype: .bool)
        switch op {
        case .logicalAnd: mapBinary(a, b, out, BoolAnd())
        case .logicalOr: mapBinary(a, b, out, BoolOr())
        default: mapBinary(a, b, out, BoolXor())
        }
        return out
    }
    let (a, b) = try promote(a0, b0)
    let dt = a.dtype
    if dt.isComplex { return try complexBinary(op, a, b) }
    if op == .nextafter && dt.isHalf { return try nextAfterNarrow(a, b) }
    if dt.isHalf || (op.floatOnly && !dt.isFloatingPoint) {
        let r = try binary(op, cast(a, to: .float32), cast(b, to: .float32))
        return op.isComparison || !dt.isHalf ? r : try cast(r, to: dt)
    }
    if dt == .bool {
        let r = try binary(op, cast(a, to: .uint8), cast(b, to: .uint8))
        return op.isComparison ? r : try cast(r, to: .bool)
    }
    let shape = try broadcastShapes(a.shape, b.shape)
    let out = op.inPlace ? try Tensor.output(shape: shape, dtype: dt, reusing: a, b)
                         : try Tensor(empty: shape, dtype: op.isComparison ? .bool : dt)
    struct K: NumericVisitor {
        let op: BinaryOp, a: Tensor, b: Tensor, out: Tensor
        func visit<T: NumElem>(_: T.Type) throws {
            switch op {
            case .add: mapBinary(a, b, out, Add<T>())
            case .subtract: mapBinary(a, b, out, Sub<T>())
            case .multiply: mapBinary(a, b, out, Mul<T>())
            case .divide: mapBinary(a, b, out, Div<T>())
            case .power:
                if T.self != Float.self || TE_HAS_AVX2 == 0 || !mapPowF32(a, b, out) { mapBinary(a, b, out, Pow<T>()) }
            case .maximum: mapBinary(a, b, out, Max<T>())
            case .minimum: mapBinary(a, b, out, Min<T>())
            case .floorDivide: mapBinary(a, b, out, FloorDiv<T>())
            case .mod: mapBinary(a, b, out, Mod<T>())
            case .equal: mapBinary(a, b, out, Eq<T>())
            case .notEqual: mapBinary(a, b, out, Ne<T>())
            case .less: mapBinary(a, b, out, Lt<T>())
            case .lessEqual: mapBinary(a, b, out, Le<T>())
            case .greater: mapBinary(a, b, out, Gt<T>())
            case .greaterEqual: mapBinary(a, b, out, Ge<T>())
            case .arctan2, .nextafter, .logicalAnd, .logicalOr, .logicalXor:
                throw EngineError.internal("\(op.rawValue) has no generic kernel")
            }
        }
    }
    struct F: FloatVisitor {
        let op: BinaryOp, a: Tensor, b: Tensor, out: Tensor
        func visit<T: FloatElem>(_: T.Type) throws {
            if op == .arctan2 { mapBinary(a, b, out, Atan2<T>()) } else { mapBinary(a, b, out, NextAfter<T>()) }
        }
    }
    if op.floatOnly { try dispatchFloat(dt, F(op: op, a: a, b: b, out: out)) } else { try dispatchNumeric(dt, K(op: op, a: a, b: b, out: out)) }
    if dt.isFloatingPoint && !op.isComparison && op != .nextafter {
        Tape.record(out, [a, b]) { g in try binaryVJP(op, a, b, out, g) }
    }
    return out
}

/// nextafter of a 16- or 8-bit float steps in its own bits: widened to float32 it would step
/// by float32's spacing and round back to `a`.
private func nextAfterNarrow(_ a: Tensor, _ b: Tensor) throws -> Tensor {
    let shape = try broadcastShapes(a.shape, b.shape)
    let x = try materialize(try cast(a, to: .float32), shape), y = try materialize(try cast(b, to: .float32), shape)
    let bitsA = try materialize(a, shape), bitsB = try materialize(b, shape)
    let nanBits = try cast(try scalar(.nan, .float32), to: a.dtype)
    let out = try Tensor(empty: shape, dtype: a.dtype)
    let px = x.pointer(Float.self), py = y.pointer(Float.self), n = out.count
    func step<W: FixedWidthInteger & UnsignedInteger>(_: W.Type) {
        let ba = bitsA.rawPointer.assumingMemoryBound(to: W.self), bb = bitsB.rawPointer.assumingMemoryBound(to: W.self)
        let po = out.rawPointer.assumingMemoryBound(to: W.self)
        let nan = nanBits.rawPointer.load(as: W.self), signBit: W = 1 << (W.bitWidth - 1)
        for i in 0..<n {
            let u = px[i], v = py[i]
            if u.isNaN || v.isNaN { po[i] = nan }
            else if u == v { po[i] = bb[i] }
            else if u == 0 { po[i] = v > 0 ? 1 : signBit | 1 }
            else { po[i] = (u < v) == (u > 0) ? ba[i] &+ 1 : ba[i] &- 1 }
        }
    }
    if a.dtype.itemSize == 1 { step(UInt8.self) } else { step(UInt16.self) }
    withExtendedLifetime((x, y, bitsA, bitsB, nanBits)) {}
    return out
}

private func binaryVJP(_ op: BinaryOp, _ a: Tensor, _ b: Tensor, _ out: Tensor, _ g: Tensor) throws -> [Tensor?] {
    let ga: Tensor?, gb: Tensor?
    switch op {
    case .add: (ga, gb) = (g, g)
    case .subtract: (ga, gb) = (g, try negative(g))
    case .multiply: (ga, gb) = (try multiply(g, b), try multiply(g, a))
    case .divide:
        ga = try divide(g, b)
        gb = try negative(try divide(try multiply(g, out), b))
    case .power:
        // d/da a^b = b a^(b-1);  d/db a^b = a^b log a (0 where a <= 0, as numpy-based frameworks do)
        ga = try multiply(g, try multiply(b, try binary(.power, a, try subtract(b, try full([], value: 1, dtype: b.dtype)))))
        let positive = try binary(.greater, a, try zerosLike(a))
        let safeA = try `where`(positive, a, try onesLike(a))
        gb = try multiply(g, try `where`(positive, try multiply(out, try unary(.log, safeA)), try zerosLike(out)))
    case .maximum:
        let m = try cast(try binary(.greaterEqual, a, b), to: g.dtype)
        (ga, gb) = (try multiply(g, m), try multiply(g, try subtract(try onesLike(m), m)))
    case .minimum:
        let m = try cast(try binary(.lessEqual, a, b), to: g.dtype)
        (ga, gb) = (try multiply(g, m), try multiply(g, try subtract(try onesLike(m), m)))
    case .floorDivide: (ga, gb) = (nil, nil)
    case .mod: (ga, gb) = (g, try negative(try multiply(g, try binary(.floorDivide, a, b))))
    case .arctan2:
        let den = try add(try square(a), try square(b))
        (ga, gb) = (try divide(try multiply(g, b), den), try negative(try divide(try multiply(g, a), den)))
    default: (ga, gb) = (nil, nil)
    }
    return [try ga.map { try sumToShape($0, a.shape) }, try gb.map { try sumToShape($0, b.shape) }]
}

/// a + b (broadcasting, promoting).
public func add(_ a: Tensor, _ b: Tensor) throws -> Tensor { try binary(.add, a, b) }
/// a - b.
public func subtract(_ a: Tensor, _ b: Tensor) throws -> Tensor { try binary(.subtract, a, b) }
/// a * b.
public func multiply(_ a: Tensor, _ b: Tensor) throws -> Tensor { try binary(.multiply, a, b) }
/// a / b (integer division by zero gives 0).
public func divide(_ a: Tensor, _ b: Tensor) throws -> Tensor { try binary(.divide, a, b) }
/// Elementwise maximum (NaN-propagating).
public func maximum(_ a: Tensor, _ b: Tensor) throws -> Tensor { try binary(.maximum, a, b) }
/// Elementwise minimum (NaN-propagating).
public func minimum(_ a: Tensor, _ b: Tensor) throws -> Tensor { try binary(.minimum, a, b) }
/// a ** b.
public func power(_ a: Tensor, _ b: Tensor) throws -> Tensor { try binary(.power, a, b) }

/// Ones with the shape and dtype of `x`.
public func onesLike(_ x: Tensor) throws -> Tensor { try full(x.shape, value: 1, dtype: x.dtype) }

/// A 0-d tensor holding `v` in `dtype`.
public func scalar(_ v: Double, _ dtype: DType = .float32) throws -> Tensor { try full([], value: v, dtype: dtype) }

// MARK: - Unary ops

public enum UnaryOp: Equatable {
    // dtype-preserving
    case negative, abs, sign, square, floor, ceil, round, relu
    // float (ints are widened to float32)
    case exp, expm1, log, log1p, sqrt, rsqrt, reciprocal, sin, cos, tan, tanh, sinh, cosh
    case arcsin, arccos, arctan, sigmoid, softplus, softsign, silu, selu, erf, relu6, erfinv, i0, i1
    case gelu(approximate: Bool), elu(alpha: Double), leakyRelu(slope: Double)
    // -> bool
    case logicalNot, isnan, isinf, isfinite

    var preservesInts: Bool {
        switch self {
        case .negative, .abs, .sign, .square, .floor, .ceil, .round, .relu: return true
        default: return false
        }
    }
    var returnsBool: Bool {
        switch self {
        case .logicalNot, .isnan, .isinf, .isfinite: return true
        default: return false
        }
    }

    static let seluAlpha = 1.6732632423543772848170429916717
    static let seluScale = 1.0507009873554804934193349852946

    /// The op on one float value.
    @inline(__always)
    func apply<T: FloatElem>(_ x: T) -> T {
        switch self {
        case .negative: return -x
        case .abs: return Swift.abs(x)
        case .sign: return T.sign(x)
        case .square: return x * x
        case .floor: return T.floorf(x)
        case .ceil: return T.ceilf(x)
        case .round: return T.rintf(x)
        case .relu: return x > 0 ? x : (x.isNaN ? x : 0)
        case .exp: return T.exp(x)
        case .expm1: return T.expm1(x)
        case .log: return T.log(x)
        case .log1p: return T.log1p(x)
        case .sqrt: return T.sqrt(x)
        case .rsqrt: return 1 / T.sqrt(x)
        case .reciprocal: return 1 / x
        case .sin: return T.sin(x)
        case .cos: return T.cos(x)
        case .tan: return T.tan(x)
        case .tanh: return T.tanh(x)
        case .sinh: return T.sinh(x)
        case .cosh: return T.cosh(x)
        case .arcsin: return T.asin(x)
        case .arccos: return T.acos(x)
        case .arctan: return T.atan(x)
        case .sigmoid: return x >= 0 ? 1 / (1 + T.exp(-x)) : T.exp(x) / (1 + T.exp(x))
        case .softplus: return x > 0 ? x + T.log1p(T.exp(-x)) : T.log1p(T.exp(x))
        case .softsign: return x / (1 + Swift.abs(x))
        case .silu: return x / (1 + T.exp(-x))
        case .selu:
            return T(Self.seluScale) * (x > 0 ? x : T(Self.seluAlpha) * T.expm1(x))
        case .erf: return T.erf(x)
        case .erfinv: return T(SpecialFunctions.erfinv(Double(x)))
        case .i0: return T(SpecialFunctions.besselI(Double(x), order1: false))
        case .i1: return T(SpecialFunctions.besselI(Double(x), order1: true))
        case .relu6: return x.isNaN ? x : Swift.min(Swift.max(x, 0), 6)
        case .gelu(let approximate):
            if approximate {
                let k = T(0.7978845608028654)
                return T(0.5) * x * (1 + T.tanh(k * (x + T(0.044715) * x * x * x)))
            }
            return T(0.5) * x * (1 + T.erf(x * T(0.7071067811865476)))
        case .elu(let alpha): return x > 0 ? x : T(alpha) * T.expm1(x)
        case .leakyRelu(let slope): return x >= 0 ? x : T(slope) * x
        case .logicalNot, .isnan, .isinf, .isfinite: return x
        }
    }

    /// dy/dx given x and y = apply(x).
    @inline(__always)
    func derivative<T: FloatElem>(_ x: T, _ y: T) -> T {
        switch self {
        case .negative: return -1
        case .abs: return T.sign(x)
        case .sign, .floor, .ceil, .round: return 0
        case .square: return 2 * x
        case .relu: return x > 0 ? 1 : 0
        case .exp: return y
        case .expm1: return y + 1
        case .log: return 1 / x
        case .log1p: return 1 / (1 + x)
        case .sqrt: return T(0.5) / y
        case .rsqrt: return T(-0.5) * y / x
        case .reciprocal: return -y * y
        case .sin: return T.cos(x)
        case .cos: return -T.sin(x)
        case .tan: return 1 + y * y
        case .tanh: return 1 - y * y
        case .sinh: return T.cosh(x)
        case .cosh: return T.sinh(x)
        case .arcsin: return 1 / T.sqrt(1 - x * x)
        case .arccos: return -1 / T.sqrt(1 - x * x)
        case .arctan: return 1 / (1 + x * x)
        case .sigmoid: return y * (1 - y)
        case .softplus: return UnaryOp.sigmoid.apply(x)
        case .softsign: let d = 1 + Swift.abs(x); return 1 / (d * d)
        case .silu: let s = UnaryOp.sigmoid.apply(x); return s * (1 + x * (1 - s))
        case .selu: return x > 0 ? T(Self.seluScale) : y + T(Self.seluScale * Self.seluAlpha)
        case .erf: return T(1.1283791670955126) * T.exp(-x * x)
        case .erfinv: return T(0.886226925452758) * T.exp(y * y)
        case .i0: return T(SpecialFunctions.besselI(Double(x), order1: true))
        case .i1:
            // I1'(x) = I0(x) - I1(x) / x, and 1/2 at 0.
            if x == 0 { return T(0.5) }
            let xd = Double(x)
            return T(SpecialFunctions.besselI(xd, order1: false) - SpecialFunctions.besselI(xd, order1: true) / xd)
        case .relu6: return (x > 0 && x < 6) ? 1 : 0
        case .gelu(let approximate):
            if approximate {
                let k = T(0.7978845608028654), c = T(0.044715)
                let t = T.tanh(k * (x + c * x * x * x))
                return T(0.5) * (1 + t) + T(0.5) * x * (1 - t * t) * k * (1 + 3 * c * x * x)
            }
            return T(0.5) * (1 + T.erf(x * T(0.7071067811865476))) + x * T.exp(T(-0.5) * x * x) * T(0.3989422804014327)
        case .elu(let alpha): return x > 0 ? 1 : y + T(alpha)
        case .leakyRelu(let slope): return x >= 0 ? 1 : T(slope)
        case .logicalNot, .isnan, .isinf, .isfinite: return 0
        }
    }
}

/// Applies a unary op. Float ops widen integer and bool inputs to float32 and compute half
/// types in float32.
public func unary(_ op: UnaryOp, _ x0: Tensor) throws -> Tensor {
    if x0.dtype.isComplex { return try complexUnary(op, x0) }
    if op.returnsBool {
        let out = try Tensor(zeros: x0.shape, dtype: .bool)
        if op == .logicalNot {
            mapUnary(try cast(x0, to: .bool), out, Not())
            return out
        }
        guard x0.dtype.isFloatingPoint else {
            if op == .isfinite { mapUnary(try cast(x0, to: .bool), out, AlwaysTrue()) }
            return out
        }
        let x = x0.dtype.isHalf ? try cast(x0, to: .float32) : x0
        struct K: FloatVisitor {
            let op: UnaryOp, x: Tensor, out: Tensor
            func visit<T: FloatElem>(_: T.Type) throws {
                switch op {
                case .isnan: mapUnary(x, out, IsNaN<T>())
                case .isinf: mapUnary(x, out, IsInf<T>())
                default: mapUnary(x, out, IsFinite<T>())
                }
            }
        }
        try dispatchFloat(x.dtype, K(op: op, x: x, out: out))
        return out
    }
    if x0.dtype.isHalf {
        return try cast(try unary(op, try cast(x0, to: .float32)), to: x0.dtype)
    }
    if !x0.dtype.isFloatingPoint {
        guard op.preservesInts else { return try unary(op, try cast(x0, to: .float32)) }
        if x0.dtype == .bool {
            switch op {
            case .abs, .square, .floor, .ceil, .round, .relu, .sign: return x0
            default: return try cast(try unary(op, try cast(x0, to: .int8)), to: .bool)
            }
        }
        let out = try Tensor.output(shape: x0.shape, dtype: x0.dtype, reusing: x0)
        struct K: NumericVisitor {
            let op: UnaryOp, x: Tensor, out: Tensor
            func visit<T: NumElem>(_: T.Type) throws {
                switch op {
                case .negative: mapUnary(x, out, Neg<T>())
                case .abs: mapUnary(x, out, Abs<T>())
                case .sign: mapUnary(x, out, Sign<T>())
                case .square: mapUnary(x, out, Square<T>())
                case .relu: mapUnary(x, out, Relu<T>())
                default: mapUnary(x, out, Identity<T>())
                }
            }
        }
        try dispatchNumeric(x0.dtype, K(op: op, x: x0, out: out))
        return out
    }
    let x = x0
    let out = try Tensor.output(shape: x.shape, dtype: x.dtype, reusing: x)
    struct K: FloatVisitor {
        let op: UnaryOp, x: Tensor, out: Tensor
        func visit<T: FloatElem>(_: T.Type) throws {
            if T.self == Float.self && unaryFloat32Fast(op, x, out) { return }
            switch op {
            // The hottest ops get their own loops so they vectorise.
            case .negative: mapUnary(x, out, Neg<T>())
            case .square: mapUnary(x, out, Square<T>())
            case .relu: mapUnary(x, out, Relu<T>())
            case .abs: mapUnary(x, out, Abs<T>())
            case .sqrt: mapUnary(x, out, Sqrt<T>())
            case .exp: mapUnary(x, out, Exp<T>())
            case .log: mapUnary(x, out, Log<T>())
            case .tanh: mapUnary(x, out, Tanh<T>())
            case .sigmoid: mapUnary(x, out, Sigmoid<T>())
            case .reciprocal: mapUnary(x, out, Reciprocal<T>())
            case .rsqrt: mapUnary(x, out, Rsqrt<T>())
            default: mapUnary(x, out, Apply<T>(op: op))
            }
        }
    }
    try dispatchFloat(x.dtype, K(op: op, x: x, out: out))
    Tape.record(out, [x]) { g in [try unaryVJP(op, g, x: x, y: out)] }
    return out
}

/// g times dy/dx for y = op(x) (float x).
func unaryVJP(_ op: UnaryOp, _ g: Tensor, x: Tensor, y out: Tensor) throws -> Tensor {
    // Recording a backward pass (create_graph): a fused kernel's factor would be a
    // constant to the tape, dropping the second derivative through x.
    if Tape.shouldRecord([g, x, out]), let d = try differentiableDerivative(op, x, out) {
        return try multiply(g, d)
    }
    // g · f'(x, y) in one pass where g matches x (every VJP but a broadcast one): a
    // derivative buffer and a second pass over it were half of relu's backward.
    let fused = g.shape == x.shape && g.dtype == x.dtype
    let d = try Tensor(empty: x.shape, dtype: x.dtype)
    struct D: FloatVisitor {
        let op: UnaryOp, x: Tensor, y: Tensor, g: Tensor?, d: Tensor
        func visit<T: FloatElem>(_: T.Type) throws {
            func run<F: BinaryKernel>(_ f: F) where F.A: FloatElem, F.B == F.A, F.R == F.A {
                if let g { mapScaled(g, x, y, d, f) } else { mapBinary(x, y, d, f) }
            }
            // The per-element switch of Derivative blocks vectorisation: hot ops get functors.
            switch op {
            case .tanh: run(TanhGrad<T>())
            case .sigmoid: run(SigmoidGrad<T>())
            case .exp: run(ExpGrad<T>())
            case .sqrt: run(SqrtGrad<T>())
            case .relu: run(ReluGrad<T>())
            case .gelu(approximate: true) where T.self == Float.self: run(GeluTanhGradF32())
            case .gelu(approximate: false) where T.self == Float.self: run(GeluErfGradF32())
            case .erf where T.self == Float.self: run(ErfGradF32())
            default: run(Derivative<T>(op: op))
            }
        }
    }
    try dispatchFloat(x.dtype, D(op: op, x: x, y: out, g: fused ? g : nil, d: d))
    return fused ? d : try multiply(g, d)
}

/// dy/dx of `op` (y = op(x)) in recorded engine ops, so that it differentiates again; nil
/// where the fused kernel is already exact to second order (a piecewise-constant derivative:
/// relu, abs, sign, rounding) or no composition is written yet (see README, create_graph).
func differentiableDerivative(_ op: UnaryOp, _ x: Tensor, _ y: Tensor) throws -> Tensor? {
    func c(_ v: Double) throws -> Tensor { try full([], value: v, dtype: x.dtype) }
    switch op {
    case .square: return try multiply(x, try c(2))
    case .exp: return y
    case .expm1: return try add(y, try c(1))
    case .log: return try unary(.reciprocal, x)
    case .log1p: return try unary(.reciprocal, try add(x, try c(1)))
    case .sqrt: return try divide(try c(0.5), y)
    case .rsqrt: return try multiply(try c(-0.5), try divide(y, x))
    case .reciprocal: return try negative(try multiply(y, y))
    case .sin: return try unary(.cos, x)
    case .cos: return try negative(try unary(.sin, x))
    case .tan: return try add(try c(1), try multiply(y, y))
    case .tanh: return try subtract(try c(1), try multiply(y, y))
    case .sinh: return try unary(.cosh, x)
    case .cosh: return try unary(.sinh, x)
    case .sigmoid: return try multiply(y, try subtract(try c(1), y))
    case .softplus: return try unary(.sigmoid, x)
    case .silu:
        let s = try unary(.sigmoid, x)
        return try multiply(s, try add(try c(1), try multiply(x, try subtract(try c(1), s))))
    default: return nil
    }
}

/// -x.
public func negative(_ x: Tensor) throws -> Tensor { try unary(.negative, x) }
/// x * x.
public func square(_ x: Tensor) throws -> Tensor { try unary(.square, x) }
/// e^x.
public func exp(_ x: Tensor) throws -> Tensor { try unary(.exp, x) }
/// Natural log.
public func log(_ x: Tensor) throws -> Tensor { try unary(.log, x) }
/// Square root.
public func sqrt(_ x: Tensor) throws -> Tensor { try unary(.sqrt, x) }
/// tanh.
public func tanh(_ x: Tensor) throws -> Tensor { try unary(.tanh, x) }
/// Logistic sigmoid.
public func sigmoid(_ x: Tensor) throws -> Tensor { try unary(.sigmoid, x) }
/// max(x, 0).
public func relu(_ x: Tensor) throws -> Tensor { try unary(.relu, x) }

// MARK: - where / clip

/// Broadcasts `x` to `shape` as a new contiguous tensor (or `x` itself when it already fits).
func materialize(_ x: Tensor, _ shape: [Int]) throws -> Tensor {
    if x.shape == shape { return x }
    // The broadcast loop reads x through strides for `shape`: a shape that does not
    // broadcast would read past x's buffer.
    guard try broadcastShapes(x.shape, shape) == shape else {
        throw EngineError.value("cannot broadcast shape \(x.shape) to \(shape)")
    }
    let out = try Tensor(empty: shape, dtype: x.dtype)
    // Broadcasting against a same-shaped dummy reuses the binary loop: out = first(x, _).
    let dummy = try Tensor(zeros: [], dtype: .uint8)
    struct Copy: ElementVisitor {
        let x: Tensor, d: Tensor, out: Tensor
        func visit<T: TensorElement>(_: T.Type) throws { mapBinary(x, d, out, First<T>()) }
    }
    try dispatchElement(x.dtype, Copy(x: x, d: dummy, out: out))
    return out
}

/// cond ? x : y with broadcasting; cond is read as truthy. Differentiable in x and y.
public func `where`(_ cond0: Tensor, _ x0: Tensor, _ y0: Tensor) throws -> Tensor {
    let (x1, y1) = try promote(x0, y0)
    let shape = try broadcastShapes(try broadcastShapes(cond0.shape, x1.shape), y1.shape)
    let c = try materialize(try cast(cond0, to: .bool), shape)
    // A one-element branch (where(mask, x, 0)) is read in place rather than broadcast.
    let x = x1.count == 1 ? x1 : try materialize(x1, shape), y = y1.count == 1 ? y1 : try materialize(y1, shape)
    let out = try Tensor(empty: shape, dtype: x.dtype)
    let size = x.dtype.itemSize
    let pc = c.pointer(UInt8.self), px = x.rawPointer, py = y.rawPointer, po = out.rawPointer
    let n = out.count, xs = x.count == n, ys = y.count == n
    // Bit-mask selects by element width: `c ? a[i] : b` reads a[i] conditionally, which LLVM
    // keeps as a branch (mispredicted half the time on a random mask); masks vectorise.
    func select<W: FixedWidthInteger>(_: W.Type) {
        let a = px.assumingMemoryBound(to: W.self), b = py.assumingMemoryBound(to: W.self)
        let o = po.assumingMemoryBound(to: W.self)
        @inline(__always) func mask(_ i: Int) -> W { pc[i] != 0 ? ~0 : 0 }
        parallelFor(n, streaming: true) { r in
            switch (xs, ys) {
            case (true, true): for i in r { let m = mask(i); o[i] = (a[i] & m) | (b[i] & ~m) }
            case (true, false): let bv = b[0]; for i in r { let m = mask(i); o[i] = (a[i] & m) | (bv & ~m) }
            case (false, true): let av = a[0]; for i in r { let m = mask(i); o[i] = (av & m) | (b[i] & ~m) }
            case (false, false): let av = a[0], bv = b[0]; for i in r { let m = mask(i); o[i] = (av & m) | (bv & ~m) }
            }
        }
    }
    switch size {
    case 1: select(UInt8.self)
    case 2: select(UInt16.self)
    case 4: select(UInt32.self)
    case 8: select(UInt64.self)
    default:
        parallelFor(n) { r in
            for i in r {
                let src = pc[i] != 0 ? px + (xs ? i * size : 0) : py + (ys ? i * size : 0)
                (po + i * size).copyMemory(from: src, byteCount: size)
            }
        }
    }
    if x.dtype.isFloatingPoint {
        let xs = x1.shape, ys = y1.shape
        Tape.record(out, [x1, y1]) { g in
            let z = try zerosLike(g)
            return [try sumToShape(try `where`(c, g, z), xs), try sumToShape(try `where`(c, z, g), ys)]
        }
    }
    return out
}

/// Limits x to [lo, hi]. Gradient passes where lo <= x <= hi.
public func clip(_ x: Tensor, min lo: Double, max hi: Double) throws -> Tensor {
    let dt = x.dtype
    let r = try minimum(try maximum(x, try scalar(lo, dt)), try scalar(hi, dt))
    return r
}

// MARK: - Registry

extension BinaryOp {
    var doc: String {
        switch self {
        case .add: return "a + b"
        case .subtract: return "a - b"
        case .multiply: return "a * b"
        case .divide: return "a / b"
        case .power: return "a ** b"
        case .maximum: return "Elementwise maximum (NaN propagates)"
        case .minimum: return "Elementwise minimum (NaN propagates)"
        case .floorDivide: return "floor(a / b) as numpy takes it (from a - fmod(a, b), so a quotient that underflows still floors); integer division by zero gives 0"
        case .mod: return "a - floor(a / b) * b, the sign of b; integer modulo by zero gives 0"
        case .arctan2: return "Angle of the point (b, a) in (-pi, pi]; ints give float32"
        case .nextafter: return "The next representable float after a towards b; ints give float32"
        case .equal: return "a == b"
        case .notEqual: return "a != b"
        case .less: return "a < b"
        case .lessEqual: return "a <= b"
        case .greater: return "a > b"
        case .greaterEqual: return "a >= b"
        case .logicalAnd: return "Truth of a and b"
        case .logicalOr: return "Truth of a or b"
        case .logicalXor: return "Truth of a xor b"
        }
    }
    var grad: Differentiability {
        switch self {
        case .floorDivide: return .zero
        case .nextafter: return .no
        default: return isComparison || isLogical ? .no : .yes
        }
    }
    var dtypes: DTypeSet {
        switch self {
        case .add, .subtract, .multiply, .divide, .power, .equal, .notEqual, .logicalAnd, .logicalOr, .logicalXor:
            return .all
        default: return .real
        }
    }
}

/// name, op, doc, gradient, complex kernels.
private let unaryTable: [(String, UnaryOp, String, Differentiability, Bool)] = [
    ("negative", .negative, "-x", .yes, true),
    ("abs", .abs, "|x| (the magnitude, float, for complex x)", .yes, true),
    ("sign", .sign, "-1, 0 or 1 (x / |x| for complex x)", .zero, true),
    ("square", .square, "x * x", .yes, true),
    ("floor", .floor, "Largest integer <= x", .zero, false),
    ("ceil", .ceil, "Smallest integer >= x", .zero, false),
    ("round", .round, "Nearest integer, halves to even", .zero, false),
    ("relu", .relu, "max(x, 0)", .yes, false),
    ("exp", .exp, "e ** x; ints give float32", .yes, true),
    ("expm1", .expm1, "e ** x - 1, exact near 0", .yes, false),
    ("log", .log, "Natural logarithm", .yes, true),
    ("log1p", .log1p, "log(1 + x), exact near 0", .yes, false),
    ("sqrt", .sqrt, "Square root", .yes, true),
    ("rsqrt", .rsqrt, "1 / sqrt(x)", .yes, false),
    ("reciprocal", .reciprocal, "1 / x", .yes, true),
    ("sin", .sin, "Sine", .yes, false),
    ("cos", .cos, "Cosine", .yes, false),
    ("tan", .tan, "Tangent", .yes, false),
    ("tanh", .tanh, "Hyperbolic tangent", .yes, false),
    ("sinh", .sinh, "Hyperbolic sine", .yes, false),
    ("cosh", .cosh, "Hyperbolic cosine", .yes, false),
    ("arcsin", .arcsin, "Inverse sine", .yes, false),
    ("arccos", .arccos, "Inverse cosine", .yes, false),
    ("arctan", .arctan, "Inverse tangent", .yes, false),
    ("sigmoid", .sigmoid, "1 / (1 + e ** -x)", .yes, false),
    ("relu6", .relu6, "min(max(x, 0), 6)", .yes, false),
    ("softplus", .softplus, "log(1 + e ** x)", .yes, false),
    ("softsign", .softsign, "x / (1 + |x|)", .yes, false),
    ("silu", .silu, "x * sigmoid(x)", .yes, false),
    ("selu", .selu, "Scaled ELU with the self-normalising constants", .yes, false),
    ("erf", .erf, "Error function", .yes, false),
    ("erfinv", .erfinv, "Inverse error function", .yes, false),
    ("i0", .i0, "Modified Bessel function of the first kind, order 0", .yes, false),
    ("i1", .i1, "Modified Bessel function of the first kind, order 1", .yes, false),
    ("logical_not", .logicalNot, "Truth of not x", .no, true),
    ("isnan", .isnan, "x is NaN", .no, true),
    ("isinf", .isinf, "x is infinite", .no, true),
    ("isfinite", .isfinite, "x is finite", .no, true),
]

let elementwiseOps: [OpDef] = {
    var defs: [OpDef] = BinaryOp.allCases.map { op in
        OpDef(op.rawValue, inputs: ["a", "b"], dtypes: op.dtypes, grad: op.grad,
              inPlace: op.inPlace ? .pairs([(0, 0), (0, 1)]) : .none, doc: op.doc + "; broadcasts, promotes") { t, _ in try binary(op, t[0], t[1]) }
    }
    for (name, op, doc, grad, complex) in unaryTable {
        defs.append(OpDef(unary: name, dtypes: complex ? .all : .real, grad: grad,
                          inPlace: op.returnsBool ? .none : .pairs([(0, 0)]), doc: doc) { x, _ in try unary(op, x) })
    }
    defs += [
        OpDef(unary: "gelu", attrs: [.bool("approximate", default: true)],
              inPlace: .pairs([(0, 0)]),
              doc: "Gaussian error linear unit (the tanh approximation when approximate)") { x, a in
            try unary(.gelu(approximate: a.bool("approximate")), x)
        },
        OpDef(unary: "elu", attrs: [.float("alpha", default: 1)], inPlace: .pairs([(0, 0)]),
              doc: "x if x > 0 else alpha * (e ** x - 1)") { x, a in
            try unary(.elu(alpha: a.float("alpha")), x)
        },
        OpDef(unary: "leaky_relu", attrs: [.float("negative_slope", default: 0.2)],
              inPlace: .pairs([(0, 0)]),
              doc: "x if x >= 0 else negative_slope * x") { x, a in
            try unary(.leakyRelu(slope: a.float("negative_slope")), x)
        },
        OpDef(unary: "cast", attrs: [.dtype("dtype")], dtypes: .all, grad: .yes,
              doc: "x converted to dtype (the gradient flows float to float)") { x, a in try cast(x, to: a.dtype("dtype")) },
        OpDef(unary: "stop_gradient", dtypes: .all, grad: .no, doc: "x, never recorded on a tape") { x, _ in stopGradient(x) },
        OpDef("where", inputs: ["condition", "x", "y"], dtypes: .all, grad: .wrt(["x", "y"]),
              doc: "x where condition is true, else y; broadcasts the three") { t, _ in try `where`(t[0], t[1], t[2]) },
        OpDef(unary: "clip", attrs: [.float("min", default: -.infinity), .float("max", default: .infinity)],
              doc: "x limited to [min, max]; the gradient passes where min <= x <= max") { x, a in
            try clip(x, min: a.float("min"), max: a.float("max"))
        },
    ]
    return defs
}()
