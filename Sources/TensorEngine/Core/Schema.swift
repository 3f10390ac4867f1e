/// The op schema: what an op takes and gives, declared once beside its kernel in its
/// registry entry. The registry checks every call against it (input count and dtypes,
/// attribute names, types, values and presence) before the kernel runs, so a caller's
/// mistake is an error that names the op and never a silently coerced value. The C ABI
/// exports it (`te_op_schema`), docs/engine-ops.md is generated from it, and graph files
/// name ops and attributes by it.

/// A set of dtypes, one bit per `DType` raw value.
public struct DTypeSet: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public init(_ dtypes: [DType]) { rawValue = dtypes.reduce(0) { $0 | (1 << UInt32($1.rawValue)) } }

    @inline(__always) public func contains(_ d: DType) -> Bool { rawValue & (1 << UInt32(d.rawValue)) != 0 }

    public static let bool = DTypeSet([.bool])
    public static let integer = DTypeSet(DType.allCases.filter(\.isInteger))
    public static let floating = DTypeSet(DType.allCases.filter(\.isFloatingPoint))
    public static let complex = DTypeSet([.complex64, .complex128])
    /// float32 and float64: the dtypes LAPACK computes in.
    public static let blas = DTypeSet([.float32, .float64])
    public static let all = DTypeSet(DType.allCases)
    /// Every dtype but the complex ones: what an op without complex kernels takes.
    public static let real = all.subtracting(complex)
    public static let numeric = real.subtracting(bool)

    /// The dtypes in the set, in `DType` order.
    public var dtypes: [DType] { DType.allCases.filter(contains) }

    /// A short name for the set where it is one of the named ones (for docs and errors).
    public var summary: String {
        let named: [(DTypeSet, String)] = [
            (.all, "all"), (.real, "real"), (.numeric, "numeric"), (.floating, "float"),
            (.integer, "int"), (DTypeSet.integer.union(.bool), "int, bool"), (.blas, "float32, float64"),
            (.complex, "complex"), (DTypeSet.floating.union(.complex), "float, complex"),
        ]
        if let n = named.first(where: { $0.0 == self }) { return n.1 }
        return dtypes.map(\.name).joined(separator: ", ")
    }
}

/// One input of an op. Written as a string literal: `"x"`, `"xs..."` (any number, at
/// least one), `"bias?"` (may be left out; only trailing inputs).
public struct InputSpec: ExpressibleByStringLiteral, Sendable {
    public let name: String
    public let variadic: Bool
    public let optional: Bool
    /// The dtypes this input takes; nil: the op's `dtypes`.
    public let dtypes: DTypeSet?

    public init(_ name: String, dtypes: DTypeSet? = nil) {
        var n = name
        variadic = n.hasSuffix("...")
        if variadic { n.removeLast(3) }
        optional = n.hasSuffix("?")
        if optional { n.removeLast() }
        self.name = n
        self.dtypes = dtypes
    }

    public init(stringLiteral s: String) { self.init(s) }

    /// An input of integer indices (or sizes, lengths, labels).
    public static func index(_ name: String) -> InputSpec { InputSpec(name, dtypes: .integer) }
}

/// The declared type of an attribute. A value of another kind is accepted only where the
/// conversion loses nothing (an int for a float, one int for a list of ints).
public enum AttrType: String, Sendable {
    case int, float, bool, string, ints, floats, dtype
}

/// One attribute of an op.
public struct AttrSpec: @unchecked Sendable {
    public enum Presence {
        /// The call must give it.
        case required
        /// Left out, it takes this value.
        case defaulted(AttrValue)
        /// Left out, the op does something else, said in the text.
        case optional(String)
    }
    public let name: String
    public let type: AttrType
    public let presence: Presence
    /// The only strings allowed (empty: any).
    public let choices: [String]

    init(_ name: String, _ type: AttrType, _ presence: Presence, choices: [String] = []) {
        self.name = name
        self.type = type
        self.presence = presence
        self.choices = choices
    }

    private static func presence(_ d: AttrValue?, _ absent: String?) -> Presence {
        if let d = d { return .defaulted(d) }
        if let a = absent { return .optional(a) }
        return .required
    }

