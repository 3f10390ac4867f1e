import COpenBLAS

/// C = op(A) @ op(B) per batch with broadcast batch dimensions; A, B of rank >= 2 and one
/// float32/float64 dtype go to OpenBLAS, other numeric dtypes to a row-parallel loop.
func gemm(_ a: Tensor, _ b: Tensor, transA: Bool = false, transB: Bool = false, bias: Tensor? = nil,
          activation: EpilogueActivation? = nil) throws -> Tensor {
    let (m, ka) = transA ? (a.shape[a.rank - 1], a.shape[a.rank - 2]) : (a.shape[a.rank - 2], a.shape[a.rank - 1])
    let (kb, n) = transB ? (b.shape[b.rank - 1], b.shape[b.rank - 2]) : (b.shape[b.rank - 2], b.shape[b.rank - 1])
    guard ka == kb else {
        throw EngineError.value("matmul: inner dimensions do not match: \(a.shape) @ \(b.shape)")
    }
    let k = ka
    let batchA = Array(a.shape.dropLast(2)), batchB = Array(b.shape.dropLast(2))
    let batch = try broadcastShapes(batchA, batchB)
    // BLAS with beta = 0 writes every element; the integer loop accumulates into zeros.
    let blas = (a.dtype == .float32 || a.dtype == .float64) && k > 0
    let out = blas ? try Tensor(empty: batch + [m, n], dtype: a.dtype) : try Tensor(zeros: batch + [m, n], dtype: a.dtype)
    if out.count == 0 { return out }
    let nb = batch.reduce(1, *)
    let sa = broadcastStrides(batchA, to: batch), sb = broadcastStrides(batchB, to: batch)
    let bstrides = contiguousStrides(batch)
    // Matrix offsets (in elements) of each batch entry in A and B.
    var offA = repeatedInts(0, count: nb), offB = repeatedInts(0, count: nb)
    for i in 0..<nb {
        var rem = i, oa = 0, ob = 0
        for d in 0..<batch.count {
            let q = rem / bstrides[d]
            rem %= bstrides[d]
            oa += q * sa[d]
            ob += q * sb[d]
        }
        offA[i] = oa * m * k
        offB[i] = ob * k * n
    }
    let lda = transA ? m : k, ldb = transB ? k : n
    struct B: BLASVisitor {
        let a: Tensor, b: Tensor, out: Tensor, m: Int, n: Int, k: Int, lda: Int, ldb: Int
        let transA: Bool, transB: Bool, shared: Bool, offA: [Int], offB: [Int]
        let bias: Tensor?, activation: EpilogueActivation?
        func visit<T: BLASFloat>(_: T.Type) throws {
            let pa = a.pointer(T.self), pb = b.pointer(T.self), pc = out.pointer(T.self)
            let (m, n, k, lda, ldb, transA, transB, offA, offB) = (m, n, k, lda, ldb, transA, transB, offA, offB)
            let epilogue = activation.map { Epilogue<T>(bias: bias.map { UnsafePointer($0.pointer(T.self)) }, activation: $0) }
            if shared {
                // B shared by every batch entry: one big GEMM over the stacked rows of A.
                T.gemm(transA: false, transB: transB, m: offA.count * m, n: n, k: k, a: pa, lda: lda, b: pb, ldb: ldb,
                       beta: 0, c: pc, ldc: n, epilogue: epilogue)
            } else if m * n * k >= Threading.gemmGrain {
                for i in offA.indices {
                    T.gemm(transA: transA, transB: transB, m: m, n: n, k: k, a: pa + offA[i], lda: lda,
                           b: pb + offB[i], ldb: ldb, beta: 0, c: pc + i * m * n, ldc: n, epilogue: epilogue)
                }
            } else {
                // Small products (attention heads): one thread per run of batch entries.
                parallelFor(offA.count, cost: m * n * k) { r in
                    for i in r {
                        T.product(transA: transA, transB: transB, m: m, n: n, k: k, a: pa + offA[i], lda: lda,
                                  b: pb + offB[i], ldb: ldb, beta: 0, c: pc + i * m * n, ldc: n)
                        epilogue?.apply(pc + i * m * n, rows: m, width: n, ld: n)
                    }
                }
            }
        }
    }
    switch a.dtype {
    case .float32, .float64:
        try dispatchBLAS(a.dtype, B(a: a, b: b, out: out, m: m, n: n, k: k, lda: lda, ldb: ldb, transA: transA,
                                    transB: transB, shared: nb > 1 && batchB.isEmpty && !transA, offA: offA, offB: offB,
                                    bias: bias, activation: activation))
    default:
        struct K: NumericVisitor {
            let a: Tensor, b: Tensor, out: Tensor, m: Int, n: Int, k: Int, transA: Bool, transB: Bool
            let offA: [Int], offB: [Int]
            func visit<T: NumElem>(_: T.Type) throws {
                let pa = a.pointer(T.self), pb = b.pointer(T.self), pc = out.pointer(T.self)
                let (m, n, k, transA, transB) = (self.m, self.n, self.k, self.transA, self.transB)
                let (offA, offB) = (self.offA, self.offB)
                parallelFor(offA.count * m, cost: n * k) { r in
                    for row in r {
                        let bi = row / m, i = row % m
                        let c = pc + bi * m * n + i * n
                        for p in 0..<k {
                            let av = transA ? pa[offA[bi] + p * m + i] : pa[offA[bi] + i * k + p]
                            for j in 0..<n {
                                let bv = transB ? pb[offB[bi] + j * k + p] : pb[offB[bi] + p * n + j]
                                c[j] = T.add(c[j], T.mul(av, bv))
                            }
                        }
                    }
                }
            }
        }
        try dispatchNumeric(a.dtype, K(a: a, b: b, out: out, m: m, n: n, k: k, transA: transA, transB: transB, offA: offA, offB: offB))
    }
    return out
}

