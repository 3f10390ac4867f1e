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
    /// The schema of the op these attributes were checked against (registry ops live for
    /// the process, so no reference is counted): absent attributes take its defaults.
    private unowned(unsafe) var schema: OpSchema? = nil

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

    /// Checks every attribute against `s` (declared, of its type, one of its choices, and
    /// every required one given), then binds `s` for the defaults.
    mutating func bind(_ s: OpSchema) throws {
        var required = 0
        if let f = first { required += try Attrs.check(f, s) }
        for e in rest { required += try Attrs.check(e, s) }
        if required < s.requiredAttrs {
            let missing = s.attrs.filter { spec in
                if case .required = spec.presence { return !has(spec.name) }
                return false
            }.map(\.name)
            throw EngineError.value("\(s.name) needs attribute(s) \(missing.joined(separator: ", "))")
        }
        schema = s
    }

    /// 1 when `e` is a required attribute of `s`, 0 when optional; throws when it does not fit.
    private static func check(_ e: Entry, _ s: OpSchema) throws -> Int {
        guard let spec = s.attr(e.name) else { throw s.attrError(e.name) }
        guard spec.accepts(e.value) else {
            throw EngineError.type("\(s.name): attribute '\(e.name)' must be \(spec.type.rawValue), got \(e.value.kindName)")
        }
        if case .string(let v) = e.value {
            if spec.type == .dtype, DType(name: v) == nil {
                throw EngineError.type("\(s.name): attribute '\(e.name)': unknown dtype '\(v)'")
            }
            if !spec.choices.isEmpty, !spec.choices.contains(v) {
                throw EngineError.value("\(s.name): attribute '\(e.name)' must be one of \(spec.choices.joined(separator: ", ")), got '\(v)'")
            }
        }
        if case .required = spec.presence { return 1 }
        return 0
    }

    private subscript(_ k: String) -> AttrValue? {
        if first?.name == k { return first!.value }
        for e in rest where e.name == k { return e.value }
        return nil
    }

    /// The given value, else the bound schema's default. Reading an attribute the schema
    /// does not declare is the op's own bug, caught wherever a test runs that path.
    private func lookup(_ k: String) throws -> AttrValue? {
        if let v = self[k] { return v }
        guard let s = schema else { return nil }
        guard let spec = s.attr(k) else {
            throw EngineError.internal("\(s.name) reads attribute '\(k)', which its schema does not declare")
        }
        return spec.defaultValue
    }

    /// Whether the caller gave `k` (a default does not count).
    public func has(_ k: String) -> Bool { self[k] != nil }

    public func int(_ k: String, default d: Int? = nil) throws -> Int {
        switch try lookup(k) {
        case .int(let v): return v
        case .bool(let v): return v ? 1 : 0
        case .none: if let d = d { return d }; throw EngineError.value("missing attribute '\(k)'")
        default: throw EngineError.type("attribute '\(k)' must be an int")
        }
    }

    public func float(_ k: String, default d: Double? = nil) throws -> Double {
        switch try lookup(k) {
        case .float(let v): return v
        case .int(let v): return Double(v)
        case .bool(let v): return v ? 1 : 0
        case .none: if let d = d { return d }; throw EngineError.value("missing attribute '\(k)'")
        default: throw EngineError.type("attribute '\(k)' must be a float")
        }
    }

    public func bool(_ k: String, default d: Bool? = nil) throws -> Bool {
        switch try lookup(k) {
        case .bool(let v): return v
        case .int(let v): return v != 0
        case .none: if let d = d { return d }; throw EngineError.value("missing attribute '\(k)'")
        default: throw EngineError.type("attribute '\(k)' must be a bool")
        }
    }

    public func string(_ k: String, default d: String? = nil) throws -> String {
        switch try lookup(k) {
        case .string(let v): return v
        case .none: if let d = d { return d }; throw EngineError.value("missing attribute '\(k)'")
        default: throw EngineError.type("attribute '\(k)' must be a string")
        }
    }

    /// An int list; a single int is accepted as a list of one. nil when absent.
    public func ints(_ k: String) throws -> [Int]? {
        switch try lookup(k) {
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
        switch try lookup(k) {
        case .floats(let v): return v
        case .ints(let v): return v.map(Double.init)
        case .float(let v): return [v]
        case .int(let v): return [Double(v)]
        case .none: throw EngineError.value("missing attribute '\(k)'")
        default: throw EngineError.type("attribute '\(k)' must be a list of floats")
        }
    }

    public func dtype(_ k: String, default d: DType? = nil) throws -> DType {
        guard try lookup(k) != nil else {
            if let d = d { return d }
            throw EngineError.value("missing attribute '\(k)'")
        }
        let name = try string(k)
        guard let dt = DType(name: name) else { throw EngineError.type("unknown dtype '\(name)'") }
        return dt
    }
}

extension AttrValue {
    var kindName: String {
        switch self {
        case .int: return "int"
        case .float: return "float"
        case .bool: return "bool"
        case .string: return "string"
        case .ints: return "ints"
        case .floats: return "floats"
        }
    }
}

