import COpenBLAS
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Thread settings: one pool (`WorkerPool`) runs every parallel kernel, GEMM included.
/// OpenBLAS itself runs on the calling thread only: its own threads spin between calls and
/// split each product statically in halves, so on a small or shared machine they fought our
/// pool for the cores (a compiled convnet predict step took 26 ms on 2 threads against
/// 13 ms CPU on one; 11.8k context switches against 354 for 40 steps). GEMMs are cut into
/// blocks that the pool's threads claim instead (`BLASFloat.gemm`).
public enum Threading {
    nonisolated(unsafe) static var threads: Int = defaultThreads()

    /// OpenBLAS's own count (from OPENBLAS_NUM_THREADS, OMP_NUM_THREADS or the CPUs) becomes
    /// ours; OpenBLAS is then held to one thread.
    static func defaultThreads() -> Int {
        let n = Int(openblas_get_num_threads())
        openblas_set_num_threads(1)
        return Swift.max(1, n)
    }

    /// Number of threads our kernels (GEMM included) may use.
    public static var numThreads: Int {
        get { threads }
        set { threads = Swift.max(1, newValue) }
    }

    /// Multiply-adds below which a GEMM stays on the calling thread.
    static let gemmGrain = 1 << 18

    /// Elementwise work below this many elements stays on the calling thread.
    public static let grain = 1 << 15

    /// The same for streaming loops (`parallelFor(streaming: true)`): about one load and one
    /// store per element (copies, casts, comparisons, add). With libdispatch's pool a second
    /// thread only paid off beyond the last-level cache (grain 2^21); with `WorkerPool`'s
    /// spinning worker it halves 1M int32 `equal` in cache too (97 µs -> 49 µs).
    public static let streamingGrain = 1 << 18
}

/// Runs `body` over `0..<n` split into contiguous chunks on up to `Threading.numThreads`
/// threads, when the work (n * costPerItem) is worth it. A `body` calling GEMM runs it on
/// its own thread (the pool is taken).
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
    if !WorkerPool.shared.run(n, chunk: chunk, workers: threads - 1, body) {
        // The pool is taken (a nested parallelFor, or a second caller thread): run here.
        body(0..<n)
    }
}

/// Runs tasks 0..<n, each claimed by whichever thread is free (so a thread the OS delays holds
/// up one task, not a share), for work split into tasks that each run start to end on one
/// thread with their own scratch: `body` gets the tasks of one claim and allocates its
/// scratch for them. Inline when one thread would do or the pool is taken. The first error
/// a claim throws is rethrown here once every claim has ended.
func forEachTask(_ n: Int, _ body: (Range<Int>) throws -> Void) throws {
    guard n > 0 else { return }
    let failure = Mutex<(any Error)?>(nil)
    func run(_ r: Range<Int>) {
        do { try body(r) } catch { failure.withLock { if $0 == nil { $0 = error } } }
    }
    let threads = Swift.min(Threading.threads, n)
    if threads <= 1 || !WorkerPool.shared.run(n, chunk: 1, workers: threads - 1, run) { run(0..<n) }
    if let error = failure.withLock({ $0 }) { throw error }
}

/// The threads behind `parallelFor`. A worker that finishes a job spins (yielding its core)
/// for `spinNanoseconds` before it sleeps, so the next job, usually a few microseconds of
/// Python later, finds it awake. libdispatch's `concurrentPerform` woke its worker too late
/// for jobs under ~100 µs: 1M int32 `equal` took 97 µs on 2 threads as on 1; with a spinning
/// worker, 49 µs. Chunks are claimed, not assigned, so a worker that is slow to wake costs
/// nothing: the caller takes its chunk. One job at a time; `run` returns false while busy.
final class WorkerPool: @unchecked Sendable {
    static let shared = WorkerPool()
    static let spinNanoseconds: UInt64 = 100_000

    /// generation (bits 32...) | chunk count (bits 16..<32) | next unclaimed chunk (bits 0..<16).
    /// One word, so a claim of a finished job's chunk can never succeed.
    private let ticket = Atomic<UInt64>(0)
    private let pending = Atomic<Int>(0)
    private let taken = Atomic<Bool>(false)
    private let sleepers = Atomic<Int>(0)
    private let started = Mutex<Int>(0)
    // The job, written before its generation is published and read only after a claim.
    private nonisolated(unsafe) var body: ((Range<Int>) -> Void)?
    private nonisolated(unsafe) var count = 0, chunk = 0
    private let lock: UnsafeMutablePointer<pthread_mutex_t>
    private let wake: UnsafeMutablePointer<pthread_cond_t>

