import COpenBLAS

/// Dense linear algebra through OpenBLAS's LAPACK. Matrices are the last two dimensions;
/// leading dimensions are a batch. LAPACK is column-major, so each matrix is copied to a
/// column-major buffer and back (the copies are O(n^2) next to O(n^3) factorizations).

protocol LAPACKFloat: BLASFloat {
    static func getrf(_ m: Int32, _ n: Int32, _ a: UnsafeMutablePointer<Self>, _ ipiv: UnsafeMutablePointer<Int32>) -> Int32
    static func getri(_ n: Int32, _ a: UnsafeMutablePointer<Self>, _ ipiv: UnsafePointer<Int32>) -> Int32
    static func getrs(_ n: Int32, _ nrhs: Int32, _ a: UnsafePointer<Self>, _ ipiv: UnsafePointer<Int32>, _ b: UnsafeMutablePointer<Self>) -> Int32
    static func potrf(_ n: Int32, _ a: UnsafeMutablePointer<Self>) -> Int32
    static func trtrs(lower: Bool, _ n: Int32, _ nrhs: Int32, _ a: UnsafePointer<Self>, _ b: UnsafeMutablePointer<Self>) -> Int32
    static func geqrf(_ m: Int32, _ n: Int32, _ a: UnsafeMutablePointer<Self>, _ tau: UnsafeMutablePointer<Self>) -> Int32
    static func orgqr(_ m: Int32, _ n: Int32, _ k: Int32, _ a: UnsafeMutablePointer<Self>, _ tau: UnsafePointer<Self>) -> Int32
    static func syevd(_ n: Int32, _ a: UnsafeMutablePointer<Self>, _ w: UnsafeMutablePointer<Self>) -> Int32
    static func gesdd(full: Bool, _ m: Int32, _ n: Int32, _ a: UnsafeMutablePointer<Self>, _ s: UnsafeMutablePointer<Self>,
                      _ u: UnsafeMutablePointer<Self>, _ ldu: Int32, _ vt: UnsafeMutablePointer<Self>, _ ldvt: Int32) -> Int32
    static func gelsd(_ m: Int32, _ n: Int32, _ nrhs: Int32, _ a: UnsafeMutablePointer<Self>, _ b: UnsafeMutablePointer<Self>,
                      _ ldb: Int32, _ rcond: Self) -> Int32
    static func geev(_ n: Int32, _ a: UnsafeMutablePointer<Self>, _ wr: UnsafeMutablePointer<Self>, _ wi: UnsafeMutablePointer<Self>,
                     _ vr: UnsafeMutablePointer<Self>) -> Int32
}

/// Runs a LAPACK routine twice: a workspace query (lwork = -1), then the real call.
@inline(__always)
private func withWork<T: LAPACKFloat>(_: T.Type, _ call: (UnsafeMutablePointer<T>, UnsafePointer<Int32>) -> Int32) -> Int32 {
    var query = T(0)
    var lwork: Int32 = -1
    _ = call(&query, &lwork)
    lwork = Swift.max(1, Int32(query.doubleValue.rounded(.up)))
    let work = UnsafeMutablePointer<T>.allocate(capacity: Int(lwork))
    defer { work.deallocate() }
    return call(work, &lwork)
}

extension Float: LAPACKFloat {}
extension Double: LAPACKFloat {}

extension LAPACKFloat {
    // One generic body per routine; `Self == Float` picks the s-prefixed symbol.
    static var isSingle: Bool { Self.self == Float.self }
    private static func f(_ p: UnsafeMutablePointer<Self>) -> UnsafeMutablePointer<Float> { UnsafeMutableRawPointer(p).assumingMemoryBound(to: Float.self) }
    private static func d(_ p: UnsafeMutablePointer<Self>) -> UnsafeMutablePointer<Double> { UnsafeMutableRawPointer(p).assumingMemoryBound(to: Double.self) }
    private static func f(_ p: UnsafePointer<Self>) -> UnsafePointer<Float> { UnsafeRawPointer(p).assumingMemoryBound(to: Float.self) }
    private static func d(_ p: UnsafePointer<Self>) -> UnsafePointer<Double> { UnsafeRawPointer(p).assumingMemoryBound(to: Double.self) }

