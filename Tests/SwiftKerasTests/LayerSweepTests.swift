import Foundation
import XCTest
@testable import SwiftKeras
import TensorEngine

/// Every layer class SwiftKeras rebuilds from a Keras config, trained in a small model with
/// compiled steps and eagerly: the compiled run must trace once and replay (no fallback to
/// eager) and end with the eager run's weights. The classes come from the layer registry, so
/// a class added later without a recipe here fails until it gets one.
final class LayerSweepTests: XCTestCase {
    /// A small model around one layer class, on inputs of `input` (batch left out).
    private struct Recipe {
        var input: [Int]
        var ids = false
        var build: () throws -> Model
    }

    /// A Sequential model: a layer with weights first (so that the gradient goes back through
    /// the tested layers), then `layers`, then a softmax over 3 classes.
    private static func sequential(_ input: [Int], _ layers: [LayerSpec], ids: Bool = false) -> Recipe {
        var pre: [LayerSpec] = []
        if !ids {
            pre = input.count == 1 ? [.dense(input[0])]
                : [LayerSpec("Conv\(input.count - 1)D", ["filters": input.last!, "kernel_size": Array(repeating: 1, count: input.count - 1)])]
        }
        return Recipe(input: input, ids: ids) {
            try Model(inputShape: input, inputDType: ids ? .int32 : .float32,
                      layers: pre + layers + [.flatten(), .dense(3, activation: "softmax")], seed: 9)
        }
    }

    private static func layer(_ cls: String, _ input: [Int], _ config: [String: Any] = [:]) -> Recipe {
        sequential(input, [LayerSpec(cls, config)])
    }

    /// A functional model: `body` from two Dense branches of an (8) input to a (4) or (4, 2) tensor.
    private static func functional(_ body: @escaping (KerasTensor, KerasTensor) throws -> KerasTensor) -> Recipe {
        Recipe(input: [8]) {
            let x = try Input(shape: [8], name: "x")
            let (a, b) = (try LayerSpec.dense(4, activation: "tanh")(x), try LayerSpec.dense(4)(x))
            let y = try LayerSpec.dense(3, activation: "softmax")(try LayerSpec.flatten()(try body(a, b)))
            return try Model(inputs: [x], outputs: [y], name: "functional", seed: 9)
        }
    }

    private static func merge(_ cls: String) -> Recipe { functional { a, b in try LayerSpec(cls)(a, b) } }

    /// Registered classes not trained here, and why.
    private static let untrained: [String: String] = [
        "InputLayer": "every model of every recipe starts with one",
    ]

