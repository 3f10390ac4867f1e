import Foundation
import XCTest
@testable import SwiftKeras
import TensorEngine

private let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
private func fixture(_ name: String) -> String { fixtures.appendingPathComponent(name).path }

private func largestDifference(_ a: Tensor, _ b: Tensor) -> Double {
    zip(a.doubles(), b.doubles()).map { abs($0 - $1) }.max() ?? 0
}

private func tempDir() throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sk-train-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
}

/// Optimizer steps against Keras's (scripts/gen_swiftkeras_fixtures.py writes optimizers.json:
/// five steps of each optimizer on two variables with fixed gradients, Keras 3 on JAX).
final class OptimizerTests: XCTestCase {
    let cases: [String: () -> Optimizer] = [
        "sgd": { SGD(learningRate: 0.1) },
        "sgd_momentum": { SGD(learningRate: 0.1, momentum: 0.9) },
        "sgd_nesterov": { SGD(learningRate: 0.1, momentum: 0.9, nesterov: true) },
        "adam": { Adam(learningRate: 0.01) },
        "adam_amsgrad": { Adam(learningRate: 0.01, amsgrad: true) },
        "adamw": { AdamW(learningRate: 0.01) },
        "rmsprop": { RMSprop(learningRate: 0.01) },
        "rmsprop_centered_momentum": { RMSprop(learningRate: 0.01, momentum: 0.5, centered: true) },
        "adagrad": { Adagrad(learningRate: 0.1) },
        "nadam": { Nadam(learningRate: 0.01) },
        "lion": { Lion(learningRate: 0.01) },
        "adam_clipnorm": { Adam(learningRate: 0.01, clipnorm: 0.5) },
        "sgd_clipvalue": { SGD(learningRate: 0.1, clipvalue: 0.3) },
        "sgd_global_clipnorm": { SGD(learningRate: 0.1, globalClipnorm: 0.5) },
        "adam_weight_decay": { Adam(learningRate: 0.01, weightDecay: 0.1) },
        "sgd_exponential_decay": { SGD(schedule: ExponentialDecay(initialLearningRate: 0.1, decaySteps: 2, decayRate: 0.5)) },
        "sgd_cosine_warmup": {
            SGD(schedule: CosineDecay(initialLearningRate: 0.01, decaySteps: 3, alpha: 0.1, warmupTarget: 0.1, warmupSteps: 2))
        },
        "sgd_piecewise": { SGD(schedule: PiecewiseConstantDecay(boundaries: [1, 2], values: [0.1, 0.05, 0.01])) },
    ]

    func testEveryOptimizerMatchesKerasStepByStep() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: fixture("optimizers.json")))
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        func tensor(_ v: Any, _ shape: [Int]) throws -> Tensor {
            let flat = (v as? [Any])?.flatMap { ($0 as? [NSNumber]) ?? [$0 as! NSNumber] } ?? []
            return try Tensor(flat.map { $0.floatValue }, shape: shape)
        }
        let shapes = [[2, 3], [3]]
        let start = try zip(json["start"] as! [Any], shapes).map { try tensor($0, $1) }
        let grads = try (json["grads"] as! [[Any]]).map { step in try zip(step, shapes).map { try tensor($0, $1) } }
        let expected = json["cases"] as! [String: [[Any]]]
        XCTAssertEqual(Set(expected.keys), Set(cases.keys))
        for (name, make) in cases {
            let optimizer = make()
            let params = zip(["a", "b"], start).map { Parameter($0, $1) }
            for (step, g) in grads.enumerated() {
                try optimizer.apply(g, to: params)
                for (i, p) in params.enumerated() {
                    let want = try tensor(expected[name]![step][i], shapes[i])
                    XCTAssertLessThan(largestDifference(p.value, want), 2e-6, "\(name) step \(step + 1) variable \(i)")
                }
            }
        }
    }

    func testSchedulesFollowKerasFormulas() {
        let e = ExponentialDecay(initialLearningRate: 1, decaySteps: 10, decayRate: 0.5, staircase: true)
        XCTAssertEqual(e(9), 1)
        XCTAssertEqual(e(10), 0.5)
        let c = CosineDecay(initialLearningRate: 1, decaySteps: 4)
        XCTAssertEqual(c(0), 1, accuracy: 1e-12)
        XCTAssertEqual(c(2), 0.5, accuracy: 1e-12)
        XCTAssertEqual(c(9), 0, accuracy: 1e-12)
        let p = PiecewiseConstantDecay(boundaries: [5], values: [1, 2])
        XCTAssertEqual([p(5), p(6)], [1, 2])
    }

    func testSettingTheRateReplacesTheSchedule() {
        let sgd = SGD(schedule: ExponentialDecay(initialLearningRate: 1, decaySteps: 1, decayRate: 0.5))
        XCTAssertEqual(sgd.learningRate, 1)
        sgd.learningRate = 0.25
        XCTAssertNil(sgd.schedule)
        XCTAssertEqual(sgd.learningRate, 0.25)
    }
}

