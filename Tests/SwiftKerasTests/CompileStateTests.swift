import Foundation
import XCTest
@testable import SwiftKeras
import TensorEngine

private func largestDifference(_ a: Tensor, _ b: Tensor) -> Double {
    zip(a.doubles(), b.doubles()).map { abs($0 - $1) }.max() ?? .infinity
}

private func keras(_ className: String, _ config: [String: Any]) -> [String: Any] {
    ["module": "keras.regularizers", "class_name": className, "config": config, "registered_name": NSNull()]
}

private func tempPath(_ name: String) throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sk-compile-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir.appendingPathComponent(name).path
}

/// 40 rows of 6 features in 3 classes.
private func blobs(seed: Int) throws -> (Tensor, Tensor) {
    let y = try Tensor((0..<40).map { Int32($0 % 3) })
    let centers = try random(.normal(0, 2), shape: [3, 6], seed: [seed, 1])
    return (try add(try take(centers, y, axis: 0), try random(.normal(0, 1), shape: [40, 6], seed: [seed, 2])), y)
}

/// Weight and activity regularizers and constraints in fit, by Keras's formulas.
final class RegularizationTests: XCTestCase {
    func testPenaltiesAndConstraintsFollowKerasFormulas() throws {
        let w = try Tensor([Float(1), -2, 3, -4, 0.5, 6], shape: [3, 2])
        let v = w.doubles()
        func close(_ t: Tensor, _ want: Double, _ what: String) throws {
            XCTAssertEqual(try t.double(at: 0), want, accuracy: 1e-5 * max(1, abs(want)), what)
        }
        try close(try Regularizer(keras: keras("L1", ["l1": 0.1]), what: "t")(w), 0.1 * v.map(abs).reduce(0, +), "L1")
        try close(try Regularizer(keras: "l2", what: "t")(w), 0.01 * v.map { $0 * $0 }.reduce(0, +), "l2 by name")
        try close(try Regularizer(keras: keras("L1L2", ["l1": 0.1, "l2": 0.2]), what: "t")(w),
                  0.1 * v.map(abs).reduce(0, +) + 0.2 * v.map { $0 * $0 }.reduce(0, +), "L1L2")
        // Rows (1,-2), (3,-4), (0.5,6) normalised: factor * 0.5 * sum of |cos| over ordered pairs / pairs.
        let raw: [[Double]] = [[1, -2], [3, -4], [0.5, 6]]
        let rows = raw.map { (r: [Double]) -> [Double] in
            let n = (r[0] * r[0] + r[1] * r[1]).squareRoot()
            return r.map { $0 / n }
        }
        var off = 0.0
        for i in 0..<3 { for j in 0..<3 where i != j { off += abs(rows[i][0] * rows[j][0] + rows[i][1] * rows[j][1]) } }
        try close(try Regularizer(keras: keras("OrthogonalRegularizer", ["factor": 0.5, "mode": "rows"]), what: "t")(w),
                  0.5 * 0.5 * off / 3, "OrthogonalRegularizer")

        // Column norms sqrt(1 + 9 + 0.25), sqrt(4 + 16 + 36).
        let norms: [Double] = [Double(10.25).squareRoot(), Double(56).squareRoot()]
        let maxNorm = try Constraint(keras: keras("MaxNorm", ["max_value": 4, "axis": 0]), what: "t")(w).doubles()
        for (i, x) in maxNorm.enumerated() { XCTAssertEqual(x, v[i] * min(norms[i % 2], 4) / (1e-7 + norms[i % 2]), accuracy: 1e-5) }
        let unit = try Constraint(keras: "unit_norm", what: "t")(w).doubles()
        for (i, x) in unit.enumerated() { XCTAssertEqual(x, v[i] / (1e-7 + norms[i % 2]), accuracy: 1e-6) }
        let minMax = try Constraint(keras: keras("MinMaxNorm", ["min_value": 4, "max_value": 5, "rate": 0.5, "axis": 0]), what: "t")(w)
        for (i, x) in minMax.doubles().enumerated() {
            let n = norms[i % 2], desired = 0.5 * min(max(n, 4), 5) + 0.5 * n
            XCTAssertEqual(x, v[i] * desired / (1e-7 + n), accuracy: 1e-5)
        }
        XCTAssertEqual(try Constraint(keras: keras("NonNeg", [:]), what: "t")(w).doubles(), v.map { max($0, 0) })
    }

