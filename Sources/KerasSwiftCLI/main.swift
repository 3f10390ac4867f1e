import ArgumentParser
import Foundation
import SwiftKeras
import TensorEngine

/// keras-swift: Keras models on the command line, with no Python.
struct KerasSwift: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keras-swift",
        abstract: "Run and train Keras 3 .keras models with the keras-swift engine (no Python).",
        subcommands: [Predict.self, Fit.self, Summary.self]
    )
}

/// An error printed as "Error: message" with exit status 1 (a ValidationError would add the usage text).
struct Failure: Error, CustomStringConvertible {
    let description: String
}

struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Predict: one .npy per model input, in order; one output → .npy, several → .npz.")

    @Argument(help: "The .keras model file.") var model: String
    @Argument(help: "One .npy file per model input, in order.") var inputs: [String]
    @Option(name: .shortAndLong, help: "Where to write the prediction (.npy, or .npz for several outputs).")
    var output: String
    @Option(name: .customLong("time"), help: ArgumentHelp(
        "Also run the prediction N more times and print the wall time per call (median, 10th and 90th percentile) to stderr.",
        valueName: "N"))
    var timedCalls = 0

    func run() throws {
        do {
            let m = try Model.load(model)
            let xs = try inputs.map { try NumPy.load($0) }
            let ys = try m.predict(xs)
            if timedCalls > 0 {
                var seconds: [Double] = []
                for _ in 0..<timedCalls {
                    let start = DispatchTime.now().uptimeNanoseconds
                    _ = try m.predict(xs)
                    seconds.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
                }
                seconds.sort()
                let us = { (q: Double) in String(format: "%.1f", seconds[Int(q * Double(seconds.count - 1))] * 1e6) }
                FileHandle.standardError.write(Data(
                    "predict: \(timedCalls) calls, median \(us(0.5)) us, p10 \(us(0.1)) us, p90 \(us(0.9)) us\n".utf8))
            }
            if output.hasSuffix(".npz") {
                // Arrays are named after the output layers; a layer with several outputs numbers them.
                let names = m.outputNames
                try NumPy.saveArchive(output, ys.enumerated().map { i, y in
                    (names.filter { $0 == names[i] }.count > 1 ? "\(names[i])_\(i)" : names[i], y)
                })
            } else {
                guard ys.count == 1 else {
                    throw Failure(description: "the model has \(ys.count) outputs: write them to an .npz file")
                }
                try NumPy.save(output, ys[0])
            }
        } catch let e as EngineError {
            throw Failure(description: e.message)
        }
    }
}

struct Summary: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the model's layers as Keras's model.summary() does.")

    @Argument(help: "The .keras model file.") var model: String

    func run() throws {
        do {
            print(try Model.load(model).summary(), terminator: "")
        } catch let e as EngineError {
            throw Failure(description: e.message)
        }
    }
}

struct Fit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a model (its weights as saved, or fresh with --init) on .npy data; save the result as .keras.")

    @Argument(help: "The .keras model file.") var model: String
    @Option(name: .customLong("x"), help: "One .npy per model input, in order (repeat the option).") var xs: [String]
    @Option(name: .customLong("y"), help: "One .npy per model output, in order (repeat the option).") var ys: [String]
    @Option(help: "A Keras loss name (sparse_categorical_crossentropy, mse, ...); without it, the model trains as saved compiled (its optimizer state included).")
    var loss: String?
    @Option(help: "sgd, adam, adamw, rmsprop, adagrad, nadam or lion (Keras's defaults; adam with --loss).") var optimizer: String?
    @Option(name: .customLong("lr"), help: "Learning rate (default: the optimizer's).") var learningRate: Double?
    @Option var epochs = 1
    @Option(name: .customLong("batch-size")) var batchSize = 32
    @Option(name: .customLong("validation-split")) var validationSplit = 0.0
    @Option(help: "Metric names, comma-separated.") var metrics = ""
    @Flag(name: .customLong("no-shuffle")) var noShuffle = false
    @Flag(name: .customLong("init"), help: "Start from fresh weights (Keras's initializers) instead of the saved ones.")
    var initialize = false
    @Option var seed = 0
    @Flag(name: .customLong("no-jit-compile"), help: "Run each train step eagerly instead of as a compiled program.")
    var noJitCompile = false
    @Option(name: .shortAndLong, help: "Where to write the trained .keras model.") var output: String
    @Option(name: .customLong("history"), help: "Write each epoch's logs and wall seconds (epoch_s) here as JSON.")
    var historyPath: String?

    func makeOptimizer() throws -> Optimizer {
        let o: KerasOptimizer
        switch (optimizer ?? "adam").lowercased() {
        case "sgd": o = SGD()
        case "adam": o = Adam()
        case "adamw": o = AdamW()
        case "rmsprop": o = RMSprop()
        case "adagrad": o = Adagrad()
        case "nadam": o = Nadam()
        case "lion": o = Lion()
        default: throw Failure(description: "unknown optimizer '\(optimizer ?? "")'")
        }
        if let lr = learningRate { o.learningRate = lr }
        return o
    }

    func run() throws {
        do {
            let m = try Model.load(model)
            if initialize { try m.initializeWeights(seed: seed) }
            if let loss = loss {
                try m.compile(optimizer: try makeOptimizer(), loss: try Loss(loss),
                              metrics: metrics.split(separator: ",").map { String($0) }, jitCompile: !noJitCompile)
            } else {
                guard let saved = m.optimizer else {
                    throw Failure(description: "'\(model)' was saved uncompiled (or with a compile SwiftKeras cannot restore): give --loss")
                }
                guard optimizer == nil, metrics.isEmpty, !noJitCompile else {
                    throw Failure(description: "--optimizer, --metrics and --no-jit-compile need --loss (they compile afresh)")
                }
                if let lr = learningRate { saved.learningRate = lr }
            }
            var started = Date(), seconds: [Double] = []
            let timer = LambdaCallback(onEpochBegin: { _, _ in started = Date() },
                                       onEpochEnd: { _, _, _ in seconds.append(Date().timeIntervalSince(started)) })
            let history = try m.fit(x: try xs.map { try NumPy.load($0) }, y: try ys.map { try NumPy.load($0) },
                                    batchSize: batchSize, epochs: epochs, callbacks: [timer], validationSplit: validationSplit,
                                    shuffle: !noShuffle, seed: UInt64(seed))
            try m.save(output)
            if let path = historyPath {
                var logs: [String: Any] = history.history
                logs["epoch_s"] = seconds
                try JSONSerialization.data(withJSONObject: logs).write(to: URL(fileURLWithPath: path))
            }
        } catch let e as EngineError {
            throw Failure(description: e.message)
        }
    }
}

KerasSwift.main()
