#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A Swift type that is the storage of one DType. Conversions saturate instead of trapping,
/// so no value from a caller can crash a cast.
public protocol TensorElement {
    static var dtype: DType { get }
    init(fromDouble d: Double)
    init(fromInt64 i: Int64)
    var doubleValue: Double { get }
    var int64Value: Int64 { get }
}

extension Bool: TensorElement {
    public static var dtype: DType { .bool }
    public init(fromDouble d: Double) { self = d != 0 }
    public init(fromInt64 i: Int64) { self = i != 0 }
    public var doubleValue: Double { self ? 1 : 0 }
    public var int64Value: Int64 { self ? 1 : 0 }
}

extension BFloat16: TensorElement {
    public static var dtype: DType { .bfloat16 }
    public init(fromDouble d: Double) { self.init(Float(d)) }
    public init(fromInt64 i: Int64) { self.init(Float(i)) }
    public var doubleValue: Double { Double(float) }
    public var int64Value: Int64 { saturatingInt64(Double(float)) }
}

@inline(__always)
func saturatingInt64(_ d: Double) -> Int64 {
    if d.isNaN { return 0 }
    if d >= 9.2233720368547758e18 { return .max }
    if d <= -9.2233720368547758e18 { return .min }
    return Int64(d)
}

public protocol FloatStorage: TensorElement, BinaryFloatingPoint {}
extension FloatStorage {
    @inline(__always) public init(fromDouble d: Double) { self.init(d) }
    @inline(__always) public init(fromInt64 i: Int64) { self.init(i) }
    @inline(__always) public var doubleValue: Double { Double(self) }
    @inline(__always) public var int64Value: Int64 { saturatingInt64(Double(self)) }
}
extension Float: FloatStorage { public static var dtype: DType { .float32 } }
extension Double: FloatStorage { public static var dtype: DType { .float64 } }
#if !(os(macOS) && arch(x86_64))
extension Float16: FloatStorage { public static var dtype: DType { .float16 } }
#endif

public protocol IntStorage: TensorElement, FixedWidthInteger {}
extension IntStorage {
    @inline(__always) public init(fromDouble d: Double) {
        if d.isNaN { self = 0 }
        else if d >= Double(Self.max) { self = Self.max }
        else if d <= Double(Self.min) { self = Self.min }
        else { self = Self(d) }
    }
    @inline(__always) public init(fromInt64 i: Int64) { self.init(truncatingIfNeeded: i) }
    @inline(__always) public var doubleValue: Double { Double(self) }
    @inline(__always) public var int64Value: Int64 { Int64(truncatingIfNeeded: self) }
}
extension Int8: IntStorage { public static var dtype: DType { .int8 } }
extension Int16: IntStorage { public static var dtype: DType { .int16 } }
extension Int32: IntStorage { public static var dtype: DType { .int32 } }
extension Int64: IntStorage { public static var dtype: DType { .int64 } }
extension UInt8: IntStorage { public static var dtype: DType { .uint8 } }
extension UInt16: IntStorage { public static var dtype: DType { .uint16 } }
extension UInt32: IntStorage { public static var dtype: DType { .uint32 } }
extension UInt64: IntStorage { public static var dtype: DType { .uint64 } }

/// Types arithmetic kernels are specialised for. Half types are computed as Float.
/// Integer arithmetic wraps and integer division by zero gives 0 (never a trap).
public protocol NumElem: TensorElement, Comparable {
    static var zeroValue: Self { get }
    static var oneValue: Self { get }
    static var isFloat: Bool { get }
    static var lowest: Self { get }
    static var highest: Self { get }
    static func add(_ a: Self, _ b: Self) -> Self
    static func sub(_ a: Self, _ b: Self) -> Self
    static func mul(_ a: Self, _ b: Self) -> Self
    static func div(_ a: Self, _ b: Self) -> Self
    static func floorDiv(_ a: Self, _ b: Self) -> Self
    static func mod(_ a: Self, _ b: Self) -> Self
    static func pow(_ a: Self, _ b: Self) -> Self
    static func neg(_ a: Self) -> Self
    static func abs(_ a: Self) -> Self
    static func sign(_ a: Self) -> Self
    /// NaN-propagating max/min (numpy's maximum/minimum). Not named `maximum`: in code generic
    /// over floats, that name also finds `FloatingPoint.maximum`, which drops a NaN, and the
    /// compiler picked that one silently (max pooling ignored NaN).
    static func maxOrNaN(_ a: Self, _ b: Self) -> Self
    static func minOrNaN(_ a: Self, _ b: Self) -> Self
    var isNaNValue: Bool { get }
    /// Sum of n contiguous values (floats: blocked and lane-parallel, so it vectorises and
    /// keeps float32 accuracy on long rows; ints: wrapping).
    static func sumRow(_ p: UnsafePointer<Self>, _ n: Int) -> Self
}

