import XCTest
import Foundation
@testable import TensorEngine

/// Keras's LSTM recurrence written out step by step in Doubles: outputs in processing order
/// (B, T, U) flattened, then the final h and c.
private func referenceLSTM(x: [Double], h0: [Double], c0: [Double], w: [Double], u: [Double], bias: [Double]?,
                           b B: Int, t T: Int, f F: Int, units U: Int, goBackwards: Bool) -> ([Double], [Double], [Double]) {
    func sig(_ v: Double) -> Double { 1 / (1 + Foundation.exp(-v)) }
    var h = h0, c = c0, outs = [Double](repeating: 0, count: B * T * U)
    for s in 0..<T {
        let t = goBackwards ? T - 1 - s : s
        var nh = h, nc = c
        for b in 0..<B {
            var z = [Double](repeating: 0, count: 4 * U)
            for j in 0..<(4 * U) {
                var acc = bias?[j] ?? 0
                for k in 0..<F { acc += x[(b * T + t) * F + k] * w[k * 4 * U + j] }
                for k in 0..<U { acc += h[b * U + k] * u[k * 4 * U + j] }
                z[j] = acc
            }
            for j in 0..<U {
                let i = sig(z[j]), fg = sig(z[U + j]), g = Foundation.tanh(z[2 * U + j]), o = sig(z[3 * U + j])
                nc[b * U + j] = fg * c[b * U + j] + i * g
                nh[b * U + j] = o * Foundation.tanh(nc[b * U + j])
                outs[(b * T + s) * U + j] = nh[b * U + j]
            }
        }
        h = nh
        c = nc
    }
    return (outs, h, c)
}

/// Keras's GRU recurrence (reset_after) step by step in Doubles: outputs in processing order
/// (B, T, U) flattened, then the final h. `bias` is (2, 3U): input, then recurrent.
private func referenceGRU(x: [Double], h0: [Double], w: [Double], u: [Double], bias: [Double]?,
                          b B: Int, t T: Int, f F: Int, units U: Int, goBackwards: Bool) -> ([Double], [Double]) {
    func sig(_ v: Double) -> Double { 1 / (1 + Foundation.exp(-v)) }
    var h = h0, outs = [Double](repeating: 0, count: B * T * U)
    for s in 0..<T {
        let t = goBackwards ? T - 1 - s : s
        var nh = h
        for b in 0..<B {
            var xp = [Double](repeating: 0, count: 3 * U), hp = xp
            for j in 0..<(3 * U) {
                xp[j] = bias?[j] ?? 0
                hp[j] = bias?[3 * U + j] ?? 0
                for k in 0..<F { xp[j] += x[(b * T + t) * F + k] * w[k * 3 * U + j] }
                for k in 0..<U { hp[j] += h[b * U + k] * u[k * 3 * U + j] }
            }
            for j in 0..<U {
                let z = sig(xp[j] + hp[j]), r = sig(xp[U + j] + hp[U + j])
                let c = Foundation.tanh(xp[2 * U + j] + r * hp[2 * U + j])
                nh[b * U + j] = z * h[b * U + j] + (1 - z) * c
                outs[(b * T + s) * U + j] = nh[b * U + j]
            }
        }
        h = nh
    }
    return (outs, h)
}

final class RNNTests: XCTestCase {
    let (B, T, F, U) = (3, 4, 2, 3)

    private func inputs(dtype: DType = .float64, bias: Bool = true) throws -> [Tensor] {
        var xs = [try f64([B, T, F], seed: 1), try f64([B, U], seed: 2), try f64([B, U], seed: 3),
                  try f64([F, 4 * U], seed: 4), try f64([U, 4 * U], seed: 5)]
        if bias { xs.append(try f64([4 * U], seed: 6)) }
        return try xs.map { try cast($0, to: dtype) }
    }

