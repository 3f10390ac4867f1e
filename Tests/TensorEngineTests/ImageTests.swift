import XCTest
@testable import TensorEngine

final class ImageTests: XCTestCase {
    private func assertClose(_ t: Tensor, _ expected: [Double], tol: Double = 1e-6,
                             file: StaticString = #filePath, line: UInt = #line) {
        let v = t.doubles()
        XCTAssertEqual(v.count, expected.count, file: file, line: line)
        for (a, b) in zip(v, expected) { XCTAssertEqual(a, b, accuracy: tol, file: file, line: line) }
    }

    func testResizeLinearUpsampleHalfPixel() throws {
        // Centres (j + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25; weights renormalised at the edges.
        let y = try resize(try Tensor([0.0, 1.0], shape: [2]), axes: [0], sizes: [4], method: "bilinear", antialias: false)
        assertClose(y, [0, 0.25, 0.75, 1])
    }

    func testResizeAntialiasWidensKernel() throws {
        let x = try Tensor([0.0, 1, 2, 3], shape: [4])
        let plain = try resize(x, axes: [0], sizes: [2], method: "linear", antialias: false)
        assertClose(plain, [0.5, 2.5])
        // Triangle of half-width 2 around 0.5 and 2.5: weights (3, 3, 1, 0) / 7 and (0, 1, 3, 3) / 7.
        let aa = try resize(x, axes: [0], sizes: [2], method: "linear", antialias: true)
        assertClose(aa, [5.0 / 7, 16.0 / 7])
    }

    func testResizeNearestKeepsDtype() throws {
        let x = try Tensor([Int32(10), 20, 30, 40], shape: [1, 4])
        let y = try resize(x, axes: [1], sizes: [2], method: "nearest", antialias: true)
        XCTAssertEqual(y.dtype, .int32)
        XCTAssertEqual(try y.array(Int32.self), [20, 40])
        let up = try resize(x, axes: [1], sizes: [8], method: "nearest", antialias: false)
        XCTAssertEqual(try up.array(Int32.self), [10, 10, 20, 20, 30, 30, 40, 40])
    }

    func testResizeKernelsPreserveConstants() throws {
        // Every kernel's weights are normalised, so a constant image stays constant.
        let x = try full([1, 7, 6, 2], value: 3, dtype: .float32)
        for m in ["bilinear", "bicubic", "lanczos3", "lanczos5"] {
            for aa in [false, true] {
                let y = try resize(x, axes: [1, 2], sizes: [3, 11], method: m, antialias: aa)
                XCTAssertEqual(y.shape, [1, 3, 11, 2])
                assertClose(y, [Double](repeating: 3, count: y.count), tol: 1e-5)
            }
        }
    }

    func testScaleAndTranslateShiftsAndZeroesOutside() throws {
        // Scale 1, translation 1: output j samples input j - 1; j = 0 falls outside and is 0.
        let x = try Tensor([1.0, 2, 3, 4], shape: [4])
        let y = try scaleAndTranslate(x, axes: [0], sizes: [4], scales: [1], translations: [1], method: "linear", antialias: true)
        assertClose(y, [0, 1, 2, 3])
        XCTAssertThrowsError(try scaleAndTranslate(x, axes: [0], sizes: [4], scales: [0], translations: [0], method: "linear", antialias: true))
        XCTAssertThrowsError(try scaleAndTranslate(x, axes: [0], sizes: [4], scales: [1], translations: [.nan], method: "cubic", antialias: true))
        XCTAssertThrowsError(try scaleAndTranslate(x, axes: [0], sizes: [4], scales: [1], translations: [0], method: "nearest", antialias: true))
        XCTAssertThrowsError(try scaleAndTranslate(x, axes: [0, 0], sizes: [4, 4], scales: [1, 1], translations: [0, 0], method: "linear", antialias: true))
        // A tiny scale with antialiasing must not overflow the kernel reach.
        let tiny = try scaleAndTranslate(x, axes: [0], sizes: [2], scales: [1e-300], translations: [0.5], method: "lanczos3", antialias: true)
        XCTAssertEqual(tiny.shape, [2])
    }

    func testResampleGradients() throws {
        let x = try f64([2, 5, 4, 3], seed: 1)
        for (m, aa) in [("bicubic", true), ("lanczos3", false), ("bilinear", true), ("nearest", false)] {
            try checkGradient("resize \(m) down", [x]) { try resize($0[0], axes: [1, 2], sizes: [3, 2], method: m, antialias: aa) }
            try checkGradient("resize \(m) up", [x]) { try resize($0[0], axes: [1, 2], sizes: [7, 6], method: m, antialias: aa) }
        }
        try checkGradient("scale_and_translate", [x]) {
            try scaleAndTranslate($0[0], axes: [2, 1], sizes: [5, 4], scales: [1.3, 0.6], translations: [-0.4, 0.7],
                                  method: "lanczos5", antialias: true)
        }
    }

    func testSeparableFilterSamePadding() throws {
        let x = try Tensor([1.0, 2, 3, 4], shape: [4])
        // Odd kernel centred; zero padding at both ends.
        assertClose(try separableFilter(x, axes: [0], taps: [[-1, 0, 1]]), [2, 2, 2, -3])
        // Even kernel: (n - 1) / 2 = 0 taps before, the extra one after (TensorFlow SAME).
        assertClose(try separableFilter(x, axes: [0], taps: [[1, 10]]), [21, 32, 43, 4])
        let g = try gaussianBlur(try full([5, 6], value: 2, dtype: .float64), axes: [0, 1], sizes: [3, 4], sigmas: [0.8, -1.5])
        XCTAssertEqual(g.doubles()[1 * 6 + 1], 2, accuracy: 1e-12)  // interior: normalised taps
        XCTAssertLessThan(g.doubles()[0], 2)  // corner: zero padding
        XCTAssertThrowsError(try gaussianBlur(x, axes: [0], sizes: [0], sigmas: [1]))
        XCTAssertThrowsError(try gaussianBlur(x, axes: [0], sizes: [3], sigmas: [0]))
        XCTAssertThrowsError(try separableFilter(x, axes: [0], taps: [[]]))
        let y = try f64([2, 5, 6, 3], seed: 11)
        try checkGradient("gaussian_blur", [y]) { try gaussianBlur($0[0], axes: [1, 2], sizes: [3, 4], sigmas: [0.7, 1.3]) }
        try checkGradient("separable_filter", [y]) { try separableFilter($0[0], axes: [2, 1], taps: [[1, -2, 0.5], [2, 1]]) }
    }

