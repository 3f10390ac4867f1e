/// Element types a tensor can hold. Raw values are the C ABI's `te_dtype`.
public enum DType: Int32, CaseIterable, Sendable, CustomStringConvertible {
    case bool = 0, int8, int16, int32, int64, uint8, uint16, uint32, uint64
    case float16, bfloat16, float32, float64
    case float8_e4m3fn, float8_e5m2
    case complex64, complex128

    public var itemSize: Int {
        switch self {
        case .bool, .int8, .uint8, .float8_e4m3fn, .float8_e5m2: return 1
        case .int16, .uint16, .float16, .bfloat16: return 2
        case .int32, .uint32, .float32: return 4
        case .int64, .uint64, .float64, .complex64: return 8
        case .complex128: return 16
        }
    }

    public var name: String {
        switch self {
        case .bool: return "bool"
        case .int8: return "int8"
        case .int16: return "int16"
        case .int32: return "int32"
        case .int64: return "int64"
        case .uint8: return "uint8"
        case .uint16: return "uint16"
        case .uint32: return "uint32"
        case .uint64: return "uint64"
        case .float16: return "float16"
        case .bfloat16: return "bfloat16"
        case .float32: return "float32"
        case .float64: return "float64"
        case .float8_e4m3fn: return "float8_e4m3fn"
        case .float8_e5m2: return "float8_e5m2"
        case .complex64: return "complex64"
        case .complex128: return "complex128"
        }
    }

    public var description: String { name }

    public init?(name: String) {
        guard let d = DType.allCases.first(where: { $0.name == name }) else { return nil }
        self = d
    }

    public var isFloatingPoint: Bool {
        self == .float32 || self == .float64 || isHalf
    }
    public var isInteger: Bool { !isFloatingPoint && !isComplex && self != .bool }
    public var isComplex: Bool { self == .complex64 || self == .complex128 }
    /// The dtype of one part (real or imaginary) of a complex dtype.
    public var complexPart: DType? {
        switch self {
        case .complex64: return .float32
        case .complex128: return .float64
        default: return nil
        }
    }
    public var isUnsigned: Bool { self == .uint8 || self == .uint16 || self == .uint32 || self == .uint64 }
    /// Narrow floats (float16, bfloat16, float8) are stored as such but computed in float32.
    public var isHalf: Bool {
        self == .float16 || self == .bfloat16 || self == .float8_e4m3fn || self == .float8_e5m2
    }

    /// Keras's type-promotion lattice (keras.backend.result_type) restricted to concrete
    /// dtypes: the least upper bound of `a` and `b`. Integer/float mixes go to the float;
    /// int64 with uint64 has no integer bound and goes to the default float (float32), as in Keras.
    public static func result(_ a: DType, _ b: DType) -> DType {
        if a == b { return a }
        let ua = upperBounds(a), ub = upperBounds(b)
        // The least common upper bound is the common bound whose own bounds contain all others.
        let common = ua.filter { ub.contains($0) }
        for c in common where common.allSatisfy({ upperBounds(c).contains($0) }) {
            return c.concrete
        }
        return .float32
    }

    /// Nodes of the lattice: concrete dtypes plus Keras's weak int / weak float.
    private enum Node: Hashable {
        case concrete(DType), weakInt, weakFloat
        var concrete: DType {
            switch self {
            case .concrete(let d): return d
            case .weakInt: return .int32
            case .weakFloat: return .float32
            }
        }
    }

    private static func edges(_ n: Node) -> [Node] {
        switch n {
        case .concrete(.bool): return [.weakInt]
        case .weakInt: return [.concrete(.uint8), .concrete(.int8), .concrete(.complex64)]
        case .concrete(.uint8): return [.concrete(.int16), .concrete(.uint16)]
        case .concrete(.uint16): return [.concrete(.int32), .concrete(.uint32)]
        case .concrete(.uint32): return [.concrete(.int64), .concrete(.uint64)]
        case .concrete(.uint64): return [.weakFloat]
        case .concrete(.int8): return [.concrete(.int16)]
        case .concrete(.int16): return [.concrete(.int32)]
        case .concrete(.int32): return [.concrete(.int64)]
        case .concrete(.int64): return [.weakFloat]
        case .weakFloat: return [.concrete(.bfloat16), .concrete(.float16)]
        case .concrete(.bfloat16), .concrete(.float16): return [.concrete(.float32)]
        case .concrete(.float32): return [.concrete(.float64), .concrete(.complex64)]
        case .concrete(.float64), .concrete(.complex64): return [.concrete(.complex128)]
        default: return []
        }
    }

    private static func upperBounds(_ d: DType) -> [Node] { upperBounds(.concrete(d)) }

    private static func upperBounds(_ start: Node) -> [Node] {
        var seen: [Node] = [start]
        var i = 0
        while i < seen.count {
            for e in edges(seen[i]) where !seen.contains(e) { seen.append(e) }
            i += 1
        }
        return seen
    }
}