    func testLSTMMatchesTheStepwiseRecurrence() throws {
        for goBackwards in [false, true] {
            for (dtype, tol) in [(DType.float64, 1e-12), (.float32, 2e-6)] {
                for hasBias in [true, false] {
                    let t = try inputs(dtype: dtype, bias: hasBias)
                    let r = try lstm(t[0], h0: t[1], c0: t[2], kernel: t[3], recurrentKernel: t[4],
                                     bias: hasBias ? t[5] : nil, goBackwards: goBackwards)
                    let want = referenceLSTM(x: t[0].doubles(), h0: t[1].doubles(), c0: t[2].doubles(), w: t[3].doubles(),
                                             u: t[4].doubles(), bias: hasBias ? t[5].doubles() : nil,
                                             b: B, t: T, f: F, units: U, goBackwards: goBackwards)
                    XCTAssertEqual(r.outputs.shape, [B, T, U])
                    XCTAssertEqual(r.h.shape, [B, U])
                    XCTAssertEqual(r.outputs.dtype, dtype)
                    for (got, exp) in [(r.outputs, want.0), (r.h, want.1), (r.c, want.2)] {
                        for (a, b) in zip(got.doubles(), exp) {
                            XCTAssertEqual(a, b, accuracy: tol, "goBackwards \(goBackwards), \(dtype), bias \(hasBias)")
                        }
                    }
                }
            }
        }
    }

    /// Batches large enough that each thread runs the whole sequence of its own rows give
    /// what the stepwise recurrence gives, for both layers and both directions.
    func testBatchSlicesAcrossThreadsMatchTheRecurrence() throws {
        let saved = Threading.numThreads
        defer { Threading.numThreads = saved }
        Threading.numThreads = 3
        let (b, t, f, u) = (7, 20, 5, 16)
        let x = try f64([b, t, f], seed: 21), h0 = try f64([b, u], seed: 22), c0 = try f64([b, u], seed: 23)
        for goBackwards in [false, true] {
            let w4 = try f64([f, 4 * u], seed: 24), u4 = try f64([u, 4 * u], seed: 25), b4 = try f64([4 * u], seed: 26)
            let r = try lstm(x, h0: h0, c0: c0, kernel: w4, recurrentKernel: u4, bias: b4, goBackwards: goBackwards)
            let want = referenceLSTM(x: x.doubles(), h0: h0.doubles(), c0: c0.doubles(), w: w4.doubles(), u: u4.doubles(),
                                     bias: b4.doubles(), b: b, t: t, f: f, units: u, goBackwards: goBackwards)
            for (a, e) in zip(r.outputs.doubles() + r.h.doubles() + r.c.doubles(), want.0 + want.1 + want.2) {
                XCTAssertEqual(a, e, accuracy: 1e-12, "lstm goBackwards \(goBackwards)")
            }
            let w3 = try f64([f, 3 * u], seed: 27), u3 = try f64([u, 3 * u], seed: 28), b3 = try f64([2, 3 * u], seed: 29)
            let g = try gru(x, h0: h0, kernel: w3, recurrentKernel: u3, bias: b3, goBackwards: goBackwards)
            let wantG = referenceGRU(x: x.doubles(), h0: h0.doubles(), w: w3.doubles(), u: u3.doubles(), bias: b3.doubles(),
                                     b: b, t: t, f: f, units: u, goBackwards: goBackwards)
            for (a, e) in zip(g.outputs.doubles() + g.h.doubles(), wantG.0 + wantG.1) {
                XCTAssertEqual(a, e, accuracy: 1e-12, "gru goBackwards \(goBackwards)")
            }
            // The LSTM's gradients (each thread runs its rows' backward steps) equal one thread's.
            func grads(_ threads: Int) throws -> [[Double]] {
                Threading.numThreads = threads
                let xs = try [x, h0, c0, w4, u4, b4].map { t -> Tensor in
                    let leaf = try stopGradient(t)
                    leaf.requiresGrad = true
                    return leaf
                }
                Tape.push()
                defer { try? Tape.pop() }
                let r = try lstm(xs[0], h0: xs[1], c0: xs[2], kernel: xs[3], recurrentKernel: xs[4], bias: xs[5],
                                 goBackwards: goBackwards)
                let total = try sum(try add(try add(try sum(r.outputs, axes: [1]), r.h), r.c), axes: [0, 1])
                return try Tape.gradient(of: total, wrt: xs).map { try XCTUnwrap($0).doubles() }
            }
            for (i, (a, e)) in zip(try grads(3), try grads(1)).enumerated() {
                XCTAssertEqual(a.count, e.count)
                for (u, v) in zip(a, e) { XCTAssertEqual(u, v, accuracy: 1e-10, "lstm gradient \(i) goBackwards \(goBackwards)") }
            }
            Threading.numThreads = 3
        }
    }