    private static let recipes: [String: Recipe] = [
        "Dense": layer("Dense", [8], ["units": 4, "activation": "relu"]),
        "Dropout": layer("Dropout", [8], ["rate": 0.3, "seed": 1]),
        "SpatialDropout1D": layer("SpatialDropout1D", [4, 2], ["rate": 0.3]),
        "SpatialDropout2D": layer("SpatialDropout2D", [3, 3, 2], ["rate": 0.3]),
        "GaussianNoise": layer("GaussianNoise", [8], ["stddev": 0.1, "seed": 1]),
        "GaussianDropout": layer("GaussianDropout", [8], ["rate": 0.2]),
        "AlphaDropout": layer("AlphaDropout", [8], ["rate": 0.2, "seed": 2]),
        "ActivityRegularization": layer("ActivityRegularization", [8], ["l1": 0.01, "l2": 0.01]),
        "Identity": layer("Identity", [8]),
        "Conv1D": layer("Conv1D", [6, 2], ["filters": 3, "kernel_size": [3], "padding": "causal", "dilation_rate": [2],
                                           "activation": "relu"]),
        "Conv2D": layer("Conv2D", [5, 5, 2], ["filters": 3, "kernel_size": [3, 3], "strides": [2, 2], "padding": "same",
                                              "activation": "gelu"]),
        "Conv3D": layer("Conv3D", [3, 3, 3, 2], ["filters": 2, "kernel_size": [2, 2, 2]]),
        "MaxPooling1D": layer("MaxPooling1D", [4, 2], ["pool_size": [2]]),
        "MaxPooling2D": layer("MaxPooling2D", [4, 4, 2], ["pool_size": [2, 2]]),
        "MaxPooling3D": layer("MaxPooling3D", [2, 2, 2, 2], ["pool_size": [2, 2, 2]]),
        "AveragePooling1D": layer("AveragePooling1D", [4, 2], ["pool_size": [2], "strides": [1], "padding": "same"]),
        "AveragePooling2D": layer("AveragePooling2D", [4, 4, 2], ["pool_size": [2, 2]]),
        "AveragePooling3D": layer("AveragePooling3D", [2, 2, 2, 2], ["pool_size": [2, 2, 2]]),
        "GlobalAveragePooling1D": layer("GlobalAveragePooling1D", [4, 2]),
        "GlobalAveragePooling2D": layer("GlobalAveragePooling2D", [3, 3, 2]),
        "GlobalAveragePooling3D": layer("GlobalAveragePooling3D", [2, 2, 2, 2]),
        "GlobalMaxPooling1D": layer("GlobalMaxPooling1D", [4, 2]),
        "GlobalMaxPooling2D": layer("GlobalMaxPooling2D", [3, 3, 2], ["keepdims": true]),
        "GlobalMaxPooling3D": layer("GlobalMaxPooling3D", [2, 2, 2, 2]),
        "BatchNormalization": layer("BatchNormalization", [4, 2], ["momentum": 0.9]),
        "LayerNormalization": layer("LayerNormalization", [8], ["axis": [-1]]),
        "GroupNormalization": layer("GroupNormalization", [3, 4], ["groups": 2]),
        "Flatten": layer("Flatten", [4, 2]),
        "Reshape": layer("Reshape", [8], ["target_shape": [4, 2]]),
        "Permute": layer("Permute", [4, 2], ["dims": [2, 1]]),
        "RepeatVector": layer("RepeatVector", [8], ["n": 3]),
        "Activation": sequential([8], ["gelu", "selu", "hard_silu", "mish", "softsign"].map { LayerSpec.activation($0) }),
        // The plain relu, and the threshold with a slope, and without one, capped.
        "ReLU": sequential([8], [LayerSpec("ReLU", ["threshold": 0.1, "negative_slope": 0.2]),
                                 LayerSpec("ReLU", ["threshold": -0.2, "max_value": 1.5]), LayerSpec("ReLU")]),
        "LeakyReLU": layer("LeakyReLU", [8], ["negative_slope": 0.2]),
        "ELU": layer("ELU", [8], ["alpha": 0.5]),
        "Softmax": layer("Softmax", [4, 2], ["axis": 1]),
        "PReLU": layer("PReLU", [4, 2], ["shared_axes": [1], "alpha_initializer": ["class_name": "Constant", "config": ["value": 0.25]]]),
        "Embedding": sequential([8], [LayerSpec("Embedding", ["input_dim": 10, "output_dim": 3])], ids: true),
        // Per-channel lists (config tensors) and scalars.
        "Rescaling": sequential([4, 2], [LayerSpec("Rescaling", ["scale": [0.5, 2], "offset": 0.1]),
                                         LayerSpec("Rescaling", ["scale": 0.5, "offset": [1, -1]])]),
        // Mean and variance from the config (config tensors), then as weights.
        "Normalization": sequential([4, 2], [LayerSpec("Normalization", ["axis": -1, "mean": [0.5, -0.5], "variance": [2, 0.5]]),
                                             LayerSpec("Normalization", ["axis": [-1], "invert": true])]),
        "LSTM": layer("LSTM", [4, 2], ["units": 3]),
        "GRU": layer("GRU", [4, 2], ["units": 3, "reset_after": true, "return_sequences": true]),
        "SimpleRNN": layer("SimpleRNN", [4, 2], ["units": 3]),
        "Bidirectional": sequential([4, 2], [.bidirectional(.simpleRNN(3))]),
        "MultiHeadAttention": functional { a, b in
            let (q, v) = (try LayerSpec.reshape([2, 2])(a), try LayerSpec.reshape([2, 2])(b))
            return try LayerSpec("MultiHeadAttention", ["num_heads": 2, "key_dim": 2])(q, v)
        },
        "EinsumDense": layer("EinsumDense", [4, 2], ["equation": "abc,cd->abd", "output_shape": [4, 3], "bias_axes": "d"]),
        "Concatenate": functional { a, b in try LayerSpec("Concatenate", ["axis": -1])(a, b) },
        "Add": merge("Add"), "Subtract": merge("Subtract"), "Multiply": merge("Multiply"),
        "Average": merge("Average"), "Maximum": merge("Maximum"), "Minimum": merge("Minimum"),
        "ZeroPadding1D": layer("ZeroPadding1D", [4, 2], ["padding": [1, 2]]),
        "ZeroPadding2D": layer("ZeroPadding2D", [3, 3, 2], ["padding": [[1, 0], [0, 2]]]),
        "ZeroPadding3D": layer("ZeroPadding3D", [2, 2, 2, 1], ["padding": [1, 0, 1]]),
        "Cropping1D": layer("Cropping1D", [6, 2], ["cropping": [1, 2]]),
        "Cropping2D": layer("Cropping2D", [4, 4, 2], ["cropping": [[1, 0], [0, 2]]]),
        "Cropping3D": layer("Cropping3D", [3, 3, 3, 1], ["cropping": 1]),
        "UpSampling1D": layer("UpSampling1D", [3, 2], ["size": 2]),
        "UpSampling2D": layer("UpSampling2D", [2, 2, 2], ["size": [2, 3]]),
        "UpSampling3D": layer("UpSampling3D", [2, 2, 2, 1], ["size": [1, 2, 2]]),
        "DepthwiseConv1D": layer("DepthwiseConv1D", [5, 2], ["kernel_size": 3, "depth_multiplier": 2, "activation": "relu"]),
        "DepthwiseConv2D": layer("DepthwiseConv2D", [4, 4, 2], ["kernel_size": [2, 2], "depth_multiplier": 2, "padding": "same",
                                                                "activation": "elu"]),
        "SeparableConv1D": layer("SeparableConv1D", [5, 2], ["filters": 3, "kernel_size": 3, "depth_multiplier": 2]),
        "SeparableConv2D": layer("SeparableConv2D", [4, 4, 2], ["filters": 3, "kernel_size": [2, 2], "strides": [2, 2],
                                                                "activation": "tanh"]),
        "Conv1DTranspose": layer("Conv1DTranspose", [4, 2], ["filters": 2, "kernel_size": 3, "strides": 2, "padding": "same"]),
        "Conv2DTranspose": layer("Conv2DTranspose", [3, 3, 2], ["filters": 2, "kernel_size": [3, 3], "strides": [2, 2],
                                                                "activation": "relu"]),
        "Conv3DTranspose": layer("Conv3DTranspose", [2, 2, 2, 1], ["filters": 2, "kernel_size": 2, "strides": 2]),
    ]