extension NumElem where Self: FixedWidthInteger {
    @inline(__always) public static var zeroValue: Self { 0 }
    @inline(__always) public static var oneValue: Self { 1 }
    public static var isFloat: Bool { false }
    @inline(__always) public static var lowest: Self { Self.min }
    @inline(__always) public static var highest: Self { Self.max }
    @inline(__always) public static func add(_ a: Self, _ b: Self) -> Self { a &+ b }
    @inline(__always) public static func sub(_ a: Self, _ b: Self) -> Self { a &- b }
    @inline(__always) public static func mul(_ a: Self, _ b: Self) -> Self { a &* b }
    @inline(__always) public static func div(_ a: Self, _ b: Self) -> Self {
        b == 0 ? 0 : a.dividedReportingOverflow(by: b).partialValue
    }
    @inline(__always) public static func floorDiv(_ a: Self, _ b: Self) -> Self {
        if b == 0 { return 0 }
        let q = a.dividedReportingOverflow(by: b).partialValue
        let r = a.remainderReportingOverflow(dividingBy: b).partialValue
        return (r != 0 && ((r < 0) != (b < 0))) ? q &- 1 : q
    }
    @inline(__always) public static func mod(_ a: Self, _ b: Self) -> Self {
        if b == 0 { return 0 }
        let r = a.remainderReportingOverflow(dividingBy: b).partialValue
        return (r != 0 && ((r < 0) != (b < 0))) ? r &+ b : r
    }
    @inline(__always) public static func pow(_ a: Self, _ b: Self) -> Self {
        if b < 0 { return a == 1 ? 1 : (Self.isSigned && a == 0 &- 1 ? (b & 1 == 0 ? 1 : a) : 0) }
        var result: Self = 1, base = a, e = b
        while e > 0 {
            if e & 1 == 1 { result = result &* base }
            base = base &* base
            e >>= 1
        }
        return result
    }
    @inline(__always) public static func neg(_ a: Self) -> Self { 0 &- a }
    @inline(__always) public static func abs(_ a: Self) -> Self { a < 0 ? 0 &- a : a }
    @inline(__always) public static func sign(_ a: Self) -> Self { a > 0 ? 1 : (a < 0 ? 0 &- 1 : 0) }
    @inline(__always) public static func maxOrNaN(_ a: Self, _ b: Self) -> Self { a > b ? a : b }
    @inline(__always) public static func minOrNaN(_ a: Self, _ b: Self) -> Self { a < b ? a : b }
    @inline(__always) public var isNaNValue: Bool { false }
    @inline(__always) public static func sumRow(_ p: UnsafePointer<Self>, _ n: Int) -> Self {
        var acc: Self = 0
        for i in 0..<n { acc = acc &+ p[i] }
        return acc
    }
}

extension Int8: NumElem {}
extension Int16: NumElem {}
extension Int32: NumElem {}
extension Int64: NumElem {}
extension UInt8: NumElem {}
extension UInt16: NumElem {}
extension UInt32: NumElem {}
extension UInt64: NumElem {}

/// float32 / float64: arithmetic plus the transcendental functions from libm.
public protocol FloatElem: NumElem, FloatStorage, SIMDScalar {
    static func exp(_ x: Self) -> Self
    static func expm1(_ x: Self) -> Self
    static func log(_ x: Self) -> Self
    static func log1p(_ x: Self) -> Self
    static func sqrt(_ x: Self) -> Self
    static func sin(_ x: Self) -> Self
    static func cos(_ x: Self) -> Self
    static func tan(_ x: Self) -> Self
    static func tanh(_ x: Self) -> Self
    static func sinh(_ x: Self) -> Self
    static func cosh(_ x: Self) -> Self
    static func asin(_ x: Self) -> Self
    static func acos(_ x: Self) -> Self
    static func atan(_ x: Self) -> Self
    static func atan2(_ y: Self, _ x: Self) -> Self
    static func erf(_ x: Self) -> Self
    static func powf(_ a: Self, _ b: Self) -> Self
    static func floorf(_ x: Self) -> Self
    static func ceilf(_ x: Self) -> Self
    static func rintf(_ x: Self) -> Self
    static func fmodf(_ a: Self, _ b: Self) -> Self
}