    public static func int(_ n: String, default d: Int? = nil, absent: String? = nil) -> AttrSpec {
        AttrSpec(n, .int, presence(d.map(AttrValue.int), absent))
    }
    public static func float(_ n: String, default d: Double? = nil, absent: String? = nil) -> AttrSpec {
        AttrSpec(n, .float, presence(d.map(AttrValue.float), absent))
    }
    public static func bool(_ n: String, default d: Bool? = nil) -> AttrSpec {
        AttrSpec(n, .bool, presence(d.map(AttrValue.bool), nil))
    }
    public static func string(_ n: String, default d: String? = nil, choices: [String] = []) -> AttrSpec {
        AttrSpec(n, .string, presence(d.map(AttrValue.string), nil), choices: choices)
    }
    public static func ints(_ n: String, default d: [Int]? = nil, absent: String? = nil) -> AttrSpec {
        AttrSpec(n, .ints, presence(d.map(AttrValue.ints), absent))
    }
    public static func floats(_ n: String, absent: String? = nil) -> AttrSpec {
        AttrSpec(n, .floats, presence(nil, absent))
    }
    public static func dtype(_ n: String, default d: DType? = nil) -> AttrSpec {
        AttrSpec(n, .dtype, presence(d.map { AttrValue.string($0.name) }, nil))
    }

    public var defaultValue: AttrValue? {
        if case .defaulted(let v) = presence { return v }
        return nil
    }

    /// Whether `v` is a value of this attribute's type (before choices).
    func accepts(_ v: AttrValue) -> Bool {
        switch (type, v) {
        case (.int, .int), (.int, .bool): return true
        case (.float, .float), (.float, .int), (.float, .bool): return true
        case (.bool, .bool), (.bool, .int): return true
        case (.string, .string), (.dtype, .string): return true
        case (.ints, .ints), (.ints, .int): return true
        case (.ints, .floats(let f)): return f.isEmpty
        case (.floats, .floats), (.floats, .ints), (.floats, .float), (.floats, .int): return true
        default: return false
        }
    }
}

/// How gradients flow through an op.
public enum Differentiability: Sendable {
    /// A VJP for every float input.
    case yes
    /// A VJP for the named inputs only; the others are indices, sizes or conditions.
    case wrt([String])
    /// Piecewise constant: the gradient is zero wherever it is defined.
    case zero
    /// The outputs are not differentiable values (integers, bools, samples, descriptions).
    case no
    /// Differentiable, but no VJP is written yet: a gradient through it raises.
    case missing
}

/// Which of an op's inputs an output may be written over: the kernel writes output element
/// i after its last read of that input's element i and reads no other of its elements, and
/// the output has the input's shape and dtype. A compiled program uses it to hand an output
/// the buffer of an input that dies at the op (Program.swift); the op takes it only where it
/// asks `Tensor.output(shape:dtype:reusing:)` for that output's buffer.
public enum InPlace: @unchecked Sendable {
    case none
    /// Output `output` over input `input`, for each pair.
    case pairs([(output: Int, input: Int)])
    /// Any output over any input of its shape (a fused elementwise chain, whose kernel picks).
    case any

    /// The input positions (of `inputCount`) some output may be written over.
    func inputs(count inputCount: Int) -> [Int] {
        switch self {
        case .none: return []
        case .any: return Array(0..<inputCount)
        case .pairs(let p): return p.map(\.input).filter { $0 < inputCount }
        }
    }
}

/// Everything the registry knows about an op besides its kernel.
public final class OpSchema: @unchecked Sendable {
    public let name: String
    public let inputs: [InputSpec]
    public let outputs: [String]
    public let attrs: [AttrSpec]
    /// The dtypes the op's inputs take (unless an input declares its own).
    public let dtypes: DTypeSet
    public let grad: Differentiability
    /// Outputs whose gradient is zero by definition (slogdet's sign).
    public let constantOutputs: [Int]
    public let inPlace: InPlace
    public let doc: String

    let minInputs: Int
    let maxInputs: Int  // Int.max when variadic
    let requiredAttrs: Int

    public init(_ name: String, inputs: [InputSpec], outputs: [String], attrs: [AttrSpec],
                dtypes: DTypeSet, grad: Differentiability, constantOutputs: [Int] = [], inPlace: InPlace = .none,
                doc: String) {
        self.name = name
        self.constantOutputs = constantOutputs
        self.inPlace = inPlace
        self.inputs = inputs
        self.outputs = outputs
        self.attrs = attrs
        self.dtypes = dtypes
        self.grad = grad
        self.doc = doc
        let variadic = inputs.last?.variadic ?? false
        minInputs = inputs.filter { !$0.optional }.count
        maxInputs = variadic ? Int.max : inputs.count
        requiredAttrs = attrs.filter { if case .required = $0.presence { return true }; return false }.count
    }