    private init() {
        lock = .allocate(capacity: 1)
        wake = .allocate(capacity: 1)
        pthread_mutex_init(lock, nil)
        pthread_cond_init(wake, nil)
    }

    /// Runs `body` over `0..<n` in chunks of `chunk` on the calling thread and up to
    /// `workers` pool threads; false (nothing run) when another job holds the pool.
    func run(_ n: Int, chunk: Int, workers: Int, _ body: (Range<Int>) -> Void) -> Bool {
        guard taken.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            return false
        }
        defer { taken.store(false, ordering: .releasing) }
        let chunks = (n + chunk - 1) / chunk
        guard chunks < 1 << 16 else { return false }
        startWorkers(workers)
        withoutActuallyEscaping(body) { b in
            self.body = b
            self.count = n
            self.chunk = chunk
            pending.store(chunks, ordering: .relaxed)
            let generation = (ticket.load(ordering: .relaxed) >> 32) &+ 1
            ticket.store(generation << 32 | UInt64(chunks) << 16, ordering: .sequentiallyConsistent)
            // A try: a worker holding the lock is between its check of the ticket and its
            // wait, and misses at most this job, which the caller then runs alone. A lock
            // held across fork() can stall nothing either.
            if sleepers.load(ordering: .sequentiallyConsistent) > 0, pthread_mutex_trylock(lock) == 0 {
                pthread_cond_broadcast(wake)
                pthread_mutex_unlock(lock)
            }
            while claimAndRun(generation) {}
            // Chunks other threads claimed are running: their end is near.
            while pending.load(ordering: .acquiring) > 0 { sched_yield() }
            self.body = nil
        }
        return true
    }

    /// Claims one chunk of job `generation` and runs it; false when none is left.
    private func claimAndRun(_ generation: UInt64) -> Bool {
        var t = ticket.load(ordering: .acquiring)
        while true {
            let next = t & 0xffff, chunks = (t >> 16) & 0xffff
            guard t >> 32 == generation, next < chunks else { return false }
            let (done, seen) = ticket.compareExchange(expected: t, desired: t + 1, ordering: .acquiringAndReleasing)
            if done { break }
            t = seen
        }
        runChunk(Int(t & 0xffff))
        pending.subtract(1, ordering: .releasing)
        return true
    }

    // Its own frame, so the worker's copy of the closure is gone before `pending` drops and
    // `withoutActuallyEscaping` checks that nothing kept it.
    @inline(never)
    private func runChunk(_ c: Int) {
        let lo = c * chunk
        body!(lo..<Swift.min(count, lo + chunk))
    }

    private func startWorkers(_ n: Int) {
        started.withLock { have in
            while have < n {
                #if canImport(Glibc)
                var tid = pthread_t()
                #else
                var tid: pthread_t? = nil
                #endif
                let arg = Unmanaged.passUnretained(self).toOpaque()
                guard pthread_create(&tid, nil, { arg in
                    Unmanaged<WorkerPool>.fromOpaque(arg!).takeUnretainedValue().work()
                    return nil
                }, arg) == 0 else { return }  // no thread: the caller runs its chunks
                pthread_detach(tid)
                have += 1
            }
        }
    }

    private func work() -> Never {
        var seen = ticket.load(ordering: .acquiring) >> 32
        while true {
            let start = monotonicNanoseconds()
            while ticket.load(ordering: .acquiring) >> 32 == seen {
                if monotonicNanoseconds() &- start < Self.spinNanoseconds {
                    sched_yield()
                    continue
                }
                pthread_mutex_lock(lock)
                sleepers.add(1, ordering: .sequentiallyConsistent)
                while ticket.load(ordering: .sequentiallyConsistent) >> 32 == seen { pthread_cond_wait(wake, lock) }
                sleepers.subtract(1, ordering: .relaxed)
                pthread_mutex_unlock(lock)
            }
            seen = ticket.load(ordering: .acquiring) >> 32
            while claimAndRun(seen) {}
        }
    }
}

private func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}
