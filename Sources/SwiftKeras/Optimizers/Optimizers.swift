import Foundation
import TensorEngine

/// Updates parameters from their gradients. Runs outside any tape.
public protocol Optimizer: AnyObject {
    func apply(_ gradients: [Tensor?], to parameters: [Parameter]) throws
    /// The learning rate the next step uses (a schedule's value at the current step).
    var learningRate: Double { get set }
}

/// A learning rate as a function of the optimizer's step count (Keras's
/// `LearningRateSchedule`, called with `optimizer.iterations` before the step).
public protocol LearningRateSchedule {
    func callAsFunction(_ step: Int) -> Double
}

/// initial * rate^(step / decaySteps), the exponent floored when `staircase`.
public struct ExponentialDecay: LearningRateSchedule {
    public let initialLearningRate: Double, decaySteps: Int, decayRate: Double, staircase: Bool

    public init(initialLearningRate: Double, decaySteps: Int, decayRate: Double, staircase: Bool = false) {
        precondition(decaySteps > 0, "ExponentialDecay: decaySteps must be positive")
        self.initialLearningRate = initialLearningRate
        self.decaySteps = decaySteps
        self.decayRate = decayRate
        self.staircase = staircase
    }

    public func callAsFunction(_ step: Int) -> Double {
        var p = Double(step) / Double(decaySteps)
        if staircase { p = p.rounded(.down) }
        return initialLearningRate * Foundation.pow(decayRate, p)
    }
}

/// Keras's CosineDecay: an optional linear warmup to `warmupTarget`, then a half cosine from
/// the peak down to alpha * peak over `decaySteps`.
public struct CosineDecay: LearningRateSchedule {
    public let initialLearningRate: Double, decaySteps: Int, alpha: Double
    public let warmupTarget: Double?, warmupSteps: Int

    public init(initialLearningRate: Double, decaySteps: Int, alpha: Double = 0, warmupTarget: Double? = nil, warmupSteps: Int = 0) {
        precondition(decaySteps > 0, "CosineDecay: decaySteps must be positive")
        self.initialLearningRate = initialLearningRate
        self.decaySteps = decaySteps
        self.alpha = alpha
        self.warmupTarget = warmupTarget
        self.warmupSteps = warmupSteps
    }

    public func callAsFunction(_ step: Int) -> Double {
        var peak = initialLearningRate, s = Double(step)
        if let target = warmupTarget, warmupSteps > 0 {
            if step < warmupSteps { return initialLearningRate + (target - initialLearningRate) * s / Double(warmupSteps) }
            peak = target
            s -= Double(warmupSteps)
        }
        let fraction = min(s, Double(decaySteps)) / Double(decaySteps)
        let cosine = 0.5 * (1 + cos(Double.pi * fraction))
        return peak * ((1 - alpha) * cosine + alpha)
    }
}

/// values[0] up to and including boundaries[0], values[i] in (boundaries[i-1], boundaries[i]],
/// values.last after the last boundary.
public struct PiecewiseConstantDecay: LearningRateSchedule {
    public let boundaries: [Int], values: [Double]

    public init(boundaries: [Int], values: [Double]) {
        precondition(values.count == boundaries.count + 1, "PiecewiseConstantDecay needs one more value than boundaries")
        self.boundaries = boundaries
        self.values = values
    }

    public func callAsFunction(_ step: Int) -> Double {
        values[boundaries.firstIndex { step <= $0 } ?? boundaries.count]
    }
}

/// What every Keras optimizer does around its update rule (keras/src/optimizers/base_optimizer.py):
/// gradients clipped (clipnorm per gradient, else global_clipnorm, else clipvalue), decoupled
/// weight decay var -= var * weightDecay * lr, the rule, then iterations += 1. The rule sees the
/// learning rate of the step before the increment, and `iterations` as Keras's (so step t + 1).
open class KerasOptimizer: Optimizer {
    /// A constant rate; setting it (ReduceLROnPlateau does) replaces any schedule.
    public var learningRate: Double {
        get { schedule.map { $0(iterations) } ?? constantRate }
        set { constantRate = newValue; schedule = nil }
    }
    public private(set) var schedule: LearningRateSchedule?
    private var constantRate: Double
    public var clipnorm: Double?, clipvalue: Double?, globalClipnorm: Double?
    public var weightDecay: Double?
    /// Steps taken (Keras's `optimizer.iterations`).
    public internal(set) var iterations = 0
    /// Per-parameter state (momenta, accumulators), created on a parameter's first step.
    var slots: [ObjectIdentifier: [Tensor]] = [:]

