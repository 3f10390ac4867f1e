/// Bitwise ops on integer and bool tensors (numpy semantics; shifts past the bit width
/// give 0, or -1 for right shifts of negative values, never a trap).

public enum BitwiseOp: String, CaseIterable {
    case and = "bitwise_and", or = "bitwise_or", xor = "bitwise_xor"
    case leftShift = "left_shift", rightShift = "right_shift"
}

private func dispatchInt<V: IntVisitor>(_ dt: DType, _ v: V) throws -> V.Result {
    try dispatchInt(dt, v, orThrow: .type("bitwise ops need integer or bool tensors, got \(dt)"))
}

struct BitAnd<T: FixedWidthInteger>: BinaryKernel { @inline(__always) func callAsFunction(_ a: T, _ b: T) -> T { a & b } }
struct BitOr<T: FixedWidthInteger>: BinaryKernel { @inline(__always) func callAsFunction(_ a: T, _ b: T) -> T { a | b } }
struct BitXor<T: FixedWidthInteger>: BinaryKernel { @inline(__always) func callAsFunction(_ a: T, _ b: T) -> T { a ^ b } }
struct ShiftLeft<T: FixedWidthInteger>: BinaryKernel { @inline(__always) func callAsFunction(_ a: T, _ b: T) -> T { a << b } }
struct ShiftRight<T: FixedWidthInteger>: BinaryKernel { @inline(__always) func callAsFunction(_ a: T, _ b: T) -> T { a >> b } }
struct BitNot<T: FixedWidthInteger>: UnaryKernel { @inline(__always) func callAsFunction(_ a: T) -> T { ~a } }

/// Elementwise bitwise op with broadcasting and promotion. Bool and/or/xor are logical.
public func bitwise(_ op: BitwiseOp, _ a0: Tensor, _ b0: Tensor) throws -> Tensor {
    let (a, b) = try promote(a0, b0)
    if a.dtype == .bool {
        switch op {
        case .and: return try binary(.logicalAnd, a, b)
        case .or: return try binary(.logicalOr, a, b)
        case .xor: return try binary(.logicalXor, a, b)
        default: return try cast(try bitwise(op, try cast(a, to: .uint8), try cast(b, to: .uint8)), to: .bool)
        }
    }
    let out = try Tensor(empty: try broadcastShapes(a.shape, b.shape), dtype: a.dtype)
    struct K: IntVisitor {
        let op: BitwiseOp, a: Tensor, b: Tensor, out: Tensor
        func visit<T: NumElem & FixedWidthInteger>(_: T.Type) throws {
            switch op {
            case .and: mapBinary(a, b, out, BitAnd<T>())
            case .or: mapBinary(a, b, out, BitOr<T>())
            case .xor: mapBinary(a, b, out, BitXor<T>())
            case .leftShift: mapBinary(a, b, out, ShiftLeft<T>())
            case .rightShift: mapBinary(a, b, out, ShiftRight<T>())
            }
        }
    }
    try dispatchInt(a.dtype, K(op: op, a: a, b: b, out: out))
    return out
}

/// ~x for integers, logical not for bool.
public func bitwiseInvert(_ x: Tensor) throws -> Tensor {
    if x.dtype == .bool { return try unary(.logicalNot, x) }
    let out = try Tensor(empty: x.shape, dtype: x.dtype)
    struct K: IntVisitor {
        let x: Tensor, out: Tensor
        func visit<T: NumElem & FixedWidthInteger>(_: T.Type) throws { mapUnary(x, out, BitNot<T>()) }
    }
    try dispatchInt(x.dtype, K(x: x, out: out))
    return out
}

/// Greatest common divisor (non-negative) or least common multiple of integers.
public func gcdLcm(_ a0: Tensor, _ b0: Tensor, lcm: Bool) throws -> Tensor {
    let (a, b) = try promote(a0, b0)
    if a.dtype == .bool { return try cast(try gcdLcm(try cast(a, to: .uint8), try cast(b, to: .uint8), lcm: lcm), to: .bool) }
    let out = try Tensor(empty: try broadcastShapes(a.shape, b.shape), dtype: a.dtype)
    struct K: IntVisitor {
        let a: Tensor, b: Tensor, out: Tensor, lcm: Bool
        func visit<T: NumElem & FixedWidthInteger>(_: T.Type) throws {
            if lcm { mapBinary(a, b, out, Lcm<T>()) } else { mapBinary(a, b, out, Gcd<T>()) }
        }
    }
    try dispatchInt(a.dtype, K(a: a, b: b, out: out, lcm: lcm))
    return out
}

@inline(__always) private func gcdValue<T: FixedWidthInteger>(_ a: T, _ b: T) -> T {
    var (x, y) = (a.magnitude, b.magnitude)
    while y != 0 { (x, y) = (y, x % y) }
    return T(truncatingIfNeeded: x)
}
struct Gcd<T: FixedWidthInteger>: BinaryKernel { @inline(__always) func callAsFunction(_ a: T, _ b: T) -> T { gcdValue(a, b) } }
struct Lcm<T: FixedWidthInteger>: BinaryKernel {
    @inline(__always) func callAsFunction(_ a: T, _ b: T) -> T {
        let g = gcdValue(a, b)
        if g == 0 { return 0 }
        return T(truncatingIfNeeded: (a.magnitude / g.magnitude) &* b.magnitude)
    }
}

extension BitwiseOp {
    var doc: String {
        switch self {
        case .and: return "a & b (logical for bool)"
        case .or: return "a | b (logical for bool)"
        case .xor: return "a ^ b (logical for bool)"
        case .leftShift: return "a << b"
        case .rightShift: return "a >> b (arithmetic for signed a)"
        }
    }
}

private let intOrBool = DTypeSet.integer.union(.bool)

let bitwiseOps: [OpDef] = BitwiseOp.allCases.map { op in
    OpDef(op.rawValue, inputs: ["a", "b"], dtypes: intOrBool, grad: .no, doc: op.doc + "; broadcasts, promotes") { t, _ in
        try bitwise(op, t[0], t[1])
    }
} + [
    OpDef(unary: "bitwise_invert", dtypes: intOrBool, grad: .no, doc: "~x (logical not for bool)") { x, _ in try bitwiseInvert(x) },
    OpDef("gcd", inputs: ["a", "b"], dtypes: intOrBool, grad: .no, doc: "Greatest common divisor, non-negative") { t, _ in
        try gcdLcm(t[0], t[1], lcm: false)
    },
    OpDef("lcm", inputs: ["a", "b"], dtypes: intOrBool, grad: .no, doc: "Least common multiple, non-negative") { t, _ in
        try gcdLcm(t[0], t[1], lcm: true)
    },
]
