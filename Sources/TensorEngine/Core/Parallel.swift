import Dispatch
import COpenBLAS

/// Thread settings shared by our kernels and OpenBLAS: one knob for both.
public enum Threading {
    nonisolated(unsafe) static var threads: Int = defaultThreads()

    static func defaultThreads() -> Int {
        let n = Int(openblas_get_num_threads())
        return Swift.max(1, n)
    }

    /// Number of threads our kernels and OpenBLAS may use.
    public static var numThreads: Int {
        get { threads }
        set {
            threads = Swift.max(1, newValue)
            openblas_set_num_threads(Int32(threads))
        }
    }

    /// Elementwise work below this many elements stays on the calling thread.
    public static let grain = 1 << 15

    /// The same for streaming loops (`parallelFor(streaming: true)`): about one load and one
    /// store per element (copies, casts, comparisons, add). They are bound by memory
    /// bandwidth, and a second thread made them slower while the operands fit in the
    /// last-level cache (1M int32 `equal` on 2 cores: 130 µs on one thread, 170 µs on two)
    /// and faster beyond it (4M: 1.7 ms on one, 1.2 ms on two).
    public static let streamingGrain = 1 << 21
}

/// Runs `body` over `0..<n` split into contiguous chunks on up to `Threading.numThreads`
/// threads, when the work (n * costPerItem) is worth it. Never call BLAS from `body`.
@inline(__always)
func parallelFor(_ n: Int, cost costPerItem: Int = 1, streaming: Bool = false, _ body: (Range<Int>) -> Void) {
    let work = n * Swift.max(costPerItem, 1)
    let grain = streaming ? Threading.streamingGrain : Threading.grain
    let threads = Swift.min(Threading.threads, Swift.max(1, work / grain), n)
    if threads <= 1 {
        if n > 0 { body(0..<n) }
        return
    }
    let chunk = (n + threads - 1) / threads
    withoutActuallyEscaping(body) { b in
        DispatchQueue.concurrentPerform(iterations: threads) { t in
            let lo = t * chunk
            let hi = Swift.min(n, lo + chunk)
            if lo < hi { b(lo..<hi) }
        }
    }
}
