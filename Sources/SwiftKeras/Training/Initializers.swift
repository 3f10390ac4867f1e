import Foundation
import TensorEngine

/// Keras's weight initializers, read from a layer config's "*_initializer" entries (a name
/// such as "glorot_uniform" or {"class_name": "HeNormal", "config": {...}}), for models built
/// in Swift. Fans follow Keras's compute_fans: the last two axes, times the receptive field.
struct Initializer {
    let className: String
    let config: [String: Any]

    init(_ value: Any?, default fallback: String) throws {
        if let s = value as? String {
            className = s
            config = [:]
        } else if let d = value as? [String: Any], let name = d["class_name"] as? String {
            className = name
            config = d["config"] as? [String: Any] ?? [:]
        } else {
            className = fallback
            config = [:]
        }
    }

    private func number(_ key: String, _ fallback: Double) -> Double { (config[key] as? NSNumber)?.doubleValue ?? fallback }

    static func fans(_ shape: [Int]) -> (fanIn: Double, fanOut: Double) {
        switch shape.count {
        case 0: return (1, 1)
        case 1: return (Double(shape[0]), Double(shape[0]))
        default:
            let receptive = Double(shape.dropLast(2).reduce(1, *))
            return (Double(shape[shape.count - 2]) * receptive, Double(shape[shape.count - 1]) * receptive)
        }
    }

    func callAsFunction(_ shape: [Int], dtype: DType, seed: [Int]) throws -> Tensor {
        let key = className.replacingOccurrences(of: "_", with: "").lowercased()
        let (fanIn, fanOut) = Initializer.fans(shape)
        func scaled(_ scale: Double, _ mode: String, _ distribution: String) throws -> Tensor {
            let n = mode == "fan_in" ? fanIn : mode == "fan_out" ? fanOut : (fanIn + fanOut) / 2
            let variance = scale / max(1, n)
            switch distribution {
            case "uniform":
                let limit = (3 * variance).squareRoot()
                return try random(.uniform(-limit, limit), shape: shape, dtype: dtype, seed: seed)
            case "untruncated_normal":
                return try random(.normal(0, variance.squareRoot()), shape: shape, dtype: dtype, seed: seed)
            default:
                // 0.879... is the standard deviation of a unit normal truncated at two deviations.
                return try random(.truncatedNormal(0, variance.squareRoot() / 0.87962566103423978), shape: shape, dtype: dtype, seed: seed)
            }
        }
        switch key {
        case "zeros": return try zeros(shape, dtype: dtype)
        case "ones": return try ones(shape, dtype: dtype)
        case "constant": return try full(shape, value: number("value", 0), dtype: dtype)
        case "glorotuniform": return try scaled(1, "fan_avg", "uniform")
        case "glorotnormal": return try scaled(1, "fan_avg", "truncated_normal")
        case "heuniform": return try scaled(2, "fan_in", "uniform")
        case "henormal": return try scaled(2, "fan_in", "truncated_normal")
        case "lecununiform": return try scaled(1, "fan_in", "uniform")
        case "lecunnormal": return try scaled(1, "fan_in", "truncated_normal")
        case "variancescaling":
            return try scaled(number("scale", 1), config["mode"] as? String ?? "fan_in", config["distribution"] as? String ?? "truncated_normal")
        case "uniform", "randomuniform":
            return try random(.uniform(number("minval", -0.05), number("maxval", 0.05)), shape: shape, dtype: dtype, seed: seed)
        case "normal", "randomnormal":
            return try random(.normal(number("mean", 0), number("stddev", 0.05)), shape: shape, dtype: dtype, seed: seed)
        case "truncatednormal":
            return try random(.truncatedNormal(number("mean", 0), number("stddev", 0.05)), shape: shape, dtype: dtype, seed: seed)
        case "orthogonal":
            guard shape.count >= 2 else { throw EngineError.value("the orthogonal initializer needs a rank >= 2 shape, got \(shape)") }
            let rows = shape.dropLast().reduce(1, *), cols = shape[shape.count - 1]
            let flat = try random(.normal(0, 1), shape: [max(rows, cols), min(rows, cols)], dtype: .float64, seed: seed)
            let (q, r) = try qr(flat)
            // Signs of R's diagonal make the distribution uniform over orthogonal matrices.
            let k = r.shape[1]
            let d = try unary(.sign, try sum(try multiply(r, try eye(k, k, dtype: .float64)), axes: [0]))
            var m = try multiply(q, d)
            if rows < cols { m = try transpose(m, [1, 0]) }
            return try cast(try reshape(try multiply(m, try scalar(number("gain", 1), .float64)), shape), to: dtype)
        default:
            throw EngineError.notImplemented("the initializer '\(className)' is not in SwiftKeras yet")
        }
    }
}

/// Which config entry initializes a weight, and Keras's default for it.
private let initializerKeys: [String: (key: String, fallback: String)] = [
    "kernel": ("kernel_initializer", "glorot_uniform"), "bias": ("bias_initializer", "zeros"),
    "recurrent_kernel": ("recurrent_initializer", "orthogonal"), "embeddings": ("embeddings_initializer", "uniform"),
    "depthwise_kernel": ("depthwise_initializer", "glorot_uniform"),
    "pointwise_kernel": ("pointwise_initializer", "glorot_uniform"),
    "gamma": ("gamma_initializer", "ones"), "beta": ("beta_initializer", "zeros"),
    "moving_mean": ("moving_mean_initializer", "zeros"), "moving_variance": ("moving_variance_initializer", "ones"),
    "alpha": ("alpha_initializer", "zeros"),
]

extension KerasLayer {
    /// Fresh weights from the config's initializers (Keras's defaults where it names none),
    /// each a pure function of (seed, its position in the layer).
    func initializeWeights(seed: Int) throws {
        if let b = self as? Bidirectional {
            try b.forward.initializeWeights(seed: seed)
            try b.backward.initializeWeights(seed: seed &+ 7919)
            return
        }
        if let m = self as? ModelLayer {
            try m.model.initializeWeights(seed: seed)
            return
        }
        var index = 0
        for group in weightGroups {
            for p in group.weights {
                defer { index += 1 }
                guard let (key, fallback) = initializerKeys[p.name] else { continue }
                let shape = p.value.shape, dt = p.value.dtype
                if p.name == "bias", self is LSTM, (try? LayerConfig(className: className, raw: config).bool("unit_forget_bias", true)) ?? true,
                   config["bias_initializer"] == nil || Initializer.isZeros(config["bias_initializer"]) {
                    // Keras's unit_forget_bias: the forget gate's block (the second of four) starts at one.
                    let units = shape[0] / 4
                    p.value = try concatenate([try zeros([units], dtype: dt), try ones([units], dtype: dt),
                                               try zeros([2 * units], dtype: dt)], axis: 0)
                    continue
                }
                p.value = try Initializer(config[key], default: fallback)(shape, dtype: dt, seed: [seed, index])
            }
        }
    }
}

extension Initializer {
    static func isZeros(_ v: Any?) -> Bool {
        guard let i = try? Initializer(v, default: "zeros") else { return false }
        return i.className.lowercased() == "zeros"
    }
}

extension Model {
    /// Fresh weights for every layer (layer i seeded with (seed, i)), as Keras builds a new model.
    public func initializeWeights(seed: Int = 0) throws {
        for (i, layer) in layers.enumerated() { try layer.initializeWeights(seed: seed &* 1000 &+ i) }
    }
}
