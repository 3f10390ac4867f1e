import COpenBLAS

/// Elementwise fusion: a chain of elementwise ops run block by block while the block is in
/// cache (numexpr's blocked evaluation), instead of one pass over memory per op. Keras's
/// optimizers update each variable through a chain of a dozen elementwise ops (RMSprop:
/// square, multiply, add, sqrt, divide, ...); each wrote and re-read a whole tensor.
///
/// The graph pass `Program.fusingElementwise` rewrites such a chain into one
/// `fused_elementwise` node. Its attributes list the instructions (`ops`, comma-separated
/// op names; `operands`, two per instruction, the second -1 for a unary op: a reference
/// below the input count is that input, any other is instruction (reference - input count));
/// `results`, the instructions the node outputs, in order. The pass knows no shapes or dtypes,
/// so the op decides at run time: where every input is float32 (or every one float64) and
/// each holds the result's element count or one element, and no tape records them, it runs
/// the blocks with the functors the ops themselves use (so the values are the same bits);
/// anywhere else it runs the ops one by one, recorded as usual.

/// One instruction of a fused chain.
struct FusedInstruction {
    enum Kernel {
        case unary(UnaryOp), binary(BinaryOp)
    }
    let op: Int
    let kernel: Kernel
    /// References (see the top of this file); `b` is -1 for a unary op.
    let a: Int, b: Int
}

enum ElementwiseFusion {
    /// The float ops of no attributes that a chain may hold: those whose unfused forward,
    /// for float32 and float64 operands, is one functor per element (Elementwise.swift).
    static let unaryOps: [String: UnaryOp] = [
        "negative": .negative, "abs": .abs, "sign": .sign, "square": .square, "floor": .floor, "ceil": .ceil,
        "round": .round, "relu": .relu, "exp": .exp, "expm1": .expm1, "log": .log, "log1p": .log1p,
        "sqrt": .sqrt, "rsqrt": .rsqrt, "reciprocal": .reciprocal, "sin": .sin, "cos": .cos, "tan": .tan,
        "tanh": .tanh, "sinh": .sinh, "cosh": .cosh, "arcsin": .arcsin, "arccos": .arccos, "arctan": .arctan,
        "sigmoid": .sigmoid, "relu6": .relu6, "softplus": .softplus, "softsign": .softsign, "silu": .silu,
        "selu": .selu, "erf": .erf,
    ]
    static let binaryOps: [String: BinaryOp] = [
        "add": .add, "subtract": .subtract, "multiply": .multiply, "divide": .divide, "maximum": .maximum,
        "minimum": .minimum, "power": .power,
    ]

    /// The number of operands of a fusable op, 0 for any other.
    static func arity(_ name: String) -> Int {
        unaryOps[name] != nil ? 1 : (binaryOps[name] != nil ? 2 : 0)
    }

    /// Elements per block: 32 KiB of float32 per live intermediate, so a chain's block
    /// buffers stay in L2. With 2048 (8 KiB) an MLP's SGD update stalled on loading its
    /// operands from memory (each stream restarting every block) and ran slower than the ops.
    static let blockSize = 8192

    /// The instructions the attributes encode, checked against `inputCount` inputs.
    static func instructions(_ attrs: Attrs, inputCount: Int) throws -> (program: [FusedInstruction], results: [Int]) {
        let names = try attrs.string("ops").split(separator: ",").map(String.init)
        let operands = try attrs.requiredInts("operands")
        let results = try attrs.requiredInts("results")
        guard operands.count == 2 * names.count else {
            throw EngineError.value("fused_elementwise: 'operands' must hold 2 references per op, got \(operands.count) for \(names.count) ops")
        }
        var program: [FusedInstruction] = []
        for (j, name) in names.enumerated() {
            let (a, b) = (operands[2 * j], operands[2 * j + 1])
            let kernel: FusedInstruction.Kernel
            if let u = unaryOps[name] {
                guard b == -1 else { throw EngineError.value("fused_elementwise: op \(j) (\(name)) is unary; its second operand must be -1") }
                kernel = .unary(u)
            } else if let bin = binaryOps[name] {
                kernel = .binary(bin)
            } else {
                throw EngineError.value("fused_elementwise: '\(name)' is not an op a fused chain can hold")
            }
            for r in kernel.isUnary ? [a] : [a, b] where r < 0 || r >= inputCount + j {
                throw EngineError.value("fused_elementwise: op \(j) (\(name)) reads reference \(r), which is neither one of the \(inputCount) inputs nor an earlier op")
            }
            guard let index = OpRegistry.lookup(name) else { throw EngineError.internal("fused_elementwise: no op '\(name)'") }
            program.append(FusedInstruction(op: index, kernel: kernel, a: a, b: b))
        }
        guard !results.isEmpty, results.allSatisfy({ $0 >= 0 && $0 < names.count }) else {
            throw EngineError.value("fused_elementwise: 'results' must name at least one of its \(names.count) ops, got \(results)")
        }
        return (program, results)
    }
}

