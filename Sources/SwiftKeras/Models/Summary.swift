import Foundation
import TensorEngine

extension Model {
    /// Each layer's output shapes (batch and other free dimensions as nil), found by running
    /// the model twice on zeros with different sizes for the free dimensions.
    func outputShapes() throws -> [String: [[Int?]]] {
        func probe(_ free: Int) throws -> [TensorRef: Tensor] {
            var memo: [TensorRef: Tensor] = [:]
            let xs = try inputs.map { try zeros($0.batchShape.map { $0 ?? free }, dtype: $0.dtype) }
            _ = try run(xs, &memo)
            return memo
        }
        let a = try probe(2), b = try probe(3)
        var shapes: [String: [[Int?]]] = [:]
        for (ref, t) in a.sorted(by: { ($0.key.node, $0.key.index) < ($1.key.node, $1.key.index) }) where ref.node == 0 {
            let other = b[ref]?.shape ?? []
            let shape: [Int?] = t.shape.enumerated().map { i, n in i < other.count && other[i] == n ? n : nil }
            shapes[ref.layer, default: []].append(shape)
        }
        return shapes
    }

    /// The model's layers, output shapes and parameter counts, laid out like Keras's
    /// `model.summary()`.
    public func summary() throws -> String {
        let shapes = try outputShapes()
        let functional = className != "Sequential"
        func shapeText(_ s: [Int?]) -> String {
            "(" + s.map { $0.map(String.init) ?? "None" }.joined(separator: ", ") + (s.count == 1 ? ",)" : ")")
        }
        var rows: [[[String]]] = []
        for layer in layers {
            let type = layer is ModelLayer ? ((layer as? ModelLayer)?.model.className ?? layer.className) : layer.className
            let outs = (shapes[layer.name] ?? []).map(shapeText)
            var row = [["\(layer.name) (\(type))"], outs.isEmpty ? ["?"] : outs, [String(layer.parameterCount)]]
            if functional { row.append(connections(layer.name).isEmpty ? ["-"] : connections(layer.name)) }
            rows.append(row)
        }
        var headers = ["Layer (type)", "Output Shape", "Param #"]
        if functional { headers.append("Connected to") }
        var widths = headers.map { $0.count }
        for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.map { $0.count }.max() ?? 0) } }
        widths = widths.enumerated().map { i, w in max(w, [31, 22, 13, 20][i]) }
        func line(_ l: String, _ m: String, _ r: String, _ fill: String) -> String {
            l + widths.map { String(repeating: fill, count: $0 + 2) }.joined(separator: m) + r + "\n"
        }
        func cells(_ texts: [String], _ edge: String) -> String {
            edge + texts.enumerated().map { i, t in
                let pad = String(repeating: " ", count: widths[i] - t.count)
                return " " + (i == 2 ? pad + t : t + pad) + " "
            }.joined(separator: edge) + edge + "\n"
        }
        var out = "Model: \"\(name)\"\n"
        out += line("┏", "┳", "┓", "━")
        out += cells(headers, "┃")
        out += line("┡", "╇", "┩", "━")
        for (r, row) in rows.enumerated() {
            let height = row.map { $0.count }.max() ?? 1
            for k in 0..<height { out += cells(row.map { k < $0.count ? $0[k] : "" }, "│") }
            out += r == rows.count - 1 ? line("└", "┴", "┘", "─") : line("├", "┼", "┤", "─")
        }
        let all = weights
        let trainable = all.filter { $0.trainable }
        func total(_ ps: [Parameter]) -> String {
            let n = ps.reduce(0) { $0 + $1.value.count }
            var size = Double(ps.reduce(0) { $0 + $1.value.nbytes })
            var unit = 0
            let units = ["B", "KB", "MB", "GB", "TB"]
            while size >= 1024 && unit < units.count - 1 {
                size /= 1024
                unit += 1
            }
            return "\(n) (\(String(format: "%.2f", size)) \(units[unit]))"
        }
        out += " Total params: \(total(all))\n"
        out += " Trainable params: \(total(trainable))\n"
        out += " Non-trainable params: \(total(all.filter { !$0.trainable }))\n"
        return out
    }
}
