// Trains a 64-128-10 MLP on scikit-learn's 8x8 digits (shipped as digits.bin: 1797 records of
// 64 pixel bytes + 1 label byte) with engine ops and the tape directly: no Python, no layers.
//
//   swift run -c release DigitsMLP [path/to/digits.bin]
import TensorEngine
#if canImport(Glibc)
import Glibc
#endif

func loadDigits(_ path: String) throws -> (x: [Float], y: [Int32]) {
    guard let f = fopen(path, "rb") else { throw EngineError.value("cannot open \(path)") }
    defer { fclose(f) }
    var bytes = [UInt8](repeating: 0, count: 1797 * 65)
    guard fread(&bytes, 1, bytes.count, f) == bytes.count else { throw EngineError.value("\(path) is truncated") }
    var x: [Float] = [], y: [Int32] = []
    for r in 0..<1797 {
        x += bytes[(r * 65)..<(r * 65 + 64)].map { Float($0) / 16 }
        y.append(Int32(bytes[r * 65 + 64]))
    }
    return (x, y)
}

let here = String(#filePath.prefix(upTo: #filePath.lastIndex(of: "/")!))
let path = CommandLine.arguments.count > 1 ? CommandLine.arguments[1] : here + "/digits.bin"
let (pixels, labels) = try loadDigits(path)

// A fixed shuffle, then 80% train / 20% held-out test.
var order = Array(0..<1797), state: UInt64 = 42
for i in stride(from: order.count - 1, to: 0, by: -1) {
    state = state &* 6364136223846793005 &+ 1442695040888963407
    order.swapAt(i, Int((state >> 33) % UInt64(i + 1)))
}
let all = try Tensor(pixels, shape: [1797, 64]), allY = try Tensor(labels)
let split = 1437
let trainIdx = try Tensor(order[..<split].map { Int64($0) }), testIdx = try Tensor(order[split...].map { Int64($0) })
let (xTrain, yTrain) = (try take(all, trainIdx, axis: 0), try take(allY, trainIdx, axis: 0))
let (xTest, yTest) = (try take(all, testIdx, axis: 0), try take(allY, testIdx, axis: 0))

func glorot(_ i: Int, _ o: Int, seed: Int) throws -> Tensor {
    let limit = (6.0 / Double(i + o)).squareRoot()
    return try random(.uniform(-limit, limit), shape: [i, o], seed: [seed, 0])
}
var params = [try glorot(64, 128, seed: 1), try zeros([128]), try glorot(128, 10, seed: 2), try zeros([10])]
var velocity = try params.map { try zerosLike($0) }

func logits(_ x: Tensor, _ p: [Tensor]) throws -> Tensor {
    let h = try relu(try add(try matmul(x, p[0]), p[1]))
    return try add(try matmul(h, p[2]), p[3])
}

let lr = try scalar(0.05), momentum = try scalar(0.9), batch = 32
for epoch in 1...30 {
    var total = 0.0
    for start in stride(from: 0, to: split, by: batch) {
        let idx = try arange(start: Double(start), stop: Double(min(split, start + batch)), dtype: .int64)
        let xb = try take(xTrain, idx, axis: 0), yb = try reshape(try take(yTrain, idx, axis: 0), [-1, 1])
        for p in params { p.requiresGrad = true }
        Tape.push()
        let logp = try softmax(try logits(xb, params), axis: -1, log: true)
        let loss = try negative(try mean(try takeAlongAxis(logp, yb, axis: -1)))
        let grads = try Tape.gradient(of: loss, wrt: params)
        try Tape.pop()
        total += try loss.double(at: 0) * Double(xb.shape[0])
        for i in params.indices {
            velocity[i] = try subtract(try multiply(velocity[i], momentum), try multiply(grads[i]!, lr))
            params[i] = try add(params[i], velocity[i])
        }
    }
    if epoch % 10 == 0 { print("epoch \(epoch): loss \(total / Double(split))") }
}

let predicted = try argReduce(.argmax, try logits(xTest, params), axis: -1)
let accuracy = try mean(try cast(try binary(.equal, predicted, yTest), to: .float32)).double(at: 0)
print("test accuracy: \(accuracy)")
