import Foundation
import XCTest
@testable import SwiftKeras
import TensorEngine

/// A layer defined outside SwiftKeras that reads a value on the host mid-step: a replay would
/// reuse the first batch's scale, so the step must not be compiled.
final class HostMeanScale: KerasLayer {
    override func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        let x = try one(inputs)
        let m = try mean(x).double(at: 0)
        return [try Ops.multiply(x, try Ops.scalar(1 / (1 + abs(m)), x.dtype))]
    }
}

/// `fit` with compiled steps (the default) against `fit` with `jitCompile: false`: the same
/// model, data and batches must give the same losses and weights (moving statistics and
/// optimizer state included), and the compiled run must have replayed its programs.
final class CompiledFitTests: XCTestCase {
    /// 50 rows of 8 features in 3 classes: batches of 8 leave a last batch of 2, a second signature.
    private func data(seed: Int) throws -> (Tensor, Tensor) {
        let n = 50
        let y = try Tensor((0..<n).map { Int32($0 % 3) })
        let centers = try random(.normal(0, 2), shape: [3, 8], seed: [seed, 1])
        return (try add(try take(centers, y, axis: 0), try random(.normal(0, 1), shape: [n, 8], seed: [seed, 2])), y)
    }

    private func largestDifference(_ a: Tensor, _ b: Tensor) -> Double {
        zip(a.doubles(), b.doubles()).map { abs($0 - $1) }.max() ?? .infinity
    }

    /// Trains two copies of one model, compiled and eager; returns the compiled model.
    @discardableResult
    private func compare(_ layers: [LayerSpec], optimizer: () -> Optimizer, loss: Loss = .sparseCategoricalCrossentropy(fromLogits: false),
                         epochs: Int = 3, expectCompiled: Bool = true, file: StaticString = #filePath, line: UInt = #line) throws -> Model {
        try compare({ try Model(inputShape: [8], layers: layers, seed: 9) }, optimizer: optimizer, loss: loss, epochs: epochs,
                    expectCompiled: expectCompiled, file: file, line: line)
    }

    /// The same for any model `build` makes (called twice); `ids` feeds it the features as
    /// token ids in 0..<10 instead of floats.
    @discardableResult
    private func compare(_ build: () throws -> Model, ids: Bool = false, optimizer: () -> Optimizer,
                         loss: Loss = .sparseCategoricalCrossentropy(fromLogits: false), epochs: Int = 3, expectCompiled: Bool = true,
                         file: StaticString = #filePath, line: UInt = #line) throws -> Model {
        let (features, y) = try data(seed: 4)
        let x = ids ? try cast(try TensorEngine.minimum(try multiply(features, features), try scalar(9, .float32)), to: .int32)
            : features
        let compiled = try build()
        let eager = try build()
        for (p, q) in zip(eager.weights, compiled.weights) { p.value = q.value }
        try compiled.compile(optimizer: optimizer(), loss: loss, metrics: ["accuracy"])
        try eager.compile(optimizer: optimizer(), loss: loss, metrics: ["accuracy"], jitCompile: false)
        XCTAssertNil(eager.compiledTrainStep, file: file, line: line)
        let h1 = try compiled.fit(x: x, y: y, batchSize: 8, epochs: epochs, verbose: .silent, seed: 3)
        let h2 = try eager.fit(x: x, y: y, batchSize: 8, epochs: epochs, verbose: .silent, seed: 3)
        for key in ["loss", "accuracy"] {
            XCTAssertEqual(h1[key].count, epochs, key, file: file, line: line)
            for (a, b) in zip(h1[key], h2[key]) { XCTAssertEqual(a, b, accuracy: 1e-6 * max(1, abs(b)), key, file: file, line: line) }
        }
        XCTAssertEqual(compiled.weights.count, eager.weights.count, file: file, line: line)
        for (p, q) in zip(compiled.weights, eager.weights) {
            XCTAssertLessThan(largestDifference(p.value, q.value), 1e-5, p.name, file: file, line: line)
        }
        // evaluate and predict (compiled batches of 8 and of 2) against the eager model's.
        let (e1, e2) = (try compiled.evaluate(x: x, y: y, batchSize: 8), try eager.evaluate(x: x, y: y, batchSize: 8))
        for (k, v) in e2 { XCTAssertEqual(e1[k] ?? .nan, v, accuracy: 1e-6 * max(1, abs(v)), k, file: file, line: line) }
        let (p1, p2) = (try compiled.predict([x], batchSize: 8)[0], try eager.predict([x], batchSize: 8)[0])
        XCTAssertEqual(p1.shape, [50, 3], file: file, line: line)
        XCTAssertLessThan(largestDifference(p1, p2), 1e-6, "predict", file: file, line: line)
        let step = try XCTUnwrap(compiled.compiledTrainStep, file: file, line: line)
        let steps = epochs * 7
        if expectCompiled {
            XCTAssertNil(compiled.jitFallbackReason, file: file, line: line)
            // One trace for the batches of 8 and one for the last batch of 2; every other step replays.
            XCTAssertEqual(step.traces, 2, file: file, line: line)
            XCTAssertEqual(step.replays, steps - 2, file: file, line: line)
            let inference = try XCTUnwrap(compiled.compiledInference, file: file, line: line)
            XCTAssertEqual(inference.traces, 4, file: file, line: line)
            XCTAssertEqual(inference.replays, 2 * 7 - 4, file: file, line: line)
        } else {
            XCTAssertNotNil(compiled.jitFallbackReason, file: file, line: line)
            XCTAssertEqual(step.replays, 0, file: file, line: line)
        }
        let (o1, o2) = (compiled.optimizer as? KerasOptimizer, eager.optimizer as? KerasOptimizer)
        XCTAssertEqual(o1?.iterations, steps, file: file, line: line)
        XCTAssertEqual(o2?.iterations, steps, file: file, line: line)
        // The optimizer's slots too: a replay that lost them would drift from here on.
        for (p, q) in zip(compiled.trainableWeights, eager.trainableWeights) {
            let (a, b) = (o1?.slots[ObjectIdentifier(p)] ?? [], o2?.slots[ObjectIdentifier(q)] ?? [])
            XCTAssertEqual(a.count, b.count, file: file, line: line)
            for (s, t) in zip(a, b) { XCTAssertLessThan(largestDifference(s, t), 1e-5, "slot of \(p.name)", file: file, line: line) }
        }
        return compiled
    }