    static func getrf(_ m: Int32, _ n: Int32, _ a: UnsafeMutablePointer<Self>, _ ipiv: UnsafeMutablePointer<Int32>) -> Int32 {
        var (m, n, lda, info) = (m, n, Swift.max(1, m), Int32(0))
        if isSingle { sgetrf_(&m, &n, f(a), &lda, ipiv, &info) } else { dgetrf_(&m, &n, d(a), &lda, ipiv, &info) }
        return info
    }
    static func getri(_ n: Int32, _ a: UnsafeMutablePointer<Self>, _ ipiv: UnsafePointer<Int32>) -> Int32 {
        var (n, lda) = (n, Swift.max(1, n))
        return withWork(Self.self) { work, lwork in
            var info: Int32 = 0
            if isSingle { sgetri_(&n, f(a), &lda, ipiv, f(work), lwork, &info) } else { dgetri_(&n, d(a), &lda, ipiv, d(work), lwork, &info) }
            return info
        }
    }
    static func getrs(_ n: Int32, _ nrhs: Int32, _ a: UnsafePointer<Self>, _ ipiv: UnsafePointer<Int32>, _ b: UnsafeMutablePointer<Self>) -> Int32 {
        var (n, nrhs, ld, info) = (n, nrhs, Swift.max(1, n), Int32(0))
        let t: CChar = 78 // "N"
        var tr = t
        if isSingle { sgetrs_(&tr, &n, &nrhs, f(a), &ld, ipiv, f(b), &ld, &info, 1) } else { dgetrs_(&tr, &n, &nrhs, d(a), &ld, ipiv, d(b), &ld, &info, 1) }
        return info
    }
    static func potrf(_ n: Int32, _ a: UnsafeMutablePointer<Self>) -> Int32 {
        var (n, lda, info) = (n, Swift.max(1, n), Int32(0))
        var uplo: CChar = 76 // "L"
        if isSingle { spotrf_(&uplo, &n, f(a), &lda, &info, 1) } else { dpotrf_(&uplo, &n, d(a), &lda, &info, 1) }
        return info
    }
    static func trtrs(lower: Bool, _ n: Int32, _ nrhs: Int32, _ a: UnsafePointer<Self>, _ b: UnsafeMutablePointer<Self>) -> Int32 {
        var (n, nrhs, ld, info) = (n, nrhs, Swift.max(1, n), Int32(0))
        var uplo: CChar = lower ? 76 : 85, trans: CChar = 78, diag: CChar = 78
        if isSingle { strtrs_(&uplo, &trans, &diag, &n, &nrhs, f(a), &ld, f(b), &ld, &info, 1, 1, 1) }
        else { dtrtrs_(&uplo, &trans, &diag, &n, &nrhs, d(a), &ld, d(b), &ld, &info, 1, 1, 1) }
        return info
    }
    static func geqrf(_ m: Int32, _ n: Int32, _ a: UnsafeMutablePointer<Self>, _ tau: UnsafeMutablePointer<Self>) -> Int32 {
        var (m, n, lda) = (m, n, Swift.max(1, m))
        return withWork(Self.self) { work, lwork in
            var info: Int32 = 0
            if isSingle { sgeqrf_(&m, &n, f(a), &lda, f(tau), f(work), lwork, &info) } else { dgeqrf_(&m, &n, d(a), &lda, d(tau), d(work), lwork, &info) }
            return info
        }
    }
    static func orgqr(_ m: Int32, _ n: Int32, _ k: Int32, _ a: UnsafeMutablePointer<Self>, _ tau: UnsafePointer<Self>) -> Int32 {
        var (m, n, k, lda) = (m, n, k, Swift.max(1, m))
        return withWork(Self.self) { work, lwork in
            var info: Int32 = 0
            if isSingle { sorgqr_(&m, &n, &k, f(a), &lda, f(tau), f(work), lwork, &info) } else { dorgqr_(&m, &n, &k, d(a), &lda, d(tau), d(work), lwork, &info) }
            return info
        }
    }
    static func geev(_ n: Int32, _ a: UnsafeMutablePointer<Self>, _ wr: UnsafeMutablePointer<Self>, _ wi: UnsafeMutablePointer<Self>,
                     _ vr: UnsafeMutablePointer<Self>) -> Int32 {
        var (n, lda, ldvl, info) = (n, Swift.max(1, n), Int32(1), Int32(0))
        var jobvl: CChar = 78, jobvr: CChar = 86 // "N", "V"
        var vl = Self(0)
        _ = withWork(Self.self) { work, lwork in
            if isSingle { sgeev_(&jobvl, &jobvr, &n, f(a), &lda, f(wr), f(wi), f(&vl), &ldvl, f(vr), &lda, f(work), lwork, &info, 1, 1) }
            else { dgeev_(&jobvl, &jobvr, &n, d(a), &lda, d(wr), d(wi), d(&vl), &ldvl, d(vr), &lda, d(work), lwork, &info, 1, 1) }
            return info
        }
        return info
    }
    static func syevd(_ n: Int32, _ a: UnsafeMutablePointer<Self>, _ w: UnsafeMutablePointer<Self>) -> Int32 {
        var (n, lda, info) = (n, Swift.max(1, n), Int32(0))
        var jobz: CChar = 86, uplo: CChar = 76 // "V", "L"
        var qwork = Self(0), qiwork: Int32 = 0, lwork: Int32 = -1, liwork: Int32 = -1
        if isSingle { ssyevd_(&jobz, &uplo, &n, f(a), &lda, f(w), f(&qwork), &lwork, &qiwork, &liwork, &info, 1, 1) }
        else { dsyevd_(&jobz, &uplo, &n, d(a), &lda, d(w), d(&qwork), &lwork, &qiwork, &liwork, &info, 1, 1) }
        lwork = Swift.max(1, Int32(qwork.doubleValue.rounded(.up)))
        liwork = Swift.max(1, qiwork)
        let work = UnsafeMutablePointer<Self>.allocate(capacity: Int(lwork)), iwork = UnsafeMutablePointer<Int32>.allocate(capacity: Int(liwork))
        defer { work.deallocate(); iwork.deallocate() }
        if isSingle { ssyevd_(&jobz, &uplo, &n, f(a), &lda, f(w), f(work), &lwork, iwork, &liwork, &info, 1, 1) }
        else { dsyevd_(&jobz, &uplo, &n, d(a), &lda, d(w), d(work), &lwork, iwork, &liwork, &info, 1, 1) }
        return info
    }
    static func gesdd(full: Bool, _ m: Int32, _ n: Int32, _ a: UnsafeMutablePointer<Self>, _ s: UnsafeMutablePointer<Self>,
                      _ u: UnsafeMutablePointer<Self>, _ ldu: Int32, _ vt: UnsafeMutablePointer<Self>, _ ldvt: Int32) -> Int32 {
        var (m, n, lda, ldu, ldvt) = (m, n, Swift.max(1, m), Swift.max(1, ldu), Swift.max(1, ldvt))
        var jobz: CChar = full ? 65 : 83 // "A" / "S"
        let iwork = UnsafeMutablePointer<Int32>.allocate(capacity: Int(8 * Swift.max(1, Swift.min(m, n))))
        defer { iwork.deallocate() }
        return withWork(Self.self) { work, lwork in
            var info: Int32 = 0
            if isSingle { sgesdd_(&jobz, &m, &n, f(a), &lda, f(s), f(u), &ldu, f(vt), &ldvt, f(work), lwork, iwork, &info, 1) }
            else { dgesdd_(&jobz, &m, &n, d(a), &lda, d(s), d(u), &ldu, d(vt), &ldvt, d(work), lwork, iwork, &info, 1) }
            return info
        }
    }
    static func gelsd(_ m: Int32, _ n: Int32, _ nrhs: Int32, _ a: UnsafeMutablePointer<Self>, _ b: UnsafeMutablePointer<Self>,
                      _ ldb: Int32, _ rcond: Self) -> Int32 {
        var (m, n, nrhs, lda, ldb, rcond, rank) = (m, n, nrhs, Swift.max(1, m), Swift.max(1, ldb), rcond, Int32(0))
        let k = Int(Swift.max(1, Swift.min(m, n)))
        let s = UnsafeMutablePointer<Self>.allocate(capacity: k)
        let iwork = UnsafeMutablePointer<Int32>.allocate(capacity: 64 * k + 3 * k * 32)
        defer { s.deallocate(); iwork.deallocate() }
        return withWork(Self.self) { work, lwork in
            var info: Int32 = 0
            if isSingle { sgelsd_(&m, &n, &nrhs, f(a), &lda, f(b), &ldb, f(s), UnsafeRawPointer(&rcond).assumingMemoryBound(to: Float.self), &rank, f(work), lwork, iwork, &info) }
            else { dgelsd_(&m, &n, &nrhs, d(a), &lda, d(b), &ldb, d(s), UnsafeRawPointer(&rcond).assumingMemoryBound(to: Double.self), &rank, d(work), lwork, iwork, &info) }
            return info
        }
    }
}

