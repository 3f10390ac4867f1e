import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reference-counted, 64-byte-aligned bytes, recycled through `BufferPool`, or memory the
/// engine borrows from its caller (`init(external:)`).
public final class Storage {
    public let pointer: UnsafeMutableRawPointer
    public let byteCount: Int
    private let capacity: Int
    /// Hands borrowed memory back to its owner (DLPack's deleter, a Python reference) in
    /// place of the pool. Such memory may be shared with the caller: no kernel may write
    /// into storage it did not allocate for its own output, and code that ever reuses an
    /// input's buffer in place must check `isExternal` first.
    private let releaseExternal: (() -> Void)?

    /// Whether the bytes belong to someone else (see `releaseExternal`).
    public var isExternal: Bool { releaseExternal != nil }

    convenience init(byteCount: Int, zeroed: Bool = true) throws {
        let (ptr, cap) = try Storage.buffer(byteCount)
        if zeroed { memset(ptr, 0, byteCount) }
        self.init(adopting: ptr, byteCount: byteCount, capacity: cap)
    }

    /// Takes over a buffer from `buffer(_:)`; it returns to the pool with this storage.
    init(adopting pointer: UnsafeMutableRawPointer, byteCount: Int, capacity: Int) {
        self.pointer = pointer
        self.byteCount = byteCount
        self.capacity = capacity
        self.releaseExternal = nil
    }

    /// Borrows `byteCount` bytes at `pointer` (64-byte aligned, as kernels and C callers of
    /// `te_tensor_data` expect of any storage) until the last tensor on them goes, then
    /// calls `release`, on whichever thread drops that tensor.
    init(external pointer: UnsafeMutableRawPointer, byteCount: Int, release: @escaping () -> Void) throws {
        guard Int(bitPattern: pointer) % 64 == 0 else {
            throw EngineError.value("external memory at \(pointer) is not 64-byte aligned")
        }
        self.pointer = pointer
        self.byteCount = byteCount
        self.capacity = 0
        self.releaseExternal = release
    }

    /// A pooled buffer of at least `byteCount` bytes and its capacity (for `release`).
    static func buffer(_ byteCount: Int) throws -> (UnsafeMutableRawPointer, Int) {
        guard byteCount <= maxTensorBytes else {
            throw EngineError.value("cannot allocate \(byteCount) bytes (limit \(maxTensorBytes))")
        }
        return try BufferPool.shared.allocate(byteCount)
    }

    deinit {
        if let releaseExternal {
            releaseExternal()
        } else {
            BufferPool.shared.release(pointer, capacity)
        }
    }
}

/// A size-bucketed cache of freed buffers. Training allocates the same shapes every step;
/// reusing their pages avoids an mmap, page faults and kernel zeroing per op. Buckets are
/// four per power of two (at most 25% slack); the cache holds at most `limit` bytes.
final class BufferPool {
    static let shared = BufferPool()
    /// Free buffers by `slot(ofCapacity:)`: an array index, not a dictionary key, because
    /// hashing the size cost a measurable part of a small op.
    /// Only touched with `lock` held, which already makes accesses exclusive; the dynamic
    /// exclusivity checks cost every allocation.
    @exclusivity(unchecked) private var free = [[UnsafeMutableRawPointer]](repeating: [], count: 8 * (Int.bitWidth + 1))
    @exclusivity(unchecked) private var cached = 0
    private let limit: Int
    private let lock: UnsafeMutablePointer<pthread_mutex_t>

    private init() {
        lock = .allocate(capacity: 1)
        pthread_mutex_init(lock, nil)
        limit = Swift.min(1 << 30, maxTensorBytes / 8)
        // fork() copies only the calling thread: a pool lock held by another thread at that
        // moment would stay locked forever in the child (Keras's multiprocessing data
        // workers fork a process that has been running ops). Hold it across fork, and let
        // the child run kernels on its one thread, as libdispatch's pool does not survive fork.
        pthread_atfork(
            { pthread_mutex_lock(BufferPool.shared.lock) },
            { pthread_mutex_unlock(BufferPool.shared.lock) },
            {
                pthread_mutex_unlock(BufferPool.shared.lock)
                Threading.threads = 1
            })
    }

    /// Bucket capacity for a request: 64 bytes minimum, then 4 steps per octave.
    static func bucket(_ n: Int) -> Int {
        if n <= 64 { return 64 }
        let shift = octave(n).stepShift
        return ((n + (1 << shift) - 1) >> shift) << shift
    }

