import Foundation
import TensorEngine

/// A two-operand einsum ("abc,cd->abd", labels one letter each, no repeats within an
/// operand) on the engine's transpose, reshape, sum and batched matmul: the labels both
/// operands share and the output keeps are batch axes, shared ones it drops are contracted,
/// the rest are free (summed first if the output drops them too).
func einsum(_ a: Tensor, _ aLabels: [Character], _ b: Tensor, _ bLabels: [Character], _ out: [Character]) throws -> Tensor {
    guard a.rank == aLabels.count, b.rank == bLabels.count, Set(aLabels).count == aLabels.count,
          Set(bLabels).count == bLabels.count, Set(out).isSubset(of: Set(aLabels + bLabels)) else {
        throw EngineError.value("einsum: labels \(String(aLabels)),\(String(bLabels))->\(String(out)) do not fit shapes \(a.shape), \(b.shape)")
    }
    var size: [Character: Int] = [:]
    for (l, n) in zip(aLabels + bLabels, a.shape + b.shape) {
        if let m = size[l], m != n { throw EngineError.value("einsum: label \(l) has sizes \(m) and \(n)") }
        size[l] = n
    }
    // Labels in one operand only and not in the output are summed away first.
    func drop(_ t: Tensor, _ labels: [Character], _ other: [Character]) throws -> (Tensor, [Character]) {
        let gone = labels.indices.filter { !other.contains(labels[$0]) && !out.contains(labels[$0]) }
        guard !gone.isEmpty else { return (t, labels) }
        return (try Ops.sum(t, axes: gone), labels.enumerated().filter { !gone.contains($0.offset) }.map { $0.element })
    }
    let (x, xl) = try drop(a, aLabels, bLabels), (w, wl) = try drop(b, bLabels, aLabels)
    let batch = xl.filter { wl.contains($0) && out.contains($0) }
    let contracted = xl.filter { wl.contains($0) && !out.contains($0) }
    let freeX = xl.filter { !wl.contains($0) }, freeW = wl.filter { !xl.contains($0) }
    func prod(_ ls: [Character]) -> Int { ls.reduce(1) { $0 * (size[$1] ?? 1) } }
    func arrange(_ t: Tensor, _ labels: [Character], _ order: [Character]) throws -> Tensor {
        try Ops.transpose(t, order.compactMap { labels.firstIndex(of: $0) })
    }
    let x3 = try Ops.reshape(try arrange(x, xl, batch + freeX + contracted), [prod(batch), prod(freeX), prod(contracted)])
    let w3 = try Ops.reshape(try arrange(w, wl, batch + contracted + freeW), [prod(batch), prod(contracted), prod(freeW)])
    let result = batch + freeX + freeW
    let y = try Ops.reshape(try Ops.matmul(x3, w3, bias: nil, activation: .none), result.map { size[$0] ?? 1 })
    return try arrange(y, result, out)
}

/// EinsumDense: einsum(equation, x, kernel) + bias, then the activation, with Keras's rules for
/// the kernel and bias shapes ("ab,bc->ac", "...b,bc->...c" and "ab...,bc->ac..." forms).
public final class EinsumDense: KerasLayer {
    public let kernel: Parameter, bias: Parameter?
    let inputSpec: [Character], weightSpec: [Character], outputSpec: [Character]
    let leftElided: Bool, activation: Activation