    func testUnknownRegularizerOrConstraintIsNamed() throws {
        let model = try Model(inputShape: [6], layers: [LayerSpec("Dense", ["units": 3, "kernel_regularizer": keras("L3", ["l3": 1])])])
        XCTAssertThrowsError(try model.compile(optimizer: SGD(), loss: .meanSquaredError)) { e in
            XCTAssertTrue("\(e)".contains("L3") && "\(e)".contains("kernel_regularizer"), "\(e)")
        }
        let m2 = try Model(inputShape: [6], layers: [LayerSpec("Dense", ["units": 3, "bias_constraint": "radial_norm"])])
        XCTAssertThrowsError(try m2.compile(optimizer: SGD(), loss: .meanSquaredError)) { e in
            XCTAssertTrue("\(e)".contains("radial_norm"), "\(e)")
        }
    }

    /// One SGD step by hand: loss = mse + l2 * sum(kernel²) + l1 * sum(|h|) / batch, the
    /// kernel moved by lr * gradient then projected by NonNeg; the reported loss includes the penalties.
    func testFitAddsPenaltiesAndProjects() throws {
        let model = try Model(inputShape: [2], layers: [
            LayerSpec("Dense", ["units": 2, "use_bias": false, "kernel_regularizer": keras("L2", ["l2": 0.5]),
                                "kernel_constraint": ["class_name": "NonNeg", "config": [:]]]),
            LayerSpec("ActivityRegularization", ["l1": 0.25, "l2": 0]),
        ], seed: 1)
        let k0 = [0.5, -0.25, 1.0, 0.75]  // (2, 2), row-major: w[i][j] = k0[i * 2 + j]
        model.trainableWeights[0].value = try Tensor(k0.map { Float($0) }, shape: [2, 2])
        let x = [[1.0, 2], [-1, 0.25]], y = [[0.0, 1], [1, 0]]
        try model.compile(optimizer: SGD(learningRate: 0.1), loss: .meanSquaredError, jitCompile: false)
        let h = try model.fit(x: try Tensor(x.flatMap { $0.map { Float($0) } }, shape: [2, 2]),
                              y: try Tensor(y.flatMap { $0.map { Float($0) } }, shape: [2, 2]), batchSize: 2, verbose: .silent,
                              shuffle: false)
        // By hand.
        var out = [[Double]](repeating: [0, 0], count: 2)
        for b in 0..<2 { for j in 0..<2 { out[b][j] = x[b][0] * k0[j] + x[b][1] * k0[2 + j] } }
        var mse = 0.0, l1 = 0.0
        for b in 0..<2 { for j in 0..<2 { mse += (out[b][j] - y[b][j]) * (out[b][j] - y[b][j]) / 4; l1 += abs(out[b][j]) } }
        let loss = mse + 0.5 * k0.map { $0 * $0 }.reduce(0, +) + 0.25 * l1 / 2
        XCTAssertEqual(h["loss"][0], loss, accuracy: 1e-5)
        var grad = [Double](repeating: 0, count: 4)
        for i in 0..<2 {
            for j in 0..<2 {
                var g = 0.5 * 2 * k0[i * 2 + j]
                for b in 0..<2 {
                    let d = 2 * (out[b][j] - y[b][j]) / 4 + 0.25 / 2 * (out[b][j] > 0 ? 1 : out[b][j] < 0 ? -1 : 0)
                    g += d * x[b][i]
                }
                grad[i * 2 + j] = g
            }
        }
        let want = zip(k0, grad).map { max($0 - 0.1 * $1, 0) }
        let got = model.trainableWeights[0].value.doubles()
        for (a, b) in zip(got, want) { XCTAssertEqual(a, b, accuracy: 1e-5) }
        XCTAssertTrue(want.contains(0), "the test should exercise the projection")
        // evaluate reports the penalties too (Keras's does).
        let e = try model.evaluate(x: try Tensor(x.flatMap { $0.map { Float($0) } }, shape: [2, 2]),
                                   y: try Tensor(y.flatMap { $0.map { Float($0) } }, shape: [2, 2]))
        var mse2 = 0.0, l12 = 0.0
        for b in 0..<2 {
            for j in 0..<2 {
                let o = x[b][0] * got[j] + x[b][1] * got[2 + j]
                mse2 += (o - y[b][j]) * (o - y[b][j]) / 4
                l12 += abs(o)
            }
        }
        XCTAssertEqual(e["loss"]!, mse2 + 0.5 * got.map { $0 * $0 }.reduce(0, +) + 0.25 * l12 / 2, accuracy: 1e-5)
    }
}

/// compile state through .keras files: Swift save → Swift load → fit continues as if never interrupted.
final class CompileStateTests: XCTestCase {
    private func build() throws -> Model {
        try Model(inputShape: [6], layers: [
            LayerSpec("Dense", ["units": 8, "activation": "relu", "kernel_regularizer": keras("L2", ["l2": 0.01]),
                                "kernel_constraint": ["class_name": "MaxNorm", "config": ["max_value": 1.5, "axis": 0]]]),
            .batchNormalization(),
            .dense(3, activation: "softmax"),
        ], seed: 5)
    }

