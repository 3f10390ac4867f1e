import Foundation
import TensorEngine
import ZIPFoundation

/// Reading and writing the zip archives Keras (.keras) and NumPy (.npz) use, via ZIPFoundation.
enum Zip {
    static func open(_ path: String) throws -> Archive {
        do {
            return try Archive(url: URL(fileURLWithPath: path), accessMode: .read)
        } catch {
            throw EngineError.value("cannot open '\(path)' as a zip archive: \(error)")
        }
    }

    static func names(_ archive: Archive) -> [String] { archive.map { $0.path } }

    static func read(_ archive: Archive, _ name: String, in path: String) throws -> Data {
        guard let entry = archive[name] else { throw EngineError.value("'\(path)' has no '\(name)'") }
        var data = Data()
        do {
            _ = try archive.extract(entry, skipCRC32: false) { data.append($0) }
        } catch {
            throw EngineError.value("cannot read '\(name)' from '\(path)': \(error)")
        }
        return data
    }

    /// Writes `entries` (name, bytes) as a new archive at `path`, replacing any file there.
    static func write(_ path: String, _ entries: [(String, Data)], compress: Bool) throws {
        let url = URL(fileURLWithPath: path)
        try? FileManager.default.removeItem(at: url)
        do {
            let archive = try Archive(url: url, accessMode: .create)
            for (name, data) in entries {
                try archive.addEntry(with: name, type: .file, uncompressedSize: Int64(data.count),
                                     compressionMethod: compress ? .deflate : .none) { position, size in
                    data.subdata(in: Int(position)..<Int(position) + size)
                }
            }
        } catch {
            throw EngineError.value("cannot write zip archive '\(path)': \(error)")
        }
    }
}

/// A scratch file removed when this goes away (HDF5 reads and writes files, not memory).
final class TemporaryFile {
    let path: String

    init(suffix: String) {
        path = FileManager.default.temporaryDirectory
            .appendingPathComponent("swiftkeras-\(UUID().uuidString)\(suffix)").path
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}
