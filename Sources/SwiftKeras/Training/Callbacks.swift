import Foundation
import TensorEngine
#if canImport(Glibc)
import Glibc
#endif

/// Metric values by name ("loss", "accuracy", "val_loss", ...), as Keras's `logs`.
public typealias Logs = [String: Double]

/// Hooks `fit` calls, as Keras's callbacks. Every method has an empty default.
public protocol Callback: AnyObject {
    func onTrainBegin(_ model: Model) throws
    func onEpochBegin(_ model: Model, epoch: Int) throws
    func onBatchEnd(_ model: Model, batch: Int, logs: Logs) throws
    func onEpochEnd(_ model: Model, epoch: Int, logs: Logs) throws
    func onTrainEnd(_ model: Model, logs: Logs) throws
}

extension Callback {
    public func onTrainBegin(_ model: Model) throws {}
    public func onEpochBegin(_ model: Model, epoch: Int) throws {}
    public func onBatchEnd(_ model: Model, batch: Int, logs: Logs) throws {}
    public func onEpochEnd(_ model: Model, epoch: Int, logs: Logs) throws {}
    public func onTrainEnd(_ model: Model, logs: Logs) throws {}
}

/// Every epoch's logs; `fit` returns one.
public final class History: Callback {
    public private(set) var epochs: [Int] = []
    public private(set) var history: [String: [Double]] = [:]

    public init() {}

    public func onEpochEnd(_ model: Model, epoch: Int, logs: Logs) throws {
        epochs.append(epoch)
        for (k, v) in logs { history[k, default: []].append(v) }
    }

    public subscript(_ key: String) -> [Double] { history[key] ?? [] }
}

/// A user's closures, Keras's LambdaCallback.
public final class LambdaCallback: Callback {
    let epochBegin: ((Model, Int) throws -> Void)?
    let epochEnd: ((Model, Int, Logs) throws -> Void)?
    let batchEnd: ((Model, Int, Logs) throws -> Void)?

    public init(onEpochBegin: ((Model, Int) throws -> Void)? = nil, onEpochEnd: ((Model, Int, Logs) throws -> Void)? = nil,
                onBatchEnd: ((Model, Int, Logs) throws -> Void)? = nil) {
        epochBegin = onEpochBegin
        epochEnd = onEpochEnd
        batchEnd = onBatchEnd
    }

    public func onEpochBegin(_ model: Model, epoch: Int) throws { try epochBegin?(model, epoch) }
    public func onEpochEnd(_ model: Model, epoch: Int, logs: Logs) throws { try epochEnd?(model, epoch, logs) }
    public func onBatchEnd(_ model: Model, batch: Int, logs: Logs) throws { try batchEnd?(model, batch, logs) }
}

/// Whether lower or higher values of a monitored quantity are better ("auto": higher for
/// accuracy-like names and AUC, lower otherwise, as Keras guesses).
public enum MonitorMode: String {
    case auto, min, max

    func improves(_ value: Double, over best: Double, minDelta: Double, monitor: String) -> Bool {
        if resolved(monitor) == .max { return value - minDelta > best }
        return value + minDelta < best
    }

    func resolved(_ monitor: String) -> MonitorMode {
        guard self == .auto else { return self }
        let higher = ["acc", "accuracy", "auc", "precision", "recall"].contains { monitor.hasSuffix($0) }
        return higher ? .max : .min
    }

    func worst(_ monitor: String) -> Double { resolved(monitor) == .max ? -Double.infinity : Double.infinity }
}

private func monitored(_ logs: Logs, _ key: String, _ who: String) -> Double? {
    if let v = logs[key] { return v }
    FileHandle.standardError.write("\(who): '\(key)' is not in the logs (\(logs.keys.sorted().joined(separator: ", "))); skipping\n".data(using: .utf8)!)
    return nil
}

/// Stops training when the monitored value has not improved for `patience` epochs,
/// optionally restoring the best epoch's weights.
public final class EarlyStopping: Callback {
    public let monitor: String, minDelta: Double, patience: Int, mode: MonitorMode, restoreBestWeights: Bool
    public let baseline: Double?, startFromEpoch: Int
    public private(set) var stoppedEpoch: Int?
    public private(set) var bestEpoch = 0
    private var best = 0.0, wait = 0
    private var bestWeights: [Tensor]?