extension FusedInstruction.Kernel {
    var isUnary: Bool { if case .unary = self { return true }; return false }

    /// Whether the op's kernel is `Streaming` (a few instructions per element).
    var isStreaming: Bool {
        switch self {
        case .unary(let op): return [.negative, .abs, .sign, .square, .relu].contains(op)
        case .binary(let op): return [.add, .subtract, .multiply, .maximum, .minimum].contains(op)
        }
    }
}

/// The chain's results, by blocks where it can, else op by op.
func fusedElementwise(_ inputs: [Tensor], _ attrs: Attrs) throws -> [Tensor] {
    let (program, results) = try ElementwiseFusion.instructions(attrs, inputCount: inputs.count)
    if let r = try fusedByBlocks(inputs, program, results) { return r }
    // One by one, an input may still be read after the op that would overwrite it.
    return try BufferReuse.withheld {
        var values = inputs
        for ins in program {
            let args = ins.b < 0 ? [values[ins.a]] : [values[ins.a], values[ins.b]]
            values.append(try OpRegistry.ops[ins.op].run(args, Attrs())[0])
        }
        return results.map { values[inputs.count + $0] }
    }
}

/// The blocked evaluation, or nil where it does not apply (see the top of this file; tests
/// check which cases take it).
func fusedByBlocks(_ inputs: [Tensor], _ program: [FusedInstruction], _ results: [Int]) throws -> [Tensor]? {
    guard let dtype = inputs.first?.dtype, dtype == .float32 || dtype == .float64,
          inputs.allSatisfy({ $0.dtype == dtype }), !Tape.shouldRecord(inputs) else { return nil }
    let base = inputs.count
    var shapes = inputs.map(\.shape)
    var counts = inputs.map(\.count)
    var n = -1
    for ins in program {
        let shape: [Int]
        if ins.b < 0 {
            shape = shapes[ins.a]
        } else {
            guard let s = try? broadcastShapes(shapes[ins.a], shapes[ins.b]) else { return nil }
            shape = s
        }
        var count = 1
        for d in shape {
            let (c, overflow) = count.multipliedReportingOverflow(by: d)
            if overflow { return nil }
            count = c
        }
        if counts[ins.a] != count && counts[ins.a] != 1 { return nil }
        if ins.b >= 0 && counts[ins.b] != count && counts[ins.b] != 1 { return nil }
        if count != 1 {
            if n >= 0 && n != count { return nil }
            n = count
        }
        shapes.append(shape)
        counts.append(count)
    }
    // One-element values (sub-expressions of one-element operands only) run once, as the
    // ops themselves.
    var scalars = [Tensor?](repeating: nil, count: base + program.count)
    for (i, t) in inputs.enumerated() where t.count == 1 { scalars[i] = t }
    try BufferReuse.withheld {
        for (j, ins) in program.enumerated() where counts[base + j] == 1 {
            let args = ins.b < 0 ? [scalars[ins.a]!] : [scalars[ins.a]!, scalars[ins.b]!]
            scalars[base + j] = try OpRegistry.ops[ins.op].run(args, Attrs())[0]
        }
    }
    // An output may take the buffer of an input no later instruction reads (a block of it
    // is read before the output's block is written); of one its own instruction reads,
    // unless that is power, whose kernel re-reads its operands after writing.
    var lastRead = [Int](repeating: -1, count: base)
    for (j, ins) in program.enumerated() {
        for r in [ins.a, ins.b] where r >= 0 && r < base { lastRead[r] = j }
    }
    let lastIsPower = lastRead.map { j -> Bool in
        if j >= 0, case .binary(.power) = program[j].kernel { return true }
        return false
    }
    var outputOf = [Tensor?](repeating: nil, count: program.count)
    for j in results where outputOf[j] == nil {
        if let s = scalars[base + j] {
            outputOf[j] = s
            continue
        }
        var out: Tensor?
        for i in 0..<base where out == nil && lastRead[i] <= j && !(lastRead[i] == j && lastIsPower[i]) {
            out = BufferReuse.claim(inputs[i], shapes[base + j], dtype)
        }
        outputOf[j] = try out ?? Tensor(empty: shapes[base + j], dtype: dtype)
    }
    if n > 0 {
        if dtype == .float32 {
            runBlocks(Float.self, inputs, program, scalars, outputOf, n)
        } else {
            runBlocks(Double.self, inputs, program, scalars, outputOf, n)
        }
    }
    return results.map { outputOf[$0]! }
}

