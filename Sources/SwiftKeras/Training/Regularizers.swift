import Foundation
import TensorEngine

// Keras's regularizers and constraints (keras/src/regularizers, keras/src/constraints), read
// from the config dicts a layer's config holds, with Keras's arithmetic. Their ops go
// through `Ops`, so a compiled train step records them (Ops.swift).

/// Keras's backend.epsilon(), the constraints' guard against a zero norm.
private let kerasEpsilon = 1e-7

/// The class name and config of a serialized Keras object: {"class_name", "config"} or a
/// bare name string (Keras's `get("l2")`), lower-cased names mapped by `aliases`.
private func classAndConfig(_ v: Any, _ what: String, aliases: [String: String]) throws -> (String, [String: Any]) {
    if let s = v as? String {
        guard let c = aliases[s] ?? (aliases.values.contains(s) ? s : nil) else {
            throw EngineError.notImplemented("\(what): '\(s)' is not a Keras \(what.hasSuffix("_constraint") ? "constraint" : "regularizer") SwiftKeras has")
        }
        return (c, [:])
    }
    guard let d = v as? [String: Any], let c = d["class_name"] as? String else {
        throw EngineError.value("\(what): expected a Keras config {\"class_name\", \"config\"}, got \(v)")
    }
    if let module = d["module"] as? String, !module.hasPrefix("keras") {
        throw EngineError.notImplemented("\(what): the custom Python class \(module).\(c) cannot run in Swift")
    }
    return (aliases[c] ?? c, d["config"] as? [String: Any] ?? [:])
}

private func number(_ c: [String: Any], _ key: String, _ fallback: Double, _ what: String) throws -> Double {
    guard let v = c[key], !(v is NSNull) else { return fallback }
    guard let n = v as? NSNumber else { throw EngineError.value("\(what): '\(key)' should be a number, got \(v)") }
    return n.doubleValue
}

/// An axis or a list of axes (Keras's constraints take either).
private func axes(_ c: [String: Any], _ what: String) throws -> [Int] {
    guard let v = c["axis"], !(v is NSNull) else { return [0] }
    if let n = v as? NSNumber { return [n.intValue] }
    let ints = (v as? [Any])?.compactMap { ($0 as? NSNumber)?.intValue }
    guard let list = ints, list.count == (v as? [Any])?.count else {
        throw EngineError.value("\(what): 'axis' should be an integer or a list of integers, got \(v)")
    }
    return list
}

/// A penalty on a weight (added to the loss) or on a layer's output (activity regularization).
public enum Regularizer {
    /// l1 * sum(|x|) + l2 * sum(x²); Keras's L1, L2 and L1L2 (a zero factor's term is left out).
    case l1l2(l1: Double, l2: Double)
    /// factor * mean over pairs of |cos| between the (L2-normalised) rows, or columns, of a matrix.
    case orthogonal(factor: Double, rows: Bool)

    /// From a Keras config ({"class_name": "L2", "config": {"l2": 0.01}}) or name ("l2");
    /// `what` names the entry in errors ("layer 'dense': kernel_regularizer").
    public init(keras v: Any, what: String) throws {
        let (name, c) = try classAndConfig(v, what, aliases: ["l1": "L1", "l2": "L2", "l1_l2": "L1L2",
                                                               "orthogonal_regularizer": "OrthogonalRegularizer"])
        switch name {
        case "L1": self = .l1l2(l1: try number(c, "l1", 0.01, what), l2: 0)
        case "L2": self = .l1l2(l1: 0, l2: try number(c, "l2", 0.01, what))
        case "L1L2": self = .l1l2(l1: try number(c, "l1", 0, what), l2: try number(c, "l2", 0, what))
        case "OrthogonalRegularizer":
            let mode = c["mode"] as? String ?? "rows"
            guard mode == "rows" || mode == "columns" else { throw EngineError.value("\(what): mode '\(mode)' is not rows or columns") }
            self = .orthogonal(factor: try number(c, "factor", 0.01, what), rows: mode == "rows")
        default: throw EngineError.notImplemented("\(what): the regularizer \(name) is not in SwiftKeras yet")
        }
    }

