/// The two float8 formats Keras uses (OCP FP8, as ml_dtypes): stored as one byte, computed in
/// float32 like the other narrow floats. Casts round to nearest even; e4m3fn has no infinity,
/// so overflow and ±inf become NaN, while e5m2 overflows to ±inf.
public protocol Float8Format {
    static var exponentBits: Int { get }
    static var mantissaBits: Int { get }
    static var hasInfinity: Bool { get }
}

public enum E4M3FN: Float8Format {
    public static let exponentBits = 4, mantissaBits = 3, hasInfinity = false
}

public enum E5M2: Float8Format {
    public static let exponentBits = 5, mantissaBits = 2, hasInfinity = true
}

public struct Float8<F: Float8Format>: Equatable, Sendable {
    public var bits: UInt8
    public init(bits: UInt8) { self.bits = bits }

    static var bias: Int { (1 << (F.exponentBits - 1)) - 1 }
    /// Largest finite magnitude (e4m3fn: 448, e5m2: 57344).
    static var maxFinite: Double {
        let m = F.mantissaBits
        if F.hasInfinity {
            return Double(sign: .plus, exponent: (1 << F.exponentBits) - 2 - bias, significand: 2 - 1 / Double(1 << m))
        }
        // The all-ones exponent still holds normals, but its all-ones mantissa is NaN.
        return Double(sign: .plus, exponent: (1 << F.exponentBits) - 1 - bias, significand: 2 - 2 / Double(1 << m))
    }
    static var nanBits: UInt8 { F.hasInfinity ? UInt8(((1 << F.exponentBits) - 1) << F.mantissaBits | 1 << (F.mantissaBits - 1)) : 0x7F }
    static var infBits: UInt8 { UInt8(((1 << F.exponentBits) - 1) << F.mantissaBits) }

    /// Decoded values of all 256 codes.
    static var table: [Float] {
        (0..<256).map { code -> Float in
            let sign: Float = code & 0x80 != 0 ? -1 : 1
            let e = (code >> F.mantissaBits) & ((1 << F.exponentBits) - 1)
            let m = code & ((1 << F.mantissaBits) - 1)
            let allOnes = (1 << F.exponentBits) - 1
            if F.hasInfinity, e == allOnes { return m == 0 ? sign * .infinity : .nan }
            if !F.hasInfinity, e == allOnes, m == (1 << F.mantissaBits) - 1 { return .nan }
            if e == 0 { return sign * Float(m) * Float(sign: .plus, exponent: 1 - bias - F.mantissaBits, significand: 1) }
            return sign * (1 + Float(m) / Float(1 << F.mantissaBits)) * Float(sign: .plus, exponent: e - bias, significand: 1)
        }
    }

    public init(_ d: Double) {
        if d.isNaN { bits = Self.nanBits; return }
        let signBit: UInt8 = d.sign == .minus ? 0x80 : 0
        let a = Swift.abs(d)
        let minNormalExp = 1 - Self.bias
        // Spacing of representable values around a: fixed below the normal range.
        let e = a == 0 ? minNormalExp : Swift.max(Int(a.exponent), minNormalExp)
        let quantum = Double(sign: .plus, exponent: e - F.mantissaBits, significand: 1)
        let q = (a / quantum).rounded(.toNearestOrEven) * quantum
        if a.isInfinite || q > Self.maxFinite {
            bits = signBit | (F.hasInfinity ? Self.infBits : Self.nanBits)
            return
        }
        if q == 0 { bits = signBit; return }
        let qe = Int(q.exponent)
        if qe < minNormalExp {
            bits = signBit | UInt8(q / Double(sign: .plus, exponent: minNormalExp - F.mantissaBits, significand: 1))
        } else {
            let mant = (q.significand - 1) * Double(1 << F.mantissaBits)
            bits = signBit | UInt8((qe + Self.bias) << F.mantissaBits) | UInt8(mant)
        }
    }
}

private let e4m3fnTable = Float8<E4M3FN>.table
private let e5m2Table = Float8<E5M2>.table

extension Float8 {
    @inline(__always) public var float: Float {
        F.self == E4M3FN.self ? e4m3fnTable[Int(bits)] : e5m2Table[Int(bits)]
    }
}

public typealias Float8E4M3FN = Float8<E4M3FN>
public typealias Float8E5M2 = Float8<E5M2>

extension Float8: TensorElement {
    public static var dtype: DType { F.self == E4M3FN.self ? .float8_e4m3fn : .float8_e5m2 }
    public init(fromDouble d: Double) { self.init(d) }
    public init(fromInt64 i: Int64) { self.init(Double(i)) }
    public var doubleValue: Double { Double(float) }
    public var int64Value: Int64 { saturatingInt64(Double(float)) }
}
