// JSON text for what the engine describes of itself (op schemas, graphs), written by hand:
// the engine does not use Foundation.

/// A double as JSON; the non-finite ones as Python's json module writes and reads them.
func jsonDouble(_ d: Double) -> String {
    if d.isNaN { return "NaN" }
    if d.isInfinite { return d < 0 ? "-Infinity" : "Infinity" }
    return "\(d)"
}

/// A string as a JSON string literal.
func jsonString(_ str: String) -> String {
    var out = "\""
    for u in str.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if u.value < 0x20 {
                let hex = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                out.unicodeScalars.append(u)
            }
        }
    }
    return out + "\""
}
