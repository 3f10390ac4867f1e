import Foundation
import TensorEngine

/// A streaming metric, as Keras's: `update` with each batch (and optional per-sample weights),
/// `result` over everything since `reset`. Values are accumulated on the host in float64.
public protocol Metric: AnyObject {
    var name: String { get }
    func update(_ yTrue: Tensor, _ yPred: Tensor, sampleWeight: Tensor?) throws
    func result() -> Double
    func reset()
}

/// Per-sample values (one per row of the batch), then their weighted mean over all batches.
public class MeanMetric: Metric {
    public let name: String
    private var total = 0.0, weight = 0.0
    private let values: (Tensor, Tensor) throws -> [Double]

    /// `values(yTrue, yPred)` returns one value per sample.
    public init(name: String, values: @escaping (Tensor, Tensor) throws -> [Double]) {
        self.name = name
        self.values = values
    }

    public func update(_ yTrue: Tensor, _ yPred: Tensor, sampleWeight: Tensor?) throws {
        let v = try Tape.paused { try values(yTrue, yPred) }
        let w = sampleWeight.map { $0.doubles() } ?? Array(repeating: 1, count: v.count)
        guard w.count == v.count else {
            throw EngineError.value("metric \(name): \(w.count) sample weights for \(v.count) samples")
        }
        for (x, wi) in zip(v, w) {
            total += x * wi
            weight += wi
        }
    }

    /// Adds one already-reduced value with a weight (the loss tracker's batch means).
    func add(_ value: Double, weight w: Double) {
        total += value * w
        weight += w
    }

    public func result() -> Double { weight > 0 ? total / weight : 0 }

    public func reset() {
        total = 0
        weight = 0
    }
}

/// The mean of each sample's values (a sequence output's time steps count within their sample).
private func rowMeans(_ t: Tensor) throws -> [Double] {
    let x = t.rank >= 2 ? try reshape(t, [t.shape[0], -1]) : try reshape(t, [-1, 1])
    return try mean(try cast(x, to: .float64), axes: [1]).doubles()
}

public enum Metrics {
    /// Integer labels against class scores.
    public static func sparseCategoricalAccuracy(name: String = "sparse_categorical_accuracy") -> MeanMetric {
        MeanMetric(name: name) { yTrue, yPred in
            var labels = yTrue
            if labels.rank == yPred.rank, labels.shape.last == 1 { labels = try squeeze(labels, axes: [-1]) }
            let hits = try binary(.equal, try argReduce(.argmax, yPred, axis: -1), try cast(labels, to: .int32))
            return try rowMeans(hits)
        }
    }

    /// One-hot labels against class scores.
    public static func categoricalAccuracy(name: String = "categorical_accuracy") -> MeanMetric {
        MeanMetric(name: name) { yTrue, yPred in
            try rowMeans(try binary(.equal, try argReduce(.argmax, yPred, axis: -1), try argReduce(.argmax, yTrue, axis: -1)))
        }
    }

    /// 0/1 labels against probabilities above `threshold`.
    public static func binaryAccuracy(threshold: Double = 0.5, name: String = "binary_accuracy") -> MeanMetric {
        MeanMetric(name: name) { yTrue, yPred in
            let predicted = try cast(try binary(.greater, yPred, try scalar(threshold, yPred.dtype)), to: .float32)
            return try rowMeans(try binary(.equal, predicted, try cast(yTrue, to: .float32)))
        }
    }

    /// Whether the label is among the k highest scores (one-hot labels, or integer with `sparse`).
    public static func topKAccuracy(k: Int = 5, sparse: Bool, name: String? = nil) -> MeanMetric {
        MeanMetric(name: name ?? (sparse ? "sparse_top_k_categorical_accuracy" : "top_k_categorical_accuracy")) { yTrue, yPred in
            var labels = sparse ? yTrue : try argReduce(.argmax, yTrue, axis: -1)
            if labels.rank == yPred.rank, labels.shape.last == 1 { labels = try squeeze(labels, axes: [-1]) }
            let top = try topK(yPred, k: Swift.min(k, yPred.shape.last ?? 1)).indices
            let hit = try binary(.equal, try cast(top, to: .int64), try expandDims(try cast(labels, to: .int64), axis: -1))
            return try rowMeans(try reduce(.max, try cast(hit, to: .float32), axes: [-1]))
        }
    }

    public static func meanAbsoluteError(name: String = "mean_absolute_error") -> MeanMetric {
        MeanMetric(name: name) { yTrue, yPred in
            try rowMeans(try unary(.abs, try subtract(yPred, try cast(yTrue, to: yPred.dtype))))
        }
    }

    public static func meanSquaredError(name: String = "mean_squared_error") -> MeanMetric {
        MeanMetric(name: name) { yTrue, yPred in
            try rowMeans(try square(try subtract(yPred, try cast(yTrue, to: yPred.dtype))))
        }
    }