    /// The octave of `n` (2^top >= n) and the log2 of its bucket step: an eighth of 2^top, at
    /// least 64. Shifts, not divisions: every op allocates and frees through here.
    private static func octave(_ n: Int) -> (top: Int, stepShift: Int) {
        let top = Int.bitWidth - (n - 1).leadingZeroBitCount
        return (top, Swift.max(6, top - 3))
    }

    /// A distinct small index per bucket capacity: the octave, then the step within it
    /// (a capacity rounds up to at most 2^top, so it lies in the octave of its requests).
    private static func slot(ofCapacity cap: Int) -> Int {
        let (top, shift) = octave(cap)
        return top * 8 + (cap >> shift) - 1
    }

    func allocate(_ n: Int) throws -> (UnsafeMutableRawPointer, Int) {
        let cap = BufferPool.bucket(n), slot = BufferPool.slot(ofCapacity: cap)
        pthread_mutex_lock(lock)
        if let p = free[slot].popLast() {
            cached -= cap
            pthread_mutex_unlock(lock)
            return (p, cap)
        }
        pthread_mutex_unlock(lock)
        var p: UnsafeMutableRawPointer? = nil
        // Buffers of 4 MB and up are 2 MB aligned and ask for transparent huge pages, as
        // numpy's do: over 4 KB pages a 1M-element op walks more pages than the TLB holds.
        let huge = cap >= hugePageMinimum
        guard posix_memalign(&p, huge ? 1 << 21 : 64, cap) == 0, let ptr = p else {
            throw EngineError.value("cannot allocate \(n) bytes")
        }
        #if os(Linux)
        if huge { _ = madvise(ptr, cap, 14) }  // MADV_HUGEPAGE; advice only, failure is harmless
        #endif
        return (ptr, cap)
    }

    func release(_ p: UnsafeMutableRawPointer, _ cap: Int) {
        pthread_mutex_lock(lock)
        if cached + cap <= limit {
            free[BufferPool.slot(ofCapacity: cap)].append(p)
            cached += cap
            pthread_mutex_unlock(lock)
            return
        }
        pthread_mutex_unlock(lock)
        Glibc.free(p)
    }

    /// Returns every cached buffer to the system.
    func trim() {
        pthread_mutex_lock(lock)
        let all = free.flatMap { $0 }
        free = free.map { _ in [] }
        cached = 0
        pthread_mutex_unlock(lock)
        for p in all { Glibc.free(p) }
    }

    var cachedBytes: Int {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        return cached
    }
}

/// Smallest buffer that asks for transparent huge pages (numpy's threshold).
let hugePageMinimum = 1 << 22

/// Largest tensor the engine agrees to allocate: the machine's physical memory (at most
/// 1 TiB). Beyond it a caller gets a ValueError instead of an out-of-memory kill, since
/// Linux overcommit would otherwise accept the allocation and kill the process later.
public let maxTensorBytes: Int = {
    let pages = sysconf(Int32(_SC_PHYS_PAGES)), size = sysconf(Int32(_SC_PAGESIZE))
    guard pages > 0, size > 0 else { return 1 << 40 }
    let (bytes, o) = pages.multipliedReportingOverflow(by: size)
    return o ? 1 << 40 : Swift.min(bytes, 1 << 40)
}()

/// Number of elements of `shape`, validated: no negative dimension, no overflow, at most
/// as many elements as physical memory has bytes.
public func elementCount(_ shape: [Int]) throws -> Int {
    try SizeCheck("shape").count(shape)
}

/// How a deferred tensor reads its source: the source's own row-major layout with the axes
/// permuted (a transpose of a dense tensor, which keeps the op's permutation array rather than
/// building a strides array per call), or explicit element strides.
enum DeferredLayout {
    case permuted([Int])
    case strided([Int])

    /// The element strides with which `source` is read.
    func strides(of source: Tensor) -> [Int] {
        switch self {
        case .strided(let s):
            return s
        case .permuted(let perm):
            let rowMajor = contiguousStrides(source.shape)
            return perm.map { rowMajor[$0] }
        }
    }
}