/// `fit` against Keras's fit: the same untrained model, data and batches (no shuffling) must
/// end at the same weights (moving statistics included) and report the same epoch losses.
final class FitMatchesKerasTests: XCTestCase {
    func check(_ name: String, optimizer: Optimizer, loss: Loss, classWeight: [Int: Double]? = nil,
               file: StaticString = #filePath, line: UInt = #line) throws {
        let model = try Model.load(fixture("\(name).keras"))
        let x = try NumPy.load(fixture("\(name).x.npy")), y = try NumPy.load(fixture("\(name).y.npy"))
        let sw = FileManager.default.fileExists(atPath: fixture("\(name).sw.npy")) ? try NumPy.load(fixture("\(name).sw.npy")) : nil
        try model.compile(optimizer: optimizer, loss: loss)
        let history = try model.fit(x: x, y: y, batchSize: 4, epochs: 2, verbose: .silent, shuffle: false,
                                    classWeight: classWeight, sampleWeight: sw)
        let want = try Model.load(fixture("\(name).keras"))
        try want.loadWeights(fixture("\(name).after.weights.h5"))
        for (got, expected) in zip(model.weights, want.weights) {
            XCTAssertLessThan(largestDifference(got.value, expected.value), 1e-4, "\(name): \(got.name)", file: file, line: line)
        }
        let losses = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: fixture("\(name).losses.json")))) as! [Double]
        XCTAssertEqual(history["loss"].count, losses.count, file: file, line: line)
        // Float32 sums in another order than Keras's (a one-row product runs as GEMV) drift
        // ~1e-5 over two epochs; a wrong class weight moves the loss by ~6e-3.
        for (a, b) in zip(history["loss"], losses) { XCTAssertEqual(a, b, accuracy: 5e-5, file: file, line: line) }
    }

    /// Conv2D, BatchNormalization (batch statistics, moving averages), pooling; Adam; class weights.
    func testConvnetWithBatchNormAndClassWeights() throws {
        try check("fit_convnet", optimizer: Adam(learningRate: 0.01), loss: .sparseCategoricalCrossentropy(fromLogits: false),
                  classWeight: [0: 1, 1: 2, 2: 0.5])
    }

    /// LSTM then GRU (functional model); RMSprop with momentum; sample weights; MSE.
    func testRecurrentWithSampleWeights() throws {
        try check("fit_rnn", optimizer: RMSprop(learningRate: 0.01, momentum: 0.5), loss: .meanSquaredError)
    }
}

final class TrainingTests: XCTestCase {
    /// Three Gaussian blobs in 4-D.
    private func blobs(_ n: Int, seed: Int) throws -> (Tensor, Tensor) {
        let y = try Tensor((0..<n).map { Int32($0 % 3) })
        let centers = try Tensor([Float(2), 0, 0, -2, 0, 2, -2, 0, -2, -2, 2, 0], shape: [3, 4])
        return (try add(try take(centers, y, axis: 0), try random(.normal(0, 0.5), shape: [n, 4], seed: [seed, 0])), y)
    }

