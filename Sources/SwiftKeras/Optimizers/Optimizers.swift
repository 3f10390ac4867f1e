import TensorEngine

/// Updates parameters from their gradients. Runs outside any tape.
public protocol Optimizer: AnyObject {
    func apply(_ gradients: [Tensor?], to parameters: [Parameter]) throws
}

/// Stochastic gradient descent with optional momentum.
public final class SGD: Optimizer {
    public var learningRate: Double
    public let momentum: Double
    private var velocity: [ObjectIdentifier: Tensor] = [:]

    public init(learningRate: Double = 0.01, momentum: Double = 0) {
        self.learningRate = learningRate
        self.momentum = momentum
    }

    public func apply(_ gradients: [Tensor?], to parameters: [Parameter]) throws {
        try Tape.paused {
            for (g, p) in zip(gradients, parameters) {
                guard let g = g else { continue }
                let lr = try scalar(learningRate, p.value.dtype)
                var step = try multiply(g, lr)
                if momentum > 0 {
                    let key = ObjectIdentifier(p)
                    let v = try subtract(try multiply(velocity[key] ?? zerosLike(p.value), try scalar(momentum, p.value.dtype)), step)
                    velocity[key] = v
                    step = try negative(v)
                }
                p.value = try subtract(p.value, step)
            }
        }
    }
}

/// Adam (Kingma & Ba), with Keras's defaults and epsilon placement.
public final class Adam: Optimizer {
    public var learningRate: Double
    public let beta1: Double, beta2: Double, epsilon: Double
    private var iterations = 0
    private var m: [ObjectIdentifier: Tensor] = [:], v: [ObjectIdentifier: Tensor] = [:]

    public init(learningRate: Double = 0.001, beta1: Double = 0.9, beta2: Double = 0.999, epsilon: Double = 1e-7) {
        self.learningRate = learningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
    }

    public func apply(_ gradients: [Tensor?], to parameters: [Parameter]) throws {
        iterations += 1
        let t = Double(iterations)
        let alpha = learningRate * (1 - pow(beta2, t)).squareRoot() / (1 - pow(beta1, t))
        try Tape.paused {
            for (g, p) in zip(gradients, parameters) {
                guard let g = g else { continue }
                let dt = p.value.dtype, key = ObjectIdentifier(p)
                let m1 = try add(try multiply(m[key] ?? zerosLike(p.value), try scalar(beta1, dt)), try multiply(g, try scalar(1 - beta1, dt)))
                let v1 = try add(try multiply(v[key] ?? zerosLike(p.value), try scalar(beta2, dt)), try multiply(try square(g), try scalar(1 - beta2, dt)))
                m[key] = m1
                v[key] = v1
                let step = try divide(try multiply(m1, try scalar(alpha, dt)), try add(try sqrt(v1), try scalar(epsilon, dt)))
                p.value = try subtract(p.value, step)
            }
        }
    }

    private func pow(_ b: Double, _ e: Double) -> Double {
        var r = 1.0
        for _ in 0..<Int(e) { r *= b }
        return r
    }
}