    init(learningRate: Double, schedule: LearningRateSchedule?, clipnorm: Double?, clipvalue: Double?,
         globalClipnorm: Double?, weightDecay: Double?) {
        constantRate = learningRate
        self.schedule = schedule
        self.clipnorm = clipnorm
        self.clipvalue = clipvalue
        self.globalClipnorm = globalClipnorm
        self.weightDecay = weightDecay
    }

    /// The slots a parameter's rule keeps, initialised.
    func makeSlots(_ p: Tensor) throws -> [Tensor] { [] }

    /// Once per step after the per-parameter updates, before `iterations` advances, eager or
    /// replayed (Nadam's running product). Values a step reads are step scalars, which run
    /// before a replay: they compute from the state as it was before the step.
    func endStep() {}

    /// One parameter's update: the new value and the new slots. The learning rate and
    /// anything else that changes from step to step come from `stepScalar`, so a compiled
    /// step reads each step's value.
    func update(_ p: Tensor, _ g: Tensor, slots: [Tensor]) throws -> (Tensor, [Tensor]) {
        throw EngineError.internal("\(type(of: self)) has no update rule")
    }

    /// `value()` for this step as a 0-d tensor of `dtype` (a compiled step's input: see
    /// StepInputs). `name` tells this optimizer's values apart; `value` reads the optimizer's
    /// state as it is before the step (`iterations` not yet advanced).
    func stepScalar(_ name: String, _ dtype: DType, _ value: @escaping () -> Double) throws -> Tensor {
        try StepInputs.scalar("\(ObjectIdentifier(self)).\(name)", dtype, value)
    }

    /// This step's learning rate.
    func lr(_ dtype: DType) throws -> Tensor { try stepScalar("lr", dtype) { self.learningRate } }

    /// Keras's `iterations + 1`, the step number the rules see.
    var stepNumber: Double { Double(iterations + 1) }

    public func apply(_ gradients: [Tensor?], to parameters: [Parameter]) throws {
        guard gradients.count == parameters.count else {
            throw EngineError.value("optimizer got \(gradients.count) gradients for \(parameters.count) parameters")
        }
        try Tape.paused {
            let grads = try clipped(gradients)
            if let wd = weightDecay, wd != 0 {
                for (g, p) in zip(grads, parameters) where g != nil {
                    let decay = try stepScalar("decay", p.value.dtype) { (self.weightDecay ?? wd) * self.learningRate }
                    p.value = try Ops.subtract(p.value, try Ops.multiply(p.value, decay))
                }
            }
            for (g, p) in zip(grads, parameters) {
                guard let g = g else { continue }
                let key = ObjectIdentifier(p)
                let state = try slots[key] ?? makeSlots(p.value)
                let grad = try Ops.cast(g, to: p.value.dtype)
                let (value, next) = try update(p.value, grad, slots: state)
                slots[key] = next
                p.value = value
            }
        }
        endStep()
        iterations += 1
    }

    // MARK: compiled steps

    /// Why a step with this optimizer cannot be compiled (nil when it can).
    var compileBlocker: String? { nil }

    /// The options a traced step builds in (its ops differ with them): part of its signature.
    var tracedOptions: String {
        func show(_ v: Double?) -> String { v.map(String.init(describing:)) ?? "-" }
        return "\(weightDecay.map { $0 != 0 } ?? false),\(show(clipvalue)),\(show(clipnorm)),\(show(globalClipnorm))"
    }

    /// Creates the slots of every parameter that has none yet (an eager step creates them on
    /// a parameter's first gradient), so that a traced step finds all its state already there.
    func createSlots(_ parameters: [Parameter]) throws {
        for p in parameters where slots[ObjectIdentifier(p)] == nil { slots[ObjectIdentifier(p)] = try makeSlots(p.value) }
    }

    /// Each slot of each parameter, as state a compiled step reads and replaces.
    func slotRefs(_ parameters: [Parameter]) -> [StateRef] {
        parameters.flatMap { p -> [StateRef] in
            let key = ObjectIdentifier(p)
            return (slots[key] ?? []).indices.map { i in
                StateRef(get: { self.slots[key]![i] }, set: { self.slots[key]![i] = $0 })
            }
        }
    }

    /// What `apply` does on the host after the updates, for a step a program replayed.
    func finishReplayedStep() {
        endStep()
        iterations += 1
    }