    func testMLPWithAdam() throws {
        try compare([.dense(16, activation: "relu"), .layerNormalization(), .dense(16, activation: "tanh"),
                     .dense(3, activation: "softmax")], optimizer: { Adam(learningRate: 0.01) })
    }

    /// Dropout's draws (a new seed each call: a step input) and BatchNormalization's moving statistics.
    func testDropoutAndBatchNormalization() throws {
        let model = try compare([.dense(16, activation: "relu"), .batchNormalization(momentum: 0.9), .dropout(0.3, seed: 7),
                                 .dense(3, activation: "softmax")], optimizer: { Adam(learningRate: 0.01) })
        let bn = try XCTUnwrap(model.layers[1] as? BatchNormalization)
        XCTAssertGreaterThan(bn.movingMean.value.doubles().map(abs).max()!, 0.01, "moving mean never moved")
    }

    /// The learning rate of a schedule (and AdamW's decay, lr-dependent) read anew each step.
    func testLearningRateSchedules() throws {
        let layers: [LayerSpec] = [.dense(16, activation: "relu"), .dense(3)]
        try compare(layers, optimizer: {
            SGD(momentum: 0.9, schedule: ExponentialDecay(initialLearningRate: 0.1, decaySteps: 3, decayRate: 0.5))
        }, loss: .sparseCategoricalCrossentropy(fromLogits: true))
        try compare(layers, optimizer: {
            AdamW(learningRate: 0.01, weightDecay: 0.05,
                  schedule: PiecewiseConstantDecay(boundaries: [4, 10], values: [0.02, 0.01, 0.001]))
        }, loss: .sparseCategoricalCrossentropy(fromLogits: true))
    }

    /// A functional model through the merge layers and Concatenate.
    func testMergeLayersAndConcatenate() throws {
        try compare({
            let x = try Input(shape: [8], name: "x")
            let h = try LayerSpec.dense(6, activation: "relu")(x)
            let (a, b) = (try LayerSpec.dense(6, activation: "tanh")(h), try LayerSpec.dense(6)(h))
            let merged = try [LayerSpec("Add"), LayerSpec("Subtract"), LayerSpec("Multiply"), LayerSpec("Average"),
                              LayerSpec("Maximum"), LayerSpec("Minimum")].map { try $0(a, b) }
            let joined = try LayerSpec("Concatenate", ["axis": -1])(merged[0], merged[1], merged[2], merged[3], merged[4], merged[5])
            return try Model(inputs: [x], outputs: [try LayerSpec.dense(3, activation: "softmax")(joined)], name: "merges", seed: 9)
        }, optimizer: { Adam(learningRate: 0.01) })
    }