    func testMapCoordinatesFillModes() throws {
        let x = try Tensor([10.0, 20, 30, 40], shape: [4])
        let c = try Tensor([-2.0, -1, 4, 5, 6, 1.5], shape: [1, 6])
        let expected: [String: [Double]] = [
            "constant": [-1, -1, -1, -1, -1, 30],
            "nearest": [10, 10, 40, 40, 40, 30],
            "wrap": [30, 40, 10, 20, 30, 30],
            "mirror": [30, 20, 30, 20, 10, 30],
            "reflect": [20, 10, 40, 30, 20, 30],
        ]
        for (mode, want) in expected {
            // Order 0 rounds half away from zero: 1.5 -> 2.
            assertClose(try mapCoordinates(x, c, order: 0, mode: mode, fillValue: -1), want)
        }
        // Linear: constant mode blends with the fill value just outside the edge.
        let lin = try mapCoordinates(x, try Tensor([-0.5, 1.25, 3.5], shape: [1, 3]), order: 1, mode: "constant", fillValue: 0)
        assertClose(lin, [5, 22.5, 20])
        let one = try mapCoordinates(try Tensor([7.0], shape: [1]), try Tensor([-3.0, 2], shape: [1, 2]), order: 1, mode: "mirror", fillValue: 0)
        assertClose(one, [7, 7])
    }

    func testMapCoordinatesIntegersRound() throws {
        let x = try Tensor([UInt8(0), 1, 254, 255], shape: [2, 2])
        let c = try Tensor([0.5, 0.5, 0.5, 0.25], shape: [2, 2])
        let y = try mapCoordinates(x, c, order: 1, mode: "nearest", fillValue: 0)
        XCTAssertEqual(y.dtype, .uint8)
        // (0 + 1 + 254 + 255) / 4 = 127.5 -> 128; 0.25 along the columns: 127.25 -> 127.
        XCTAssertEqual(try y.array(UInt8.self), [128, 127])
    }

    func testGridSampleBadInputsThrow() throws {
        let x = try f64([1, 3, 3, 2], seed: 2)
        XCTAssertThrowsError(try gridSample(x, try f64([1, 4, 3], seed: 3), order: 1, mode: "constant", fillValue: 0))
        XCTAssertThrowsError(try gridSample(x, try f64([2, 4, 2], seed: 3), order: 1, mode: "constant", fillValue: 0))
        XCTAssertThrowsError(try gridSample(x, try f64([1, 4, 2], seed: 3), order: 2, mode: "constant", fillValue: 0))
        XCTAssertThrowsError(try gridSample(x, try f64([1, 4, 2], seed: 3), order: 1, mode: "edge", fillValue: 0))
        XCTAssertThrowsError(try mapCoordinates(x, try f64([3, 4], seed: 3), order: 1, mode: "constant", fillValue: 0))
        XCTAssertThrowsError(try gridSample(try Tensor(zeros: [1, 0, 3, 1]), try f64([1, 2, 2], seed: 3), order: 1, mode: "wrap", fillValue: 0))
        // Non-finite and huge coordinates are filled or folded, never a trap.
        let c = try Tensor([Double.nan, 0, .infinity, 1e300, -1e300, -.infinity], shape: [1, 3, 2])
        for mode in ["constant", "nearest", "wrap", "mirror", "reflect"] {
            XCTAssertEqual(try gridSample(x, c, order: 1, mode: mode, fillValue: 0).shape, [1, 3, 2])
        }
    }

    func testGridSampleBroadcastsCoordinatesAndGradient() throws {
        let x = try f64([2, 4, 5, 3], seed: 4)
        let c = try f64([1, 3, 6, 2], seed: 5, lo: -1.3, hi: 5.2)
        let y = try gridSample(x, c, order: 1, mode: "constant", fillValue: 0.5)
        XCTAssertEqual(y.shape, [2, 3, 6, 3])
        for mode in ["constant", "nearest", "wrap", "mirror", "reflect"] {
            for order in [0, 1] {
                try checkGradient("grid_sample \(mode) \(order)", [x]) {
                    try gridSample($0[0], c, order: order, mode: mode, fillValue: 0.5)
                }
            }
        }
        let m = try f64([3, 4, 2], seed: 6)
        try checkGradient("map_coordinates", [m]) {
            try mapCoordinates($0[0], try f64([3, 5], seed: 7, lo: -1, hi: 4), order: 1, mode: "reflect", fillValue: 0)
        }
    }

    func testHalfPrecisionRoundTrips() throws {
        let x = try cast(try f64([1, 6, 6, 1], seed: 8), to: .bfloat16)
        XCTAssertEqual(try resize(x, axes: [1, 2], sizes: [3, 3], method: "bicubic", antialias: true).dtype, .bfloat16)
        XCTAssertEqual(try gridSample(x, try f64([1, 2, 2], seed: 9), order: 1, mode: "constant", fillValue: 0).dtype, .bfloat16)
    }
}