/// A dense, contiguous, row-major tensor with a runtime dtype. Immutable once built by an op;
/// reshape shares storage. `requiresGrad` marks an autodiff leaf.
public final class Tensor {
    private enum Backing {
        case dense(Storage)
        /// A strided read of another tensor whose copy into contiguous storage waits for the
        /// first reader. Transpose returns one, so that a permutation costs O(1) until its
        /// bytes are needed (as numpy's transposed views do), while every kernel still sees
        /// contiguous row-major memory. The destination `buffer` comes from the pool up front
        /// (capacity `BufferPool.bucket(nbytes)`), so reading it later cannot fail.
        case deferred(layout: DeferredLayout, offset: Int, buffer: UnsafeMutableRawPointer)
    }
    /// A deferred tensor's source until the copy, then its storage. Inline rather than in an
    /// object of its own, so a transpose allocates one object; the mutex too is inline.
    private enum DeferredState {
        case dense
        case pending(source: Tensor)
        case copied(Storage)
    }
    /// A var only so `hasUniqueStorage` can set it aside for a moment, which it does while
    /// its caller holds the only reference to the tensor: no access can overlap that one,
    /// and the dynamic exclusivity checks would cost every read of `storage`.
    @exclusivity(unchecked) private var backing: Backing
    private let deferred: Mutex<DeferredState>
    public let shape: [Int]
    public let dtype: DType
    public let count: Int
    /// Set by `Tape` on tensors produced by a recorded op.
    var node: TapeNode?
    public var requiresGrad: Bool = false {
        didSet { Tracer.requiresGradSet(self, requiresGrad) }
    }

    /// The tensor's bytes, contiguous and row-major (a deferred copy happens here).
    public var storage: Storage {
        switch backing {
        case .dense(let s): return s
        case .deferred(let layout, let offset, let buffer): return materialize(layout, offset, buffer)
        }
    }

    init(storage: Storage, shape: [Int], dtype: DType, count: Int) {
        backing = .dense(storage)
        deferred = Mutex(.dense)
        self.shape = shape
        self.dtype = dtype
        self.count = count
    }

    /// `source` read through `layout` from `offset` as a tensor of `shape` (`count` elements,
    /// no more than `source` holds), copied on first use.
    init(deferring source: Tensor, shape: [Int], count: Int, layout: DeferredLayout, offset: Int) throws {
        let (buffer, _) = try Storage.buffer(count * source.dtype.itemSize)
        backing = .deferred(layout: layout, offset: offset, buffer: buffer)
        deferred = Mutex(.pending(source: source))
        self.shape = shape
        self.dtype = source.dtype
        self.count = count
    }

    deinit {
        guard case .deferred(_, _, let buffer) = backing else { return }
        // Only asks which case holds: copying the state out would retain and release its payload.
        let pending = deferred.withLock { if case .pending = $0 { true } else { false } }
        if pending { BufferPool.shared.release(buffer, BufferPool.bucket(nbytes)) }
    }

    /// The copied bytes of a deferred tensor; the first call copies and lets go of the source.
    private func materialize(_ layout: DeferredLayout, _ offset: Int, _ buffer: UnsafeMutableRawPointer) -> Storage {
        deferred.withLock { state in
            switch state {
            case .copied(let out):
                return out
            case .pending(let src):
                gatherStrided(from: src.rawPointer, into: buffer, itemSize: dtype.itemSize, shape: shape,
                              strides: layout.strides(of: src), offset: offset)
                let out = Storage(adopting: buffer, byteCount: nbytes, capacity: BufferPool.bucket(nbytes))
                state = .copied(out)
                return out
            case .dense:
                preconditionFailure("a deferred tensor has no deferred state")
            }
        }
    }

    /// What a strided view of this tensor can read instead of it: the source of a copy still
    /// pending with its strides and offset, or the tensor itself (nil strides: contiguous).
    var viewBase: (tensor: Tensor, strides: [Int]?, offset: Int) {
        if case .deferred(let layout, let offset, _) = backing,
           let src = deferred.withLock({ state -> Tensor? in
               if case .pending(let src) = state { return src }
               return nil
           }) {
            return (src, layout.strides(of: src), offset)
        }
        return (self, nil, 0)
    }

    /// A zero-filled tensor.
    public convenience init(zeros shape: [Int], dtype: DType = .float32) throws {
        try self.init(shape: shape, dtype: dtype, zeroed: true)
    }

    /// An uninitialised tensor, for kernels that write every element.
    convenience init(empty shape: [Int], dtype: DType) throws {
        try self.init(shape: shape, dtype: dtype, zeroed: false)
    }

    private convenience init(shape: [Int], dtype: DType, zeroed: Bool) throws {
        let n = try SizeCheck("allocation of \(dtype)").count(shape, itemSize: dtype.itemSize)
        self.init(storage: try Storage(byteCount: n * dtype.itemSize, zeroed: zeroed), shape: shape, dtype: dtype, count: n)
    }