/// numpy `matmul`: 1-D operands are promoted to matrices and the added axis removed;
/// batch dimensions broadcast. Differentiable.
public func matmul(_ a0: Tensor, _ b0: Tensor) throws -> Tensor {
    try matmul(a0, b0, bias: nil, activation: .none)
}

/// `activation(matmul(a, b) + bias)` (Epilogue.swift): in the GEMM's blocks where it fits, else
/// as the three ops.
public func matmul(_ a0: Tensor, _ b0: Tensor, bias: Tensor?, activation: EpilogueActivation) throws -> Tensor {
    guard a0.rank > 0, b0.rank > 0 else { throw EngineError.value("matmul does not accept 0-d tensors") }
    var (a, b) = try promote(a0, b0)
    if bias != nil || activation != .none {
        if a.rank >= 2, b.rank >= 2,
           epilogueFits(bias: bias, dtype: a.dtype, channels: b.shape[b.rank - 1], rank: Swift.max(a.rank, b.rank)) {
            let out = try gemm(a, b, bias: bias, activation: activation)
            let (aa, bb) = (a, b)
            recordEpilogue(out, [aa, bb], bias: bias, activation: activation) { g in try matmulVJP(g, aa, bb) }
            return out
        }
        return try epilogueByOps(try matmul(a, b), bias: bias, activation: activation)
    }
    if a.dtype.isComplex { return try complexMatmul(a, b) }
    if a.dtype.isHalf || a.dtype == .bool {
        let r = try matmul(try cast(a, to: a.dtype == .bool ? .int32 : .float32), try cast(b, to: a.dtype == .bool ? .int32 : .float32))
        return try cast(r, to: a.dtype)
    }
    let vecA = a.rank == 1, vecB = b.rank == 1
    if vecA { a = try reshape(a, [1, a.shape[0]]) }
    if vecB { b = try reshape(b, [b.shape[0], 1]) }
    var out = try gemm(a, b)
    if a.dtype.isFloatingPoint {
        let (aa, bb) = (a, b)
        Tape.record(out, [aa, bb]) { g in try matmulVJP(g, aa, bb) }
    }
    if vecA || vecB {
        var s = out.shape
        if vecB { s.removeLast() }
        if vecA { s.remove(at: s.count - (vecB ? 1 : 2)) }
        out = try reshape(out, s)
    }
    return out
}