    /// The metric Keras names `name`; "accuracy"/"acc" resolves against the loss and output
    /// as Keras does (sparse labels, a single sigmoid unit, or one-hot labels).
    public static func named(_ name: String, loss: Loss?, outputUnits: Int?) throws -> Metric {
        switch name {
        case "accuracy", "acc":
            if loss?.isSparse == true { return sparseCategoricalAccuracy(name: "accuracy") }
            if loss?.isBinary == true || outputUnits == 1 { return binaryAccuracy(name: "accuracy") }
            return categoricalAccuracy(name: "accuracy")
        case "sparse_categorical_accuracy": return sparseCategoricalAccuracy()
        case "categorical_accuracy": return categoricalAccuracy()
        case "binary_accuracy": return binaryAccuracy()
        case "top_k_categorical_accuracy": return topKAccuracy(sparse: false)
        case "sparse_top_k_categorical_accuracy": return topKAccuracy(sparse: true)
        case "mae", "mean_absolute_error": return meanAbsoluteError(name: name)
        case "mse", "mean_squared_error": return meanSquaredError(name: name)
        case "auc": return AUC()
        case "precision": return Precision()
        case "recall": return Recall()
        default: throw EngineError.notImplemented("the metric '\(name)' is not in SwiftKeras yet")
        }
    }
}

/// True/false positives and negatives of binary predictions at each of a set of thresholds
/// (a prediction counts as positive when strictly above the threshold, as in Keras).
public class ConfusionMetric: Metric {
    public let name: String
    let thresholds: [Double]
    var tp: [Double], fp: [Double], tn: [Double], fn: [Double]

    init(name: String, thresholds: [Double]) {
        self.name = name
        self.thresholds = thresholds
        tp = Array(repeating: 0, count: thresholds.count)
        fp = tp
        tn = tp
        fn = tp
    }

    public func update(_ yTrue: Tensor, _ yPred: Tensor, sampleWeight: Tensor?) throws {
        guard yTrue.count == yPred.count else {
            throw EngineError.value("metric \(name): labels \(yTrue.shape) and predictions \(yPred.shape) differ in size")
        }
        let labels = yTrue.doubles(), scores = yPred.doubles()
        let perRow = scores.count / Swift.max(1, yPred.shape.first ?? 1)
        let w = sampleWeight?.doubles()
        for (i, (label, score)) in zip(labels, scores).enumerated() {
            let wi = w.map { $0[Swift.min($0.count - 1, i / Swift.max(perRow, 1))] } ?? 1
            let positive = label > 0.5
            for (j, t) in thresholds.enumerated() {
                switch (positive, score > t) {
                case (true, true): tp[j] += wi
                case (true, false): fn[j] += wi
                case (false, true): fp[j] += wi
                case (false, false): tn[j] += wi
                }
            }
        }
    }

    public func result() -> Double { 0 }

    public func reset() {
        for j in thresholds.indices {
            tp[j] = 0
            fp[j] = 0
            tn[j] = 0
            fn[j] = 0
        }
    }
}

private func ratio(_ a: Double, _ b: Double) -> Double { b == 0 ? 0 : a / b }

public final class Precision: ConfusionMetric {
    public init(threshold: Double = 0.5, name: String = "precision") { super.init(name: name, thresholds: [threshold]) }
    override public func result() -> Double { ratio(tp[0], tp[0] + fp[0]) }
}

public final class Recall: ConfusionMetric {
    public init(threshold: Double = 0.5, name: String = "recall") { super.init(name: name, thresholds: [threshold]) }
    override public func result() -> Double { ratio(tp[0], tp[0] + fn[0]) }
}

/// Keras's AUC (ROC curve, 200 thresholds, the trapezoidal "interpolation" sum): thresholds
/// -eps, 1/(n-1), ..., (n-2)/(n-1), 1 + eps.
public final class AUC: ConfusionMetric {
    public init(numThresholds: Int = 200, name: String = "auc") {
        precondition(numThresholds > 1, "AUC needs at least two thresholds")
        let eps = 1e-7
        let inner = (1..<(numThresholds - 1)).map { Double($0) / Double(numThresholds - 1) }
        super.init(name: name, thresholds: [-eps] + inner + [1 + eps])
    }

    override public func result() -> Double {
        let tpr = thresholds.indices.map { ratio(tp[$0], tp[$0] + fn[$0]) }
        let fpr = thresholds.indices.map { ratio(fp[$0], fp[$0] + tn[$0]) }
        var area = 0.0
        for j in 0..<(thresholds.count - 1) { area += (fpr[j] - fpr[j + 1]) * (tpr[j] + tpr[j + 1]) / 2 }
        return area
    }
}
