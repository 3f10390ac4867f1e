/// A typed attribute value, as the C ABI and Python pass them.
public enum AttrValue {
    case int(Int), float(Double), bool(Bool), string(String), ints([Int]), floats([Double])
}

/// Named attributes of one op call, with typed, validating accessors.
///
/// A short list searched in order rather than a dictionary: a call carries a handful of
/// attributes, and hashing their names cost more than comparing them (a per-call cost
/// on every op the C ABI runs).
public struct Attrs {
    // A struct, not a tuple: an array of tuples looks up its generic metadata on every
    // allocation.
    private struct Entry {
        let name: String
        var value: AttrValue
    }
    // The first attribute is held inline: most ops take at most one, and the C ABI builds
    // an Attrs on every call, so those cost no array allocation.
    private var first: Entry?
    private var rest: [Entry] = []

    public init(_ values: [String: AttrValue] = [:]) {
        for (k, v) in values { set(k, v) }
    }

    /// Room for `n` attributes without regrowing.
    public init(capacity n: Int) {
        if n > 1 { rest.reserveCapacity(n - 1) }
    }

    /// Sets (or replaces) one attribute.
    public mutating func set(_ k: String, _ v: AttrValue) {
        guard first != nil else { first = Entry(name: k, value: v); return }
        if first!.name == k {
            first!.value = v
        } else if let i = rest.firstIndex(where: { $0.name == k }) {
            rest[i].value = v
        } else {
            rest.append(Entry(name: k, value: v))
        }
    }

    /// The attributes as a dictionary (a copy; `set` changes them).
    public var values: [String: AttrValue] {
        var d = Dictionary(rest.map { ($0.name, $0.value) }, uniquingKeysWith: { _, last in last })
        if let f = first { d[f.name] = f.value }
        return d
    }

    private subscript(_ k: String) -> AttrValue? {
        if first?.name == k { return first!.value }
        for e in rest where e.name == k { return e.value }
        return nil
    }

    public func has(_ k: String) -> Bool { self[k] != nil }

    public func int(_ k: String, default d: Int? = nil) throws -> Int {
        switch self[k] {
        case .int(let v): return v
        case .bool(let v): return v ? 1 : 0
        case .none: if let d = d { return d }; throw EngineError.value("missing attribute '\(k)'")
        default: throw EngineError.type("attribute '\(k)' must be an int")
        }
    }

    public func float(_ k: String, default d: Double? = nil) throws -> Double {
        switch self[k] {
        case .float(let v): return v
        case .int(let v): return Double(v)
        case .bool(let v): return v ? 1 : 0
        case .none: if let d = d { return d }; throw EngineError.value("missing attribute '\(k)'")
        default: throw EngineError.type("attribute '\(k)' must be a float")
        }
    }

    public func bool(_ k: String, default d: Bool? = nil) throws -> Bool {
        switch self[k] {
        case .bool(let v): return v
        case .int(let v): return v != 0
        case .none: if let d = d { return d }; throw EngineError.value("missing attribute '\(k)'")
        default: throw EngineError.type("attribute '\(k)' must be a bool")
        }
    }

    public func string(_ k: String, default d: String? = nil) throws -> String {
        switch self[k] {
        case .string(let v): return v
        case .none: if let d = d { return d }; throw EngineError.value("missing attribute '\(k)'")
        default: throw EngineError.type("attribute '\(k)' must be a string")
        }
    }

    /// An int list; a single int is accepted as a list of one. nil when absent.
    public func ints(_ k: String) throws -> [Int]? {
        switch self[k] {
        case .ints(let v): return v
        case .int(let v): return [v]
        case .floats(let v) where v.isEmpty: return []
        case .none: return nil
        default: throw EngineError.type("attribute '\(k)' must be a list of ints")
        }
    }

    public func requiredInts(_ k: String) throws -> [Int] {
        guard let v = try ints(k) else { throw EngineError.value("missing attribute '\(k)'") }
        return v
    }

    /// A float list (ints accepted); a single number is a list of one.
    public func requiredFloats(_ k: String) throws -> [Double] {
        switch self[k] {
        case .floats(let v): return v
        case .ints(let v): return v.map(Double.init)
        case .float(let v): return [v]
        case .int(let v): return [Double(v)]
        case .none: throw EngineError.value("missing attribute '\(k)'")
        default: throw EngineError.type("attribute '\(k)' must be a list of floats")
        }
    }