/// Where a reference's block lives: in input i, one value (input or instruction r), output
/// instruction j's tensor, or block buffer s.
private enum BlockPlace { case input(Int), scalar(Int), output(Int), buffer(Int) }

/// Runs the full-size instructions of `program` over `n` elements, block by block. An
/// instruction that is an output writes into its tensor; any other into a block buffer, reused
/// once no later instruction reads it.
private func runBlocks<T: FloatElem>(_: T.Type, _ inputs: [Tensor], _ program: [FusedInstruction], _ scalars: [Tensor?],
                                     _ outputOf: [Tensor?], _ n: Int) {
    let base = inputs.count, block = ElementwiseFusion.blockSize
    // Per reference: where it lives, and whether it is one value (stride 0).
    var lastUse = [Int](repeating: -1, count: base + program.count)
    for (j, ins) in program.enumerated() {
        lastUse[ins.a] = j
        if ins.b >= 0 { lastUse[ins.b] = j }
    }
    var place: [BlockPlace] = inputs.indices.map { inputs[$0].count == 1 ? .scalar($0) : .input($0) }
    var free: [Int] = [], buffers = 0
    for (j, ins) in program.enumerated() {
        if scalars[base + j] != nil {
            place.append(.scalar(base + j))
        } else if outputOf[j] != nil {
            place.append(.output(j))
        } else if let s = free.popLast() {
            place.append(.buffer(s))
        } else {
            place.append(.buffer(buffers))
            buffers += 1
        }
        // Buffers whose last reader this is are free for the instructions after it.
        for r in [ins.a, ins.b == ins.a ? -1 : ins.b] where r >= base && lastUse[r] == j {
            if case .buffer(let s) = place[r] { free.append(s) }
        }
    }
    var fixed = [UnsafeMutablePointer<T>?](repeating: nil, count: base + program.count)
    for (r, p) in place.enumerated() {
        switch p {
        case .input(let i): fixed[r] = inputs[i].pointer(T.self)
        case .scalar(let s): fixed[r] = s < base ? inputs[s].pointer(T.self) : scalars[s]!.pointer(T.self)
        case .output(let j): fixed[r] = outputOf[j]!.pointer(T.self)
        case .buffer: break
        }
    }
    // Threaded as the ops themselves are: a chain of cheap ops (add, multiply, ...) streams
    // memory and takes a second thread only past `Threading.streamingGrain`; each costlier op
    // (divide, sqrt, exp, ...) counts as a unit of work towards `Threading.grain`. On an MLP's
    // RMSprop update, two threads for the cheap chain were slower than one.
    let heavy = program.indices.filter { scalars[base + $0] == nil && !program[$0].kernel.isStreaming }.count
    let blocks = (n + block - 1) / block
    parallelFor(blocks, cost: block * Swift.max(heavy, 1), streaming: heavy == 0) { range in
        withUnsafeTemporaryAllocation(of: T.self, capacity: Swift.max(buffers, 1) * block) { scratch in
            let scratch = scratch.baseAddress!
            var at = [UnsafeMutablePointer<T>](repeating: scratch, count: base + program.count)
            var one = [Bool](repeating: false, count: base + program.count)
            for k in range {
                let start = k * block, m = Swift.min(block, n - start)
                for (r, p) in place.enumerated() {
                    switch p {
                    case .input, .output: at[r] = fixed[r]! + start
                    case .scalar: (at[r], one[r]) = (fixed[r]!, true)
                    case .buffer(let s): at[r] = scratch + s * block
                    }
                }
                for (j, ins) in program.enumerated() where scalars[base + j] == nil {
                    let o = at[base + j]
                    switch ins.kernel {
                    case .unary(let op): fusedUnary(op, at[ins.a], o, m)
                    case .binary(let op): fusedBinary(op, at[ins.a], one[ins.a], at[ins.b], one[ins.b], o, m)
                    }
                }
            }
        }
    }
    withExtendedLifetime((inputs, scalars, outputOf)) {}
}

@inline(__always)
private func loop<F: UnaryKernel>(_ f: F, _ x: UnsafeMutablePointer<F.A>, _ o: UnsafeMutablePointer<F.R>, _ n: Int) {
    for i in 0..<n { o[i] = f(x[i]) }
}