    public init(monitor: String = "val_loss", minDelta: Double = 0, patience: Int = 0, mode: MonitorMode = .auto,
                baseline: Double? = nil, restoreBestWeights: Bool = false, startFromEpoch: Int = 0) {
        self.monitor = monitor
        self.minDelta = abs(minDelta)
        self.patience = patience
        self.mode = mode
        self.baseline = baseline
        self.restoreBestWeights = restoreBestWeights
        self.startFromEpoch = startFromEpoch
    }

    public func onTrainBegin(_ model: Model) throws {
        wait = 0
        stoppedEpoch = nil
        best = mode.worst(monitor)
        bestWeights = nil
        bestEpoch = 0
    }

    public func onEpochEnd(_ model: Model, epoch: Int, logs: Logs) throws {
        guard epoch >= startFromEpoch, let value = monitored(logs, monitor, "EarlyStopping") else { return }
        if restoreBestWeights && bestWeights == nil { bestWeights = model.weights.map { $0.value } }
        wait += 1
        if mode.improves(value, over: best, minDelta: minDelta, monitor: monitor) {
            best = value
            bestEpoch = epoch
            if restoreBestWeights { bestWeights = model.weights.map { $0.value } }
            // Keras only resets the wait once the baseline is beaten.
            if let b = baseline, !mode.improves(value, over: b, minDelta: 0, monitor: monitor) { return }
            wait = 0
            return
        }
        if wait >= patience && epoch > 0 {
            stoppedEpoch = epoch
            model.stopTraining = true
            if restoreBestWeights, let w = bestWeights {
                for (p, v) in zip(model.weights, w) { p.value = v }
            }
        }
    }
}

/// Saves the model (a `.keras` file, or weights only as `.weights.h5`) after each epoch, or
/// only when the monitored value improves. "{epoch}" in the path is the 1-based epoch.
public final class ModelCheckpoint: Callback {
    public let path: String, monitor: String, saveBestOnly: Bool, saveWeightsOnly: Bool, mode: MonitorMode
    private var best = 0.0

    public init(path: String, monitor: String = "val_loss", saveBestOnly: Bool = false, saveWeightsOnly: Bool = false,
                mode: MonitorMode = .auto) throws {
        guard saveWeightsOnly ? path.hasSuffix(".weights.h5") : path.hasSuffix(".keras") else {
            throw EngineError.value("ModelCheckpoint: the path must end in \(saveWeightsOnly ? ".weights.h5" : ".keras"), got '\(path)'")
        }
        self.path = path
        self.monitor = monitor
        self.saveBestOnly = saveBestOnly
        self.saveWeightsOnly = saveWeightsOnly
        self.mode = mode
    }

    public func onTrainBegin(_ model: Model) throws { best = mode.worst(monitor) }

    public func onEpochEnd(_ model: Model, epoch: Int, logs: Logs) throws {
        if saveBestOnly {
            guard let value = monitored(logs, monitor, "ModelCheckpoint"),
                  mode.improves(value, over: best, minDelta: 0, monitor: monitor) else { return }
            best = value
        }
        let file = path.replacingOccurrences(of: "{epoch}", with: String(epoch + 1))
        if saveWeightsOnly { try model.saveWeights(file) } else { try model.save(file) }
    }
}

/// Multiplies the learning rate by `factor` when the monitored value has not improved for
/// `patience` epochs, then waits `cooldown` epochs; never below `minLR`.
public final class ReduceLROnPlateau: Callback {
    public let monitor: String, factor: Double, patience: Int, mode: MonitorMode, minDelta: Double, cooldown: Int, minLR: Double
    private var best = 0.0, wait = 0, cooldownLeft = 0