    private func clipped(_ grads: [Tensor?]) throws -> [Tensor?] {
        // On the engine's ops, not the host: a compiled step computes the norms each step.
        if let c = clipnorm, c > 0 { return try grads.map { g in try g.map { try Ops.clipByNorm($0, c) } } }
        if let c = globalClipnorm, c > 0 { return try Ops.clipByGlobalNorm(grads, c) }
        if let v = clipvalue, v > 0 {
            return try grads.map { g in try g.map { try Ops.clip($0, min: -v, max: v) } }
        }
        return grads
    }
}

/// A hyperparameter fixed for the optimizer's life, as a 0-d tensor of `like`'s dtype.
private func s(_ v: Double, _ like: Tensor) throws -> Tensor { try Ops.scalar(v, like.dtype) }

/// Keras's SGD: m = momentum * m - lr * g; var += m (Nesterov: var += momentum * m - lr * g).
public final class SGD: KerasOptimizer {
    public let momentum: Double, nesterov: Bool

    public init(learningRate: Double = 0.01, momentum: Double = 0, nesterov: Bool = false, schedule: LearningRateSchedule? = nil,
                clipnorm: Double? = nil, clipvalue: Double? = nil, globalClipnorm: Double? = nil, weightDecay: Double? = nil) {
        self.momentum = momentum
        self.nesterov = nesterov
        super.init(learningRate: learningRate, schedule: schedule, clipnorm: clipnorm, clipvalue: clipvalue,
                   globalClipnorm: globalClipnorm, weightDecay: weightDecay)
    }

    override func makeSlots(_ p: Tensor) throws -> [Tensor] { momentum != 0 ? [try zerosLike(p)] : [] }

    override func update(_ p: Tensor, _ g: Tensor, slots: [Tensor]) throws -> (Tensor, [Tensor]) {
        let step = try Ops.multiply(g, try lr(p.dtype))
        guard momentum != 0 else { return (try Ops.subtract(p, step), []) }
        let m = try Ops.subtract(try Ops.multiply(slots[0], try s(momentum, p)), step)
        let delta = nesterov ? try Ops.subtract(try Ops.multiply(m, try s(momentum, p)), step) : m
        return (try Ops.add(p, delta), [m])
    }
}

/// Keras's Adam: m, v running moments; var -= m * lr * sqrt(1 - b2^t) / (1 - b1^t) / (sqrt(v) + eps)
/// (AMSGrad keeps the running maximum of v). AdamW is Adam with decoupled weight decay.
public class Adam: KerasOptimizer {
    public let beta1: Double, beta2: Double, epsilon: Double, amsgrad: Bool

    public init(learningRate: Double = 0.001, beta1: Double = 0.9, beta2: Double = 0.999, epsilon: Double = 1e-7,
                amsgrad: Bool = false, schedule: LearningRateSchedule? = nil, clipnorm: Double? = nil, clipvalue: Double? = nil,
                globalClipnorm: Double? = nil, weightDecay: Double? = nil) {
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.amsgrad = amsgrad
        super.init(learningRate: learningRate, schedule: schedule, clipnorm: clipnorm, clipvalue: clipvalue,
                   globalClipnorm: globalClipnorm, weightDecay: weightDecay)
    }

    override func makeSlots(_ p: Tensor) throws -> [Tensor] { try (0..<(amsgrad ? 3 : 2)).map { _ in try zerosLike(p) } }

    override func update(_ p: Tensor, _ g: Tensor, slots: [Tensor]) throws -> (Tensor, [Tensor]) {
        let alpha = try stepScalar("alpha", p.dtype) {
            let t = self.stepNumber
            return self.learningRate * (1 - Foundation.pow(self.beta2, t)).squareRoot() / (1 - Foundation.pow(self.beta1, t))
        }
        if !amsgrad && (p.dtype == .float32 || p.dtype == .float64) {
            // The engine's fused step: one pass instead of a dozen ops, each a pass and an allocation.
            let (x, m, v) = try Ops.adamUpdate(variable: p, grad: g, m: slots[0], v: slots[1], alpha: alpha,
                                               beta1: beta1, beta2: beta2, epsilon: epsilon)
            return (x, [m, v])
        }
        let m = try Ops.add(slots[0], try Ops.multiply(try Ops.subtract(g, slots[0]), try s(1 - beta1, p)))
        var v = try Ops.add(slots[1], try Ops.multiply(try Ops.subtract(try Ops.square(g), slots[1]), try s(1 - beta2, p)))
        var next = [m, v]
        if amsgrad {
            v = try Ops.maximum(slots[2], v)
            next.append(v)
        }
        let step = try Ops.divide(try Ops.multiply(m, alpha), try Ops.add(try Ops.sqrt(v), try s(epsilon, p)))
        return (try Ops.subtract(p, step), next)
    }
}