    private func largestDifference(_ a: Tensor, _ b: Tensor) -> Double {
        zip(a.doubles(), b.doubles()).map { abs($0 - $1) / max(1, abs($1)) }.max() ?? .infinity
    }

    func testEveryLayerClassTrainsCompiledAsEager() throws {
        let registered = LayerRegistry.classNames.filter { cls in
            // Classes tests register from their own module (a host-reading layer) are not SwiftKeras's.
            LayerRegistry.type(cls).map { String(reflecting: $0).hasPrefix("SwiftKeras.") } ?? false
        }
        for cls in registered where Self.untrained[cls] == nil {
            guard let recipe = Self.recipes[cls] else {
                XCTFail("\(cls) is a registered layer class with no recipe in LayerSweepTests (or a reason in `untrained`)")
                continue
            }
            do {
                try check(cls, recipe)
            } catch {
                XCTFail("\(cls): \(error)")
            }
        }
        for cls in Array(Self.recipes.keys) + Array(Self.untrained.keys) where !registered.contains(cls) {
            XCTFail("LayerSweepTests names \(cls), which the layer registry does not have")
        }
    }

    /// A model nested in a model as a layer (a Sequential of a depthwise conv and GroupNormalization).
    func testNestedModelTrainsCompiledAsEager() throws {
        let inner = try Model(inputShape: [4, 2], layers: [LayerSpec("DepthwiseConv1D", ["kernel_size": 3, "padding": "same"]),
                                                           LayerSpec("GroupNormalization", ["groups": 2])], name: "inner")
        let nested = try XCTUnwrap(inner.config["config"] as? [String: Any])
        try check("Sequential", Self.sequential([4, 2], [LayerSpec("Sequential", nested)]))
    }