    func testBuiltConvnetTrainsSavesAndReloads() throws {
        // Class = which quadrant of a 6x6 image holds the bright patch.
        let n = 48
        var pixels = [Float](repeating: 0, count: n * 36), labels: [Int32] = []
        for i in 0..<n {
            let c = i % 3, (r0, c0) = [(0, 0), (0, 3), (3, 0)][c]
            for r in r0..<(r0 + 3) { for col in c0..<(c0 + 3) { pixels[i * 36 + r * 6 + col] = 1 } }
            labels.append(Int32(c))
        }
        let x = try add(try Tensor(pixels, shape: [n, 6, 6, 1]), try random(.normal(0, 0.1), shape: [n, 6, 6, 1], seed: [1, 0]))
        let y = try Tensor(labels)
        let model = try Model(inputShape: [6, 6, 1], layers: [
            .conv2D(4, kernelSize: [3, 3], padding: "same", activation: "relu"), .batchNormalization(),
            .maxPooling2D(), .flatten(), .dropout(0.1), .dense(3, activation: "softmax"),
        ], name: "quadrants", seed: 3)
        XCTAssertEqual(model.layers.map { $0.name }, ["conv2d", "batch_normalization", "max_pooling2d", "flatten", "dropout", "dense"])
        let bn = try XCTUnwrap(model.layers[1] as? BatchNormalization)
        try model.compile(optimizer: Adam(learningRate: 0.02), loss: .sparseCategoricalCrossentropy(fromLogits: false),
                          metrics: ["accuracy"])
        let history = try model.fit(x: x, y: y, batchSize: 8, epochs: 12, verbose: .silent, validationSplit: 0.25)
        XCTAssertLessThan(history["loss"].last!, history["loss"].first! * 0.7)
        XCTAssertEqual(history["val_loss"].count, 12)
        XCTAssertGreaterThan(history["accuracy"].last!, 0.8)
        XCTAssertGreaterThan(bn.movingMean.value.doubles().map(abs).max()!, 0.01, "moving mean never moved")
        let logs = try model.evaluate(x: x, y: y)
        XCTAssertGreaterThan(logs["accuracy"]!, 0.8)

        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("q.keras").path
        try model.save(path)
        let again = try Model.load(path)
        XCTAssertLessThan(largestDifference(try again.predict(x), try model.predict(x)), 1e-6)
        XCTAssertEqual(try model.predict([x], batchSize: 5)[0].shape, [n, 3])
    }

    func testFunctionalTwoInputsTwoOutputsSharedLayer() throws {
        let (x, y) = try blobs(90, seed: 4)
        let a = try Input(shape: [4], name: "a")
        let b = try Input(shape: [4], name: "b", graph: a)
        let shared = FunctionalLayer(.dense(8, activation: "relu", name: "shared"))
        let merged = try LayerSpec("Concatenate", ["axis": -1])(try shared(a), try shared(b))
        let classes = try LayerSpec.dense(3, activation: "softmax", name: "classes")(merged)
        let value = try LayerSpec.dense(1, name: "value")(merged)
        let model = try Model(inputs: [a, b], outputs: [classes, value], name: "two_heads", seed: 1)
        XCTAssertEqual(model.outputNames, ["classes", "value"])
        try model.compile(optimizer: Adam(learningRate: 0.02), losses: [.sparseCategoricalCrossentropy(fromLogits: false), .meanSquaredError],
                          lossWeights: [1, 0.5], metrics: ["accuracy"])
        let target = try reshape(try cast(y, to: .float32), [90, 1])
        let noisy = try add(x, try random(.normal(0, 0.1), shape: [90, 4], seed: [9, 0]))
        let history = try model.fit(x: [x, noisy], y: [y, target], batchSize: 16, epochs: 10, verbose: .silent)
        XCTAssertLessThan(history["loss"].last!, history["loss"].first!)
        XCTAssertNotNil(history.history["classes_accuracy"])
        XCTAssertNotNil(history.history["value_accuracy"])

        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("f.keras").path
        try model.save(path)
        let again = try Model.load(path)
        for (p, q) in zip(try again.predict([x, noisy]), try model.predict([x, noisy])) { XCTAssertLessThan(largestDifference(p, q), 1e-6) }
        XCTAssertThrowsError(try model.fit(x: [x], y: [y, target], verbose: .silent))
    }

