#if canImport(Glibc)
import Glibc
#endif

/// Scalar special functions in Double, used by the elementwise kernels.
enum SpecialFunctions {
    /// Inverse error function: Giles' single-precision approximation refined by two Newton
    /// steps on erf, which brings it to double precision. ±1 → ±inf, |y| > 1 → NaN.
    static func erfinv(_ y: Double) -> Double {
        if y.isNaN || y < -1 || y > 1 { return .nan }
        if y == 1 { return .infinity }
        if y == -1 { return -.infinity }
        var w = -Glibc.log((1 - y) * (1 + y)), x: Double
        if w < 5 {
            w -= 2.5
            var p = 2.81022636e-08
            for c in [3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087, -0.00125372503,
                      -0.00417768164, 0.246640727, 1.50140941] { p = c + p * w }
            x = p * y
        } else {
            w = w.squareRoot() - 3
            var p = -0.000200214257
            for c in [0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773, -0.0076224613,
                      0.00943887047, 1.00167406, 2.83297682] { p = c + p * w }
            x = p * y
        }
        for _ in 0..<2 {
            let err = Glibc.erf(x) - y
            x -= err / (1.1283791670955126 * Glibc.exp(-x * x))
        }
        return x
    }

    /// Modified Bessel function of the first kind, order 0 or 1: the power series for
    /// |x| <= 30, the asymptotic expansion beyond (both accurate to ~1e-13 relative).
    static func besselI(_ x: Double, order1: Bool) -> Double {
        if x.isNaN { return x }
        let ax = Swift.abs(x)
        if ax <= 30 {
            let q = x * x / 4
            var term = order1 ? x / 2 : 1.0, total = term, k = 1.0
            while k < 500 {
                term *= q / (k * (order1 ? k + 1 : k))
                total += term
                if Swift.abs(term) <= Swift.abs(total) * 1e-17 { break }
                k += 1
            }
            return total
        }
        // e^x / sqrt(2 pi x) * sum_k (-1)^k prod_{j<=k} (mu - (2j-1)^2) / (k! (8x)^k), mu = 4 nu^2
        let mu = order1 ? 4.0 : 0.0
        var term = 1.0, total = 1.0
        for k in 1...12 {
            let j = Double(2 * k - 1)
            term *= -(mu - j * j) / (Double(k) * 8 * ax)
            total += term
        }
        // Beyond exp's range the two factors are inf / inf: take the quotient in logs there.
        let v = ax < 700 ? Glibc.exp(ax) / (2 * Double.pi * ax).squareRoot() * total
            : Glibc.exp(ax - 0.5 * (Glibc.log(2 * Double.pi) + Glibc.log(ax))) * total
        return order1 && x < 0 ? -v : v
    }
}
