// The program file format (docs/graph-format.md is the reference): little-endian binary,
// magic + version, then inputs, outputs, constants (with their bytes) and nodes, ops named
// by their registry name (indices differ between builds) with typed attributes. Loading
// checks every length against the bytes left and validates the program as `Program.init`
// does, so a truncated, corrupt or foreign file is an error, never a crash.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension Program {
    static let magic: [UInt8] = Array("TEGRAPH\0".utf8)
    /// Version 2 added control flow (node kinds 5 and 6), version 3 vjp nodes (kind 7);
    /// files of versions 1 and 2 still load.
    public static let formatVersion: UInt32 = 3
    /// How deeply control flow may nest in a file (deeper is rejected, not recursed into).
    static let maxNesting = 64
    /// Stands for "no value" where a value id is optional.
    static let noValue: UInt32 = .max

    /// The program in the file format.
    public func serialized() throws -> [UInt8] {
        var w = ByteWriter()
        w.bytes(Program.magic)
        w.u32(Program.formatVersion)
        try w.count(valueCount)
        try w.count(inputs.count)
        for i in inputs {
            try w.value(i.value)
            try w.spec(i.spec)
            w.bool(i.requiresGrad)
        }
        try w.count(outputs.count)
        for o in outputs {
            try w.value(o.value)
            try w.spec(o.spec)
        }
        try w.count(constants.count)
        for c in constants {
            try w.value(c.value)
            try w.spec(TensorSpec(of: c.tensor))
            w.bool(c.tensor.requiresGrad)
            w.u64(UInt64(c.tensor.nbytes))
            w.raw(UnsafeRawBufferPointer(start: c.tensor.rawPointer, count: c.tensor.nbytes))
        }
        try Program.write(nodes, &w)
        return w.out
    }

    /// Reads a program from the file format.
    public convenience init(serialized bytes: [UInt8]) throws {
        var r = ByteReader(bytes)
        guard try r.bytes(Program.magic.count) == Program.magic else { throw EngineError.value("not a program file (bad magic)") }
        let version = try r.u32()
        guard version >= 1 && version <= Program.formatVersion else {
            throw EngineError.value("program file version \(version) is not supported (this engine reads versions 1 to \(Program.formatVersion))")
        }
        // Each value is defined once, by a field of at least 4 bytes (its id).
        let valueCount = try r.count(elementSize: 4)
        var inputs: [Input] = []
        for _ in 0..<(try r.count(elementSize: 6)) {
            inputs.append(Input(value: try r.value(), spec: try r.spec(), requiresGrad: try r.bool()))
        }
        var outputs: [Output] = []
        for _ in 0..<(try r.count(elementSize: 5)) {
            outputs.append(Output(value: try r.value(), spec: try r.spec()))
        }
        var constants: [Constant] = []
        for _ in 0..<(try r.count(elementSize: 14)) {
            let v = try r.value(), spec = try r.spec(), requiresGrad = try r.bool()
            let n = try r.u64()
            let expected = try elementCount(spec.shape).multipliedReportingOverflow(by: spec.dtype.itemSize)
            guard !expected.overflow, n == UInt64(expected.partialValue) else {
                throw EngineError.value("program file: constant \(constants.count) has \(n) bytes, \(spec) needs \(expected.partialValue)")
            }
            let t = try r.withBytes(Int(n)) { try Tensor(bytes: $0.baseAddress, byteCount: $0.count, shape: spec.shape, dtype: spec.dtype) }
            if requiresGrad { t.requiresGrad = true }
            constants.append(Constant(value: v, tensor: t))
        }
        let nodes = try Program.readNodes(&r, nesting: version == 1 ? Program.maxNesting : 0, version: version)
        guard r.atEnd else { throw EngineError.value("program file: \(r.remaining) unexpected bytes after the last node") }
        try self.init(valueCount: valueCount, inputs: inputs, outputs: outputs, constants: constants, nodes: nodes)
    }

    static func write(_ nodes: [GraphNode], _ w: inout ByteWriter) throws {
        try w.count(nodes.count)
        for node in nodes {
            switch node {
            case .op(_, let name, let attrs, let ins, let outs):
                w.u8(0)
                try w.string(name)
                let entries = attrs.values.sorted { $0.key < $1.key }
                try w.count(entries.count)
                for (k, v) in entries {
                    try w.string(k)
                    try w.attr(v)
                }
                try w.values(ins)
                try w.values(outs)
            case .tapePush:
                w.u8(1)
            case .tapePop:
                w.u8(2)
            case .setRequiresGrad(let v, let flag):
                w.u8(3)
                try w.value(v)
                w.bool(flag)
            case .gradient(let target, let seed, let sources, let createGraph, let outs):
                w.u8(4)
                try w.value(target)
                try w.optionalValue(seed)
                w.bool(createGraph)
                try w.values(sources)
                try w.count(outs.count)
                for o in outs { try w.optionalValue(o) }
            case .vjp(let step):
                w.u8(7)
                try w.value(step.op)
                try w.count(step.tapeNodes)
                try w.count(step.outputNodes.count)
                for o in step.outputNodes { try w.optionalValue(o) }
                try w.count(step.seeds.count)
                for s in step.seeds { try w.optionalValue(s) }
                try w.values(step.targets)
                try w.values(step.outputs)
                w.bool(step.releases)
            case .cond(let selector, let branches, let outs):
                w.u8(5)
                try w.value(selector)
                try w.count(branches.count)
                for b in branches { try write(b, &w) }
                try w.values(outs)
            case .whileLoop(let initial, let params, let condition, let body, let outs, let maxIterations):
                w.u8(6)
                try w.values(initial)
                try w.values(params)
                try write(condition, &w)
                try write(body, &w)
                try w.values(outs)
                w.i64(maxIterations ?? -1)
            }
        }
    }

    private static func write(_ block: GraphBlock, _ w: inout ByteWriter) throws {
        try write(block.nodes, &w)
        try w.values(block.results)
    }

    static func readNodes(_ r: inout ByteReader, nesting: Int, version: UInt32) throws -> [GraphNode] {
        var nodes: [GraphNode] = []
        for _ in 0..<(try r.count(elementSize: 1)) {
            switch try r.u8() {
            case 0:
                let name = try r.string()
                guard let index = OpRegistry.lookup(name) else { throw EngineError.value("program file: unknown op '\(name)'") }
                var attrs = Attrs()
                for _ in 0..<(try r.count(elementSize: 5)) {
                    let k = try r.string()
                    attrs.set(k, try r.attr())
                }
                nodes.append(.op(index: index, name: name, attrs: attrs, inputs: try r.values(), outputs: try r.values()))
            case 1:
                nodes.append(.tapePush)
            case 2:
                nodes.append(.tapePop)
            case 3:
                nodes.append(.setRequiresGrad(value: try r.value(), flag: try r.bool()))
            case 4:
                let target = try r.value(), seed = try r.optionalValue(), createGraph = try r.bool()
                let sources = try r.values()
                var outs: [Int?] = []
                for _ in 0..<(try r.count(elementSize: 4)) { outs.append(try r.optionalValue()) }
                nodes.append(.gradient(target: target, seed: seed, sources: sources, createGraph: createGraph, outputs: outs))
            case let k where k == 5 || k == 6:
                // A version 1 file reads at the limit: it has no control flow.
                guard nesting < maxNesting else { throw EngineError.value("program file: control flow nests deeper than \(maxNesting) (or a version 1 file holds some)") }
                if k == 5 {
                    let selector = try r.value()
                    // A branch takes at least its two counts.
                    let branches = try (0..<r.count(elementSize: 8)).map { _ in try readBlock(&r, nesting: nesting + 1, version: version) }
                    nodes.append(.cond(selector: selector, branches: branches, outputs: try r.values()))
                } else {
                    let initial = try r.values(), params = try r.values()
                    let condition = try readBlock(&r, nesting: nesting + 1, version: version)
                    let body = try readBlock(&r, nesting: nesting + 1, version: version)
                    let outs = try r.values()
                    let limit = try r.i64()
                    guard limit >= -1 else { throw EngineError.value("program file: bad iteration limit \(limit)") }
                    nodes.append(.whileLoop(initial: initial, parameters: params, condition: condition, body: body,
                                            outputs: outs, maxIterations: limit < 0 ? nil : limit))
                }
            case 7 where version >= 3:
                let op = try r.value(), tapeNodes = Int(try r.u32())
                let outputNodes = try (0..<r.count(elementSize: 4)).map { _ in try r.optionalValue() }
                let seeds = try (0..<r.count(elementSize: 4)).map { _ in try r.optionalValue() }
                let targets = try r.values(), outs = try r.values()
                nodes.append(.vjp(VJPStep(op: op, tapeNodes: tapeNodes, outputNodes: outputNodes, seeds: seeds,
                                          targets: targets, outputs: outs, releases: try r.bool())))
            case let k:
                throw EngineError.value("program file: unknown node kind \(k)")
            }
        }
        return nodes
    }

    private static func readBlock(_ r: inout ByteReader, nesting: Int, version: UInt32) throws -> GraphBlock {
        let nodes = try readNodes(&r, nesting: nesting, version: version)
        return GraphBlock(nodes: nodes, results: try r.values())
    }

    /// Writes the program to `path` (replacing the file).
    public func save(to path: String) throws {
        let bytes = try serialized()
        guard let f = fopen(path, "wb") else { throw EngineError.value("cannot open '\(path)' for writing: \(String(cString: strerror(errno)))") }
        let written = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, f) }
        let closed = fclose(f)
        guard written == bytes.count, closed == 0 else { throw EngineError.value("cannot write '\(path)'") }
    }

    /// Reads a program from `path`.
    public static func load(from path: String) throws -> Program {
        guard let f = fopen(path, "rb") else { throw EngineError.value("cannot open '\(path)': \(String(cString: strerror(errno)))") }
        defer { fclose(f) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, f) }
            if n > 0 { bytes.append(contentsOf: chunk[0..<n]) }
            if n < chunk.count { break }
        }
        guard ferror(f) == 0 else { throw EngineError.value("cannot read '\(path)'") }
        return try Program(serialized: bytes)
    }
}