    func testRecurrentBuiltModelTrains() throws {
        let x = try random(.normal(0, 1), shape: [32, 6, 2], seed: [2, 0])
        let y = try sum(x, axes: [1, 2])
        let model = try Model(inputShape: [6, 2], layers: [.bidirectional(.lstm(4, returnSequences: true)), .gru(4), .dense(1)], seed: 2)
        // Keras's unit_forget_bias and orthogonal recurrent kernels.
        let lstm = try XCTUnwrap((model.layers[0] as? Bidirectional)?.forward)
        XCTAssertEqual(Array(lstm.bias!.value.doubles()[4..<8]), [1, 1, 1, 1])
        let r = lstm.recurrentKernel.value
        let gram = try matmul(r, try transpose(r, [1, 0]))
        XCTAssertLessThan(largestDifference(gram, try eye(4, 4)), 1e-5)
        try model.compile(optimizer: Nadam(learningRate: 0.02), loss: .huber(delta: 1), metrics: ["mae"])
        let history = try model.fit(x: x, y: try reshape(y, [32, 1]), batchSize: 8, epochs: 8, verbose: .silent)
        XCTAssertLessThan(history["loss"].last!, history["loss"].first!)
        XCTAssertEqual(history["mae"].count, 8)
    }

    func testCallbacks() throws {
        let (x, y) = try blobs(60, seed: 5)
        let model = try Model(inputShape: [4], layers: [.dense(3, activation: "softmax")], seed: 5)
        let sgd = SGD(learningRate: 0.0)
        try model.compile(optimizer: sgd, loss: .sparseCategoricalCrossentropy(fromLogits: false))
        // A zero learning rate never improves val_loss: EarlyStopping stops after `patience`.
        let stop = EarlyStopping(monitor: "val_loss", patience: 2)
        var seen: [Int] = []
        let closure = LambdaCallback(onEpochEnd: { _, epoch, logs in
            seen.append(epoch)
            XCTAssertNotNil(logs["val_loss"])
        })
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let checkpoint = try ModelCheckpoint(path: dir.appendingPathComponent("e{epoch}.weights.h5").path, saveWeightsOnly: true)
        let history = try model.fit(x: x, y: y, epochs: 20, verbose: .silent, callbacks: [stop, closure, checkpoint], validationSplit: 0.2)
        XCTAssertEqual(seen, [0, 1, 2])
        XCTAssertEqual(history["loss"].count, 3)
        XCTAssertEqual(stop.stoppedEpoch, 2)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent("e3.weights.h5").path))

        sgd.learningRate = 0.5
        let plateau = try ReduceLROnPlateau(monitor: "loss", factor: 0.5, patience: 1, minDelta: 10)
        try model.fit(x: x, y: y, epochs: 3, verbose: .silent, callbacks: [plateau])
        XCTAssertEqual(sgd.learningRate, 0.5 / 4, accuracy: 1e-12)  // halved after epochs 2 and 3
        XCTAssertThrowsError(try ModelCheckpoint(path: "m.h5"))
    }

    func testEpochLinesAndBadArguments() throws {
        let (x, y) = try blobs(30, seed: 6)
        let model = try Model(inputShape: [4], layers: [.dense(3)], seed: 6)
        XCTAssertThrowsError(try model.fit(x: x, y: y, verbose: .silent), "fit before compile")
        try model.compile(optimizer: Adam(), loss: .sparseCategoricalCrossentropy(fromLogits: true), metrics: ["accuracy"])
        XCTAssertThrowsError(try model.compile(optimizer: Adam(), loss: .meanSquaredError, metrics: ["no_such_metric"]))
        XCTAssertThrowsError(try model.fit(x: x, y: try take(y, try arange(start: 0, stop: 10, dtype: .int64), axis: 0), verbose: .silent))
        XCTAssertThrowsError(try model.fit(x: x, y: y, batchSize: 0, verbose: .silent))
        XCTAssertThrowsError(try model.fit(x: x, y: y, verbose: .silent, validationSplit: 1.5))
        XCTAssertNoThrow(try model.fit(x: x, y: y, epochs: 1, verbose: .epochLines))
    }
}