// MARK: - Helpers

/// Batch count and matrix dims of `x` (rank >= 2).
private func matrixDims(_ x: Tensor, _ name: String, square: Bool = false) throws -> (batch: Int, m: Int, n: Int) {
    guard x.rank >= 2 else { throw EngineError.value("\(name) needs a tensor of rank >= 2, got shape \(x.shape)") }
    let m = x.shape[x.rank - 2], n = x.shape[x.rank - 1]
    if square && m != n { throw EngineError.value("\(name) needs square matrices, got shape \(x.shape)") }
    return (x.count / Swift.max(m * n, 1), m, n)
}

/// float32 stays float32, float64 stays float64, everything else is computed in float32.
private func linalgInput(_ x: Tensor) throws -> Tensor {
    x.dtype == .float32 || x.dtype == .float64 ? x : try cast(x, to: .float32)
}

/// Copies an m×n row-major matrix to column-major (or back, with m and n swapped).
@inline(__always)
private func transposeCopy<T>(_ src: UnsafePointer<T>, _ m: Int, _ n: Int, _ dst: UnsafeMutablePointer<T>) {
    for i in 0..<m { for j in 0..<n { dst[j * m + i] = src[i * n + j] } }
}

private func lapackFailure(_ name: String, _ info: Int32) -> EngineError {
    info < 0 ? .internal("\(name): LAPACK argument \(-info) was invalid") : .value("\(name): the matrix is singular or not decomposable (info \(info))")
}

/// Whether `count` values from `p` are all finite. gesdd and gelsd refuse a NaN or an
/// infinity as an invalid argument; the decompositions of such a matrix are NaN, as jax
/// and numpy report them.
private func allFinite<T: LAPACKFloat>(_ p: UnsafePointer<T>, _ count: Int) -> Bool {
    var finite = true
    for i in 0..<count { finite = finite && p[i].isFinite }
    return finite
}

protocol LAPACKVisitor {
    associatedtype Result
    func visit<T: LAPACKFloat>(_ t: T.Type) throws -> Result
}

private func dispatchLAPACK<V: LAPACKVisitor>(_ dt: DType, _ v: V) throws -> V.Result {
    switch dt {
    case .float32: return try v.visit(Float.self)
    case .float64: return try v.visit(Double.self)
    default: throw EngineError.type("linear algebra needs float32 or float64, got \(dt)")
    }
}

/// Transpose of the last two axes.
public func matrixTranspose(_ x: Tensor) throws -> Tensor {
    guard x.rank >= 2 else { return x }
    var perm = Array(0..<x.rank)
    perm.swapAt(x.rank - 1, x.rank - 2)
    return try transpose(x, perm)
}

// MARK: - Ops

/// Inverse of each square matrix. Singular matrices are a ValueError. Differentiable.
public func inv(_ x0: Tensor) throws -> Tensor {
    let x = try linalgInput(x0)
    let (batch, n, _) = try matrixDims(x, "inv", square: true)
    let out = try Tensor(zeros: x.shape, dtype: x.dtype)
    out.rawPointer.copyMemory(from: x.rawPointer, byteCount: x.nbytes)
    struct K: LAPACKVisitor {
        let out: Tensor, batch: Int, n: Int
        func visit<T: LAPACKFloat>(_: T.Type) throws {
            // inv(A^T)^T == inv(A): the row-major buffer can be inverted as is.
            var ipiv = [Int32](repeating: 0, count: Swift.max(n, 1))
            for b in 0..<batch where n > 0 {
                let a = out.pointer(T.self) + b * n * n
                // LU pivoting on NaN leaves finite entries (zeros) in the "inverse": a matrix
                // with a NaN has no inverse, and numpy's is all NaN.
                guard !(0..<(n * n)).contains(where: { a[$0].isNaN }) else {
                    a.update(repeating: .nan, count: n * n)
                    continue
                }
                var info = T.getrf(Int32(n), Int32(n), a, &ipiv)
                if info == 0 { info = T.getri(Int32(n), a, ipiv) }
                if info != 0 { throw lapackFailure("inv", info) }
            }
        }
    }
    try dispatchLAPACK(x.dtype, K(out: out, batch: batch, n: n))
    Tape.record(out, [x]) { g in
        let t = try matrixTranspose(out)
        return [try negative(try matmul(try matmul(t, g), t))]
    }
    return out
}

