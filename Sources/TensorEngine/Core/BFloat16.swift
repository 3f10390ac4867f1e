/// bfloat16: the top 16 bits of an IEEE float32. Stored natively, computed in float32.
public struct BFloat16: Equatable, Sendable {
    public var bits: UInt16
    public init(bits: UInt16) { self.bits = bits }

    /// Round to nearest even; NaN stays a quiet NaN.
    public init(_ f: Float) {
        let u = f.bitPattern
        if f.isNaN {
            bits = UInt16(truncatingIfNeeded: (u >> 16) | 0x0040)
            return
        }
        let rounding: UInt32 = 0x7FFF + ((u >> 16) & 1)
        bits = UInt16(truncatingIfNeeded: (u &+ rounding) >> 16)
    }

    public var float: Float { Float(bitPattern: UInt32(bits) << 16) }
}
