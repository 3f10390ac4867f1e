import Foundation
import TensorEngine

/// NumPy's .npy (format 1.0 to 3.0, little-endian, C or Fortran order) and .npz files.
public enum NumPy {
    private static let descriptors: [(String, DType)] = [
        ("f4", .float32), ("f8", .float64), ("f2", .float16), ("i1", .int8), ("i2", .int16), ("i4", .int32),
        ("i8", .int64), ("u1", .uint8), ("u2", .uint16), ("u4", .uint32), ("u8", .uint64), ("b1", .bool),
        ("c8", .complex64), ("c16", .complex128),
    ]

    /// Parses .npy bytes into a tensor.
    public static func decode(_ data: Data, name: String = "array") throws -> Tensor {
        let bytes = [UInt8](data)
        let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]
        guard bytes.count >= 10, Array(bytes[0..<6]) == magic else { throw EngineError.value("\(name) is not a .npy file") }
        let major = bytes[6]
        let (lenBytes, start) = major == 1 ? (2, 10) : (4, 12)
        guard major >= 1 && major <= 3, bytes.count >= start else {
            throw EngineError.value("\(name): unsupported .npy version \(major)")
        }
        var headerLen = 0
        for i in 0..<lenBytes { headerLen |= Int(bytes[8 + i]) << (8 * i) }
        guard bytes.count >= start + headerLen else { throw EngineError.value("\(name): truncated .npy header") }
        let header = String(decoding: bytes[start..<start + headerLen], as: UTF8.self)
        guard let descr = field(header, "descr"), let order = field(header, "fortran_order"),
              let shapeText = field(header, "shape") else {
            throw EngineError.value("\(name): malformed .npy header \(header)")
        }
        let code = descr.trimmingCharacters(in: CharacterSet(charactersIn: "'\""))
        guard let first = code.first, "<|=".contains(first) || code.count == 2,
              let dtype = descriptors.first(where: { $0.0 == String(code.dropFirst(code.count == 2 ? 0 : 1)) })?.1 else {
            throw EngineError.type("\(name): unsupported .npy dtype \(code) (little-endian numeric only)")
        }
        let dims = try shapeText.trimmingCharacters(in: CharacterSet(charactersIn: "()"))
            .split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            .map { (s: String) -> Int in
                guard let v = Int(s), v >= 0 else { throw EngineError.value("\(name): bad .npy shape \(shapeText)") }
                return v
            }
        let count = try elementCount(dims)
        let nbytes = count * dtype.itemSize
        let offset = start + headerLen
        guard bytes.count - offset == nbytes else {
            throw EngineError.value("\(name): .npy data holds \(bytes.count - offset) bytes, shape \(dims) of \(dtype) needs \(nbytes)")
        }
        let fortran = order.hasPrefix("True")
        let t = try bytes.withUnsafeBytes { raw in
            try Tensor(bytes: raw.baseAddress.map { $0 + offset }, byteCount: nbytes,
                       shape: fortran ? dims.reversed() : dims, dtype: dtype)
        }
        return fortran && dims.count > 1 ? try transpose(t) : t
    }

    /// The value after `'key':` in a .npy header dict (up to the matching close of a tuple).
    private static func field(_ header: String, _ key: String) -> String? {
        guard let r = header.range(of: "'\(key)':") else { return nil }
        let rest = header[r.upperBound...].drop(while: { $0 == " " })
        if rest.first == "(" {
            guard let close = rest.firstIndex(of: ")") else { return nil }
            return String(rest[...close])
        }
        return String(rest.prefix(while: { $0 != "," && $0 != "}" })).trimmingCharacters(in: .whitespaces)
    }

    /// .npy bytes (format 1.0, C order) of a tensor.
    public static func encode(_ t: Tensor) throws -> Data {
        guard let code = descriptors.first(where: { $0.1 == t.dtype })?.0 else {
            throw EngineError.type("cannot write \(t.dtype) to .npy")
        }
        let order = code.hasSuffix("1") ? "|" : "<"
        let shape = t.shape.count == 1 ? "(\(t.shape[0]),)" : "(" + t.shape.map(String.init).joined(separator: ", ") + ")"
        var header = "{'descr': '\(order)\(code)', 'fortran_order': False, 'shape': \(shape), }"
        let total = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - total % 64) % 64) + "\n"
        var data = Data([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0])
        let len = UInt16(header.utf8.count)
        data.append(contentsOf: [UInt8(len & 0xFF), UInt8(len >> 8)])
        data.append(contentsOf: Array(header.utf8))
        data.append(Data(bytes: t.rawPointer, count: t.nbytes))
        return data
    }

    public static func load(_ path: String) throws -> Tensor {
        guard let data = FileManager.default.contents(atPath: path) else { throw EngineError.value("cannot read '\(path)'") }
        return try decode(data, name: path)
    }

    public static func save(_ path: String, _ t: Tensor) throws {
        guard FileManager.default.createFile(atPath: path, contents: try encode(t)) else {
            throw EngineError.value("cannot write '\(path)'")
        }
    }

    /// The arrays of an .npz file, in the archive's order, named without ".npy".
    public static func loadArchive(_ path: String) throws -> [(name: String, value: Tensor)] {
        let archive = try Zip.open(path)
        return try Zip.names(archive).filter { $0.hasSuffix(".npy") }.map {
            (String($0.dropLast(4)), try decode(try Zip.read(archive, $0, in: path), name: "\(path):\($0)"))
        }
    }

    /// Writes an .npz file (uncompressed, as numpy.savez).
    public static func saveArchive(_ path: String, _ arrays: [(name: String, value: Tensor)]) throws {
        try Zip.write(path, try arrays.map { ("\($0.name).npy", try encode($0.value)) }, compress: false)
    }
}