/// Appends little-endian fields.
struct ByteWriter {
    var out: [UInt8] = []

    mutating func u8(_ v: UInt8) { out.append(v) }
    mutating func bool(_ v: Bool) { out.append(v ? 1 : 0) }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
    mutating func i64(_ v: Int) { u64(UInt64(bitPattern: Int64(v))) }
    mutating func f64(_ v: Double) { u64(v.bitPattern) }
    mutating func bytes(_ b: [UInt8]) { out.append(contentsOf: b) }
    mutating func raw(_ b: UnsafeRawBufferPointer) { out.append(contentsOf: b) }

    mutating func count(_ n: Int) throws {
        guard n >= 0, n < Int(Program.noValue) else { throw EngineError.value("program too large to save (\(n) items)") }
        u32(UInt32(n))
    }
    mutating func value(_ v: Int) throws { try count(v) }
    mutating func optionalValue(_ v: Int?) throws {
        if let v = v { try value(v) } else { u32(Program.noValue) }
    }
    mutating func values(_ vs: [Int]) throws {
        try count(vs.count)
        for v in vs { try value(v) }
    }
    mutating func string(_ s: String) throws {
        let b = Array(s.utf8)
        try count(b.count)
        bytes(b)
    }
    mutating func spec(_ s: TensorSpec) throws {
        u8(UInt8(s.dtype.rawValue))
        try count(s.shape.count)
        for d in s.shape { i64(d) }
    }
    mutating func attr(_ a: AttrValue) throws {
        switch a {
        case .int(let v): u8(0); i64(v)
        case .float(let v): u8(1); f64(v)
        case .bool(let v): u8(2); bool(v)
        case .string(let v): u8(3); try string(v)
        case .ints(let v): u8(4); try count(v.count); for x in v { i64(x) }
        case .floats(let v): u8(5); try count(v.count); for x in v { f64(x) }
        }
    }
}