/// o = f(a, b) where at most one of a and b is one value (`oneA`, `oneB`).
@inline(__always)
private func loop<F: BinaryKernel>(_ f: F, _ a: UnsafeMutablePointer<F.A>, _ oneA: Bool, _ b: UnsafeMutablePointer<F.B>,
                                   _ oneB: Bool, _ o: UnsafeMutablePointer<F.R>, _ n: Int) {
    if oneB {
        let s = b[0]
        for i in 0..<n { o[i] = f(a[i], s) }
    } else if oneA {
        let s = a[0]
        for i in 0..<n { o[i] = f(s, b[i]) }
    } else {
        for i in 0..<n { o[i] = f(a[i], b[i]) }
    }
}

@inline(__always)
private func float(_ p: UnsafeMutablePointer<some FloatElem>) -> UnsafeMutablePointer<Float> {
    UnsafeMutableRawPointer(p).assumingMemoryBound(to: Float.self)
}

/// One block of a unary op, with the functor `unary` chooses for `T` (its float32 fast paths
/// first), so the bits are those of the op.
private func fusedUnary<T: FloatElem>(_ op: UnaryOp, _ x: UnsafeMutablePointer<T>, _ o: UnsafeMutablePointer<T>, _ n: Int) {
    if T.self == Float.self {
        let (xf, of) = (float(x), float(o))
        switch op {
        case .exp: return loop(ExpF32(), xf, of, n)
        case .tanh: return loop(TanhF32(), xf, of, n)
        case .sigmoid: return loop(SigmoidF32(), xf, of, n)
        case .erf: return loop(ErfF32(), xf, of, n)
        case .sqrt: return sqrtF32Loop(xf, of, n, reciprocal: false)
        case .rsqrt: return sqrtF32Loop(xf, of, n, reciprocal: true)
        default: break
        }
    }
    switch op {
    case .negative: loop(Neg<T>(), x, o, n)
    case .square: loop(Square<T>(), x, o, n)
    case .relu: loop(Relu<T>(), x, o, n)
    case .abs: loop(Abs<T>(), x, o, n)
    case .sqrt: loop(Sqrt<T>(), x, o, n)
    case .exp: loop(Exp<T>(), x, o, n)
    case .log: loop(Log<T>(), x, o, n)
    case .tanh: loop(Tanh<T>(), x, o, n)
    case .sigmoid: loop(Sigmoid<T>(), x, o, n)
    case .reciprocal: loop(Reciprocal<T>(), x, o, n)
    case .rsqrt: loop(Rsqrt<T>(), x, o, n)
    default: loop(Apply<T>(op: op), x, o, n)
    }
}

/// One block of a binary op, with the functor `binary` chooses for `T`.
private func fusedBinary<T: FloatElem>(_ op: BinaryOp, _ a: UnsafeMutablePointer<T>, _ oneA: Bool,
                                       _ b: UnsafeMutablePointer<T>, _ oneB: Bool, _ o: UnsafeMutablePointer<T>, _ n: Int) {
    switch op {
    case .add: loop(Add<T>(), a, oneA, b, oneB, o, n)
    case .subtract: loop(Sub<T>(), a, oneA, b, oneB, o, n)
    case .multiply: loop(Mul<T>(), a, oneA, b, oneB, o, n)
    case .divide: loop(Div<T>(), a, oneA, b, oneB, o, n)
    case .maximum: loop(Max<T>(), a, oneA, b, oneB, o, n)
    case .minimum: loop(Min<T>(), a, oneA, b, oneB, o, n)
    case .power:
        if T.self == Float.self && TE_HAS_AVX2 != 0 {
            powF32Block(float(a), oneA ? 0 : 1, float(b), oneB ? 0 : 1, float(o), n)
        } else {
            loop(Pow<T>(), a, oneA, b, oneB, o, n)
        }
    default:
        // `ElementwiseFusion.binaryOps` admits none other.
        preconditionFailure("fused_elementwise: no block kernel for \(op.rawValue)")
    }
}

let fusedElementwiseOps: [OpDef] = [
    OpDef("fused_elementwise", inputs: ["inputs..."], variadicOutputs: "results",
          attrs: [.string("ops"), .ints("operands"), .ints("results")], dtypes: .all, inPlace: .any,
          doc: "A chain of elementwise ops (Program.fusingElementwise) run block by block in cache; "
              + "ops: their names, comma-separated; operands: two references per op (input i, or "
              + "earlier op j as input count + j; -1 for a unary op's second); results: the ops it returns",
          fusedElementwise),
]
