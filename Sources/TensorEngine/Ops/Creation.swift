/// Creation ops: full / zeros / ones / arange.

/// A tensor of `shape` filled with `value` (converted to `dtype`, saturating).
public func full(_ shape: [Int], value: Double, dtype: DType = .float32) throws -> Tensor {
    try SizeCheck("full").count(shape, itemSize: dtype.itemSize)
    let t = try Tensor(zeros: shape, dtype: dtype)
    if value == 0 { return t }
    struct Fill: NumericVisitor {
        let t: Tensor, value: Double
        func visit<T: NumElem>(_: T.Type) throws {
            let p = t.pointer(T.self), v = T(fromDouble: value)
            parallelFor(t.count, streaming: true) { r in for i in r { p[i] = v } }
        }
    }
    switch dtype {
    case .bool: let p = t.pointer(Bool.self); for i in 0..<t.count { p[i] = true }
    case .float16: let p = t.pointer(Float16.self), v = Float16(value); for i in 0..<t.count { p[i] = v }
    case .bfloat16: let p = t.pointer(BFloat16.self), v = BFloat16(Float(value)); for i in 0..<t.count { p[i] = v }
    case .float8_e4m3fn: let p = t.pointer(Float8E4M3FN.self), v = Float8E4M3FN(value); for i in 0..<t.count { p[i] = v }
    case .float8_e5m2: let p = t.pointer(Float8E5M2.self), v = Float8E5M2(value); for i in 0..<t.count { p[i] = v }
    case .complex64: let p = t.pointer(Complex<Float>.self), v = Complex<Float>(fromDouble: value); for i in 0..<t.count { p[i] = v }
    case .complex128: let p = t.pointer(Complex<Double>.self), v = Complex<Double>(fromDouble: value); for i in 0..<t.count { p[i] = v }
    default: try dispatchNumeric(dtype, Fill(t: t, value: value))
    }
    return t
}

/// Zeros of `shape`.
public func zeros(_ shape: [Int], dtype: DType = .float32) throws -> Tensor { try Tensor(zeros: shape, dtype: dtype) }

/// Ones of `shape`.
public func ones(_ shape: [Int], dtype: DType = .float32) throws -> Tensor { try full(shape, value: 1, dtype: dtype) }

/// Zeros with the shape and dtype of `x`.
public func zerosLike(_ x: Tensor) throws -> Tensor { try Tensor(zeros: x.shape, dtype: x.dtype) }

/// `start, start+step, …` below `stop` (numpy arange), computed in the target dtype.
public func arange(start: Double, stop: Double, step: Double = 1, dtype: DType = .float32) throws -> Tensor {
    guard step != 0, step.isFinite, start.isFinite, stop.isFinite else {
        throw EngineError.value("arange needs finite start/stop and a non-zero finite step")
    }
    let count = ((stop - start) / step).rounded(.up)
    guard count.isFinite, count < Double(maxTensorBytes) else {
        throw EngineError.value("arange(\(start), \(stop), \(step)) has too many elements")
    }
    let n = count > 0 ? Int(count) : 0  // Int(count) of a huge negative count would trap
    if dtype.isHalf || dtype == .bool || dtype.isComplex {
        let base = dtype.complexPart ?? .float32
        return try cast(try arange(start: start, stop: stop, step: step, dtype: base), to: dtype)
    }
    let t = try Tensor(zeros: [n], dtype: dtype)
    struct Fill: NumericVisitor {
        let t: Tensor, start: Double, step: Double
        func visit<T: NumElem>(_: T.Type) throws {
            let p = t.pointer(T.self)
            for i in 0..<t.count { p[i] = T(fromDouble: start + Double(i) * step) }
        }
    }
    try dispatchNumeric(dtype, Fill(t: t, start: start, step: step))
    return t
}

let creationOps: [OpDef] = [
    OpDef("full", inputs: [], attrs: [.ints("shape"), .float("value", default: 0), .dtype("dtype", default: .float32)],
          grad: .no, doc: "A tensor of shape filled with value") { _, a in
        try full(a.requiredInts("shape"), value: a.float("value"), dtype: a.dtype("dtype"))
    },
    OpDef("arange", inputs: [],
          attrs: [.float("start", default: 0), .float("stop"), .float("step", default: 1), .dtype("dtype", default: .float32)],
          grad: .no, doc: "Evenly spaced values in [start, stop)") { _, a in
        try arange(start: a.float("start"), stop: a.float("stop"), step: a.float("step"), dtype: a.dtype("dtype"))
    },
]