    /// The penalty for `x`, a 0-d tensor of x's dtype.
    public func callAsFunction(_ x: Tensor) throws -> Tensor {
        switch self {
        case let .l1l2(l1, l2):
            var total = try Ops.scalar(0, x.dtype)
            if l1 != 0 { total = try Ops.add(total, try Ops.multiply(try Ops.scalar(l1, x.dtype), try Ops.sum(try Ops.unary("abs", x)))) }
            if l2 != 0 { total = try Ops.add(total, try Ops.multiply(try Ops.scalar(l2, x.dtype), try Ops.sum(try Ops.square(x)))) }
            return total
        case let .orthogonal(factor, rows):
            guard x.rank == 2 else { throw EngineError.value("OrthogonalRegularizer needs a rank-2 weight, got shape \(x.shape)") }
            // Keras's normalize: x * min(rsqrt(sum x²), 1 / eps) along the axis.
            let axis = rows ? 1 : 0
            let inv = try Ops.minimum(try Ops.unary("rsqrt", try Ops.sum(try Ops.square(x), axes: [axis], keepdims: true)),
                                      try Ops.scalar(1 / kerasEpsilon, x.dtype))
            let n = try Ops.multiply(x, inv)
            let t = try Ops.transpose(n)
            let product = rows ? try Ops.matmul(n, t, bias: nil, activation: .none) : try Ops.matmul(t, n, bias: nil, activation: .none)
            let size = Double(x.shape[rows ? 0 : 1])
            // The off-diagonal sum: every |entry| less the diagonal, whose entries are the
            // squared norms (non-negative), so sum(n²).
            let offDiagonal = try Ops.subtract(try Ops.sum(try Ops.unary("abs", product)), try Ops.sum(try Ops.square(n)))
            let pairs = size * (size - 1) / 2
            return try Ops.divide(try Ops.multiply(try Ops.scalar(factor * 0.5, x.dtype), offDiagonal), try Ops.scalar(pairs, x.dtype))
        }
    }
}

/// A projection Keras applies to a weight after each optimizer update.
public enum Constraint {
    /// Norms along `axes` clipped to at most maxValue.
    case maxNorm(maxValue: Double, axes: [Int])
    /// Norms moved `rate` of the way into [minValue, maxValue].
    case minMaxNorm(minValue: Double, maxValue: Double, rate: Double, axes: [Int])
    /// max(w, 0).
    case nonNeg
    /// Norms along `axes` set to 1.
    case unitNorm(axes: [Int])

    public init(keras v: Any, what: String) throws {
        let (name, c) = try classAndConfig(v, what, aliases: ["max_norm": "MaxNorm", "min_max_norm": "MinMaxNorm",
                                                               "non_neg": "NonNeg", "unit_norm": "UnitNorm"])
        switch name {
        case "MaxNorm": self = .maxNorm(maxValue: try number(c, "max_value", 2, what), axes: try axes(c, what))
        case "MinMaxNorm":
            self = .minMaxNorm(minValue: try number(c, "min_value", 0, what), maxValue: try number(c, "max_value", 1, what),
                               rate: try number(c, "rate", 1, what), axes: try axes(c, what))
        case "NonNeg": self = .nonNeg
        case "UnitNorm": self = .unitNorm(axes: try axes(c, what))
        default: throw EngineError.notImplemented("\(what): the constraint \(name) is not in SwiftKeras yet")
        }
    }

    /// The projected weight.
    public func callAsFunction(_ w: Tensor) throws -> Tensor {
        func norms(_ axes: [Int]) throws -> Tensor {
            for a in axes where a >= w.rank || a < -w.rank {
                throw EngineError.value("constraint axis \(a) is out of range for a weight of shape \(w.shape)")
            }
            return try Ops.sqrt(try Ops.sum(try Ops.square(w), axes: axes, keepdims: true))
        }
        func eps() throws -> Tensor { try Ops.scalar(kerasEpsilon, w.dtype) }
        switch self {
        case let .maxNorm(maxValue, axes):
            let n = try norms(axes)
            let desired = try Ops.clip(n, min: 0, max: maxValue)
            return try Ops.multiply(w, try Ops.divide(desired, try Ops.add(try eps(), n)))
        case let .minMaxNorm(minValue, maxValue, rate, axes):
            let n = try norms(axes)
            let desired = try Ops.add(try Ops.multiply(try Ops.scalar(rate, w.dtype), try Ops.clip(n, min: minValue, max: maxValue)),
                                      try Ops.multiply(try Ops.scalar(1 - rate, w.dtype), n))
            return try Ops.multiply(w, try Ops.divide(desired, try Ops.add(try eps(), n)))
        case .nonNeg:
            return try Ops.maximum(w, try Ops.scalar(0, w.dtype))
        case let .unitNorm(axes):
            return try Ops.divide(w, try Ops.add(try eps(), try norms(axes)))
        }
    }
}

/// A model's regularizers and constraints, gathered by `compile` from its layers' configs.
struct Regularization {
    /// Trainable weights with a penalty, in the model's weight order.
    var weightPenalties: [(Parameter, Regularizer)] = []
    /// Layers whose outputs are penalised: activity_regularizer, or the ActivityRegularization layer.
    var activity: [ObjectIdentifier: Regularizer] = [:]
    var constraints: [ObjectIdentifier: Constraint] = [:]

    var isEmpty: Bool { weightPenalties.isEmpty && activity.isEmpty && constraints.isEmpty }

    /// The weights each `<prefix>_regularizer` / `<prefix>_constraint` entry names, by
    /// Keras's weight names (DepthwiseConv's "depthwise" kernel is its "kernel").
    private static func weightNames(_ prefix: String) -> [String]? {
        switch prefix {
        case "kernel", "bias", "beta", "gamma", "embeddings", "alpha": return [prefix]
        case "pointwise": return ["pointwise_kernel"]
        case "recurrent": return ["recurrent_kernel"]
        case "depthwise": return ["depthwise_kernel", "kernel"]
        default: return nil
        }
    }