    public func dtype(_ k: String, default d: DType? = nil) throws -> DType {
        guard self[k] != nil else {
            if let d = d { return d }
            throw EngineError.value("missing attribute '\(k)'")
        }
        let name = try string(k)
        guard let dt = DType(name: name) else { throw EngineError.type("unknown dtype '\(name)'") }
        return dt
    }
}

/// One registered op: a name and an entry point that validates its inputs and attributes,
/// then calls the op's typed Swift function (where its forward, shape rule and VJP live).
public struct OpDef {
    public let name: String
    public let run: ([Tensor], Attrs) throws -> [Tensor]
    /// `run` for an op of one output, returning it without the array: the C ABI calls this
    /// when it is there, since that array was a measurable part of a small op.
    public let runOne: (([Tensor], Attrs) throws -> Tensor)?
    /// `runOne` for an op of one input, taking the tensor itself: the C ABI calls this when
    /// it is there, since building the inputs array was a measurable part of a small op.
    public let runUnary: ((Tensor, Attrs) throws -> Tensor)?

    public init(_ name: String, _ run: @escaping ([Tensor], Attrs) throws -> [Tensor]) {
        self.name = name
        self.run = complexCapableOps.contains(name) ? run : { inputs, attrs in
            try OpDef.rejectComplex(name, inputs)
            return try run(inputs, attrs)
        }
        runOne = nil
        runUnary = nil
    }

    /// An op of one input and one output.
    public init(unary name: String, _ run: @escaping (Tensor, Attrs) throws -> Tensor) {
        let unary: (Tensor, Attrs) throws -> Tensor = complexCapableOps.contains(name) ? run : { x, attrs in
            try OpDef.rejectComplex(name, x)
            return try run(x, attrs)
        }
        self.init(name, arity: 1, { inputs, attrs in try run(inputs[0], attrs) }, unary: unary)
    }

    /// An op of exactly `arity` inputs and one output.
    public init(_ name: String, arity: Int, _ run: @escaping ([Tensor], Attrs) throws -> Tensor) {
        self.init(name, arity: arity, run, unary: nil)
    }

    private init(_ name: String, arity: Int, _ run: @escaping ([Tensor], Attrs) throws -> Tensor,
                 unary: ((Tensor, Attrs) throws -> Tensor)?) {
        let complexOK = complexCapableOps.contains(name)
        let one: ([Tensor], Attrs) throws -> Tensor = { inputs, attrs in
            if !complexOK { try OpDef.rejectComplex(name, inputs) }
            guard inputs.count == arity else {
                throw EngineError.value("\(name) takes \(arity) input(s), got \(inputs.count)")
            }
            return try run(inputs, attrs)
        }
        self.name = name
        self.run = { inputs, attrs in [try one(inputs, attrs)] }
        runOne = one
        runUnary = unary
    }

    private static func rejectComplex(_ name: String, _ inputs: [Tensor]) throws {
        if let c = inputs.first(where: { $0.dtype.isComplex }) { try rejectComplex(name, c) }
    }

    private static func rejectComplex(_ name: String, _ x: Tensor) throws {
        if x.dtype.isComplex { throw EngineError.type("\(name) does not support complex inputs (got \(x.dtype))") }
    }
}

/// Every op, by name and by index (the C ABI's op handle). Built once, immutable after.
public enum OpRegistry {
    public static let ops: [OpDef] = {
        let all = creationOps + elementwiseOps + reductionOps + linalgOps + shapeOps + nnOps + randomOps
            + indexingOps + sortingOps + convOps + lapackOps + fftOps + bitwiseOps
            + numericOps + samplerOps
            + optimizerOps
            + nnExtraOps + ctcOps + rnnOps
            + imageOps + complexOps
        return all
    }()

    static let index: [String: Int] = {
        var d: [String: Int] = [:]
        for (i, op) in ops.enumerated() { d[op.name] = i }
        return d
    }()

    public static func lookup(_ name: String) -> Int? { index[name] }

    /// Calls an op by name, as the C ABI and Python do.
    public static func call(_ name: String, _ inputs: [Tensor], _ attrs: Attrs = Attrs()) throws -> [Tensor] {
        guard let i = index[name] else { throw EngineError.value("unknown op '\(name)'") }
        return Tracer.traced(Int32(i), try ops[i].run(inputs, attrs), inputs, attrs)
    }
}
