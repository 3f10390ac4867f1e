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
}

/// Runs `body` over `0..<n` split into contiguous chunks on up to `Threading.numThreads`
/// threads, when the work (n * costPerItem) is worth it. Never call BLAS from `body`.
@inline(__always)
func parallelFor(_ n: Int, cost costPerItem: Int = 1, _ body: (Range<Int>) -> Void) {
    let work = n * Swift.max(costPerItem, 1)
    let threads = Swift.min(Threading.threads, Swift.max(1, work / Threading.grain), n)
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
