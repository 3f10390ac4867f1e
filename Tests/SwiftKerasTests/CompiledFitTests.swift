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

    /// The 8 features as a sequence of 4 steps of 2.
    private func sequenceModel(_ layers: [LayerSpec]) -> () throws -> Model {
        { try Model(inputShape: [8], layers: [.reshape([4, 2])] + layers, seed: 9) }
    }

    private func rnn(_ cls: String, _ units: Int, _ extra: [String: Any] = [:]) -> LayerSpec {
        var c: [String: Any] = ["units": units]
        if cls == "GRU" { c["reset_after"] = true }
        for (k, v) in extra { c[k] = v }
        return LayerSpec(cls, c)
    }

    /// The fused LSTM op, its gate-by-gate cell (recurrent_dropout), and input dropout on both.
    func testLSTM() throws {
        try compare(sequenceModel([rnn("LSTM", 6, ["return_sequences": true, "dropout": 0.2]),
                                   rnn("LSTM", 5, ["recurrent_dropout": 0.3, "dropout": 0.1, "go_backwards": true]),
                                   .dense(3, activation: "softmax")]), optimizer: { Adam(learningRate: 0.01) })
    }

    func testGRUAndBidirectional() throws {
        try compare(sequenceModel([.bidirectional(rnn("GRU", 4, ["return_sequences": true, "dropout": 0.2, "recurrent_dropout": 0.2])),
                                   .bidirectional(rnn("GRU", 3, ["dropout": 0.1]), mergeMode: "sum"),
                                   .dense(3, activation: "softmax")]), optimizer: { Adam(learningRate: 0.01) })
    }

    func testSimpleRNN() throws {
        try compare(sequenceModel([rnn("SimpleRNN", 6, ["return_sequences": true]),
                                   rnn("SimpleRNN", 5, ["dropout": 0.2, "recurrent_dropout": 0.2]),
                                   .dense(3, activation: "softmax")]), optimizer: { Adam(learningRate: 0.01) })
    }

    /// Self-attention with dropout on the attention probabilities.
    func testMultiHeadAttention() throws {
        let model = try compare({
            let x = try Input(shape: [8], name: "x")
            let h = try LayerSpec.reshape([4, 2])(x)
            let a = try LayerSpec("MultiHeadAttention", ["num_heads": 2, "key_dim": 3, "dropout": 0.25])(h, h)
            let y = try LayerSpec.dense(3, activation: "softmax")(try LayerSpec.flatten()(a))
            return try Model(inputs: [x], outputs: [y], name: "attention", seed: 9)
        }, optimizer: { Adam(learningRate: 0.01) })
        // In training the dropout changes the outputs, anew each call; at inference it is off.
        let (x, _) = try data(seed: 5)
        let (t1, t2) = (try model([x], training: true)[0].doubles(), try model([x], training: true)[0].doubles())
        let (i1, i2) = (try model([x])[0].doubles(), try model([x])[0].doubles())
        XCTAssertNotEqual(t1, t2)
        XCTAssertNotEqual(t1, i1)
        XCTAssertEqual(i1, i2)
    }

    func testEinsumDense() throws {
        try compare(sequenceModel([LayerSpec("EinsumDense", ["equation": "abc,cd->abd", "output_shape": [4, 5], "bias_axes": "d",
                                                             "activation": "relu"]),
                                   LayerSpec("EinsumDense", ["equation": "...b,bc->...c", "output_shape": 3]),
                                   .flatten(), .dense(3, activation: "softmax")]), optimizer: { Adam(learningRate: 0.01) })
    }

    /// The noise layers draw from step-input seeds: each step's draws differ, eager and compiled alike.
    func testNoiseLayers() throws {
        try compare(sequenceModel([LayerSpec("GaussianNoise", ["stddev": 0.1, "seed": 1]), LayerSpec("SpatialDropout1D", ["rate": 0.25]),
                                   .flatten(), .dense(8, activation: "selu"), LayerSpec("GaussianDropout", ["rate": 0.2]),
                                   LayerSpec("AlphaDropout", ["rate": 0.2, "seed": 5]), .dense(3, activation: "softmax")]),
                    optimizer: { Adam(learningRate: 0.01) })
    }

    /// Gradient clipping on the engine's ops, and Nadam's schedule from step inputs.
    func testClippingAndNadam() throws {
        let layers: [LayerSpec] = [.dense(16, activation: "relu"), .dense(3, activation: "softmax")]
        try compare(layers, optimizer: { SGD(learningRate: 0.1, momentum: 0.5, clipnorm: 0.5) })
        try compare(layers, optimizer: { SGD(learningRate: 0.1, globalClipnorm: 0.3) })
        try compare(layers, optimizer: { Adam(learningRate: 0.01, clipnorm: 0.5) })
        try compare(layers, optimizer: { Nadam(learningRate: 0.01) })
        try compare(layers, optimizer: { Nadam(learningRate: 0.01, clipvalue: 0.05) })
    }

    /// A recurrent layer built alone for (batch, 3, 4) inputs.
    private func recurrentLayer(_ cls: String, _ config: [String: Any]) throws -> RecurrentLayer {
        var c = config
        c["name"] = "r"
        let entry: [String: Any] = ["class_name": cls, "config": c, "build_config": ["input_shape": [NSNull(), 3, 4]]]
        return try XCTUnwrap(try LayerRegistry.layer(from: entry) as? RecurrentLayer)
    }

    /// Keras's RNN dropout: one input mask and one state mask per sequence, reused at every
    /// step, zeros at the rate and 1 / (1 - rate) elsewhere (the mean kept); a new draw per call.
    func testRecurrentDropoutMasks() throws {
        // h_t = x_t m + h_{t-1} r with identity kernels, x all ones: h_1 = m, h_2 = m + m r,
        // h_3 = m + h_2 r (a new mask at step 3 would break the last).
        let layer = try recurrentLayer("SimpleRNN", ["units": 4, "activation": "linear", "return_sequences": true, "use_bias": false,
                                                     "dropout": 0.5, "recurrent_dropout": 0.25])
        layer.kernel.value = try eye(4, 4)
        layer.recurrentKernel.value = try eye(4, 4)
        let x = try ones([2000, 3, 4])
        var options = CallOptions(training: true)
        let y1 = try layer.call([x], options)[0]
        let h = (0..<3).map { t in try! reshape(try! stridedSlice(y1, begin: [0, t, 0], end: [2000, t + 1, 4], strides: [1, 1, 1]), [2000, 4]).doubles() }
        let m = h[0]
        XCTAssertEqual(Set(m), [0, 2], "input mask values")
        XCTAssertEqual(m.reduce(0, +) / Double(m.count), 1, accuracy: 0.03, "mean of the input mask")
        var rValues: [Double] = []
        for i in m.indices where m[i] != 0 {
            let r = (h[1][i] - m[i]) / m[i]
            rValues.append(r)
            XCTAssertEqual(h[2][i], m[i] + h[1][i] * r, accuracy: 1e-5, "step 3 reuses the state mask")
        }
        for r in rValues { XCTAssertTrue(abs(r) < 1e-6 || abs(r - 4.0 / 3) < 1e-5, "state mask value \(r)") }
        XCTAssertEqual(rValues.reduce(0, +) / Double(rValues.count), 1, accuracy: 0.04, "mean of the state mask")
        // A second call draws new masks; inference draws none.
        let y2 = try layer.call([x], options)[0]
        XCTAssertNotEqual(y1.doubles(), y2.doubles())
        options.training = false
        XCTAssertEqual(Set(try layer.call([x], options)[0].doubles()), [1, 2, 3])
        // LSTM and GRU: the fused path (dropout only) and the gate-by-gate one agree with
        // inference when the rates are 0 in effect (masks of ones at rate 0).
        for cls in ["LSTM", "GRU"] {
            let plain = try recurrentLayer(cls, ["units": 3, "reset_after": true])
            let gated = try recurrentLayer(cls, ["units": 3, "reset_after": true, "recurrent_dropout": 1e-9])
            for (p, q) in zip(plain.weights, gated.weights) {
                let v = try random(.uniform(-0.5, 0.5), shape: p.value.shape, seed: [p.value.count, 1])
                (p.value, q.value) = (v, v)
            }
            let xs = try random(.normal(0, 1), shape: [5, 3, 4], seed: [2, 2])
            let a = try plain.call([xs], CallOptions(training: true))[0], b = try gated.call([xs], CallOptions(training: true))[0]
            XCTAssertLessThan(largestDifference(a, b), 1e-5, "\(cls): the gate-by-gate cell against the fused op")
        }
    }

    /// AlphaDropout keeps a standard normal input's mean and variance (Keras's affine map);
    /// GaussianDropout keeps the mean; each call draws anew.
    func testNoiseStatistics() throws {
        func layer(_ cls: String, _ config: [String: Any]) throws -> KerasLayer {
            var c = config
            c["name"] = cls.lowercased()
            return try LayerRegistry.layer(from: ["class_name": cls, "config": c, "build_config": ["input_shape": [NSNull(), 1000]]])
        }
        let x = try random(.normal(0, 1), shape: [200, 1000], seed: [3, 3])
        let training = CallOptions(training: true)
        for (cls, rate) in [("AlphaDropout", 0.3), ("GaussianDropout", 0.3)] {
            let l = try layer(cls, ["rate": rate, "seed": 11])
            let y = try l.call([x], training)[0].doubles(), xs = x.doubles()
            let mean = y.reduce(0, +) / Double(y.count)
            let variance = y.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(y.count)
            XCTAssertEqual(mean, xs.reduce(0, +) / Double(xs.count), accuracy: 0.01, cls)
            if cls == "AlphaDropout" {
                XCTAssertEqual(variance, 1, accuracy: 0.02, cls)
                // The dropped units all hold a + b alpha' (one value), about 30% of them.
                let alphaP = -1.6732632423543772848170429916717 * 1.0507009873554804934193349852946
                let a = Foundation.pow((1 - rate) * (1 + rate * alphaP * alphaP), -0.5)
                let dropped = y.filter { abs($0 - (a * alphaP - a * alphaP * rate)) < 1e-5 }.count
                XCTAssertEqual(Double(dropped) / Double(y.count), rate, accuracy: 0.01, cls)
            }
            XCTAssertNotEqual(try l.call([x], training)[0].doubles(), y, "\(cls): a second call draws anew")
            XCTAssertEqual(try l.call([x], CallOptions())[0].doubles(), xs, "\(cls) at inference")
        }
    }

    /// Two compiled steps draw different masks: a model whose loss is the dropout mask's mean
    /// (a constant target) logs a different loss each step, as the eager step does.
    func testCompiledStepsDrawNewMasks() throws {
        let build = sequenceModel([rnn("SimpleRNN", 4, ["dropout": 0.5, "recurrent_dropout": 0.5]), .dense(3, activation: "softmax")])
        let model = try build()
        try model.compile(optimizer: SGD(learningRate: 0), loss: .sparseCategoricalCrossentropy(fromLogits: false))
        let (x, y) = try data(seed: 4)
        var losses: [Double] = []
        for _ in 0..<4 {
            let xb = try take(x, try Tensor((0..<8).map { Int32($0) }), axis: 0), yb = try take(y, try Tensor((0..<8).map { Int32($0) }), axis: 0)
            let h = try model.fit(x: xb, y: yb, batchSize: 8, epochs: 1, verbose: .silent, shuffle: false)
            losses.append(try XCTUnwrap(h["loss"].first))
        }
        let step = try XCTUnwrap(model.compiledTrainStep)
        XCTAssertEqual(step.traces, 1)
        XCTAssertEqual(step.replays, 3)
        // The weights never move (learning rate 0): only the masks change the loss.
        XCTAssertEqual(Set(losses).count, 4, "\(losses)")
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
        // A layer of another module is not traced at all.
        LayerRegistry.register("HostMeanScale", HostMeanScale.self)
        let m3 = try compare([.dense(8, activation: "relu"), LayerSpec("HostMeanScale"), .dense(3, activation: "softmax")],
                             optimizer: { Adam(learningRate: 0.01) }, expectCompiled: false)
        XCTAssertTrue(m3.jitFallbackReason?.contains("defined outside SwiftKeras") ?? false, m3.jitFallbackReason ?? "")
        XCTAssertEqual(m3.compiledTrainStep?.traces, 0)
    }
}