/// LU factorisation with partial pivoting: (L\U combined, 0-based int32 pivots).
public func luFactor(_ x0: Tensor) throws -> (lu: Tensor, pivots: Tensor) {
    let x = try linalgInput(x0)
    let (batch, m, n) = try matrixDims(x, "lu_factor")
    let lu = try Tensor(zeros: x.shape, dtype: x.dtype)
    let piv = try Tensor(zeros: Array(x.shape.dropLast(2)) + [Swift.min(m, n)], dtype: .int32)
    struct K: LAPACKVisitor {
        let x: Tensor, lu: Tensor, piv: Tensor, batch: Int, m: Int, n: Int
        func visit<T: LAPACKFloat>(_: T.Type) throws {
            let buf = UnsafeMutablePointer<T>.allocate(capacity: Swift.max(m * n, 1))
            defer { buf.deallocate() }
            let k = Swift.min(m, n)
            for b in 0..<batch where k > 0 {
                transposeCopy(x.pointer(T.self) + b * m * n, m, n, buf)
                let pp = piv.pointer(Int32.self) + b * k
                let info = T.getrf(Int32(m), Int32(n), buf, pp)
                if info < 0 { throw lapackFailure("lu_factor", info) }
                for i in 0..<k { pp[i] -= 1 }
                transposeCopy(UnsafePointer(buf), n, m, lu.pointer(T.self) + b * m * n)
            }
        }
    }
    try dispatchLAPACK(x.dtype, K(x: x, lu: lu, piv: piv, batch: batch, m: m, n: n))
    return (lu, piv)
}

/// (sign, log|det|) of each square matrix, from its LU factorisation. log|det| is differentiable.
public func slogdet(_ x0: Tensor) throws -> (sign: Tensor, logabsdet: Tensor) {
    let x = try linalgInput(x0)
    let (_, n, _) = try matrixDims(x, "slogdet", square: true)
    let (lu, piv) = try Tape.paused { try luFactor(x) }
    let batchShape = Array(x.shape.dropLast(2))
    let sign = try Tensor(zeros: batchShape, dtype: x.dtype), logdet = try Tensor(zeros: batchShape, dtype: x.dtype)
    // One result per matrix, also for 0x0 matrices (det 1), of which x holds no elements.
    let batch = sign.count
    let pl = lu.doubles(), pp = try piv.array(Int32.self)
    var signs = [Double](repeating: 1, count: batch), logs = [Double](repeating: 0, count: batch)
    for b in 0..<batch {
        for i in 0..<n {
            let d = pl[b * n * n + i * n + i]
            if d < 0 { signs[b] = -signs[b] }
            if Int(pp[b * n + i]) != i { signs[b] = -signs[b] }
            logs[b] += Double.log(Swift.abs(d))
        }
        if logs[b] == -.infinity { signs[b] = 0 }
    }
    let s = try cast(try Tensor(signs, shape: batchShape), to: x.dtype), l = try cast(try Tensor(logs, shape: batchShape), to: x.dtype)
    sign.rawPointer.copyMemory(from: s.rawPointer, byteCount: s.nbytes)
    logdet.rawPointer.copyMemory(from: l.rawPointer, byteCount: l.nbytes)
    Tape.record(logdet, [x]) { g in
        let gi = try reshape(g, batchShape + [1, 1])
        return [try multiply(gi, try matrixTranspose(try inv(x)))]
    }
    return (sign, logdet)
}

/// Determinant of each square matrix. Differentiable.
public func det(_ x0: Tensor) throws -> Tensor {
    let x = try linalgInput(x0)
    let (s, l) = try Tape.paused { try slogdet(x) }
    let out = try Tape.paused { try multiply(s, try exp(l)) }
    let batchShape = Array(x.shape.dropLast(2))
    Tape.record(out, [x]) { g in
        // d det / dA = det * inv(A)^T (singular A: adjugate is not formed; gradient is nan-free zero)
        let scale = try reshape(try multiply(g, out), batchShape + [1, 1])
        let nonsingular = try binary(.notEqual, out, try zerosLike(out))
        if try reduce(.all, nonsingular).array(Bool.self)[0] == false { return [try zerosLike(x)] }
        return [try multiply(scale, try matrixTranspose(try inv(x)))]
    }
    return out
}

/// Solves A X = B for each square A (B: [..., n, k] with the same batch). Differentiable.
public func solve(_ a0: Tensor, _ b0: Tensor) throws -> Tensor {
    let (a1, b1) = try promote(a0, b0)
    let a = try linalgInput(a1), b = try cast(b1, to: a.dtype)
    let (batch, n, _) = try matrixDims(a, "solve", square: true)
    let (bb, bn, k) = try matrixDims(b, "solve")
    guard bn == n, bb == batch, Array(a.shape.dropLast(2)) == Array(b.shape.dropLast(2)) else {
        throw EngineError.value("solve: a \(a.shape) and b \(b.shape) do not match")
    }
    let out = try Tensor(zeros: b.shape, dtype: a.dtype)
    struct K: LAPACKVisitor {
        let a: Tensor, b: Tensor, out: Tensor, batch: Int, n: Int, k: Int
        func visit<T: LAPACKFloat>(_: T.Type) throws {
            let am = UnsafeMutablePointer<T>.allocate(capacity: Swift.max(n * n, 1)), bm = UnsafeMutablePointer<T>.allocate(capacity: Swift.max(n * k, 1))
            defer { am.deallocate(); bm.deallocate() }
            var ipiv = [Int32](repeating: 0, count: Swift.max(n, 1))
            for i in 0..<batch where n > 0 && k > 0 {
                transposeCopy(a.pointer(T.self) + i * n * n, n, n, am)
                transposeCopy(b.pointer(T.self) + i * n * k, n, k, bm)
                var info = T.getrf(Int32(n), Int32(n), am, &ipiv)
                if info == 0 { info = T.getrs(Int32(n), Int32(k), am, ipiv, bm) }
                if info != 0 { throw lapackFailure("solve", info) }
                transposeCopy(UnsafePointer(bm), k, n, out.pointer(T.self) + i * n * k)
            }
        }
    }
    try dispatchLAPACK(a.dtype, K(a: a, b: b, out: out, batch: batch, n: n, k: k))
    Tape.record(out, [a, b]) { g in
        let gb = try solve(try matrixTranspose(a), g)
        return [try negative(try matmul(gb, try matrixTranspose(out))), gb]
    }
    return out
}