    private func roundTrip(_ optimizer: () -> Optimizer, metrics: [String] = ["accuracy"], file: StaticString = #filePath,
                           line: UInt = #line) throws {
        let (x, y) = try blobs(seed: 2)
        let straight = try build(), interrupted = try build()
        for (p, q) in zip(interrupted.weights, straight.weights) { p.value = q.value }
        try straight.compile(optimizer: optimizer(), loss: .sparseCategoricalCrossentropy(fromLogits: false), metrics: metrics)
        try interrupted.compile(optimizer: optimizer(), loss: .sparseCategoricalCrossentropy(fromLogits: false), metrics: metrics)
        let full = try straight.fit(x: x, y: y, batchSize: 8, epochs: 4, verbose: .silent, seed: 1)
        try interrupted.fit(x: x, y: y, batchSize: 8, epochs: 2, verbose: .silent, seed: 1)
        let path = try tempPath("m.keras")
        try interrupted.save(path)
        let resumed = try Model.load(path)
        XCTAssertNotNil(resumed.optimizer, "loaded uncompiled", file: file, line: line)
        XCTAssertEqual(resumed.compiled?.metricNames, [metrics], file: file, line: line)
        XCTAssertEqual((resumed.optimizer as? KerasOptimizer)?.iterations, 10, file: file, line: line)
        let rest = try resumed.fit(x: x, y: y, batchSize: 8, epochs: 4, verbose: .silent, initialEpoch: 2, seed: 1)
        for (a, b) in zip(rest["loss"], full["loss"].suffix(2)) { XCTAssertEqual(a, b, accuracy: 1e-6, file: file, line: line) }
        for (p, q) in zip(resumed.weights, straight.weights) {
            XCTAssertLessThan(largestDifference(p.value, q.value), 1e-6, p.name, file: file, line: line)
        }
    }

    func testEveryOptimizerResumesWhereItStopped() throws {
        try roundTrip { Adam(learningRate: 0.01, amsgrad: true) }
        try roundTrip { SGD(momentum: 0.9, nesterov: true, schedule: ExponentialDecay(initialLearningRate: 0.1, decaySteps: 3, decayRate: 0.5)) }
        try roundTrip({ RMSprop(learningRate: 0.01, momentum: 0.5, centered: true) }, metrics: ["accuracy", "sparse_categorical_accuracy"])
        try roundTrip { Nadam(learningRate: 0.01) }
        try roundTrip { AdamW(learningRate: 0.01, schedule: CosineDecay(initialLearningRate: 0.01, decaySteps: 20, warmupTarget: 0.02, warmupSteps: 3)) }
        try roundTrip { Adagrad(learningRate: 0.05, clipvalue: 0.5) }
        try roundTrip { Lion(learningRate: 0.001, schedule: PiecewiseConstantDecay(boundaries: [4, 12], values: [0.002, 0.001, 0.0005])) }
    }

    /// The file holds Keras's layout: compile_config, and optimizer/vars in Keras's order.
    func testFileLayoutIsKeras() throws {
        let model = try build()
        try model.compile(optimizer: Adam(learningRate: 0.01), losses: [.sparseCategoricalCrossentropy(fromLogits: true)],
                          metrics: ["sparse_categorical_accuracy"])
        let (x, y) = try blobs(seed: 2)
        try model.fit(x: x, y: y, batchSize: 20, epochs: 1, verbose: .silent)
        let path = try tempPath("m.keras")
        try model.save(path)
        let archive = try Zip.open(path)
        let config = try Model.parseJSON(try Zip.read(archive, "config.json", in: path), "config")
        let compile = try XCTUnwrap(config["compile_config"] as? [String: Any])
        let opt = try XCTUnwrap(compile["optimizer"] as? [String: Any])
        XCTAssertEqual(opt["class_name"] as? String, "Adam")
        let oc = try XCTUnwrap(opt["config"] as? [String: Any])
        XCTAssertEqual(oc["name"] as? String, "adam")
        XCTAssertEqual(oc["learning_rate"] as? Double, 0.01)
        XCTAssertEqual(oc["beta_2"] as? Double, 0.999)
        XCTAssertEqual((compile["loss"] as? [String: Any])?["class_name"] as? String, "SparseCategoricalCrossentropy")
        XCTAssertEqual(compile["metrics"] as? [String], ["sparse_categorical_accuracy"])
        let h5 = try tempPath("w.h5")
        try Zip.read(archive, "model.weights.h5", in: path).write(to: URL(fileURLWithPath: h5))
        let file = try H5File.open(h5)
        // iterations, learning_rate, then (m, v) per trainable weight: kernel, bias, gamma, beta, kernel, bias.
        XCTAssertEqual(try file.members("optimizer/vars").count, 2 + 2 * 6)
        XCTAssertEqual(try file.read("optimizer/vars/0").dtype, .int32)
        XCTAssertEqual(try file.read("optimizer/vars/0").double(at: 0), 2)
        XCTAssertEqual(try file.read("optimizer/vars/1").double(at: 0), 0.01, accuracy: 1e-7)
        XCTAssertEqual(try file.read("optimizer/vars/2").shape, [6, 8])
        XCTAssertEqual(try file.read("optimizer/vars/3").shape, [6, 8])
        XCTAssertEqual(try file.read("optimizer/vars/4").shape, [8])
        // Saved uncompiled, the weights alone.
        let plain = try tempPath("plain.weights.h5")
        try model.saveWeights(plain)
        XCTAssertFalse(try H5File.open(plain).exists("optimizer"))
    }