    init() {}

    /// Reads every layer of `model` (nested models' too). `trainable` says whether a layer's
    /// weights train (Keras counts the penalties of trainable weights only).
    init(_ model: Model) throws {
        try add(model, trainable: true)
    }

    private mutating func add(_ model: Model, trainable outer: Bool) throws {
        for layer in model.layers {
            let trainable = outer && ((layer.config["trainable"] as? Bool) ?? true)
            if let nested = layer as? ModelLayer {
                try add(nested.model, trainable: trainable)
                continue
            }
            let what = "layer '\(layer.name)'"
            if layer.className == "ActivityRegularization" {
                let c = LayerConfig(className: layer.className, raw: layer.config)
                activity[ObjectIdentifier(layer)] = .l1l2(l1: try c.double("l1", 0), l2: try c.double("l2", 0))
            }
            for (k, v) in layer.config where !(v is NSNull) && (k == "layer" || k == "backward_layer") {
                if let inner = (v as? [String: Any])?["config"] as? [String: Any],
                   let key = inner.keys.sorted().first(where: { ($0.hasSuffix("_regularizer") || $0.hasSuffix("_constraint")) && !(inner[$0] is NSNull) }) {
                    throw EngineError.notImplemented("\(what): \(key) of its wrapped layer is not applied by SwiftKeras's fit yet")
                }
            }
            let params = layer.weightGroups.flatMap { $0.weights }
            for (k, v) in layer.config.sorted(by: { $0.key < $1.key }) where !(v is NSNull) {
                let isRegularizer = k.hasSuffix("_regularizer"), isConstraint = k.hasSuffix("_constraint")
                guard isRegularizer || isConstraint else { continue }
                let prefix = String(k.dropLast(isRegularizer ? "_regularizer".count : "_constraint".count))
                if isRegularizer && prefix == "activity" {
                    activity[ObjectIdentifier(layer)] = try Regularizer(keras: v, what: "\(what): \(k)")
                    continue
                }
                guard let names = Regularization.weightNames(prefix) else {
                    throw EngineError.notImplemented("\(what): \(k) names no weight SwiftKeras knows")
                }
                // A weight the layer does not have (bias with use_bias false) has no penalty, as in Keras.
                let targets = params.filter { names.contains($0.name) && $0.trainable }
                if isRegularizer {
                    let r = try Regularizer(keras: v, what: "\(what): \(k)")
                    if trainable { weightPenalties += targets.map { ($0, r) } }
                } else {
                    let c = try Constraint(keras: v, what: "\(what): \(k)")
                    for p in targets { constraints[ObjectIdentifier(p)] = c }
                }
            }
        }
    }

    /// The activity penalties of a forward pass plus the weight penalties, summed in Keras's
    /// order (the layers' own losses, then the weights'); nil when there are none.
    func penalty(_ activity: [Tensor]) throws -> Tensor? {
        var total: Tensor?
        for l in try activity + weightPenalties.map({ try $0.1($0.0.value) }) {
            total = try total.map { try Ops.add($0, try Ops.cast(l, to: $0.dtype)) } ?? l
        }
        return total
    }

    /// Each constrained weight among `parameters` projected (after the optimizer's update).
    func applyConstraints(_ parameters: [Parameter]) throws {
        guard !constraints.isEmpty else { return }
        try Tape.paused {
            for p in parameters { if let c = constraints[ObjectIdentifier(p)] { p.value = try c(p.value) } }
        }
    }
}

/// The activity penalties of one forward pass, collected as the model runs its layers
/// (nested models included: CallOptions carries it into them).
final class ActivityLosses {
    let regularizers: [ObjectIdentifier: Regularizer]
    private(set) var losses: [Tensor] = []

    init(_ regularizers: [ObjectIdentifier: Regularizer]) { self.regularizers = regularizers }

    /// The model's outputs and the penalties of the layers `regularizers` names.
    static func run(_ model: Model, _ xs: [Tensor], training: Bool,
                    _ regularizers: [ObjectIdentifier: Regularizer]) throws -> ([Tensor], [Tensor]) {
        guard !regularizers.isEmpty else { return (try model(xs, training: training), []) }
        let c = ActivityLosses(regularizers)
        return (try model(xs, training: training, activity: c), c.losses)
    }

    /// Keras's Layer.__call__: the layer's penalty on each output, divided by the batch size.
    func record(_ layer: KerasLayer, _ outputs: [Tensor]) throws {
        guard let r = regularizers[ObjectIdentifier(layer)] else { return }
        for out in outputs {
            var l = try r(out)
            if out.rank > 0, out.shape[0] > 0 { l = try Ops.divide(l, try Ops.scalar(Double(out.shape[0]), l.dtype)) }
            losses.append(l)
        }
    }
}