/// Adam with Keras's AdamW default weight decay, 0.004.
public final class AdamW: Adam {
    public init(learningRate: Double = 0.001, weightDecay: Double = 0.004, beta1: Double = 0.9, beta2: Double = 0.999,
                epsilon: Double = 1e-7, amsgrad: Bool = false, schedule: LearningRateSchedule? = nil, clipnorm: Double? = nil,
                clipvalue: Double? = nil, globalClipnorm: Double? = nil) {
        super.init(learningRate: learningRate, beta1: beta1, beta2: beta2, epsilon: epsilon, amsgrad: amsgrad, schedule: schedule,
                   clipnorm: clipnorm, clipvalue: clipvalue, globalClipnorm: globalClipnorm, weightDecay: weightDecay)
    }
}

/// Keras's RMSprop: v = rho v + (1 - rho) g²; increment = lr g / sqrt(v (- mean_g²) + eps);
/// with momentum, m = momentum m + increment and var -= m.
public final class RMSprop: KerasOptimizer {
    public let rho: Double, momentum: Double, epsilon: Double, centered: Bool

    public init(learningRate: Double = 0.001, rho: Double = 0.9, momentum: Double = 0, epsilon: Double = 1e-7, centered: Bool = false,
                schedule: LearningRateSchedule? = nil, clipnorm: Double? = nil, clipvalue: Double? = nil,
                globalClipnorm: Double? = nil, weightDecay: Double? = nil) {
        self.rho = rho
        self.momentum = momentum
        self.epsilon = epsilon
        self.centered = centered
        super.init(learningRate: learningRate, schedule: schedule, clipnorm: clipnorm, clipvalue: clipvalue,
                   globalClipnorm: globalClipnorm, weightDecay: weightDecay)
    }

    // [velocity, momentum, average gradient]
    override func makeSlots(_ p: Tensor) throws -> [Tensor] { try (0..<3).map { _ in try zerosLike(p) } }

    override func update(_ p: Tensor, _ g: Tensor, slots: [Tensor]) throws -> (Tensor, [Tensor]) {
        let v = try Ops.add(try Ops.multiply(slots[0], try s(rho, p)), try Ops.multiply(try Ops.square(g), try s(1 - rho, p)))
        var avg = slots[2], denom = try Ops.add(v, try s(epsilon, p))
        if centered {
            avg = try Ops.add(try Ops.multiply(avg, try s(rho, p)), try Ops.multiply(g, try s(1 - rho, p)))
            denom = try Ops.add(try Ops.subtract(v, try Ops.square(avg)), try s(epsilon, p))
        }
        let increment = try Ops.divide(try Ops.multiply(g, try lr(p.dtype)), try Ops.sqrt(denom))
        if momentum > 0 {
            let m = try Ops.add(try Ops.multiply(slots[1], try s(momentum, p)), increment)
            return (try Ops.subtract(p, m), [v, m, avg])
        }
        return (try Ops.subtract(p, increment), [v, slots[1], avg])
    }
}

/// Keras's Adagrad: acc += g²; var -= lr g / sqrt(acc + eps), acc starting at 0.1.
public final class Adagrad: KerasOptimizer {
    public let initialAccumulatorValue: Double, epsilon: Double

    public init(learningRate: Double = 0.001, initialAccumulatorValue: Double = 0.1, epsilon: Double = 1e-7,
                schedule: LearningRateSchedule? = nil, clipnorm: Double? = nil, clipvalue: Double? = nil,
                globalClipnorm: Double? = nil, weightDecay: Double? = nil) {
        self.initialAccumulatorValue = initialAccumulatorValue
        self.epsilon = epsilon
        super.init(learningRate: learningRate, schedule: schedule, clipnorm: clipnorm, clipvalue: clipvalue,
                   globalClipnorm: globalClipnorm, weightDecay: weightDecay)
    }

    override func makeSlots(_ p: Tensor) throws -> [Tensor] {
        [try Ops.add(try zerosLike(p), try s(initialAccumulatorValue, p))]
    }