    public init(monitor: String = "val_loss", factor: Double = 0.1, patience: Int = 10, mode: MonitorMode = .auto,
                minDelta: Double = 1e-4, cooldown: Int = 0, minLR: Double = 0) throws {
        guard factor < 1 else { throw EngineError.value("ReduceLROnPlateau: factor must be below 1, got \(factor)") }
        self.monitor = monitor
        self.factor = factor
        self.patience = patience
        self.mode = mode
        self.minDelta = minDelta
        self.cooldown = cooldown
        self.minLR = minLR
    }

    public func onTrainBegin(_ model: Model) throws {
        best = mode.worst(monitor)
        wait = 0
        cooldownLeft = 0
    }

    public func onEpochEnd(_ model: Model, epoch: Int, logs: Logs) throws {
        guard let value = monitored(logs, monitor, "ReduceLROnPlateau"), let optimizer = model.optimizer else { return }
        if cooldownLeft > 0 {
            cooldownLeft -= 1
            wait = 0
        }
        if mode.improves(value, over: best, minDelta: minDelta, monitor: monitor) {
            best = value
            wait = 0
        } else if cooldownLeft == 0 {
            wait += 1
            if wait >= patience {
                let old = optimizer.learningRate
                if old > minLR {
                    optimizer.learningRate = max(old * factor, minLR)
                    cooldownLeft = cooldown
                    wait = 0
                }
            }
        }
    }
}

/// Keras's progress output: on a terminal, a bar redrawn after each batch
/// ("12/47 ━━━━━━━━━━━━━━━━━━━━ 1s 25ms/step - accuracy: 0.91 - loss: 0.29"); otherwise one
/// line per epoch.
final class ProgressBar: Callback {
    private let steps: Int, epochs: Int, interactive: Bool
    private var start = Date(), lastDraw = Date.distantPast

    init(steps: Int, epochs: Int, interactive: Bool) {
        self.steps = steps
        self.epochs = epochs
        self.interactive = interactive
    }

    static var stdoutIsTerminal: Bool { isatty(STDOUT_FILENO) != 0 }

    private func format(_ logs: Logs) -> String {
        // Keras lists the metrics alphabetically, the validation ones last.
        let keys = logs.keys.sorted { ($0.hasPrefix("val_") ? 1 : 0, $0) < ($1.hasPrefix("val_") ? 1 : 0, $1) }
        return keys.map { String(format: "%@: %.4f", $0, logs[$0]!) }.joined(separator: " - ")
    }

    private func bar(_ done: Int) -> String {
        let width = 20, filled = steps > 0 ? width * done / steps : width
        return String(repeating: "━", count: filled) + String(repeating: "─", count: width - filled)
    }

    private func timing(_ done: Int) -> String {
        let elapsed = Date().timeIntervalSince(start)
        let perStep = elapsed / Double(max(done, 1))
        let shown = done < steps ? perStep * Double(steps - done) : elapsed
        let step = perStep >= 1 ? String(format: "%.0fs/step", perStep) : String(format: "%.0fms/step", perStep * 1000)
        return String(format: "%.0fs", shown) + " " + step
    }

    /// Through print's buffer (flushed), so the lines interleave with the program's own prints.
    private func write(_ s: String) {
        print(s, terminator: "")
        fflush(stdout)
    }

    func onEpochBegin(_ model: Model, epoch: Int) throws {
        start = Date()
        lastDraw = .distantPast
        if interactive { write("Epoch \(epoch + 1)/\(epochs)\n") }
    }

    func onBatchEnd(_ model: Model, batch: Int, logs: Logs) throws {
        guard interactive, batch + 1 < steps, Date().timeIntervalSince(lastDraw) > 0.05 else { return }
        lastDraw = Date()
        let done = String(batch + 1), count = String(repeating: " ", count: String(steps).count - done.count) + done
        write("\r\(count)/\(steps) \(bar(batch + 1)) \(timing(batch + 1)) - \(format(logs))\u{1B}[K")
    }

    func onEpochEnd(_ model: Model, epoch: Int, logs: Logs) throws {
        if interactive {
            write("\r\(steps)/\(steps) \(bar(steps)) \(timing(steps)) - \(format(logs))\u{1B}[K\n")
        } else {
            write("Epoch \(epoch + 1)/\(epochs) - \(steps) steps - \(timing(steps)) - \(format(logs))\n")
        }
    }
}
