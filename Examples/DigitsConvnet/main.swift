// Trains a small convnet on scikit-learn's 8x8 digits with SwiftKeras layers (no Python), then
// saves it as a .keras file that Python Keras loads (keras.models.load_model) and predicts with.
//
//   swift run -c release DigitsConvnet [--data digits.bin] [--epochs 15] [-o digits_convnet.keras]
//                                      [--export DIR]   (test inputs and Swift's predictions as .npy)
import Foundation
import SwiftKeras
import TensorEngine

let here = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
var dataPath = here.deletingLastPathComponent().appendingPathComponent("DigitsMLP/digits.bin").path
var output = "digits_convnet.keras", epochs = 15, export: String?
var args = CommandLine.arguments.dropFirst()
while let flag = args.popFirst() {
    guard let value = args.popFirst() else { fatalError("\(flag) needs a value") }
    switch flag {
    case "--data": dataPath = value
    case "-o", "--output": output = value
    case "--epochs": epochs = Int(value) ?? epochs
    case "--export": export = value
    default: fatalError("unknown argument \(flag)")
    }
}

// digits.bin: 1797 records of 64 pixel bytes (0-16) and one label byte, in scikit-learn's order.
let records = 1797
guard let bytes = FileManager.default.contents(atPath: dataPath), bytes.count == records * 65 else {
    fatalError("\(dataPath) is missing or not 1797 x 65 bytes")
}
var pixels: [Float] = [], labels: [Int32] = []
for r in 0..<records {
    pixels += bytes[(r * 65)..<(r * 65 + 64)].map { Float($0) / 16 }
    labels.append(Int32(bytes[r * 65 + 64]))
}
let all = try Tensor(pixels, shape: [records, 8, 8, 1]), allLabels = try Tensor(labels)
let split = 1437
let trainRows = try arange(start: 0, stop: Double(split), dtype: .int64)
let testRows = try arange(start: Double(split), stop: Double(records), dtype: .int64)
let (xTrain, yTrain) = (try take(all, trainRows, axis: 0), try take(allLabels, trainRows, axis: 0))
let (xTest, yTest) = (try take(all, testRows, axis: 0), try take(allLabels, testRows, axis: 0))

let model = try Model(inputShape: [8, 8, 1], layers: [
    .conv2D(16, kernelSize: [3, 3], padding: "same", activation: "relu"),
    // Momentum 0.9 (Keras's default is 0.99): 40 steps an epoch are too few for the slower
    // moving averages to settle, and inference uses them.
    .batchNormalization(momentum: 0.9),
    .maxPooling2D(),
    .conv2D(32, kernelSize: [3, 3], padding: "same", activation: "relu"),
    .maxPooling2D(),
    .flatten(),
    .dropout(0.2),
    .dense(10, activation: "softmax"),
], name: "digits_convnet", seed: 0)
print(try model.summary())

try model.compile(optimizer: Adam(learningRate: 0.003), loss: .sparseCategoricalCrossentropy(fromLogits: false),
                  metrics: ["accuracy"])
try model.fit(x: xTrain, y: yTrain, batchSize: 32, epochs: epochs,
              callbacks: [EarlyStopping(monitor: "val_loss", patience: 3, restoreBestWeights: true)], validationSplit: 0.1)
let test = try model.evaluate(x: xTest, y: yTest)
print(String(format: "test loss %.4f, test accuracy %.4f (%d held-out digits)", test["loss"]!, test["accuracy"]!, records - split))

try model.save(output)
print("saved \(output): in Python, keras.models.load_model(\"\(output)\").predict(x)")
if let dir = export {
    try NumPy.save(dir + "/x_test.npy", xTest)
    try NumPy.save(dir + "/y_swift.npy", try model.predict([xTest], batchSize: 256)[0])
}