    override func update(_ p: Tensor, _ g: Tensor, slots: [Tensor]) throws -> (Tensor, [Tensor]) {
        let acc = try Ops.add(slots[0], try Ops.square(g))
        let step = try Ops.divide(try Ops.multiply(g, try lr(p.dtype)), try Ops.sqrt(try Ops.add(acc, try s(epsilon, p))))
        return (try Ops.subtract(p, step), [acc])
    }
}

/// Keras 3's Nadam: Adam with Nesterov momentum and the momentum schedule
/// u_t = b1 (1 - 0.5 * 0.96^t), whose running product the optimizer keeps.
public final class Nadam: KerasOptimizer {
    public let beta1: Double, beta2: Double, epsilon: Double
    var uProduct = 1.0

    public init(learningRate: Double = 0.001, beta1: Double = 0.9, beta2: Double = 0.999, epsilon: Double = 1e-7,
                schedule: LearningRateSchedule? = nil, clipnorm: Double? = nil, clipvalue: Double? = nil,
                globalClipnorm: Double? = nil, weightDecay: Double? = nil) {
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        super.init(learningRate: learningRate, schedule: schedule, clipnorm: clipnorm, clipvalue: clipvalue,
                   globalClipnorm: globalClipnorm, weightDecay: weightDecay)
    }

    private func u(_ t: Double) -> Double { beta1 * (1 - 0.5 * Foundation.pow(0.96, t)) }

    override func endStep() { uProduct *= u(stepNumber) }

    override func makeSlots(_ p: Tensor) throws -> [Tensor] { [try zerosLike(p), try zerosLike(p)] }

    override func update(_ p: Tensor, _ g: Tensor, slots: [Tensor]) throws -> (Tensor, [Tensor]) {
        // The step's factors from the running product before it (uProduct advances in endStep).
        let mFactor = try stepScalar("nadam_m", p.dtype) {
            let t = self.stepNumber
            return self.u(t + 1) / (1 - self.uProduct * self.u(t) * self.u(t + 1))
        }
        let gFactor = try stepScalar("nadam_g", p.dtype) {
            let t = self.stepNumber
            return (1 - self.u(t)) / (1 - self.uProduct * self.u(t))
        }
        let vFactor = try stepScalar("nadam_v", p.dtype) { 1 - Foundation.pow(self.beta2, self.stepNumber) }
        let m = try Ops.add(slots[0], try Ops.multiply(try Ops.subtract(g, slots[0]), try s(1 - beta1, p)))
        let v = try Ops.add(slots[1], try Ops.multiply(try Ops.subtract(try Ops.square(g), slots[1]), try s(1 - beta2, p)))
        let mHat = try Ops.add(try Ops.multiply(m, mFactor), try Ops.multiply(g, gFactor))
        let vHat = try Ops.divide(v, vFactor)
        let step = try Ops.divide(try Ops.multiply(mHat, try lr(p.dtype)), try Ops.add(try Ops.sqrt(vHat), try s(epsilon, p)))
        return (try Ops.subtract(p, step), [m, v])
    }
}

/// Lion (Chen et al.): var -= lr sign(b1 m + (1 - b1) g); m = b2 m + (1 - b2) g.
public final class Lion: KerasOptimizer {
    public let beta1: Double, beta2: Double

    public init(learningRate: Double = 0.001, beta1: Double = 0.9, beta2: Double = 0.99, schedule: LearningRateSchedule? = nil,
                clipnorm: Double? = nil, clipvalue: Double? = nil, globalClipnorm: Double? = nil, weightDecay: Double? = nil) {
        self.beta1 = beta1
        self.beta2 = beta2
        super.init(learningRate: learningRate, schedule: schedule, clipnorm: clipnorm, clipvalue: clipvalue,
                   globalClipnorm: globalClipnorm, weightDecay: weightDecay)
    }

    override func makeSlots(_ p: Tensor) throws -> [Tensor] { [try zerosLike(p)] }

    override func update(_ p: Tensor, _ g: Tensor, slots: [Tensor]) throws -> (Tensor, [Tensor]) {
        let direction = try Ops.unary("sign", try Ops.add(try Ops.multiply(slots[0], try s(beta1, p)), try Ops.multiply(g, try s(1 - beta1, p))))
        let m = try Ops.add(try Ops.multiply(slots[0], try s(beta2, p)), try Ops.multiply(g, try s(1 - beta2, p)))
        return (try Ops.subtract(p, try Ops.multiply(direction, try lr(p.dtype))), [m])
    }
}