extension NumElem where Self: FloatElem {
    @inline(__always) public static var zeroValue: Self { 0 }
    @inline(__always) public static var oneValue: Self { 1 }
    public static var isFloat: Bool { true }
    @inline(__always) public static var lowest: Self { -Self.infinity }
    @inline(__always) public static var highest: Self { Self.infinity }
    @inline(__always) public static func add(_ a: Self, _ b: Self) -> Self { a + b }
    @inline(__always) public static func sub(_ a: Self, _ b: Self) -> Self { a - b }
    @inline(__always) public static func mul(_ a: Self, _ b: Self) -> Self { a * b }
    @inline(__always) public static func div(_ a: Self, _ b: Self) -> Self { a / b }
    /// numpy's divmod: the quotient of a - fmod(a, b), so one that underflows still floors
    /// (-1e-300 // 1e300 is -1, where floor(a / b) gives -0).
    @inline(__always) public static func floorDiv(_ a: Self, _ b: Self) -> Self {
        if b == 0 { return a / b }
        let m = fmodf(a, b)
        var div = (a - m) / b
        if m != 0 && ((b < 0) != (m < 0)) { div -= 1 }
        if div == 0 { return (a / b).sign == .minus ? -0.0 : 0 }
        let f = floorf(div)
        return div - f > 0.5 ? f + 1 : f
    }
    @inline(__always) public static func mod(_ a: Self, _ b: Self) -> Self {
        let r = fmodf(a, b)
        return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r
    }
    @inline(__always) public static func pow(_ a: Self, _ b: Self) -> Self { powf(a, b) }
    @inline(__always) public static func neg(_ a: Self) -> Self { -a }
    @inline(__always) public static func abs(_ a: Self) -> Self { Swift.abs(a) }
    @inline(__always) public static func sign(_ a: Self) -> Self { a > 0 ? 1 : (a < 0 ? -1 : a) }
    @inline(__always) public static func maxOrNaN(_ a: Self, _ b: Self) -> Self { (a > b || a.isNaN) ? a : b }
    @inline(__always) public static func minOrNaN(_ a: Self, _ b: Self) -> Self { (a < b || a.isNaN) ? a : b }
    @inline(__always) public var isNaNValue: Bool { isNaN }
    @inline(__always) public static func sumRow(_ p: UnsafePointer<Self>, _ n: Int) -> Self {
        // 16 independent lanes per block of 1024, blocks combined in Double.
        var total = 0.0, i = 0
        while i < n {
            let end = Swift.min(n, i + 1024)
            var lanes = SIMD16<Self>(repeating: 0)
            var j = i
            while j + 16 <= end {
                lanes += UnsafeRawPointer(p + j).loadUnaligned(as: SIMD16<Self>.self)
                j += 16
            }
            var block = 0.0
            for k in 0..<16 { block += Double(lanes[k]) }
            while j < end { block += Double(p[j]); j += 1 }
            total += block
            i = end
        }
        return Self(total)
    }
}

extension Float: NumElem, FloatElem {
    @inline(__always) public static func exp(_ x: Float) -> Float { expf(x) }
    @inline(__always) public static func expm1(_ x: Float) -> Float { expm1f(x) }
    @inline(__always) public static func log(_ x: Float) -> Float { logf(x) }
    @inline(__always) public static func log1p(_ x: Float) -> Float { log1pf(x) }
    @inline(__always) public static func sqrt(_ x: Float) -> Float { x.squareRoot() }
    @inline(__always) public static func sin(_ x: Float) -> Float { sinf(x) }
    @inline(__always) public static func cos(_ x: Float) -> Float { cosf(x) }
    @inline(__always) public static func tan(_ x: Float) -> Float { tanf(x) }
    @inline(__always) public static func tanh(_ x: Float) -> Float { tanhf(x) }
    @inline(__always) public static func sinh(_ x: Float) -> Float { sinhf(x) }
    @inline(__always) public static func cosh(_ x: Float) -> Float { coshf(x) }
    @inline(__always) public static func asin(_ x: Float) -> Float { asinf(x) }
    @inline(__always) public static func acos(_ x: Float) -> Float { acosf(x) }
    @inline(__always) public static func atan(_ x: Float) -> Float { atanf(x) }
    @inline(__always) public static func atan2(_ y: Float, _ x: Float) -> Float { atan2f(y, x) }
    @inline(__always) public static func erf(_ x: Float) -> Float { erff(x) }
    @inline(__always) public static func powf(_ a: Float, _ b: Float) -> Float { Glibc.powf(a, b) }
    @inline(__always) public static func floorf(_ x: Float) -> Float { x.rounded(.down) }
    @inline(__always) public static func ceilf(_ x: Float) -> Float { x.rounded(.up) }
    @inline(__always) public static func rintf(_ x: Float) -> Float { x.rounded(.toNearestOrEven) }
    @inline(__always) public static func fmodf(_ a: Float, _ b: Float) -> Float { Glibc.fmodf(a, b) }
}

