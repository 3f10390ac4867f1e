import COpenBLAS

/// C = op(A) @ op(B) per batch with broadcast batch dimensions; A, B of rank >= 2 and one
/// float32/float64 dtype go to OpenBLAS, other numeric dtypes to a row-parallel loop.
func gemm(_ a: Tensor, _ b: Tensor, transA: Bool = false, transB: Bool = false) throws -> Tensor {
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
    let ta = transA ? CblasTrans : CblasNoTrans, tb = transB ? CblasTrans : CblasNoTrans
    switch a.dtype {
    case .float32:
        let pa = a.pointer(Float.self), pb = b.pointer(Float.self), pc = out.pointer(Float.self)
        if nb > 1 && batchB.isEmpty && !transA {
            // B shared by every batch entry: one big GEMM over the stacked rows of A.
            cblas_sgemm(CblasRowMajor, ta, tb, Int32(nb * m), Int32(n), Int32(k), 1, pa, Int32(lda), pb, Int32(ldb), 0, pc, Int32(n))
        } else {
            for i in 0..<nb {
                cblas_sgemm(CblasRowMajor, ta, tb, Int32(m), Int32(n), Int32(k), 1, pa + offA[i], Int32(lda),
                            pb + offB[i], Int32(ldb), 0, pc + i * m * n, Int32(n))
            }
        }
    case .float64:
        let pa = a.pointer(Double.self), pb = b.pointer(Double.self), pc = out.pointer(Double.self)
        for i in 0..<nb {
            cblas_dgemm(CblasRowMajor, ta, tb, Int32(m), Int32(n), Int32(k), 1, pa + offA[i], Int32(lda),
                        pb + offB[i], Int32(ldb), 0, pc + i * m * n, Int32(n))
        }
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
    guard a0.rank > 0, b0.rank > 0 else { throw EngineError.value("matmul does not accept 0-d tensors") }
    var (a, b) = try promote(a0, b0)
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
        Tape.record(out, [aa, bb]) { g in
            // Under create_graph the backward pass is itself recorded, so it must go through
            // matmul; otherwise gemm's transpose flags save the transposed copies.
            if Tape.shouldRecord([g, aa, bb]) {
                return [try sumToShape(try matmul(g, try matrixTranspose(bb)), aa.shape),
                        try sumToShape(try matmul(try matrixTranspose(aa), g), bb.shape)]
            }
            return [try sumToShape(try gemm(g, bb, transB: true), aa.shape), try sumToShape(try gemm(aa, g, transA: true), bb.shape)]
        }
    }
    if vecA || vecB {
        var s = out.shape
        if vecB { s.removeLast() }
        if vecA { s.remove(at: s.count - (vecB ? 1 : 2)) }
        out = try reshape(out, s)
    }
    return out
}

let linalgOps: [OpDef] = [
    OpDef("matmul", inputs: ["a", "b"], dtypes: .all,
          doc: "numpy matmul: 1-D operands promoted, batch dims broadcast; float32/float64 through OpenBLAS") { t, _ in
        try matmul(t[0], t[1])
    },
]

/// float32 / float64 GEMM through OpenBLAS (row-major).
protocol BLASFloat: FloatElem, BinaryFloatingPoint {
    static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                     a: UnsafePointer<Self>, lda: Int, b: UnsafePointer<Self>, ldb: Int,
                     beta: Self, c: UnsafeMutablePointer<Self>, ldc: Int)
}

extension Float: BLASFloat {
    static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int,
                     b: UnsafePointer<Float>, ldb: Int, beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), 1, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }
}

extension Double: BLASFloat {
    static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, a: UnsafePointer<Double>, lda: Int,
                     b: UnsafePointer<Double>, ldb: Int, beta: Double, c: UnsafeMutablePointer<Double>, ldc: Int) {
        cblas_dgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), 1, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
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