/// Gradients of a and b (both at least 2-D) for the output gradient g of their product.
private func matmulVJP(_ g: Tensor, _ a: Tensor, _ b: Tensor) throws -> [Tensor?] {
    // Under create_graph the backward pass is itself recorded, so it must go through
    // matmul; otherwise gemm's transpose flags save the transposed copies.
    let (wantA, wantB) = (Tape.needsInputGrad(0), Tape.needsInputGrad(1))
    if Tape.shouldRecord([g, a, b]) {
        return [wantA ? try sumToShape(try matmul(g, try matrixTranspose(b)), a.shape) : nil,
                wantB ? try sumToShape(try matmul(try matrixTranspose(a), g), b.shape) : nil]
    }
    return [wantA ? try sumToShape(try gemm(g, b, transB: true), a.shape) : nil,
            wantB ? try sumToShape(try gemm(a, g, transA: true), b.shape) : nil]
}

let linalgOps: [OpDef] = [
    OpDef("matmul", inputs: ["a", "b", "bias?"], attrs: [epilogueActivationAttr], dtypes: .all,
          doc: "numpy matmul: 1-D operands promoted, batch dims broadcast; float32/float64 through OpenBLAS; "
            + "then activation(y + bias) when given, applied as the output is written where it can be") { t, a in
        try matmul(t[0], t[1], bias: t.count > 2 ? t[2] : nil, activation: a.epilogueActivation())
    },
]

/// float32 / float64 GEMM through OpenBLAS (row-major).
protocol BLASFloat: FloatElem, BinaryFloatingPoint {
    /// One OpenBLAS call (single-threaded: see `Threading`).
    static func blasGEMM(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                         a: UnsafePointer<Self>, lda: Int, b: UnsafePointer<Self>, ldb: Int,
                         beta: Self, c: UnsafeMutablePointer<Self>, ldc: Int)
    /// y = op(A) x + beta y, A (rows x cols) row-major; one OpenBLAS call.
    static func blasGEMV(trans: Bool, rows: Int, cols: Int, a: UnsafePointer<Self>, lda: Int,
                         x: UnsafePointer<Self>, incx: Int, beta: Self, y: UnsafeMutablePointer<Self>, incy: Int)
}

extension BLASFloat {
    /// One product of `gemm`'s blocks: a matrix-vector product where C is one row or one
    /// column. OpenBLAS 0.3.21's GEMM packs the whole matrix operand even then, which was
    /// most of a one-sample Dense layer's time (reading and writing its weights once more).
    static func product(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, a: UnsafePointer<Self>, lda: Int,
                        b: UnsafePointer<Self>, ldb: Int, beta: Self, c: UnsafeMutablePointer<Self>, ldc: Int) {
        guard k > 0, m == 1 || n == 1 else {
            return blasGEMM(transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb,
                            beta: beta, c: c, ldc: ldc)
        }
        // GEMM's beta = 0 never reads C (it may hold anything); say so to GEMV by zeroing it.
        let (len, incy) = m == 1 ? (n, 1) : (m, ldc)
        if beta == 0 { for i in 0..<len { c[i * incy] = 0 } }
        if m == 1 {
            // C (1 x n) = a (1 x k) op(B): op(B)^T a; B is k x n (n x k when transposed).
            blasGEMV(trans: !transB, rows: transB ? n : k, cols: transB ? k : n, a: b, lda: ldb,
                     x: a, incx: transA ? lda : 1, beta: beta, y: c, incy: 1)
        } else {
            // C (m x 1) = op(A) b (k x 1); A is m x k (k x m when transposed).
            blasGEMV(trans: transA, rows: transA ? k : m, cols: transA ? m : k, a: a, lda: lda,
                     x: b, incx: transB ? 1 : ldb, beta: beta, y: c, incy: ldc)
        }
    }

