#if canImport(Glibc)
import Glibc
#endif

/// Complex FFT along the last axis; complex values travel as (real, imaginary) float tensors,
/// as Keras passes them. Power-of-two lengths use iterative radix-2 Cooley-Tukey; other
/// lengths use Bluestein's chirp-z transform on a power-of-two grid. Computed in Double.

private func isPowerOfTwo(_ n: Int) -> Bool { n > 0 && (n & (n - 1)) == 0 }

/// In-place radix-2 transform of (re, im), length a power of two; sign -1 forward, +1 inverse
/// (unnormalised).
private func radix2(_ re: UnsafeMutablePointer<Double>, _ im: UnsafeMutablePointer<Double>, _ n: Int, _ sign: Double) {
    var j = 0
    for i in 1..<n {
        var bit = n >> 1
        while j & bit != 0 { j ^= bit; bit >>= 1 }
        j |= bit
        if i < j { re.swapAt(i, j); im.swapAt(i, j) }
    }
    var len = 2
    while len <= n {
        let ang = sign * 2 * Double.pi / Double(len)
        let (wr, wi) = (Glibc.cos(ang), Glibc.sin(ang))
        var start = 0
        while start < n {
            var (cr, ci) = (1.0, 0.0)
            for k in 0..<(len / 2) {
                let a = start + k, b = a + len / 2
                let tr = re[b] * cr - im[b] * ci, ti = re[b] * ci + im[b] * cr
                re[b] = re[a] - tr; im[b] = im[a] - ti
                re[a] += tr; im[a] += ti
                (cr, ci) = (cr * wr - ci * wi, cr * wi + ci * wr)
            }
            start += len
        }
        len <<= 1
    }
}

private extension UnsafeMutablePointer where Pointee == Double {
    func swapAt(_ i: Int, _ j: Int) { let t = self[i]; self[i] = self[j]; self[j] = t }
}

/// Unnormalised DFT of one row of length n (any n).
private func dft(_ re: UnsafeMutablePointer<Double>, _ im: UnsafeMutablePointer<Double>, _ n: Int, _ sign: Double) {
    if n <= 1 { return }
    if isPowerOfTwo(n) { radix2(re, im, n, sign); return }
    // Bluestein: x_k w_k convolved with conj(w) where w_k = exp(sign*i*pi*k^2/n).
    var m = 1
    while m < 2 * n - 1 { m <<= 1 }
    var ar = [Double](repeating: 0, count: m), ai = ar, br = ar, bi = ar
    var wr = [Double](repeating: 0, count: n), wi = wr
    for k in 0..<n {
        let ang = sign * Double.pi * Double((k * k) % (2 * n)) / Double(n)
        wr[k] = Glibc.cos(ang); wi[k] = Glibc.sin(ang)
        ar[k] = re[k] * wr[k] - im[k] * wi[k]
        ai[k] = re[k] * wi[k] + im[k] * wr[k]
    }
    br[0] = wr[0]; bi[0] = -wi[0]
    for k in 1..<n { br[k] = wr[k]; bi[k] = -wi[k]; br[m - k] = wr[k]; bi[m - k] = -wi[k] }
    ar.withUnsafeMutableBufferPointer { a in ai.withUnsafeMutableBufferPointer { b in radix2(a.baseAddress!, b.baseAddress!, m, -1) } }
    br.withUnsafeMutableBufferPointer { a in bi.withUnsafeMutableBufferPointer { b in radix2(a.baseAddress!, b.baseAddress!, m, -1) } }
    for k in 0..<m {
        let (r, i) = (ar[k] * br[k] - ai[k] * bi[k], ar[k] * bi[k] + ai[k] * br[k])
        ar[k] = r; ai[k] = i
    }
    ar.withUnsafeMutableBufferPointer { a in ai.withUnsafeMutableBufferPointer { b in radix2(a.baseAddress!, b.baseAddress!, m, 1) } }
    for k in 0..<n {
        let (r, i) = (ar[k] / Double(m), ai[k] / Double(m))
        re[k] = r * wr[k] - i * wi[k]
        im[k] = r * wi[k] + i * wr[k]
    }
}

/// FFT (or inverse FFT, normalised by 1/n) of real + i·imag along the last axis.
/// Differentiable: the transform is linear, so each output's VJP is the adjoint transform.
public func fft(_ real0: Tensor, _ imag0: Tensor, inverse: Bool = false) throws -> (real: Tensor, imag: Tensor) {
    guard real0.shape == imag0.shape, real0.rank >= 1 else {
        throw EngineError.value("fft needs real and imaginary parts of one shape (rank >= 1), got \(real0.shape) and \(imag0.shape)")
    }
    let dt = DType.result(real0.dtype, imag0.dtype).isFloatingPoint ? DType.result(real0.dtype, imag0.dtype) : .float32
    let re = try cast(real0, to: .float64), im = try cast(imag0, to: .float64)
    let n = re.shape.last!, rows = n == 0 ? 0 : re.count / n
    let outR = try Tensor(zeros: re.shape, dtype: .float64), outI = try Tensor(zeros: re.shape, dtype: .float64)
    outR.rawPointer.copyMemory(from: re.rawPointer, byteCount: re.nbytes)
    outI.rawPointer.copyMemory(from: im.rawPointer, byteCount: im.nbytes)
    let pr = outR.pointer(Double.self), pi = outI.pointer(Double.self)
    parallelFor(rows, cost: n * 16) { range in
        for r in range {
            dft(pr + r * n, pi + r * n, n, inverse ? 1 : -1)
            if inverse { for k in 0..<n { pr[r * n + k] /= Double(n); pi[r * n + k] /= Double(n) } }
        }
    }
    let yr = try Tape.paused { try cast(outR, to: dt) }, yi = try Tape.paused { try cast(outI, to: dt) }
    if dt.isFloatingPoint {
        let (xr, xi) = (real0, imag0)
        // Adjoint of the forward DFT is n * inverse DFT; of the inverse DFT, the forward DFT / n.
        func adjoint(_ gr: Tensor, _ gi: Tensor) throws -> [Tensor?] {
            let (ar, ai) = try fft(gr, gi, inverse: !inverse)
            let scale = try scalar(inverse ? 1 / Double(n) : Double(n), ar.dtype)
            return [try cast(try multiply(ar, scale), to: xr.dtype), try cast(try multiply(ai, scale), to: xi.dtype)]
        }
        Tape.record(yr, [xr, xi]) { g in try adjoint(g, try zerosLike(g)) }
        Tape.record(yi, [xr, xi]) { g in try adjoint(try zerosLike(g), g) }
    }
    return (yr, yi)
}

let fftOps: [OpDef] = [
    OpDef("fft", inputs: ["real", "imag"], outputs: ["real", "imag"], attrs: [.bool("inverse", default: false)],
          doc: "Complex FFT over the last axis of real + imag * i (inverse: scaled by 1/n)") { t, a in
        let r = try fft(t[0], t[1], inverse: a.bool("inverse"))
        return [r.real, r.imag]
    },
]