    /// Embedding's gather, and its gradient (a scatter-add into the table).
    func testEmbedding() throws {
        try compare({
            try Model(inputShape: [8], inputDType: .int32, layers: [LayerSpec("Embedding", ["input_dim": 10, "output_dim": 4]),
                                                                    LayerSpec("Flatten"), .dense(3, activation: "softmax")], seed: 9)
        }, ids: true, optimizer: { Adam(learningRate: 0.01) })
    }

    /// Weight and activity penalties in the loss, constraints projecting after each update:
    /// all recorded by the trace (their ops go through the registry).
    func testRegularizersAndConstraints() throws {
        func k(_ c: String, _ config: [String: Any]) -> [String: Any] { ["class_name": c, "config": config] }
        try compare([
            LayerSpec("Dense", ["units": 16, "activation": "relu", "kernel_regularizer": k("L1L2", ["l1": 0.001, "l2": 0.01]),
                                "bias_regularizer": k("L2", ["l2": 0.01]), "activity_regularizer": k("L1", ["l1": 0.001]),
                                "kernel_constraint": k("MaxNorm", ["max_value": 0.5, "axis": 0])]),
            LayerSpec("ActivityRegularization", ["l1": 0.01, "l2": 0.001]),
            LayerSpec("Dense", ["units": 8, "activation": "tanh", "kernel_regularizer": k("OrthogonalRegularizer", ["factor": 0.1]),
                                "kernel_constraint": k("MinMaxNorm", ["min_value": 0.2, "max_value": 0.6, "rate": 0.5])]),
            LayerSpec("Dense", ["units": 3, "activation": "softmax",
                                "kernel_regularizer": k("OrthogonalRegularizer", ["factor": 0.1, "mode": "columns"]),
                                "kernel_constraint": k("UnitNorm", ["axis": 0]), "bias_constraint": k("NonNeg", [:])]),
        ], optimizer: { Adam(learningRate: 0.01) })
    }

    /// What cannot be compiled runs eagerly (the same results), saying why.
    func testFallsBackToEagerNamingTheCause() throws {
        // clipnorm compares a norm on the host.
        let m1 = try compare([.dense(8, activation: "relu"), .dense(3, activation: "softmax")],
                             optimizer: { Adam(learningRate: 0.01, clipnorm: 0.5) }, expectCompiled: false)
        XCTAssertTrue(m1.jitFallbackReason?.contains("clipnorm") ?? false, m1.jitFallbackReason ?? "")
        // GaussianNoise draws with the engine's typed functions, unrecorded.
        let m2 = try compare([.dense(8, activation: "relu"), LayerSpec("GaussianNoise", ["stddev": 0.1, "seed": 1]),
                              .dense(3, activation: "softmax")], optimizer: { Adam(learningRate: 0.01) }, expectCompiled: false)
        XCTAssertTrue(m2.jitFallbackReason?.contains("outside the engine's op registry") ?? false, m2.jitFallbackReason ?? "")
        XCTAssertEqual(m2.compiledTrainStep?.traces, 1)
        // At inference GaussianNoise passes its input through: evaluate and predict compile.
        XCTAssertNil(m2.compiledInference?.eagerReason)
        XCTAssertGreaterThan(m2.compiledInference?.replays ?? 0, 0)
        // A layer of another module is not traced at all.
        LayerRegistry.register("HostMeanScale", HostMeanScale.self)
        let m3 = try compare([.dense(8, activation: "relu"), LayerSpec("HostMeanScale"), .dense(3, activation: "softmax")],
                             optimizer: { Adam(learningRate: 0.01) }, expectCompiled: false)
        XCTAssertTrue(m3.jitFallbackReason?.contains("defined outside SwiftKeras") ?? false, m3.jitFallbackReason ?? "")
        XCTAssertEqual(m3.compiledTrainStep?.traces, 0)
    }
}