/// Solves A X = B for triangular A (lower or upper). Differentiable.
public func solveTriangular(_ a0: Tensor, _ b0: Tensor, lower: Bool) throws -> Tensor {
    let (a1, b1) = try promote(a0, b0)
    let a = try linalgInput(a1), b = try cast(b1, to: a.dtype)
    let (batch, n, _) = try matrixDims(a, "solve_triangular", square: true)
    let (bb, bn, k) = try matrixDims(b, "solve_triangular")
    guard bn == n, bb == batch else { throw EngineError.value("solve_triangular: a \(a.shape) and b \(b.shape) do not match") }
    let out = try Tensor(zeros: b.shape, dtype: a.dtype)
    struct K: LAPACKVisitor {
        let a: Tensor, b: Tensor, out: Tensor, batch: Int, n: Int, k: Int, lower: Bool
        func visit<T: LAPACKFloat>(_: T.Type) throws {
            let am = UnsafeMutablePointer<T>.allocate(capacity: Swift.max(n * n, 1)), bm = UnsafeMutablePointer<T>.allocate(capacity: Swift.max(n * k, 1))
            defer { am.deallocate(); bm.deallocate() }
            for i in 0..<batch where n > 0 && k > 0 {
                transposeCopy(a.pointer(T.self) + i * n * n, n, n, am)
                transposeCopy(b.pointer(T.self) + i * n * k, n, k, bm)
                let info = T.trtrs(lower: lower, Int32(n), Int32(k), am, bm)
                if info != 0 { throw lapackFailure("solve_triangular", info) }
                transposeCopy(UnsafePointer(bm), k, n, out.pointer(T.self) + i * n * k)
            }
        }
    }
    try dispatchLAPACK(a.dtype, K(a: a, b: b, out: out, batch: batch, n: n, k: k, lower: lower))
    Tape.record(out, [a, b]) { g in
        let gb = try solveTriangular(try matrixTranspose(a), g, lower: !lower)
        return [try triangle(try negative(try matmul(gb, try matrixTranspose(out))), k: 0, upper: !lower), gb]
    }
    return out
}

/// Lower Cholesky factor L (A = L Lᵀ) of each symmetric positive-definite matrix. Differentiable.
public func cholesky(_ x0: Tensor) throws -> Tensor {
    let x = try linalgInput(x0)
    let (batch, n, _) = try matrixDims(x, "cholesky", square: true)
    let out = try Tensor(zeros: x.shape, dtype: x.dtype)
    struct K: LAPACKVisitor {
        let x: Tensor, out: Tensor, batch: Int, n: Int
        func visit<T: LAPACKFloat>(_: T.Type) throws {
            let buf = UnsafeMutablePointer<T>.allocate(capacity: Swift.max(n * n, 1))
            defer { buf.deallocate() }
            for b in 0..<batch where n > 0 {
                transposeCopy(x.pointer(T.self) + b * n * n, n, n, buf)
                let info = T.potrf(Int32(n), buf)
                if info != 0 { throw EngineError.value("cholesky: the matrix is not positive definite") }
                let o = out.pointer(T.self) + b * n * n
                for i in 0..<n { for j in 0...i { o[i * n + j] = buf[j * n + i] } }
            }
        }
    }
    try dispatchLAPACK(x.dtype, K(x: x, out: out, batch: batch, n: n))
    Tape.record(out, [x]) { g in
        // Murray (2016): S = L⁻ᵀ Φ(Lᵀ Ḡ) L⁻¹ with Φ = lower triangle, halved diagonal; Ā = (S + Sᵀ)/2.
        let lt = try matrixTranspose(out)
        let p = try triangle(try matmul(lt, g), k: 0, upper: false)
        let halfDiag = try multiply(try eye(n, n, dtype: x.dtype), try scalar(0.5, x.dtype))
        let phi = try subtract(p, try multiply(p, halfDiag))
        let linv = try inv(out)
        let s = try matmul(try matmul(try matrixTranspose(linv), phi), linv)
        return [try multiply(try add(s, try matrixTranspose(s)), try scalar(0.5, x.dtype))]
    }
    return out
}

/// x[..., rows, cols] of a batch of matrices.
private func matrixBlock(_ x: Tensor, rows: Range<Int>? = nil, cols: Range<Int>? = nil) throws -> Tensor {
    let rank = x.rank
    var b = repeatedInts(0, count: rank), e = x.shape
    if let r = rows { b[rank - 2] = r.lowerBound; e[rank - 2] = r.upperBound }
    if let c = cols { b[rank - 1] = c.lowerBound; e[rank - 1] = c.upperBound }
    return try stridedSlice(x, begin: b, end: e, strides: repeatedInts(1, count: rank))
}

/// VJP of A = QR for a square or tall A (Q m×n, R n×n upper triangular), the standard reduced
/// backward: dA = (dQ + Q copyltu(M)) R⁻ᵀ with M = R dRᵀ − dQᵀ Q, where copyltu mirrors the
/// lower triangle of M onto its upper one.
private func qrTallBackward(_ q: Tensor, _ r: Tensor, _ dq: Tensor, _ dr: Tensor) throws -> Tensor {
    let m = try subtract(try matmul(r, try matrixTranspose(dr)), try matmul(try matrixTranspose(dq), q))
    let mirrored = try add(try triangle(m, k: 0, upper: false), try matrixTranspose(try triangle(m, k: -1, upper: false)))
    let b = try add(dq, try matmul(q, mirrored))
    // b R⁻ᵀ, as (R⁻¹ bᵀ)ᵀ.
    return try matrixTranspose(try solveTriangular(r, try matrixTranspose(b), lower: false))
}

