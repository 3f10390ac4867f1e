/// Shape helpers shared by every op family.

/// `n` copies of `v`. `[Int](repeating:count:)` is not inlined into the engine: it reaches the
/// standard library's unspecialised buffer initialiser, which looks up `[Int]`'s storage
/// metadata on every call (7% of a 4x4 add); `map` over a range is specialised here.
@inline(__always)
func repeatedInts(_ v: Int, count n: Int) -> [Int] { (0..<n).map { _ in v } }

/// Row-major strides (in elements).
func contiguousStrides(_ shape: [Int]) -> [Int] {
    var strides = repeatedInts(1, count: shape.count)
    var s = 1
    for i in stride(from: shape.count - 1, through: 0, by: -1) {
        strides[i] = s
        s *= shape[i]
    }
    return strides
}

/// numpy broadcasting of two shapes.
public func broadcastShapes(_ a: [Int], _ b: [Int]) throws -> [Int] {
    let r = Swift.max(a.count, b.count)
    var out = repeatedInts(1, count: r)
    for i in 0..<r {
        let da = i < r - a.count ? 1 : a[i - (r - a.count)]
        let db = i < r - b.count ? 1 : b[i - (r - b.count)]
        if da == db || db == 1 { out[i] = da }
        else if da == 1 { out[i] = db }
        else { throw EngineError.value("shapes \(a) and \(b) cannot be broadcast together") }
    }
    return out
}

/// Strides of `shape` seen through the broadcast `target` shape (0 where broadcast).
func broadcastStrides(_ shape: [Int], to target: [Int]) -> [Int] {
    let base = contiguousStrides(shape)
    let off = target.count - shape.count
    var out = repeatedInts(0, count: target.count)
    for i in 0..<shape.count where shape[i] != 1 || target[i + off] == 1 {
        out[i + off] = shape[i] == 1 ? 0 : base[i]
    }
    return out
}

/// Normalises a possibly negative axis against `rank`.
public func normalizeAxis(_ axis: Int, rank: Int) throws -> Int {
    let a = axis < 0 ? axis + rank : axis
    // A 0-d tensor has no axis (numpy and JAX agree): its axis 0 would index an empty shape.
    guard a >= 0 && a < rank else {
        throw EngineError.value("axis \(axis) is out of bounds for a tensor of rank \(rank)")
    }
    return a
}

/// Sorted, unique, normalised axes; nil means every axis.
func normalizeAxes(_ axes: [Int]?, rank: Int) throws -> [Int] {
    guard let axes = axes else { return Array(0..<rank) }
    var out: [Int] = []
    for a in axes {
        let n = try normalizeAxis(a, rank: rank)
        guard !out.contains(n) else { throw EngineError.value("repeated axis \(a)") }
        out.append(n)
    }
    return out.sorted()
}

/// Merges adjacent dimensions that every operand walks contiguously, so broadcast loops get
/// long inner runs ([N,H,W,C] + [C] becomes [N*H*W, C]).
func coalesce(_ shape: [Int], _ strides: [[Int]]) -> ([Int], [[Int]]) {
    guard shape.count > 1 else { return (shape, strides) }
    var outShape: [Int] = [shape[0]]
    var outStrides: [[Int]] = strides.map { [$0[0]] }
    for i in 1..<shape.count {
        let last = outShape.count - 1
        let mergeable = strides.indices.allSatisfy { k in
            outStrides[k][last] == strides[k][i] * shape[i]
        }
        if shape[i] == 1 { continue }
        if outShape[last] == 1 {
            outShape[last] = shape[i]
            for k in strides.indices { outStrides[k][last] = strides[k][i] }
        } else if mergeable {
            outShape[last] *= shape[i]
            for k in strides.indices { outStrides[k][last] = strides[k][i] }
        } else {
            outShape.append(shape[i])
            for k in strides.indices { outStrides[k].append(strides[k][i]) }
        }
    }
    return (outShape, outStrides)
}

/// Most dimensions a tensor may have: numpy's limit, and the C extension's (a tensor of more
/// could not be handed to Python).
public let maxRank = 64

/// Checked arithmetic for sizes that come from a caller: shapes, counts, pads, strides,
/// dilations, FFT lengths. Swift traps on integer overflow, and an op that builds an index
/// table from an unchecked size exhausts memory before its output's allocation is refused,
/// so an op computes such sizes here, before it allocates anything. Every refusal is a
/// ValueError that names the op.
public struct SizeCheck {
    public let op: String
    public init(_ op: String) { self.op = op }

    public func add(_ a: Int, _ b: Int) throws -> Int {
        let (r, o) = a.addingReportingOverflow(b)
        guard !o else { throw EngineError.value("\(op): size \(a) + \(b) overflows") }
        return r
    }

    public func subtract(_ a: Int, _ b: Int) throws -> Int {
        let (r, o) = a.subtractingReportingOverflow(b)
        guard !o else { throw EngineError.value("\(op): size \(a) - \(b) overflows") }
        return r
    }

    public func multiply(_ a: Int, _ b: Int) throws -> Int {
        let (r, o) = a.multipliedReportingOverflow(by: b)
        guard !o else { throw EngineError.value("\(op): size \(a) * \(b) overflows") }
        return r
    }

    /// Sum of non-negative counts (repeat counts, concatenated lengths).
    public func sum<S: Sequence>(_ xs: S) throws -> Int where S.Element == Int {
        var total = 0
        for x in xs {
            guard x >= 0 else { throw EngineError.value("\(op): negative size \(x)") }
            total = try add(total, x)
        }
        return total
    }

    /// Refuses `count` elements of `itemSize` bytes each beyond physical memory
    /// (`maxTensorBytes`, the same bound every tensor allocation enforces).
    public func fits(_ count: Int, itemSize: Int) throws {
        let (bytes, o) = count.multipliedReportingOverflow(by: Swift.max(itemSize, 1))
        guard count >= 0, !o, bytes <= maxTensorBytes else {
            throw EngineError.value("\(op): \(count) elements of \(itemSize) bytes exceed physical memory (\(maxTensorBytes) bytes)")
        }
    }

    /// Element count of `shape`: at most `maxRank` dimensions, none negative, no overflow,
    /// and at `itemSize` bytes per element within physical memory. An empty shape obeys
    /// numpy's rule too, its non-zero dimensions' byte size representable: (2, 0, 2**62)
    /// could not be handed to numpy, and a loop over its long axis would not end.
    @discardableResult
    public func count(_ shape: [Int], itemSize: Int = 1) throws -> Int {
        guard shape.count <= maxRank else {
            throw EngineError.value("\(op): rank \(shape.count) exceeds the maximum of \(maxRank) dimensions")
        }
        var n = 1, nonzero = 1
        for d in shape {
            guard d >= 0 else { throw EngineError.value("\(op): negative dimension in shape \(shape)") }
            let (p, o) = nonzero.multipliedReportingOverflow(by: Swift.max(d, 1))
            guard !o else { throw EngineError.value("\(op): shape \(shape) is too large (its element count overflows)") }
            nonzero = p
            n = n &* d  // at most `nonzero`
        }
        if n == 0 && nonzero.multipliedReportingOverflow(by: Swift.max(itemSize, 1)).overflow {
            throw EngineError.value("\(op): shape \(shape) is too large (its byte size overflows, although it is empty)")
        }
        do { try fits(n, itemSize: itemSize) } catch {
            throw EngineError.value("\(op): shape \(shape) is too large (\(n) elements of \(itemSize) bytes exceed physical memory, \(maxTensorBytes) bytes)")
        }
        return n
    }
}