    func testLSTMGradientsMatchFiniteDifferences() throws {
        for goBackwards in [false, true] {
            for hasBias in [true, false] {
                let t = try inputs(bias: hasBias)
                func run(_ xs: [Tensor]) throws -> (outputs: Tensor, h: Tensor, c: Tensor) {
                    try lstm(xs[0], h0: xs[1], c0: xs[2], kernel: xs[3], recurrentKernel: xs[4],
                             bias: hasBias ? xs[5] : nil, goBackwards: goBackwards)
                }
                let tag = "lstm goBackwards \(goBackwards) bias \(hasBias)"
                try checkGradient("\(tag) outputs", t) { try run($0).outputs }
                try checkGradient("\(tag) h", t) { try run($0).h }
                try checkGradient("\(tag) c", t) { try run($0).c }
                // All three cotangents at once, as a layer returning sequences and state sees them.
                try checkGradient("\(tag) all", t) { xs in
                    let r = try run(xs)
                    return try add(try add(try sum(r.outputs, axes: [1]), r.h), r.c)
                }
            }
        }
    }

    func testLSTMRejectsBadInputs() throws {
        let t = try inputs()
        XCTAssertThrowsError(try lstm(t[0], h0: t[2], c0: t[2], kernel: t[4], recurrentKernel: t[4], bias: t[5]))
        XCTAssertThrowsError(try lstm(t[1], h0: t[1], c0: t[2], kernel: t[3], recurrentKernel: t[4], bias: nil))
        let half = try cast(t[0], to: .float16)
        XCTAssertThrowsError(try lstm(half, h0: t[1], c0: t[2], kernel: t[3], recurrentKernel: t[4], bias: nil))
        let empty = try Tensor(zeros: [B, 0, F], dtype: .float64)
        XCTAssertThrowsError(try lstm(empty, h0: t[1], c0: t[2], kernel: t[3], recurrentKernel: t[4], bias: nil))
        // A batch of zero rows and a layer with no input features are valid.
        let r = try lstm(try Tensor(zeros: [0, T, F], dtype: .float64), h0: try Tensor(zeros: [0, U], dtype: .float64),
                         c0: try Tensor(zeros: [0, U], dtype: .float64), kernel: t[3], recurrentKernel: t[4], bias: t[5])
        XCTAssertEqual(r.outputs.shape, [0, T, U])
        // One step backwards still returns (B, 1, U) outputs.
        let one = try lstm(try f64([B, 1, F], seed: 9), h0: t[1], c0: t[2], kernel: t[3], recurrentKernel: t[4],
                           bias: t[5], goBackwards: true)
        XCTAssertEqual(one.outputs.shape, [B, 1, U])
        XCTAssertEqual(one.outputs.doubles(), one.h.doubles())
        let oneGRU = try gru(try f64([B, 1, F], seed: 9), h0: t[1], kernel: try f64([F, 3 * U], seed: 1),
                             recurrentKernel: try f64([U, 3 * U], seed: 2), bias: nil, goBackwards: true)
        XCTAssertEqual(oneGRU.outputs.shape, [B, 1, U])
        let noFeatures = try lstm(try Tensor(zeros: [B, T, 0], dtype: .float64), h0: t[1], c0: t[2],
                                  kernel: try Tensor(zeros: [0, 4 * U], dtype: .float64), recurrentKernel: t[4], bias: t[5])
        XCTAssertEqual(noFeatures.h.shape, [B, U])
    }