/// VJP of the reduced A = QR for any shape. A wide A = [X | Y] (m < n) has R = [U | V] with
/// X = QU and Y = QV: Y's part is Q dV, X's the square backward with dQ + Y dVᵀ.
private func qrBackward(_ a: Tensor, _ q: Tensor, _ r: Tensor, _ dq: Tensor, _ dr: Tensor) throws -> Tensor {
    let (m, n) = (a.shape[a.rank - 2], a.shape[a.rank - 1])
    if m >= n { return try qrTallBackward(q, r, dq, dr) }
    let y = try matrixBlock(a, cols: m..<n), u = try matrixBlock(r, cols: 0..<m)
    let du = try matrixBlock(dr, cols: 0..<m), dv = try matrixBlock(dr, cols: m..<n)
    let dx = try qrTallBackward(q, u, try add(dq, try matmul(y, try matrixTranspose(dv))), du)
    return try concatenate([dx, try matmul(q, dv)], axis: -1)
}

/// Reduced (or complete) QR factorisation. Differentiable in both outputs when Q has no more
/// columns than A (reduced mode, or complete mode of a square or wide A): a complete Q of a
/// tall A is not determined by A, so, as in JAX, it has no gradient.
public func qr(_ x0: Tensor, complete: Bool = false) throws -> (q: Tensor, r: Tensor) {
    let x = try linalgInput(x0)
    let (batch, m, n) = try matrixDims(x, "qr")
    let k = Swift.min(m, n), qc = complete ? m : k, rr = complete ? m : k
    let lead = Array(x.shape.dropLast(2))
    let q = try Tensor(zeros: lead + [m, qc], dtype: x.dtype), r = try Tensor(zeros: lead + [rr, n], dtype: x.dtype)
    struct K: LAPACKVisitor {
        let x: Tensor, q: Tensor, r: Tensor, batch: Int, m: Int, n: Int, k: Int, qc: Int, rr: Int
        func visit<T: LAPACKFloat>(_: T.Type) throws {
            let cols = Swift.max(n, qc)
            let a = UnsafeMutablePointer<T>.allocate(capacity: Swift.max(m * cols, 1)), tau = UnsafeMutablePointer<T>.allocate(capacity: Swift.max(k, 1))
            defer { a.deallocate(); tau.deallocate() }
            for b in 0..<batch where m > 0 && n > 0 {
                a.update(repeating: 0, count: m * cols)
                transposeCopy(x.pointer(T.self) + b * m * n, m, n, a)
                var info = T.geqrf(Int32(m), Int32(n), a, tau)
                let rp = r.pointer(T.self) + b * rr * n
                for i in 0..<rr { for j in 0..<n where j >= i && i < k { rp[i * n + j] = a[j * m + i] } }
                if info == 0 { info = T.orgqr(Int32(m), Int32(qc), Int32(k), a, tau) }
                if info != 0 { throw lapackFailure("qr", info) }
                transposeCopy(UnsafePointer(a), qc, m, q.pointer(T.self) + b * m * qc)
            }
        }
    }
    try dispatchLAPACK(x.dtype, K(x: x, q: q, r: r, batch: batch, m: m, n: n, k: k, qc: qc, rr: rr))
    if qc == k && m > 0 && n > 0 {
        // The VJP is linear in (dQ, dR), so each output records its own part.
        Tape.record(q, [x]) { g in [try qrBackward(x, q, r, g, try zerosLike(r))] }
        Tape.record(r, [x]) { g in [try qrBackward(x, q, r, try zerosLike(q), g)] }
    }
    return (q, r)
}

/// Eigenvalues and right eigenvectors (columns, unit norm) of general square real matrices,
/// as complex64 (float32 input) or complex128 (float64). Not differentiable.
public func eig(_ x0: Tensor) throws -> (values: Tensor, vectors: Tensor) {
    let x = try linalgInput(x0)
    let (batch, n, _) = try matrixDims(x, "eig", square: true)
    let cdt: DType = x.dtype == .float64 ? .complex128 : .complex64
    let w = try Tensor(zeros: Array(x.shape.dropLast()), dtype: cdt), v = try Tensor(zeros: x.shape, dtype: cdt)
    struct K: LAPACKVisitor {
        let x: Tensor, w: Tensor, v: Tensor, batch: Int, n: Int
        func visit<T: LAPACKFloat>(_: T.Type) throws {
            let a = UnsafeMutablePointer<T>.allocate(capacity: Swift.max(3 * n * n + 2 * n, 1))
            defer { a.deallocate() }
            let vr = a + n * n, wr = vr + n * n, wi = wr + n
            let pw = UnsafeMutableRawPointer(w.pointer(T.self)), pv = UnsafeMutableRawPointer(v.pointer(T.self))
            for b in 0..<batch where n > 0 {
                transposeCopy(x.pointer(T.self) + b * n * n, n, n, a)
                let ow = pw.bindMemory(to: (T, T).self, capacity: batch * n) + b * n
                let ov = pv.bindMemory(to: (T, T).self, capacity: batch * n * n) + b * n * n
                // geev rejects a NaN, and its balancing an infinity, as an illegal argument
                // (and prints to stderr); the eigenpairs of such a matrix are NaN, as jax's.
                if !allFinite(UnsafePointer(a), n * n) {
                    ow.update(repeating: (.nan, .nan), count: n)
                    ov.update(repeating: (.nan, .nan), count: n * n)
                    continue
                }
                let info = T.geev(Int32(n), a, wr, wi, vr)
                if info != 0 { throw lapackFailure("eig", info) }
                // Column j of VR (column-major) is a real eigenvector when wi[j] == 0; a
                // conjugate pair (j, j+1) stores re and im in columns j and j+1.
                var j = 0
                while j < n {
                    ow[j] = (wr[j], wi[j])
                    if wi[j] != 0 && j + 1 < n {
                        ow[j + 1] = (wr[j + 1], wi[j + 1])
                        for i in 0..<n {
                            let re = vr[j * n + i], im = vr[(j + 1) * n + i]
                            ov[i * n + j] = (re, im)
                            ov[i * n + j + 1] = (re, -im)
                        }
                        j += 2
                    } else {
                        for i in 0..<n { ov[i * n + j] = (vr[j * n + i], 0) }
                        j += 1
                    }
                }
            }
        }
    }
    try dispatchLAPACK(x.dtype, K(x: x, w: w, v: v, batch: batch, n: n))
    return (w, v)
}