/// One registered op: its schema and an entry point that checks a call against the schema,
/// then calls the op's typed Swift function (where its forward, shape rule and VJP live).
public struct OpDef {
    public let schema: OpSchema
    public var name: String { schema.name }
    public let run: ([Tensor], Attrs) throws -> [Tensor]
    /// `run` for an op of one output, returning it without the array: the C ABI calls this
    /// when it is there, since that array was a measurable part of a small op.
    public let runOne: (([Tensor], Attrs) throws -> Tensor)?
    /// `runOne` for an op of one input, taking the tensor itself: the C ABI calls this when
    /// it is there, since building the inputs array was a measurable part of a small op.
    public let runUnary: ((Tensor, Attrs) throws -> Tensor)?

    /// An op of several outputs, named by `outputs`.
    public init(_ name: String, inputs: [InputSpec], outputs: [String], attrs: [AttrSpec] = [],
                dtypes: DTypeSet = .real, grad: Differentiability = .yes, constantOutputs: [Int] = [],
                inPlace: InPlace = .none, doc: String, _ run: @escaping ([Tensor], Attrs) throws -> [Tensor]) {
        let s = OpSchema(name, inputs: inputs, outputs: outputs, attrs: attrs, dtypes: dtypes, grad: grad,
                         constantOutputs: constantOutputs, inPlace: inPlace, doc: doc)
        schema = s
        self.run = { inputs, attrs in
            var a = attrs
            try s.check(inputs, &a)
            let r = try run(inputs, a)
            guard r.count == s.outputs.count else {
                throw EngineError.internal("\(s.name) gave \(r.count) outputs; its schema declares \(s.outputs.count)")
            }
            Tape.requireGradients(s, r, inputs)
            return r
        }
        runOne = nil
        runUnary = nil
    }

    /// An op whose attributes decide how many outputs it has (`fused_elementwise`), named
    /// `output...` in its schema. Not checked for missing gradients: where it records on a
    /// tape it runs other registry ops, which are.
    public init(_ name: String, inputs: [InputSpec], variadicOutputs output: String, attrs: [AttrSpec] = [],
                dtypes: DTypeSet = .real, inPlace: InPlace = .none, doc: String,
                _ run: @escaping ([Tensor], Attrs) throws -> [Tensor]) {
        let s = OpSchema(name, inputs: inputs, outputs: [output + "..."], attrs: attrs, dtypes: dtypes, grad: .yes,
                         inPlace: inPlace, doc: doc)
        schema = s
        self.run = { inputs, attrs in
            var a = attrs
            try s.check(inputs, &a)
            return try run(inputs, a)
        }
        runOne = nil
        runUnary = nil
    }

    /// An op of one output.
    public init(_ name: String, inputs: [InputSpec], attrs: [AttrSpec] = [], dtypes: DTypeSet = .real,
                grad: Differentiability = .yes, inPlace: InPlace = .none, doc: String,
                _ run: @escaping ([Tensor], Attrs) throws -> Tensor) {
        let s = OpSchema(name, inputs: inputs, outputs: ["out"], attrs: attrs, dtypes: dtypes, grad: grad,
                         inPlace: inPlace, doc: doc)
        self.init(s, { inputs, attrs in
            var a = attrs
            try s.check(inputs, &a)
            let y = try run(inputs, a)
            Tape.requireGradients(s, [y], inputs)
            return y
        }, unary: nil)
    }

    /// An op of one input and one output.
    public init(unary name: String, attrs: [AttrSpec] = [], dtypes: DTypeSet = .real, grad: Differentiability = .yes,
                inPlace: InPlace = .none, doc: String, _ run: @escaping (Tensor, Attrs) throws -> Tensor) {
        let s = OpSchema(name, inputs: ["x"], outputs: ["out"], attrs: attrs, dtypes: dtypes, grad: grad,
                         inPlace: inPlace, doc: doc)
        self.init(s, { inputs, attrs in
            var a = attrs
            try s.check(inputs, &a)
            let y = try run(inputs[0], a)
            Tape.requireGradients(s, [y], inputs)
            return y
        }, unary: { x, attrs in
            var a = attrs
            try s.check(x, &a)
            let y = try run(x, a)
            Tape.requireGradients(s, [y], [x])
            return y
        })
    }

    private init(_ s: OpSchema, _ one: @escaping ([Tensor], Attrs) throws -> Tensor,
                 unary: ((Tensor, Attrs) throws -> Tensor)?) {
        schema = s
        run = { inputs, attrs in [try one(inputs, attrs)] }
        runOne = one
        runUnary = unary
    }
}

/// Every op, by name and by index (the C ABI's op handle). Built once, immutable after.
public enum OpRegistry {
    public static let ops: [OpDef] = {
        let all = creationOps + elementwiseOps + reductionOps + linalgOps + shapeOps + nnOps + randomOps
            + indexingOps + sortingOps + convOps + lapackOps + fftOps + bitwiseOps
            + numericOps + samplerOps
            + optimizerOps
            + nnExtraOps + ctcOps + rnnOps + attentionOps
            + imageOps + complexOps + fusedElementwiseOps
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
        Tracer.opStarting()
        return Tracer.traced(Int32(i), try ops[i].run(inputs, attrs), inputs, attrs)
    }
}
