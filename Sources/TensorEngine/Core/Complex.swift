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

    /// |z| without overflow or underflow in the squares; C99's hypot at the edges (an
    /// infinite part wins over a NaN one).
    @inline(__always) var magnitude: R {
        let a = Swift.abs(re), b = Swift.abs(im)
        if a.isInfinite || b.isInfinite { return .infinity }
        // Before max: Swift.max(0, nan) is 0.
        if a.isNaN || b.isNaN { return .nan }
        let m = Swift.max(a, b)
        if m == 0 { return 0 }
        let x = a / m, y = b / m
        return m * R.sqrt(x * x + y * y)
    }

    @inline(__always) var argument: R { R.atan2(im, re) }

    @inline(__always) static func exp(_ z: Self) -> Self {
        // C99's cexp at an infinite real part with a non-finite imaginary one, where
        // e * cos(im) would be 0 * nan or inf * nan: exp(-inf + i y) = 0, exp(inf + i y) = inf + nan i.
        if z.re.isInfinite && !z.im.isFinite {
            return z.re < 0 ? Self(0, z.im.sign == .minus ? -0.0 : 0) : Self(.infinity, .nan)
        }
        let e = R.exp(z.re)
        if z.im == 0 { return Self(e, z.im) }
        return Self(e * R.cos(z.im), e * R.sin(z.im))
    }

    @inline(__always) static func log(_ z: Self) -> Self { Self(R.log(z.magnitude), z.argument) }

    /// The principal square root (branch cut on the negative real axis), with C99's csqrt
    /// at infinities and NaN.
    @inline(__always) static func sqrt(_ z: Self) -> Self {
        if z.isZero { return Self(0, z.im) }
        if z.im.isInfinite { return Self(.infinity, z.im) }
        if z.re.isInfinite {
            let zero: R = z.im.sign == .minus ? -0.0 : 0
            if z.re > 0 { return Self(z.re, z.im.isNaN ? z.im : zero) }
            return z.im.isNaN ? Self(.nan, .infinity) : Self(0, z.im.sign == .minus ? -.infinity : .infinity)
        }
        // Scaled by 1/4 near the largest finite values, where |z| + |re| overflows.
        let big = Swift.max(Swift.abs(z.re), Swift.abs(z.im)) > R.greatestFiniteMagnitude / 4
        let w = big ? Self(z.re / 4, z.im / 4) : z, scale: R = big ? 2 : 1
        let t = R.sqrt((w.magnitude + Swift.abs(w.re)) / 2)
        if w.re >= 0 { return Self(scale * t, scale * (w.im / (2 * t))) }
        return Self(scale * (Swift.abs(w.im) / (2 * t)), scale * (w.im < 0 ? -t : t))
    }

    /// z / |z| as numpy takes it: an infinite part gives its sign (both infinite: NaN), NaN
    /// gives NaN, and 0 gives 0.
    @inline(__always) static func sign(_ z: Self) -> Self {
        switch (z.re.isInfinite, z.im.isInfinite) {
        case (true, true): return Self(.nan, .nan)
        case (true, false): return Self(z.re < 0 ? -1 : 1, 0)
        case (false, true): return Self(0, z.im < 0 ? -1 : 1)
        default:
            if z.isNaN { return Self(.nan, .nan) }
            let m = z.magnitude
            return m == 0 ? Self(0) : Self(z.re / m, z.im / m)
        }
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
        return exp(annexGProduct(b, log(a)))
    }

    /// x * y as C99 Annex G defines it (glibc's cpow, which numpy calls, multiplies so):
    /// where the plain formula gives NaN + NaN i only through an infinite factor or product,
    /// the infinities are recovered. The multiply op itself stays plain, as numpy's is.
    static func annexGProduct(_ x: Self, _ y: Self) -> Self {
        var (a, b, c, d) = (x.re, x.im, y.re, y.im)
        let (ac, bd, ad, bc) = (a * c, b * d, a * d, b * c)
        let plain = Self(ac - bd, ad + bc)
        guard plain.re.isNaN && plain.im.isNaN else { return plain }
        @inline(__always) func signed(_ m: R, _ s: R) -> R { s.sign == .minus ? -m : m }
        @inline(__always) func box(_ v: R) -> R { signed(v.isInfinite ? 1 : 0, v) }
        @inline(__always) func unNaN(_ v: R) -> R { v.isNaN ? signed(0, v) : v }
        var recover = false
        if a.isInfinite || b.isInfinite {
            (a, b, c, d) = (box(a), box(b), unNaN(c), unNaN(d))
            recover = true
        }
        if c.isInfinite || d.isInfinite {
            (a, b, c, d) = (unNaN(a), unNaN(b), box(c), box(d))
            recover = true
        }
        if !recover && (ac.isInfinite || bd.isInfinite || ad.isInfinite || bc.isInfinite) {
            (a, b, c, d) = (unNaN(a), unNaN(b), unNaN(c), unNaN(d))
            recover = true
        }
        guard recover else { return plain }
        return Self(R.infinity * (a * c - b * d), R.infinity * (a * d + b * c))
    }
}