extension Double: NumElem, FloatElem {
    @inline(__always) public static func exp(_ x: Double) -> Double { Glibc.exp(x) }
    @inline(__always) public static func expm1(_ x: Double) -> Double { Glibc.expm1(x) }
    @inline(__always) public static func log(_ x: Double) -> Double { Glibc.log(x) }
    @inline(__always) public static func log1p(_ x: Double) -> Double { Glibc.log1p(x) }
    @inline(__always) public static func sqrt(_ x: Double) -> Double { x.squareRoot() }
    @inline(__always) public static func sin(_ x: Double) -> Double { Glibc.sin(x) }
    @inline(__always) public static func cos(_ x: Double) -> Double { Glibc.cos(x) }
    @inline(__always) public static func tan(_ x: Double) -> Double { Glibc.tan(x) }
    @inline(__always) public static func tanh(_ x: Double) -> Double { Glibc.tanh(x) }
    @inline(__always) public static func sinh(_ x: Double) -> Double { Glibc.sinh(x) }
    @inline(__always) public static func cosh(_ x: Double) -> Double { Glibc.cosh(x) }
    @inline(__always) public static func asin(_ x: Double) -> Double { Glibc.asin(x) }
    @inline(__always) public static func acos(_ x: Double) -> Double { Glibc.acos(x) }
    @inline(__always) public static func atan(_ x: Double) -> Double { Glibc.atan(x) }
    @inline(__always) public static func atan2(_ y: Double, _ x: Double) -> Double { Glibc.atan2(y, x) }
    @inline(__always) public static func erf(_ x: Double) -> Double { Glibc.erf(x) }
    @inline(__always) public static func powf(_ a: Double, _ b: Double) -> Double { Glibc.pow(a, b) }
    @inline(__always) public static func floorf(_ x: Double) -> Double { x.rounded(.down) }
    @inline(__always) public static func ceilf(_ x: Double) -> Double { x.rounded(.up) }
    @inline(__always) public static func rintf(_ x: Double) -> Double { x.rounded(.toNearestOrEven) }
    @inline(__always) public static func fmodf(_ a: Double, _ b: Double) -> Double { Glibc.fmod(a, b) }
}

/// Calls `body` with the Swift type of a numeric dtype, so kernels are specialised per type.
/// Half types and bool are not numeric kernel types: callers widen or reject them first.
public protocol NumericVisitor {
    associatedtype Result
    func visit<T: NumElem>(_ t: T.Type) throws -> Result
}
public protocol FloatVisitor {
    associatedtype Result
    func visit<T: FloatElem>(_ t: T.Type) throws -> Result
}

/// Calls `visit` with the Swift type of an integer dtype.
protocol IntVisitor {
    associatedtype Result
    func visit<T: NumElem & FixedWidthInteger>(_ t: T.Type) throws -> Result
}

/// The one switch over integer dtypes; `dispatchNumeric` and the bitwise ops share it.
@inline(__always)
func dispatchInt<V: IntVisitor>(_ dt: DType, _ v: V, orThrow error: @autoclosure () -> EngineError) throws -> V.Result {
    switch dt {
    case .int32: return try v.visit(Int32.self)
    case .int64: return try v.visit(Int64.self)
    case .int8: return try v.visit(Int8.self)
    case .int16: return try v.visit(Int16.self)
    case .uint8: return try v.visit(UInt8.self)
    case .uint16: return try v.visit(UInt16.self)
    case .uint32: return try v.visit(UInt32.self)
    case .uint64: return try v.visit(UInt64.self)
    default: throw error()
    }
}

/// Adapts a numeric visitor to the integer switch.
private struct NumericAsInt<V: NumericVisitor>: IntVisitor {
    let v: V
    @inline(__always) func visit<T: NumElem & FixedWidthInteger>(_ t: T.Type) throws -> V.Result { try v.visit(t) }
}

@inline(__always)
func dispatchNumeric<V: NumericVisitor>(_ dt: DType, _ v: V) throws -> V.Result {
    switch dt {
    case .float32: return try v.visit(Float.self)
    case .float64: return try v.visit(Double.self)
    default:
        return try dispatchInt(dt, NumericAsInt(v: v),
                               orThrow: .internal("no numeric kernel for \(dt) (it should have been widened)"))
    }
}

@inline(__always)
func dispatchFloat<V: FloatVisitor>(_ dt: DType, _ v: V) throws -> V.Result {
    switch dt {
    case .float32: return try v.visit(Float.self)
    case .float64: return try v.visit(Double.self)
    default: throw EngineError.internal("no float kernel for \(dt) (it should have been widened)")
    }
}
