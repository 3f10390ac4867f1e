/// The storage of complex64 / complex128: a real and an imaginary part, in numpy's layout,
/// so tensors cross the C ABI and the buffer protocol without conversion.
public struct Complex<R: ComplexPart>: Equatable, Sendable {
    public var re: R
    public var im: R

    @inline(__always) public init(_ re: R, _ im: R = 0) {
        self.re = re
        self.im = im
    }
}

/// Float and Double: the part types of complex64 and complex128.
public protocol ComplexPart: FloatElem, Sendable {
    static var complexDType: DType { get }
}
extension Float: ComplexPart { public static var complexDType: DType { .complex64 } }
extension Double: ComplexPart { public static var complexDType: DType { .complex128 } }

extension Complex: TensorElement {
    public static var dtype: DType { R.complexDType }
    @inline(__always) public init(fromDouble d: Double) { self.init(R(d)) }
    @inline(__always) public init(fromInt64 i: Int64) { self.init(R(fromInt64: i)) }
    /// A cast to a real dtype keeps the real part, as in numpy and jax.
    @inline(__always) public var doubleValue: Double { Double(re) }
    @inline(__always) public var int64Value: Int64 { re.int64Value }
}

extension Complex {
    @inline(__always) static func + (a: Self, b: Self) -> Self { Self(a.re + b.re, a.im + b.im) }
    @inline(__always) static func - (a: Self, b: Self) -> Self { Self(a.re - b.re, a.im - b.im) }
    @inline(__always) static prefix func - (a: Self) -> Self { Self(-a.re, -a.im) }
    @inline(__always) static func * (a: Self, b: Self) -> Self {
        Self(a.re * b.re - a.im * b.im, a.re * b.im + a.im * b.re)
    }

    /// Smith's algorithm: scaling by the larger part of `b` keeps |b|² from overflowing.
    @inline(__always) static func / (a: Self, b: Self) -> Self {
        if Swift.abs(b.re) >= Swift.abs(b.im) {
            if b.re == 0 && b.im == 0 { return Self(a.re / 0, a.im / 0) }
            let r = b.im / b.re, d = b.re + b.im * r
            return Self((a.re + a.im * r) / d, (a.im - a.re * r) / d)
        }
        let r = b.re / b.im, d = b.re * r + b.im
        return Self((a.re * r + a.im) / d, (a.im * r - a.re) / d)
    }

    @inline(__always) var conjugate: Self { Self(re, -im) }
    @inline(__always) var isNaN: Bool { re.isNaN || im.isNaN }
    @inline(__always) var isInfinite: Bool { re.isInfinite || im.isInfinite }
    @inline(__always) var isFinite: Bool { re.isFinite && im.isFinite }
    @inline(__always) var isZero: Bool { re == 0 && im == 0 }

    /// |z| without overflow or underflow in the squares.
    @inline(__always) var magnitude: R {
        let a = Swift.abs(re), b = Swift.abs(im)
        if a.isInfinite || b.isInfinite { return .infinity }
        let m = Swift.max(a, b)
        if m == 0 || m.isNaN { return m == 0 ? 0 : .nan }
        let x = a / m, y = b / m
        return m * R.sqrt(x * x + y * y)
    }

    @inline(__always) var argument: R { R.atan2(im, re) }

    @inline(__always) static func exp(_ z: Self) -> Self {
        let e = R.exp(z.re)
        if z.im == 0 { return Self(e, z.im) }
        return Self(e * R.cos(z.im), e * R.sin(z.im))
    }

    @inline(__always) static func log(_ z: Self) -> Self { Self(R.log(z.magnitude), z.argument) }

    /// The principal square root (branch cut on the negative real axis).
    @inline(__always) static func sqrt(_ z: Self) -> Self {
        if z.isZero { return Self(0, z.im) }
        let t = R.sqrt((z.magnitude + Swift.abs(z.re)) / 2)
        if z.re >= 0 { return Self(t, z.im / (2 * t)) }
        return Self(Swift.abs(z.im) / (2 * t), z.im < 0 ? -t : t)
    }

    /// a ** b = exp(b log a), with 0 ** b = 0 for Re(b) > 0 and 1 for b = 0 (numpy's rule).
    /// Small integer powers multiply instead, exactly as numpy does, so z ** 2 == z * z.
    @inline(__always) static func pow(_ a: Self, _ b: Self) -> Self {
        if b.isZero { return Self(1) }
        if b.im == 0, b.re == b.re.rounded(), Swift.abs(b.re) <= 100 {
            var n = Int(Swift.abs(b.re)), base = a, r = Self(1)
            while n > 0 {
                if n & 1 == 1 { r = r * base }
                base = base * base
                n >>= 1
            }
            return b.re < 0 ? Self(1) / r : r
        }
        if a.isZero { return b.re > 0 ? Self(0) : Self(.nan, .nan) }
        return exp(b * log(a))
    }
}