    /// Two outputs: a loss, weight and metric list per output, by Keras's compile_config lists.
    func testTwoOutputsRoundTrip() throws {
        let x = try Input(shape: [6], name: "x")
        let h = try LayerSpec.dense(8, activation: "relu")(x)
        let model = try Model(inputs: [x], outputs: [try LayerSpec.dense(3, activation: "softmax", name: "cls")(h),
                                                     try LayerSpec.dense(1, name: "reg")(h)], name: "two", seed: 2)
        try model.compile(optimizer: RMSprop(learningRate: 0.01), losses: [.sparseCategoricalCrossentropy(fromLogits: false), .huber(delta: 2)],
                          lossWeights: [1, 0.5], metrics: ["accuracy"])
        let (features, y) = try blobs(seed: 3)
        let target = try reshape(try sum(features, axes: [1]), [40, 1])
        try model.fit(x: [features], y: [y, target], batchSize: 10, epochs: 1, verbose: .silent)
        let path = try tempPath("two.keras")
        try model.save(path)
        let loaded = try Model.load(path)
        let c = try XCTUnwrap(loaded.compiled)
        XCTAssertEqual(c.losses.map { $0.name }, ["sparse_categorical_crossentropy", "huber"])
        if case .huber(let d) = c.losses[1] { XCTAssertEqual(d, 2) } else { XCTFail("\(c.losses[1])") }
        XCTAssertEqual(c.lossWeights, [1, 0.5])
        XCTAssertEqual(c.metricNames, [["accuracy"], ["accuracy"]])
        let (a, b) = (try model.evaluate(x: [features], y: [y, target]), try loaded.evaluate(x: [features], y: [y, target]))
        XCTAssertEqual(a.keys.sorted(), b.keys.sorted())
        for (k, v) in a { XCTAssertEqual(b[k] ?? .nan, v, accuracy: 1e-6, k) }
        let h1 = try model.fit(x: [features], y: [y, target], batchSize: 10, epochs: 1, verbose: .silent, seed: 4)
        let h2 = try loaded.fit(x: [features], y: [y, target], batchSize: 10, epochs: 1, verbose: .silent, seed: 4)
        XCTAssertEqual(h1["loss"][0], h2["loss"][0], accuracy: 1e-6)
    }

    /// A compile_config naming what SwiftKeras lacks: loaded uncompiled (one warning), never an error.
    func testUnknownOptimizerLoadsUncompiled() throws {
        let model = try build()
        try model.compile(optimizer: Adam(), loss: .meanSquaredError)
        let path = try tempPath("m.keras")
        try model.save(path)
        // Rewrite the optimizer's class name to one SwiftKeras does not have.
        let archive = try Zip.open(path)
        var config = try Model.parseJSON(try Zip.read(archive, "config.json", in: path), "config")
        var compile = try XCTUnwrap(config["compile_config"] as? [String: Any])
        var opt = try XCTUnwrap(compile["optimizer"] as? [String: Any])
        opt["class_name"] = "Adafactor"
        compile["optimizer"] = opt
        config["compile_config"] = compile
        let other = try tempPath("n.keras")
        try Zip.write(other, [("metadata.json", try Zip.read(archive, "metadata.json", in: path)),
                              ("config.json", try JSONSerialization.data(withJSONObject: config)),
                              ("model.weights.h5", try Zip.read(archive, "model.weights.h5", in: path))], compress: true)
        let loaded = try Model.load(other)
        XCTAssertNil(loaded.optimizer)
        XCTAssertLessThan(largestDifference(try loaded.predict(try blobs(seed: 1).0), try model.predict(try blobs(seed: 1).0)), 1e-6)
    }
}