    /// Three steps of 4 rows (one trace, two replays) and a predict, compiled against eager.
    private func check(_ cls: String, _ recipe: Recipe) throws {
        let n = 12
        let y = try Tensor((0..<n).map { Int32($0 % 3) })
        let x = recipe.ids ? try cast(try random(.uniform(0, 10), shape: [n] + recipe.input, seed: [5, 1]), to: .int32)
            : try random(.normal(0, 1), shape: [n] + recipe.input, seed: [5, 1])
        let compiled = try recipe.build(), eager = try recipe.build()
        XCTAssertTrue(compiled.allLayers.contains { $0.className == cls }, "\(cls): the recipe's model has no such layer")
        for (p, q) in zip(eager.weights, compiled.weights) { p.value = q.value }
        // The tested layers' own trainable weights, to see them move.
        let own = compiled.allLayers.filter { $0.className == cls }.flatMap { $0.weightGroups.flatMap { $0.weights } }.filter(\.trainable)
        let start = own.map(\.value)
        try compiled.compile(optimizer: Adam(learningRate: 0.05), loss: .sparseCategoricalCrossentropy(fromLogits: false))
        try eager.compile(optimizer: Adam(learningRate: 0.05), loss: .sparseCategoricalCrossentropy(fromLogits: false), jitCompile: false)
        let h1 = try compiled.fit(x: x, y: y, batchSize: 4, epochs: 1, verbose: .silent, seed: 3)
        let h2 = try eager.fit(x: x, y: y, batchSize: 4, epochs: 1, verbose: .silent, seed: 3)
        XCTAssertNil(compiled.jitFallbackReason, cls)
        let step = try XCTUnwrap(compiled.compiledTrainStep, cls)
        XCTAssertEqual(step.traces, 1, "\(cls): train steps traced")
        XCTAssertEqual(step.replays, 2, "\(cls): train steps replayed")
        for (a, b) in zip(h1["loss"], h2["loss"]) { XCTAssertEqual(a, b, accuracy: 1e-6 * max(1, abs(b)), "\(cls): loss") }
        XCTAssertEqual(compiled.weights.count, eager.weights.count, cls)
        for (p, q) in zip(compiled.weights, eager.weights) {
            XCTAssertLessThan(largestDifference(p.value, q.value), 1e-5, "\(cls): \(p.name)")
        }
        XCTAssertTrue(own.isEmpty || zip(own, start).contains { largestDifference($0.value, $1) > 1e-4 }, "\(cls): its own weights never moved")
        let (p1, p2) = (try compiled.predict([x], batchSize: 4)[0], try eager.predict([x], batchSize: 4)[0])
        XCTAssertLessThan(largestDifference(p1, p2), 1e-5, "\(cls): predict")
        let inference = try XCTUnwrap(compiled.compiledInference, cls)
        XCTAssertEqual(inference.traces, 1, "\(cls): predict batches traced")
        XCTAssertEqual(inference.replays, 2, "\(cls): predict batches replayed")
        XCTAssertNil(compiled.jitFallbackReason, cls)
    }
}
