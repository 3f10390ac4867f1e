import XCTest
@testable import TensorEngine

private func assertClose(_ a: [Double], _ b: [Double], accuracy: Double, _ message: String = "",
                         file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.count, b.count, message, file: file, line: line)
    for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: accuracy, message, file: file, line: line) }
}

/// CTC loss by enumerating every alignment of `t` frames (feasible for tiny t and k).
private func bruteForceCTC(_ logits: [Double], t: Int, k: Int, labels: [Int], blank: Int) -> Double {
    var logp = logits
    for f in 0..<t {
        let row = logits[(f * k)..<(f * k + k)]
        let m = row.max()!, lse = m + log(row.map { exp($0 - m) }.reduce(0, +))
        for c in 0..<k { logp[f * k + c] = logits[f * k + c] - lse }
    }
    var total = 0.0
    var path = [Int](repeating: 0, count: t)
    func visit(_ f: Int, _ lp: Double) {
        if f == t {
            var out = [Int](), prev = -1
            for c in path { if c != blank && c != prev { out.append(c) }; prev = c }
            if out == labels { total += exp(lp) }
            return
        }
        for c in 0..<k { path[f] = c; visit(f + 1, lp + logp[f * k + c]) }
    }
    visit(0, 0)
    return -log(total)
}

final class NNExtraTests: XCTestCase {
    func testCTCLossMatchesEnumeration() throws {
        let (b, t, k, s) = (3, 5, 4, 3)
        let logits = try f64([b, t, k], seed: 51, lo: -2, hi: 2)
        let labels = try Tensor([1, 2, 2, 3, 1, 0, 2, 0, 0] as [Int32], shape: [b, s])
        let labelLen = try Tensor([3, 2, 1] as [Int32]), logitLen = try Tensor([5, 4, 2] as [Int32])
        let loss = try ctcLoss(labels: labels, logits: logits, labelLengths: labelLen, logitLengths: logitLen).doubles()
        let x = logits.doubles(), lab = try labels.array(Int32.self).map(Int.init)
        for (row, (ll, tl)) in zip([3, 2, 1], [5, 4, 2]).enumerated() {
            let want = bruteForceCTC(Array(x[(row * t * k)..<(row * t * k + tl * k)]), t: tl, k: k,
                                     labels: Array(lab[(row * s)..<(row * s + ll)]), blank: 0)
            XCTAssertEqual(loss[row], want, accuracy: 1e-9, "row \(row)")
        }
        // Blank as the last class (mask_index = -1 wraps).
        let l2 = try ctcLoss(labels: labels, logits: logits, labelLengths: labelLen, logitLengths: logitLen, maskIndex: 3).doubles()
        let want = bruteForceCTC(Array(x[0..<(t * k)]), t: t, k: k, labels: [1, 2, 2], blank: 3)
        XCTAssertEqual(l2[0], want, accuracy: 1e-9)
    }

    func testCTCLossKerasValuesAndErrors() throws {
        let labels = try Tensor([1, 2, 1, 1, 2, 2] as [Int64], shape: [2, 3])
        let logits = try Tensor([0.4, 0.8, 0.4, 0.2, 0.8, 0.3, 0.9, 0.4, 0.5,
                                 0.4, 0.8, 0.4, 0.2, 0.3, 0.3, 0.4, 0.3, 0.2] as [Float], shape: [2, 3, 3])
        let loss = try ctcLoss(labels: labels, logits: logits, labelLengths: try Tensor([3, 2] as [Int32]),
                               logitLengths: try Tensor([3, 2] as [Int32])).doubles()
        XCTAssertEqual(loss[0], 3.4411672, accuracy: 1e-5)
        XCTAssertEqual(loss[1], 1.91680186, accuracy: 1e-5)
        // A label equal to the blank class (Keras's CTC loss counts non-zero labels, so a 0
        // inside the length is one) is emitted like any label, as the JAX backend does.
        let x2 = try Tensor((0..<24).map { Float($0 - 12) / 100 }, shape: [2, 4, 3])
        let l2 = try ctcLoss(labels: try Tensor([1, 2, 1, 0, 1, 2, 0, 2] as [Int32], shape: [2, 4]), logits: x2,
                             labelLengths: try Tensor([3, 3] as [Int32]), logitLengths: try Tensor([4, 4] as [Int32])).doubles()
        XCTAssertEqual((l2[0] + l2[1]) / 2, 2.448645, accuracy: 1e-5)
        // Labels that need more frames than there are: +inf.
        let inf = try ctcLoss(labels: labels, logits: logits, labelLengths: try Tensor([3, 2] as [Int32]),
                              logitLengths: try Tensor([1, 2] as [Int32])).doubles()
        XCTAssertEqual(inf[0], .infinity)
        XCTAssertThrowsError(try ctcLoss(labels: try Tensor([5, 1, 1, 1, 1, 1] as [Int32], shape: [2, 3]), logits: logits,
                                         labelLengths: try Tensor([3, 2] as [Int32]), logitLengths: try Tensor([3, 2] as [Int32])))
        XCTAssertThrowsError(try ctcLoss(labels: labels, logits: logits, labelLengths: try Tensor([3] as [Int32]),
                                         logitLengths: try Tensor([3, 2] as [Int32])))
    }