/// Eigenvalues (ascending) and eigenvectors (columns) of symmetric matrices, from the lower
/// triangle. Differentiable (both outputs).
public func eigh(_ x0: Tensor) throws -> (values: Tensor, vectors: Tensor) {
    let x = try linalgInput(x0)
    let (batch, n, _) = try matrixDims(x, "eigh", square: true)
    let lead = Array(x.shape.dropLast(2))
    let w = try Tensor(zeros: lead + [n], dtype: x.dtype), v = try Tensor(zeros: x.shape, dtype: x.dtype)
    struct K: LAPACKVisitor {
        let x: Tensor, w: Tensor, v: Tensor, batch: Int, n: Int
        func visit<T: LAPACKFloat>(_: T.Type) throws {
            let a = UnsafeMutablePointer<T>.allocate(capacity: Swift.max(n * n, 1))
            defer { a.deallocate() }
            for b in 0..<batch where n > 0 {
                let src = x.pointer(T.self) + b * n * n
                // syevd reads the lower triangle; with a NaN or an infinity there, it fails to
                // converge or returns some finite vectors. The eigenpairs are NaN, as jax's.
                guard (0..<n).allSatisfy({ i in allFinite(src + i * n, i + 1) }) else {
                    (w.pointer(T.self) + b * n).update(repeating: .nan, count: n)
                    (v.pointer(T.self) + b * n * n).update(repeating: .nan, count: n * n)
                    continue
                }
                transposeCopy(src, n, n, a)
                let info = T.syevd(Int32(n), a, w.pointer(T.self) + b * n)
                if info != 0 { throw lapackFailure("eigh", info) }
                transposeCopy(UnsafePointer(a), n, n, v.pointer(T.self) + b * n * n)
            }
        }
    }
    try dispatchLAPACK(x.dtype, K(x: x, w: w, v: v, batch: batch, n: n))
    // The gradient is a sum of a part from each output, so each records its own part.
    let vt = try Tape.paused { try matrixTranspose(v) }
    func sym(_ s: Tensor) throws -> Tensor { try multiply(try add(s, try matrixTranspose(s)), try scalar(0.5, x.dtype)) }
    Tape.record(w, [x]) { g in
        [try sym(try matmul(try multiply(v, try expandDims(g, axis: -2)), vt))]
    }
    Tape.record(v, [x]) { g in
        // F_ij = 1 / (w_j - w_i) off the diagonal, 0 on it.
        let diff = try subtract(try expandDims(w, axis: -2), try expandDims(w, axis: -1))
        let off = try binary(.notEqual, diff, try zerosLike(diff))
        let f = try `where`(off, try divide(try onesLike(diff), try `where`(off, diff, try onesLike(diff))), try zerosLike(diff))
        return [try sym(try matmul(try matmul(v, try multiply(f, try matmul(vt, g))), vt))]
    }
    return (w, v)
}

/// Singular value decomposition: u, s (descending), vᵀ; reduced unless `full`. The singular
/// values are differentiable (dA = U diag(dS) Vᵀ over the leading min(m, n) singular vectors);
/// U and Vᵀ are not yet, and a gradient through them raises. An empty A's full V (or U) is
/// the identity, as numpy gives.
public func svd(_ x0: Tensor, full: Bool = false) throws -> (u: Tensor, s: Tensor, vt: Tensor) {
    let x = try linalgInput(x0)
    let (batch, m, n) = try matrixDims(x, "svd")
    let k = Swift.min(m, n), uc = full ? m : k, vr = full ? n : k
    let lead = Array(x.shape.dropLast(2))
    let u = try Tensor(zeros: lead + [m, uc], dtype: x.dtype), s = try Tensor(zeros: lead + [k], dtype: x.dtype)
    let vt = try Tensor(zeros: lead + [vr, n], dtype: x.dtype)
    struct K: LAPACKVisitor {
        let x: Tensor, u: Tensor, s: Tensor, vt: Tensor, batch: Int, m: Int, n: Int, k: Int, uc: Int, vr: Int, full: Bool
        func visit<T: LAPACKFloat>(_: T.Type) throws {
            let a = UnsafeMutablePointer<T>.allocate(capacity: Swift.max(m * n, 1))
            let ub = UnsafeMutablePointer<T>.allocate(capacity: Swift.max(m * uc, 1)), vb = UnsafeMutablePointer<T>.allocate(capacity: Swift.max(vr * n, 1))
            defer { a.deallocate(); ub.deallocate(); vb.deallocate() }
            for b in 0..<batch where k > 0 {
                guard allFinite(x.pointer(T.self) + b * m * n, m * n) else {
                    (s.pointer(T.self) + b * k).update(repeating: .nan, count: k)
                    (u.pointer(T.self) + b * m * uc).update(repeating: .nan, count: m * uc)
                    (vt.pointer(T.self) + b * vr * n).update(repeating: .nan, count: vr * n)
                    continue
                }
                transposeCopy(x.pointer(T.self) + b * m * n, m, n, a)
                let info = T.gesdd(full: full, Int32(m), Int32(n), a, s.pointer(T.self) + b * k, ub, Int32(m), vb, Int32(vr))
                if info != 0 { throw lapackFailure("svd", info) }
                transposeCopy(UnsafePointer(ub), uc, m, u.pointer(T.self) + b * m * uc)
                transposeCopy(UnsafePointer(vb), n, vr, vt.pointer(T.self) + b * vr * n)
            }
        }
    }
    try dispatchLAPACK(x.dtype, K(x: x, u: u, s: s, vt: vt, batch: batch, m: m, n: n, k: k, uc: uc, vr: vr, full: full))
    if k == 0 {
        // No singular vectors are computed: the full bases of the empty side are any orthogonal
        // matrices, and numpy gives the identity.
        for (t, d) in [(u, uc), (vt, vr)] where d > 0 && t.count > 0 {
            let identity = try eye(d, d, dtype: t.dtype)
            // `batch` counts no matrices when they are empty; t's d×d ones are not.
            for b in 0..<(t.count / (d * d)) {
                (t.rawPointer + b * identity.nbytes).copyMemory(from: identity.rawPointer, byteCount: identity.nbytes)
            }
        }
    }
    if k > 0 {
        let uk = try Tape.paused { try matrixBlock(u, cols: 0..<k) }, vtk = try Tape.paused { try matrixBlock(vt, rows: 0..<k) }
        Tape.record(s, [x]) { g in [try matmul(try multiply(uk, try expandDims(g, axis: -2)), vtk)] }
    }
    return (u, s, vt)
}