    public required init(_ c: LayerConfig) throws {
        let equation = try c.string("equation")
        let dotted = equation.replacingOccurrences(of: "...", with: "0")
        let parts = dotted.components(separatedBy: "->")
        let operands = parts.first?.components(separatedBy: ",") ?? []
        guard parts.count == 2, operands.count == 2 else {
            throw EngineError.value("EinsumDense '\(c.name)': invalid equation '\(equation)'")
        }
        var (i, w, o) = (operands[0], operands[1], parts[1])
        let letters = CharacterSet.letters
        func plain(_ s: String) -> Bool { !s.isEmpty && s.unicodeScalars.allSatisfy { letters.contains($0) } }
        var left = false, right = false
        if i.hasPrefix("0") && o.hasPrefix("0") {
            left = true
            (i, o) = (String(i.dropFirst()), String(o.dropFirst()))
        } else if i.hasSuffix("0") && o.hasSuffix("0") {
            right = true
            (i, o) = (String(i.dropLast()), String(o.dropLast()))
        }
        guard plain(i), plain(w), plain(o) else {
            throw EngineError.value("EinsumDense '\(c.name)': invalid equation '\(equation)'")
        }
        let inSpec = Array(i), wSpec = Array(w), outSpec = Array(o)
        inputSpec = inSpec
        weightSpec = wSpec
        outputSpec = outSpec
        leftElided = left
        activation = try Activation(config: c.raw["activation"])

        // Keras's _analyze_split_string: the full output shape, then kernel and bias shapes.
        let inShape = try c.buildShape()
        let elided = inShape.count - inSpec.count
        guard elided >= 0, elided == 0 || left || right else {
            throw EngineError.value("EinsumDense '\(c.name)': equation '\(equation)' does not fit input shape \(inShape)")
        }
        var outShape: [Int?]
        if let n = c.raw["output_shape"] as? NSNumber {
            outShape = [n.intValue]
        } else if let a = c.raw["output_shape"] as? [Any] {
            outShape = a.map { ($0 as? NSNumber)?.intValue }
        } else {
            throw EngineError.value("EinsumDense '\(c.name)': config has no output_shape")
        }
        outShape.insert(inShape[0], at: 0)
        if elided > 0 && left {
            for k in 1..<elided { outShape.insert(inShape[k], at: 1) }
        } else if elided > 0 {
            outShape += inShape.suffix(elided)
        }
        func inputDim(_ l: Character) -> Int? {
            inSpec.firstIndex(of: l).flatMap { k in inShape[left ? k + elided : k] }
        }
        func outputDim(_ l: Character) -> Int?? {
            outSpec.firstIndex(of: l).map { k in
                let at = left ? k + elided : k
                return at < outShape.count ? outShape[at] : nil
            }
        }
        let kernelShape = try wSpec.map { l -> Int in
            let d: Int?? = outputDim(l) ?? (inSpec.contains(l) ? .some(inputDim(l)) : nil)
            guard let known = d, let n = known else {
                throw EngineError.value("EinsumDense '\(c.name)': kernel axis '\(l)' has no known size")
            }
            return n
        }
        kernel = Parameter("kernel", try zeros(kernelShape))
        if let axes = c.raw["bias_axes"] as? String, !axes.isEmpty {
            guard axes.allSatisfy({ outSpec.contains($0) }), let first = outSpec.firstIndex(where: { axes.contains($0) }) else {
                throw EngineError.value("EinsumDense '\(c.name)': bias_axes '\(axes)' not in the output spec")
            }
            var shape = try outSpec[first...].map { l -> Int in
                guard axes.contains(l) else { return 1 }
                guard let known = outputDim(l), let n = known else {
                    throw EngineError.value("EinsumDense '\(c.name)': bias axis '\(l)' has no known size")
                }
                return n
            }
            if !left { shape += Array(repeating: 1, count: elided) }
            bias = Parameter("bias", try zeros(shape))
        } else {
            bias = nil
        }
        try super.init(c)
    }

    override public var weights: [Parameter] { [kernel] + (bias.map { [$0] } ?? []) }

    override public func call(_ inputs: [Tensor], _ options: CallOptions) throws -> [Tensor] {
        let x = try one(inputs)
        let elided = x.rank - inputSpec.count
        guard elided >= 0 else { throw EngineError.value("EinsumDense '\(name)': input \(x.shape) has too few axes") }
        // The elided axes get labels no equation uses (Keras's letters are ASCII).
        let extra = (0..<elided).map { Character(UnicodeScalar(0x3B1 + $0) ?? "?") }
        let xl = leftElided ? extra + inputSpec : inputSpec + extra
        let ol = leftElided ? extra + outputSpec : outputSpec + extra
        var y = try einsum(x, xl, kernel.value, weightSpec, ol)
        if let b = bias { y = try Ops.add(y, b.value) }
        return [try activation(y)]
    }
}