    func testCTCLossGradient() throws {
        let labels = try Tensor([1, 2, 2, 3, 1, 0] as [Int32], shape: [2, 3])
        let (ll, tl) = (try Tensor([3, 2] as [Int32]), try Tensor([6, 4] as [Int32]))
        try checkGradient("ctc_loss", [try f64([2, 6, 4], seed: 52, lo: -2, hi: 2)]) {
            try ctcLoss(labels: labels, logits: $0[0], labelLengths: ll, logitLengths: tl)
        }
    }

    func testCTCDecode() throws {
        let x = try Tensor([0.1, 0.4, 0.2, 0.4, 0.3, -0.3, 0.4, 0.2, 0.3, 0.2, 0.4, 0.3,
                            0.7, 0.4, 0.3, 0.2, 0.3, 0.3, 0.4, 0.1, 0.6, -0.1, 0.1, 0.5,
                            0.1, 0.4, 0.2, 0.7, 0.3, 0.3, -0.2, 0.7, 0.3, 0.2, 0.4, 0.1] as [Double], shape: [3, 3, 4])
        let lens = try Tensor([3, 3, 1] as [Int32])
        let g = try ctcGreedyDecode(x, sequenceLengths: lens)
        XCTAssertEqual(try g.decoded.array(Int32.self), [1, 2, -1, 2, -1, -1, 3, -1, -1])
        assertClose(g.scores.doubles(), [-1.2, -1.7, -0.7], accuracy: 1e-12)
        let r = try ctcGreedyDecode(x, sequenceLengths: lens, mergeRepeated: false)
        XCTAssertEqual(try r.decoded.array(Int32.self), [1, 2, 2, 2, -1, -1, 3, -1, -1])
        let beam = try ctcBeamSearchDecode(x, sequenceLengths: lens, beamWidth: 4, topPaths: 2)
        XCTAssertEqual(beam.decoded.shape, [2, 3, 3])
        XCTAssertEqual(try beam.decoded.array(Int32.self), [1, 2, -1, 2, -1, -1, 3, -1, -1, 2, -1, -1, 3, -1, -1, 1, -1, -1])
        assertClose(beam.scores.doubles(), [-2.426537, -2.435596, -2.127681, -2.182338, -1.063386, -1.363386], accuracy: 1e-5)
        XCTAssertThrowsError(try ctcBeamSearchDecode(x, sequenceLengths: lens, beamWidth: 2, topPaths: 3))
        XCTAssertThrowsError(try OpRegistry.call("ctc_decode", [x, lens], Attrs(["strategy": .string("nope")])))
    }

