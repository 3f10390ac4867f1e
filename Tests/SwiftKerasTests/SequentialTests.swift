import XCTest
import TensorEngine
@testable import SwiftKeras

final class SequentialTests: XCTestCase {
    /// Three Gaussian blobs in 4-D, generated deterministically by the engine's RNG.
    private func blobs(_ n: Int, seed: Int) throws -> (Tensor, Tensor) {
        let labels = (0..<n).map { Int32($0 % 3) }
        let y = try Tensor(labels)
        let centers = try Tensor([Float(2), 0, 0, -2, 0, 2, -2, 0, -2, -2, 2, 0], shape: [3, 4])
        let noise = try random(.normal(0, 0.5), shape: [n, 4], seed: [seed, 0])
        return (try add(try take(centers, y, axis: 0), noise), y)
    }

    func testFitLearnsBlobs() throws {
        let (x, y) = try blobs(300, seed: 1)
        let model = Sequential([try Dense(inputs: 4, units: 16, activation: .relu, seed: 1), try Dropout(rate: 0.1, seed: 3),
                                try Dense(inputs: 16, units: 3, activation: .softmax, seed: 2)])
        model.compile(optimizer: Adam(learningRate: 0.01), loss: .sparseCategoricalCrossentropy(fromLogits: false))
        let history = try model.fit(x: x, y: y, epochs: 15, batchSize: 32)
        XCTAssertLessThan(history.last!, history.first! * 0.5)
        let (tx, ty) = try blobs(150, seed: 2)
        let (_, acc) = try model.evaluate(x: tx, y: ty)
        XCTAssertGreaterThan(acc, 0.9)
        XCTAssertEqual(try model.predict(tx).shape, [150, 3])
    }

    func testSGDMomentumAndCategorical() throws {
        let (x, y) = try blobs(300, seed: 3)
        let model = Sequential([try Dense(inputs: 4, units: 3, seed: 4)])
        model.compile(optimizer: SGD(learningRate: 0.1, momentum: 0.9), loss: .categoricalCrossentropy(fromLogits: true))
        let history = try model.fit(x: x, y: try oneHot(y, numClasses: 3), epochs: 5)
        XCTAssertLessThan(history.last!, history.first!)
    }

    func testBadInputThrows() throws {
        let model = Sequential([try Dense(inputs: 4, units: 3)])
        XCTAssertThrowsError(try model(try zeros([2, 5])))
        XCTAssertThrowsError(try model.fit(x: try zeros([4, 4]), y: try zeros([3]), epochs: 1))
        XCTAssertThrowsError(try Dropout(rate: 1.5))
    }
}