    private func gruInputs(dtype: DType = .float64, bias: Bool = true) throws -> [Tensor] {
        var xs = [try f64([B, T, F], seed: 11), try f64([B, U], seed: 12), try f64([F, 3 * U], seed: 13),
                  try f64([U, 3 * U], seed: 14)]
        if bias { xs.append(try f64([2, 3 * U], seed: 15)) }
        return try xs.map { try cast($0, to: dtype) }
    }

    func testGRUMatchesTheStepwiseRecurrence() throws {
        for goBackwards in [false, true] {
            for (dtype, tol) in [(DType.float64, 1e-12), (.float32, 2e-6)] {
                for hasBias in [true, false] {
                    let t = try gruInputs(dtype: dtype, bias: hasBias)
                    let r = try gru(t[0], h0: t[1], kernel: t[2], recurrentKernel: t[3], bias: hasBias ? t[4] : nil,
                                    goBackwards: goBackwards)
                    let want = referenceGRU(x: t[0].doubles(), h0: t[1].doubles(), w: t[2].doubles(), u: t[3].doubles(),
                                            bias: hasBias ? t[4].doubles() : nil, b: B, t: T, f: F, units: U,
                                            goBackwards: goBackwards)
                    XCTAssertEqual(r.outputs.shape, [B, T, U])
                    for (got, exp) in [(r.outputs, want.0), (r.h, want.1)] {
                        for (a, b) in zip(got.doubles(), exp) {
                            XCTAssertEqual(a, b, accuracy: tol, "gru goBackwards \(goBackwards), \(dtype), bias \(hasBias)")
                        }
                    }
                }
            }
        }
    }

    func testGRUGradientsMatchFiniteDifferences() throws {
        for goBackwards in [false, true] {
            for hasBias in [true, false] {
                let t = try gruInputs(bias: hasBias)
                func run(_ xs: [Tensor]) throws -> (outputs: Tensor, h: Tensor) {
                    try gru(xs[0], h0: xs[1], kernel: xs[2], recurrentKernel: xs[3], bias: hasBias ? xs[4] : nil,
                            goBackwards: goBackwards)
                }
                let tag = "gru goBackwards \(goBackwards) bias \(hasBias)"
                try checkGradient("\(tag) outputs", t) { try run($0).outputs }
                try checkGradient("\(tag) h", t) { try run($0).h }
                try checkGradient("\(tag) both", t) { xs in
                    let r = try run(xs)
                    return try add(try sum(r.outputs, axes: [1]), r.h)
                }
            }
        }
    }

    func testGRURejectsBadInputs() throws {
        let t = try gruInputs()
        // A bias of one row (reset_after=False's layout) is not what the fused op computes.
        XCTAssertThrowsError(try gru(t[0], h0: t[1], kernel: t[2], recurrentKernel: t[3],
                                     bias: try f64([3 * U], seed: 1)))
        XCTAssertThrowsError(try gru(t[0], h0: t[1], kernel: t[3], recurrentKernel: t[3], bias: nil))
        XCTAssertThrowsError(try gru(t[0], h0: try cast(t[1], to: .float32), kernel: t[2], recurrentKernel: t[3], bias: nil))
    }

    /// The fused LSTM's backward pass is a kernel: differentiating it again is an error,
    /// never a silent zero.
    func testFusedLSTMRefusesCreateGraph() throws {
        let x = try f64([2, 3, 2], seed: 1)
        let (h0, c0) = (try f64([2, 2], seed: 2), try f64([2, 2], seed: 3))
        let (w, u) = (try f64([2, 8], seed: 4), try f64([2, 8], seed: 5))
        XCTAssertThrowsError(try checkJVP("lstm", x) { try lstm($0, h0: h0, c0: c0, kernel: w, recurrentKernel: u, bias: nil).h }) { e in
            guard case EngineError.notImplemented = e else { return XCTFail("expected notImplemented, got \(e)") }
        }
    }
}
