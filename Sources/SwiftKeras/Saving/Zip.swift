import Foundation
import TensorEngine
import ZIPFoundation

/// Reading and writing the zip archives Keras (.keras) and NumPy (.npz) use, via ZIPFoundation.
enum Zip {
    /// The archive at `path`, read into memory. (ZIPFoundation's file-backed archives get
    /// their path from FileManager.fileSystemRepresentation(withPath:), whose buffer is never
    /// freed on Linux: a leak per archive opened off the main thread, which LeakSanitizer
    /// reports; in-memory archives do not touch it.)
    static func open(_ path: String) throws -> Archive {
        guard let data = FileManager.default.contents(atPath: path) else { throw EngineError.value("cannot read '\(path)'") }
        do {
            return try Archive(data: data, accessMode: .read)
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
        let bytes: Data?
        do {
            let archive = try Archive(data: Data(), accessMode: .create)
            for (name, data) in entries {
                try archive.addEntry(with: name, type: .file, uncompressedSize: Int64(data.count),
                                     compressionMethod: compress ? .deflate : .none) { position, size in
                    data.subdata(in: Int(position)..<Int(position) + size)
                }
            }
            bytes = archive.data
        } catch {
            throw EngineError.value("cannot write zip archive '\(path)': \(error)")
        }
        guard let bytes, FileManager.default.createFile(atPath: path, contents: bytes) else {
            throw EngineError.value("cannot write '\(path)'")
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