final class MetricTests: XCTestCase {
    func testConfusionMetrics() throws {
        let yTrue = try Tensor([Float(0), 0, 1, 1, 1]), yPred = try Tensor([Float(0.1), 0.6, 0.7, 0.4, 0.9])
        let p = Precision(), r = Recall(), auc = AUC()
        for m in [p, r, auc] as [Metric] { try m.update(yTrue, yPred, sampleWeight: nil) }
        XCTAssertEqual(p.result(), 2.0 / 3, accuracy: 1e-12)
        XCTAssertEqual(r.result(), 2.0 / 3, accuracy: 1e-12)
        // Pairs (positive, negative) ranked right: 5 of 6, which the 200-threshold sum reproduces here.
        XCTAssertEqual(auc.result(), 5.0 / 6, accuracy: 1e-3)
        auc.reset()
        XCTAssertEqual(auc.result(), 0)
    }

    func testAccuracyFamilyAndWeights() throws {
        let scores = try Tensor([Float(0.1), 0.9, 0.8, 0.2, 0.3, 0.7], shape: [3, 2])
        let acc = Metrics.sparseCategoricalAccuracy()
        try acc.update(try Tensor([Int32(1), 1, 1]), scores, sampleWeight: try Tensor([Float(1), 1, 2]))
        XCTAssertEqual(acc.result(), 3.0 / 4, accuracy: 1e-12)
        let cat = try Metrics.named("accuracy", loss: .categoricalCrossentropy(fromLogits: false), outputUnits: 2)
        try cat.update(try Tensor([Float(0), 1, 1, 0, 1, 0], shape: [3, 2]), scores, sampleWeight: nil)
        XCTAssertEqual(cat.result(), 2.0 / 3, accuracy: 1e-12)
        let top = Metrics.topKAccuracy(k: 1, sparse: true)
        try top.update(try Tensor([Int32(1), 0, 0]), scores, sampleWeight: nil)
        XCTAssertEqual(top.result(), 2.0 / 3, accuracy: 1e-12)
        let mae = Metrics.meanAbsoluteError()
        try mae.update(try Tensor([Float(1), 2]), try Tensor([Float(2), 2]), sampleWeight: nil)
        XCTAssertEqual(mae.result(), 0.5, accuracy: 1e-12)
    }

    func testLossesWithSampleWeights() throws {
        let yTrue = try Tensor([Float(1), 0]), yPred = try Tensor([Float(0.8), 0.4])
        let bce = try Loss("binary_crossentropy")(try reshape(yTrue, [2, 1]), try reshape(yPred, [2, 1]),
                                                  sampleWeight: try Tensor([Float(2), 0]))
        XCTAssertEqual(try bce.double(at: 0), -2 * Foundation.log(0.8) / 2, accuracy: 1e-6)
        let huber = try Loss.huber(delta: 1)(try Tensor([Float(0), 0], shape: [1, 2]), try Tensor([Float(0.5), 3], shape: [1, 2]))
        XCTAssertEqual(try huber.double(at: 0), (0.125 + 2.5) / 2, accuracy: 1e-6)
        XCTAssertThrowsError(try Loss("no_such_loss"))
    }
}