/// Reads little-endian fields, throwing at the end of the bytes.
struct ByteReader {
    private let b: [UInt8]
    private var pos = 0

    init(_ b: [UInt8]) { self.b = b }

    var remaining: Int { b.count - pos }
    var atEnd: Bool { pos == b.count }

    private mutating func take(_ n: Int) throws -> Range<Int> {
        guard n >= 0, n <= remaining else { throw EngineError.value("program file is truncated") }
        defer { pos += n }
        return pos..<(pos + n)
    }

    mutating func bytes(_ n: Int) throws -> [UInt8] { Array(b[try take(n)]) }

    mutating func withBytes<R>(_ n: Int, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        let r = try take(n)
        return try b.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[r])) }
    }

    private mutating func le<T: FixedWidthInteger>(_: T.Type) throws -> T {
        var v: T = 0
        for (i, byte) in b[try take(MemoryLayout<T>.size)].enumerated() { v |= T(truncatingIfNeeded: byte) << (8 * i) }
        return v
    }

    mutating func u8() throws -> UInt8 { try le(UInt8.self) }
    mutating func u32() throws -> UInt32 { try le(UInt32.self) }
    mutating func u64() throws -> UInt64 { try le(UInt64.self) }
    mutating func i64() throws -> Int { Int(try le(Int64.self)) }
    mutating func f64() throws -> Double { Double(bitPattern: try u64()) }

    mutating func bool() throws -> Bool {
        switch try u8() {
        case 0: return false
        case 1: return true
        case let v: throw EngineError.value("program file: bad boolean \(v)")
        }
    }

    /// A count of items that each take at least `elementSize` bytes (so a corrupt count
    /// cannot ask for more memory than the file could describe).
    mutating func count(elementSize: Int) throws -> Int {
        let n = Int(try u32())
        guard n < Int(Program.noValue), n * elementSize <= remaining else { throw EngineError.value("program file is truncated (a count of \(n) items)") }
        return n
    }

    mutating func value() throws -> Int {
        let v = try u32()
        guard v != Program.noValue else { throw EngineError.value("program file: a required value id is missing") }
        return Int(v)
    }

    mutating func optionalValue() throws -> Int? {
        let v = try u32()
        return v == Program.noValue ? nil : Int(v)
    }

    mutating func values() throws -> [Int] {
        try (0..<count(elementSize: 4)).map { _ in try value() }
    }

    mutating func string() throws -> String {
        let bytes = try self.bytes(try count(elementSize: 1))
        guard let s = String(validating: bytes, as: UTF8.self) else { throw EngineError.value("program file: a name is not UTF-8") }
        return s
    }

    mutating func spec() throws -> TensorSpec {
        let code = try u8()
        guard let dt = DType(rawValue: Int32(code)) else { throw EngineError.value("program file: unknown dtype code \(code)") }
        let rank = try count(elementSize: 8)
        guard rank <= 64 else { throw EngineError.value("program file: rank \(rank) is out of range") }
        let shape = try (0..<rank).map { _ in try i64() }
        _ = try elementCount(shape)
        return TensorSpec(dtype: dt, shape: shape)
    }

    mutating func attr() throws -> AttrValue {
        switch try u8() {
        case 0: return .int(try i64())
        case 1: return .float(try f64())
        case 2: return .bool(try bool())
        case 3: return .string(try string())
        case 4: return .ints(try (0..<count(elementSize: 8)).map { _ in try i64() })
        case 5: return .floats(try (0..<count(elementSize: 8)).map { _ in try f64() })
        case let k: throw EngineError.value("program file: unknown attribute type \(k)")
        }
    }
}