    func testUnfoldFold() throws {
        let x = try Tensor((0..<8).map(Float.init), shape: [1, 1, 2, 4])
        let u = try unfold(x, kernelSize: [2])
        XCTAssertEqual(u.shape, [1, 4, 3])
        XCTAssertEqual(try u.array(Float.self), [0, 1, 2, 1, 2, 3, 4, 5, 6, 5, 6, 7])
        // fold(unfold(x)) multiplies each pixel by the number of blocks covering it.
        let img = try f64([2, 3, 5, 4], seed: 53)
        let p = try unfold(img, kernelSize: [3, 2], dilation: [1, 2], padding: [1, 0], stride: [2, 1])
        let back = try fold(p, outputSize: [5, 4], kernelSize: [3, 2], dilation: [1, 2], padding: [1, 0], stride: [2, 1])
        let cover = try fold(try unfold(try onesLike(img), kernelSize: [3, 2], dilation: [1, 2], padding: [1, 0], stride: [2, 1]),
                             outputSize: [5, 4], kernelSize: [3, 2], dilation: [1, 2], padding: [1, 0], stride: [2, 1])
        assertClose(try divide(back, cover).doubles(), img.doubles(), accuracy: 1e-12)
        XCTAssertThrowsError(try fold(try f64([1, 2, 3, 4], seed: 1), outputSize: [4, 4], kernelSize: [2]))
        XCTAssertThrowsError(try fold(try f64([1, 5, 9], seed: 1), outputSize: [4, 4], kernelSize: [2]))
        XCTAssertThrowsError(try unfold(try f64([1, 1, 2, 2], seed: 1), kernelSize: [3]))
        try checkGradient("unfold", [img]) { try unfold($0[0], kernelSize: [3, 2], dilation: [1, 2], padding: [1, 0], stride: [2, 1]) }
        try checkGradient("fold", [try f64([2, 6, 4], seed: 54)]) { try fold($0[0], outputSize: [3, 4], kernelSize: [2, 1], padding: [1, 0], stride: [2, 2]) }
    }

    func testSparsemax() throws {
        let x = try Tensor([0.5, 0.1, 2.0, -1.0, 1.0, 1.2] as [Double], shape: [2, 3])
        let y = try sparsemax(x).doubles()
        assertClose(y, [0, 0, 1, 0, 0.4, 0.6], accuracy: 1e-12)
        let cols = try sparsemax(x, axis: 0).doubles()
        assertClose(cols, [1, 0.05, 0.9, 0, 0.95, 0.1], accuracy: 1e-12)
        // Close values so every row has a support of several elements.
        try checkGradient("sparsemax", [try f64([3, 5], seed: 55, lo: -0.3, hi: 0.3)]) { try sparsemax($0[0]) }
        try checkGradient("sparsemax axis 0", [try f64([4, 3], seed: 56, lo: -0.3, hi: 0.3)]) { try sparsemax($0[0], axis: 0) }
    }

    func testAdaptivePool() throws {
        // 1-D, 5 → 3: bins [0,2) [1,4) [3,5).
        let x = try Tensor([1, 5, 2, 4, 3] as [Double], shape: [1, 5, 1])
        assertClose(try adaptivePool(.avg, x, outputSize: [3]).doubles(), [3, 11.0 / 3, 3.5], accuracy: 1e-12)
        XCTAssertEqual(try adaptivePool(.max, x, outputSize: [3]).doubles(), [5, 5, 4])
        let img = try f64([2, 5, 7, 3], seed: 57)
        XCTAssertEqual(try adaptivePool(.avg, img, outputSize: [1]).shape, [2, 1, 1, 3])
        assertClose(try adaptivePool(.avg, img, outputSize: [1]).doubles(), try mean(img, axes: [1, 2]).doubles(), accuracy: 1e-12)
        XCTAssertThrowsError(try adaptivePool(.max, img, outputSize: [0, 2]))
        XCTAssertThrowsError(try adaptivePool(.max, try f64([2, 3], seed: 1), outputSize: [1]))
        for kind in [PoolKind.max, .avg] {
            try checkGradient("adaptive \(kind) 2d", [img]) { try adaptivePool(kind, $0[0], outputSize: [3, 4]) }
            try checkGradient("adaptive \(kind) 1d up", [try f64([1, 3, 2], seed: 58)]) { try adaptivePool(kind, $0[0], outputSize: [5]) }
            try checkGradient("adaptive \(kind) 3d", [try f64([1, 4, 3, 5, 2], seed: 59)]) { try adaptivePool(kind, $0[0], outputSize: [2, 2, 3]) }
        }
    }
}