    public var takesComplex: Bool {
        !dtypes.intersection(.complex).isEmpty || inputs.contains { !($0.dtypes ?? []).intersection(.complex).isEmpty }
    }

    func attr(_ name: String) -> AttrSpec? { attrs.first { $0.name == name } }

    private func inputSpec(_ i: Int) -> InputSpec { i < inputs.count ? inputs[i] : inputs[inputs.count - 1] }

    /// Checks one call's inputs and attributes and binds the attributes to this schema
    /// (so their accessors find the declared defaults).
    @inline(__always)
    func check(_ inputs: [Tensor], _ attrs: inout Attrs) throws {
        let n = inputs.count
        if n < minInputs || n > maxInputs { throw arityError(n) }
        for i in 0..<n { try checkDType(inputs[i], i) }
        try attrs.bind(self)
    }

    /// `check` for a one-input op, without an inputs array.
    @inline(__always)
    func check(_ x: Tensor, _ attrs: inout Attrs) throws {
        try checkDType(x, 0)
        try attrs.bind(self)
    }

    @inline(__always)
    private func checkDType(_ t: Tensor, _ i: Int) throws {
        let spec = inputSpec(i)
        if !(spec.dtypes ?? dtypes).contains(t.dtype) { throw dtypeError(t.dtype, spec) }
    }

    private func arityError(_ n: Int) -> EngineError {
        let want: String
        if maxInputs == Int.max { want = "at least \(minInputs)" }
        else if minInputs == maxInputs { want = "\(minInputs)" }
        else { want = "\(minInputs) to \(maxInputs)" }
        let names = inputs.map { $0.name + ($0.variadic ? "..." : $0.optional ? "?" : "") }.joined(separator: ", ")
        return .value("\(name) takes \(want) input(s) (\(names)), got \(n)")
    }

    private func dtypeError(_ d: DType, _ spec: InputSpec) -> EngineError {
        if d.isComplex { return .type("\(name) does not support complex inputs (got \(d))") }
        return .type("\(name): input '\(spec.name)' does not support \(d) (takes \((spec.dtypes ?? dtypes).summary))")
    }

    func attrError(_ given: String) -> EngineError {
        let known = attrs.isEmpty ? "none" : attrs.map(\.name).joined(separator: ", ")
        return .value("\(name) has no attribute '\(given)' (its attributes: \(known))")
    }
}

// MARK: - JSON

/// The schema as one JSON object: what the C ABI hands out (`te_op_schema`) and what the
/// op reference is generated from.
extension OpSchema {
    public var json: String {
        let str = jsonString
        func list(_ items: [String]) -> String { "[" + items.joined(separator: ", ") + "]" }
        func obj(_ fields: [(String, String)]) -> String {
            "{" + fields.map { str($0.0) + ": " + $0.1 }.joined(separator: ", ") + "}"
        }
        func value(_ v: AttrValue) -> String {
            switch v {
            case .int(let i): return String(i)
            case .float(let d): return jsonDouble(d)
            case .bool(let b): return b ? "true" : "false"
            case .string(let s): return str(s)
            case .ints(let l): return list(l.map(String.init))
            case .floats(let l): return list(l.map(jsonDouble))
            }
        }
        func dtypeList(_ s: DTypeSet) -> String { list(s.dtypes.map { str($0.name) }) }
        let inputs = self.inputs.map { i in
            obj([("name", str(i.name)), ("variadic", i.variadic ? "true" : "false"),
                 ("optional", i.optional ? "true" : "false"), ("dtypes", dtypeList(i.dtypes ?? dtypes))])
        }
        let attrs = self.attrs.map { a -> String in
            var f: [(String, String)] = [("name", str(a.name)), ("type", str(a.type.rawValue))]
            switch a.presence {
            case .required: f.append(("required", "true"))
            case .defaulted(let v): f += [("required", "false"), ("default", value(v))]
            case .optional(let absent): f += [("required", "false"), ("absent", str(absent))]
            }
            if !a.choices.isEmpty { f.append(("choices", list(a.choices.map(str)))) }
            return obj(f)
        }
        let grad: String
        switch self.grad {
        case .yes: grad = str("yes")
        case .no: grad = str("no")
        case .zero: grad = str("zero")
        case .missing: grad = str("missing")
        case .wrt(let names): grad = list(names.map(str))
        }
        return obj([("name", str(name)), ("doc", str(doc)), ("inputs", list(inputs)),
                    ("outputs", list(outputs.map(str))), ("attrs", list(attrs)),
                    ("complex", takesComplex ? "true" : "false"), ("grad", grad)])
    }
}