/// Least-squares solution of A X = B (2-D A and B) via SVD; singular values below
/// rcond * largest are treated as zero (rcond < 0: machine precision * max(m, n)).
public func lstsq(_ a0: Tensor, _ b0: Tensor, rcond: Double = -1) throws -> Tensor {
    let (a1, b1) = try promote(a0, b0)
    let a = try linalgInput(a1), b = try cast(b1, to: a.dtype)
    guard a.rank == 2, b.rank == 1 || b.rank == 2, b.shape[0] == a.shape[0] else {
        throw EngineError.value("lstsq needs a of rank 2 and b of rank 1 or 2 with matching rows, got \(a.shape) and \(b.shape)")
    }
    let (m, n) = (a.shape[0], a.shape[1]), k = b.rank == 1 ? 1 : b.shape[1]
    let out = try Tensor(zeros: b.rank == 1 ? [n] : [n, k], dtype: a.dtype)
    struct K: LAPACKVisitor {
        let a: Tensor, b: Tensor, out: Tensor, m: Int, n: Int, k: Int, rcond: Double
        func visit<T: LAPACKFloat>(_: T.Type) throws {
            let ld = Swift.max(m, n)
            let am = UnsafeMutablePointer<T>.allocate(capacity: Swift.max(m * n, 1)), bm = UnsafeMutablePointer<T>.allocate(capacity: Swift.max(ld * k, 1))
            defer { am.deallocate(); bm.deallocate() }
            guard m > 0 && n > 0 && k > 0 else { return }
            guard allFinite(a.pointer(T.self), m * n), allFinite(b.pointer(T.self), m * k) else {
                out.pointer(T.self).update(repeating: .nan, count: n * k)
                return
            }
            transposeCopy(a.pointer(T.self), m, n, am)
            bm.update(repeating: 0, count: ld * k)
            let pb = b.pointer(T.self)
            for i in 0..<m { for j in 0..<k { bm[j * ld + i] = pb[i * k + j] } }
            let eps = T.isSingle ? Double(Float.ulpOfOne) : Double.ulpOfOne
            let info = T.gelsd(Int32(m), Int32(n), Int32(k), am, bm, Int32(ld), T(rcond < 0 ? eps * Double(ld) : rcond))
            if info != 0 { throw lapackFailure("lstsq", info) }
            let po = out.pointer(T.self)
            for i in 0..<n { for j in 0..<k { po[i * k + j] = bm[j * ld + i] } }
        }
    }
    try dispatchLAPACK(a.dtype, K(a: a, b: b, out: out, m: m, n: n, k: k, rcond: rcond))
    return out
}

let lapackOps: [OpDef] = [
    OpDef(unary: "inv", doc: "Inverse of the last two axes (LAPACK getrf/getri)") { x, _ in try inv(x) },
    OpDef(unary: "det", doc: "Determinant of the last two axes") { x, _ in try det(x) },
    OpDef("slogdet", inputs: ["x"], outputs: ["sign", "logabsdet"], constantOutputs: [0],
          doc: "Sign and log |det| of the last two axes (the gradient flows through logabsdet)") { t, _ in
        let r = try slogdet(t[0]); return [r.sign, r.logabsdet]
    },
    OpDef("lu_factor", inputs: ["x"], outputs: ["lu", "pivots"], grad: .missing,
          doc: "LU factorisation with partial pivoting (LAPACK getrf; pivots int32, 0-based)") { t, _ in
        let r = try luFactor(t[0]); return [r.lu, r.pivots]
    },
    OpDef("solve", inputs: ["a", "b"], doc: "x with a x = b") { t, _ in try solve(t[0], t[1]) },
    OpDef("solve_triangular", inputs: ["a", "b"], attrs: [.bool("lower", default: false)],
          doc: "x with a x = b for triangular a") { t, a in try solveTriangular(t[0], t[1], lower: a.bool("lower")) },
    OpDef(unary: "cholesky", doc: "Lower Cholesky factor of the last two axes") { x, _ in try cholesky(x) },
    OpDef("qr", inputs: ["x"], outputs: ["q", "r"], attrs: [.string("mode", default: "reduced", choices: ["reduced", "complete"])],
          doc: "QR decomposition of the last two axes") { t, a in
        let r = try qr(t[0], complete: a.string("mode") == "complete"); return [r.q, r.r]
    },
    OpDef("eig", inputs: ["x"], outputs: ["values", "vectors"], grad: .no,
          doc: "Eigenvalues and right eigenvectors of a general matrix (complex outputs)") { t, _ in
        let r = try eig(t[0]); return [r.values, r.vectors]
    },
    OpDef("eigh", inputs: ["x"], outputs: ["values", "vectors"],
          doc: "Eigenvalues (ascending) and eigenvectors of a symmetric matrix (its lower triangle)") { t, _ in
        let r = try eigh(t[0]); return [r.values, r.vectors]
    },
    OpDef("svd", inputs: ["x"], outputs: ["u", "s", "vt"], attrs: [.bool("full_matrices", default: true)],
          doc: "Singular value decomposition x = u diag(s) vt of the last two axes (a gradient through u or vt "
            + "is not implemented yet and raises)") { t, a in
        let r = try svd(t[0], full: a.bool("full_matrices")); return [r.u, r.s, r.vt]
    },
    OpDef("lstsq", inputs: ["a", "b"], attrs: [.float("rcond", default: -1)], grad: .missing,
          doc: "Least-squares x minimising |a x - b| (rcond < 0: machine precision)") { t, a in
        try lstsq(t[0], t[1], rcond: a.float("rcond"))
    },
]