    /// C = op(A) op(B) + beta C on the worker pool: C is cut into blocks of rows (of columns
    /// when it is wider than tall), twice as many as threads, that the threads claim one
    /// by one, so a thread the OS delays holds up one block, not half the product. Each
    /// block packs the other operand again, so blocks stay at least `minBlock` wide.
    /// `epilogue` finishes each block of C as soon as it is written (and so needs beta = 0).
    static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, a: UnsafePointer<Self>, lda: Int,
                     b: UnsafePointer<Self>, ldb: Int, beta: Self, c: UnsafeMutablePointer<Self>, ldc: Int,
                     epilogue: Epilogue<Self>? = nil) {
        let minBlock = 32, byRows = m >= n, extent = byRows ? m : n
        let threads = Swift.min(Threading.threads, extent / minBlock)
        if threads > 1, m * n * Swift.max(k, 1) >= Threading.gemmGrain {
            let blocks = Swift.min(2 * threads, extent / minBlock)
            let size = ((extent + blocks - 1) / blocks + 7) / 8 * 8
            let count = (extent + size - 1) / size
            let ran = WorkerPool.shared.run(count, chunk: 1, workers: threads - 1) { range in
                for block in range {
                    let lo = block * size, len = Swift.min(size, extent - lo)
                    if byRows {
                        product(transA: transA, transB: transB, m: len, n: n, k: k, a: transA ? a + lo : a + lo * lda,
                                 lda: lda, b: b, ldb: ldb, beta: beta, c: c + lo * ldc, ldc: ldc)
                        epilogue?.apply(c + lo * ldc, rows: len, width: n, ld: ldc)
                    } else {
                        product(transA: transA, transB: transB, m: m, n: len, k: k, a: a, lda: lda,
                                 b: transB ? b + lo * ldb : b + lo, ldb: ldb, beta: beta, c: c + lo, ldc: ldc)
                        epilogue?.apply(c + lo, rows: m, width: len, ld: ldc, column: lo)
                    }
                }
            }
            if ran { return }
        }
        product(transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
        epilogue?.apply(c, rows: m, width: n, ld: ldc)
    }
}

extension Float: BLASFloat {
    static func blasGEMM(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int,
                         b: UnsafePointer<Float>, ldb: Int, beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), 1, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }
    static func blasGEMV(trans: Bool, rows: Int, cols: Int, a: UnsafePointer<Float>, lda: Int,
                         x: UnsafePointer<Float>, incx: Int, beta: Float, y: UnsafeMutablePointer<Float>, incy: Int) {
        cblas_sgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, Int32(rows), Int32(cols), 1, a, Int32(lda),
                    x, Int32(incx), beta, y, Int32(incy))
    }
}

extension Double: BLASFloat {
    static func blasGEMM(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, a: UnsafePointer<Double>, lda: Int,
                         b: UnsafePointer<Double>, ldb: Int, beta: Double, c: UnsafeMutablePointer<Double>, ldc: Int) {
        cblas_dgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), 1, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }
    static func blasGEMV(trans: Bool, rows: Int, cols: Int, a: UnsafePointer<Double>, lda: Int,
                         x: UnsafePointer<Double>, incx: Int, beta: Double, y: UnsafeMutablePointer<Double>, incy: Int) {
        cblas_dgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, Int32(rows), Int32(cols), 1, a, Int32(lda),
                    x, Int32(incx), beta, y, Int32(incy))
    }
}

protocol BLASVisitor {
    associatedtype Result
    func visit<T: BLASFloat>(_ t: T.Type) throws -> Result
}

func dispatchBLAS<V: BLASVisitor>(_ dt: DType, _ v: V) throws -> V.Result {
    switch dt {
    case .float32: return try v.visit(Float.self)
    case .float64: return try v.visit(Double.self)
    default: throw EngineError.type("expected float32 or float64, got \(dt)")
    }
}