    /// Copies `bytes` of host memory laid out row-major (zeros when `bytes` is nil).
    public convenience init(bytes: UnsafeRawPointer?, byteCount: Int, shape: [Int], dtype: DType) throws {
        try self.init(shape: shape, dtype: dtype, zeroed: bytes == nil)
        if let src = bytes {
            guard byteCount == nbytes else {
                throw EngineError.value("expected \(nbytes) bytes for shape \(shape) of \(dtype), got \(byteCount)")
            }
            storage.pointer.copyMemory(from: src, byteCount: byteCount)
        }
    }

    /// A tensor over host memory it does not own, without a copy (DLPack and buffers coming
    /// in): `release` runs once the last tensor sharing it is gone. The memory must stay
    /// valid and unchanged until then; the engine only reads it.
    public convenience init(wrapping pointer: UnsafeRawPointer, byteCount: Int, shape: [Int], dtype: DType,
                            release: @escaping () -> Void) throws {
        let n = try SizeCheck("wrapped \(dtype) memory").count(shape, itemSize: dtype.itemSize)
        guard n * dtype.itemSize == byteCount else {
            throw EngineError.value("expected \(n * dtype.itemSize) bytes for shape \(shape) of \(dtype), got \(byteCount)")
        }
        let storage = try Storage(external: UnsafeMutableRawPointer(mutating: pointer), byteCount: byteCount,
                                  release: release)
        self.init(storage: storage, shape: shape, dtype: dtype, count: n)
    }

    /// Whether this tensor's bytes are borrowed from outside the engine (`init(wrapping:)`).
    public var isExternal: Bool {
        if case .dense(let s) = backing { return s.isExternal }
        return false
    }

    /// Whether this tensor's bytes may be overwritten without anyone seeing: dense (not a
    /// deferred copy), not borrowed, and its storage held by this tensor alone (no reshape or
    /// alias shares it). The caller holds the only reference to the tensor itself (checked
    /// with `isKnownUniquelyReferenced`), so no other thread reads `backing` meanwhile.
    func hasUniqueStorage() -> Bool {
        guard case .dense(var s) = backing, !s.isExternal else { return false }
        // The storage counted once, by `s`: the tensor's own reference is set aside.
        backing = .dense(Tensor.placeholderStorage)
        let unique = isKnownUniquelyReferenced(&s)
        backing = .dense(s)
        return unique
    }

    /// Stands in for a storage while `hasUniqueStorage` counts its references; never freed.
    private static let placeholderStorage = Storage(
        adopting: UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64), byteCount: 0, capacity: 64)

    /// An op's output buffer: the storage of `candidate` where a compiled program's runner
    /// offered it (an input dead after this op that nothing else can see, `BufferReuse`) and
    /// it has this shape and dtype, else a new uninitialised tensor. Only for an op whose
    /// schema declares the output may be written over that input (`InPlace`), and only at the
    /// point where it allocates that output, never for scratch.
    @inline(__always)
    static func output(shape: [Int], dtype: DType, reusing candidate: Tensor) throws -> Tensor {
        if let t = BufferReuse.claim(candidate, shape, dtype) { return t }
        return try Tensor(empty: shape, dtype: dtype)
    }

    /// `output(shape:dtype:reusing:)` that may take either of two inputs' buffers.
    @inline(__always)
    static func output(shape: [Int], dtype: DType, reusing a: Tensor, _ b: Tensor) throws -> Tensor {
        if let t = BufferReuse.claim(a, shape, dtype) ?? BufferReuse.claim(b, shape, dtype) { return t }
        return try Tensor(empty: shape, dtype: dtype)
    }

    /// A tensor holding `values` with the given shape (default: 1-D).
    public convenience init<T: TensorElement>(_ values: [T], shape: [Int]? = nil) throws {
        let s = shape ?? [values.count]
        try self.init(zeros: s, dtype: T.dtype)
        guard count == values.count else {
            throw EngineError.value("\(values.count) values do not fill shape \(s)")
        }
        values.withUnsafeBytes { storage.pointer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    }

    /// A 0-d tensor.
    public convenience init<T: TensorElement>(scalar: T) throws {
        try self.init([scalar], shape: [])
    }

    /// A tensor sharing this one's storage with another shape of the same element count.
    func sharing(shape newShape: [Int]) -> Tensor {
        Tensor(storage: storage, shape: newShape, dtype: dtype, count: count)
    }

    public var rank: Int { shape.count }
    public var nbytes: Int { count * dtype.itemSize }
    public var rawPointer: UnsafeMutableRawPointer { storage.pointer }

    @inline(__always)
    func pointer<T>(_: T.Type) -> UnsafeMutablePointer<T> {
        storage.pointer.assumingMemoryBound(to: T.self)
    }

    /// The elements as a Swift array (must be the tensor's own element type).
    public func array<T: TensorElement>(_: T.Type = T.self) throws -> [T] {
        guard T.dtype == dtype else {
            throw EngineError.type("tensor holds \(dtype), not \(T.dtype)")
        }
        return Array(UnsafeBufferPointer(start: pointer(T.self), count: count))
    }

    /// Every element converted to Double, whatever the dtype.
    public func doubles() -> [Double] {
        var out = [Double](repeating: 0, count: count)
        withElementPointer { p, conv in for i in 0..<count { out[i] = conv(p, i) } }
        return out
    }

    /// Element `i` (row-major) as Double.
    public func double(at i: Int) throws -> Double {
        guard i >= 0 && i < count else { throw EngineError.index("index \(i) out of range for \(count) elements") }
        var v = 0.0
        withElementPointer { p, conv in v = conv(p, i) }
        return v
    }

    private func withElementPointer(_ body: (UnsafeMutableRawPointer, (UnsafeMutableRawPointer, Int) -> Double) -> Void) {
        let p = storage.pointer
        func read<T: TensorElement>(_: T.Type) -> (UnsafeMutableRawPointer, Int) -> Double {
            { $0.assumingMemoryBound(to: T.self)[$1].doubleValue }
        }
        switch dtype {
        case .bool: body(p, read(Bool.self))
        case .int8: body(p, read(Int8.self))
        case .int16: body(p, read(Int16.self))
        case .int32: body(p, read(Int32.self))
        case .int64: body(p, read(Int64.self))
        case .uint8: body(p, read(UInt8.self))
        case .uint16: body(p, read(UInt16.self))
        case .uint32: body(p, read(UInt32.self))
        case .uint64: body(p, read(UInt64.self))
        case .float16: body(p, read(Float16.self))
        case .bfloat16: body(p, read(BFloat16.self))
        case .float8_e4m3fn: body(p, read(Float8E4M3FN.self))
        case .float8_e5m2: body(p, read(Float8E5M2.self))
        case .float32: body(p, read(Float.self))
        case .float64: body(p, read(Double.self))
        case .complex64: body(p, read(Complex<Float>.self))
        case .complex128: body(p, read(Complex<Double>.self))
        }
    }
}

/// The inputs whose buffers the op running on this thread may write its outputs over: set by
/// a compiled program's runner around one op node (Program.swift) after checking that no one
/// else can see them, empty everywhere else. Per thread, in `TapeState`, which every op
/// already fetches.
enum BufferReuse {
    /// Offers `tensors` to the op about to run on this thread.
    static func offer(_ tensors: [Tensor]) {
        currentTapeState().reusable = tensors
    }

    /// Withdraws whatever the op did not take.
    static func clear() {
        let s = currentTapeState()
        if !s.reusable.isEmpty { s.reusable.removeAll() }
    }

    /// Runs `body` (ops an op runs on its own inputs, one by one) with nothing offered:
    /// there an input still has readers after the inner op that would overwrite it.
    static func withheld<R>(_ body: () throws -> R) rethrows -> R {
        let s = currentTapeState()
        guard !s.reusable.isEmpty else { return try body() }
        let saved = s.reusable
        s.reusable = []
        defer { s.reusable = saved }
        return try body()
    }

    /// A new tensor on `candidate`'s storage if it was offered and has this shape and dtype;
    /// it is then withdrawn, so no second output takes it.
    @inline(__always)
    static func claim(_ candidate: Tensor, _ shape: [Int], _ dtype: DType) -> Tensor? {
        let s = currentTapeState()
        guard !s.reusable.isEmpty, candidate.dtype == dtype, candidate.shape == shape,
              let k = s.reusable.firstIndex(where: { $0 === candidate }) else { return nil }
        s.reusable.remove(at: k)
        return Tensor(storage: candidate.storage, shape: shape, dtype: dtype, count: candidate.count)
    }
}

extension Tensor: CustomStringConvertible {
    public var description: String {
        let vals = doubles().prefix(8).map { "\($0)" }.joined(separator: ", ")
        return "Tensor(shape: \(shape), dtype: \(dtype), values: [\(vals)\(count > 8 ? ", ..." : "")])"
    }
}
