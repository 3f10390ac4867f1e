import CHDF5
import Foundation
import TensorEngine

/// Debian's HDF5 is the serial build, which is not thread-safe: every call into it holds this
/// lock, so models can be loaded from several threads at once (the C ABI promises that).
private let hdf5Lock = NSLock()

/// An open HDF5 file, through HDF5's C library. Paths are HDF5 paths ("layers/dense/vars/0").
final class H5File {
    private let id: hid_t

    private init(id: hid_t) { self.id = id }

    static func open(_ path: String) throws -> H5File {
        try locked {
            sk_h5_quiet()
            let id = H5Fopen(path, sk_h5f_acc_rdonly(), sk_h5p_default())
            guard id >= 0 else { throw EngineError.value("cannot open HDF5 file '\(path)' (missing or not HDF5)") }
            return H5File(id: id)
        }
    }

    static func create(_ path: String) throws -> H5File {
        try locked {
            sk_h5_quiet()
            let id = H5Fcreate(path, sk_h5f_acc_trunc(), sk_h5p_default(), sk_h5p_default())
            guard id >= 0 else { throw EngineError.value("cannot create HDF5 file '\(path)'") }
            return H5File(id: id)
        }
    }

    deinit {
        hdf5Lock.lock()
        H5Fclose(id)
        hdf5Lock.unlock()
    }

    private static func locked<R>(_ body: () throws -> R) rethrows -> R {
        hdf5Lock.lock()
        defer { hdf5Lock.unlock() }
        return try body()
    }

    /// Whether every link along `path` exists (H5Lexists checks only the last one).
    private func existsUnlocked(_ path: String) -> Bool {
        var prefix = ""
        for part in path.split(separator: "/") {
            prefix += (prefix.isEmpty ? "" : "/") + part
            if H5Lexists(id, prefix, sk_h5p_default()) <= 0 { return false }
        }
        return true
    }

    func exists(_ path: String) -> Bool { H5File.locked { existsUnlocked(path) } }

    /// Names of a group's members, in HDF5's (alphabetical) order.
    func members(_ path: String) throws -> [String] {
        try H5File.locked {
            guard existsUnlocked(path) else { return [] }
            let g = H5Gopen2(id, path, sk_h5p_default())
            guard g >= 0 else { throw EngineError.value("HDF5: '\(path)' is not a group") }
            defer { H5Gclose(g) }
            var info = H5G_info_t()
            guard H5Gget_info(g, &info) >= 0 else { throw EngineError.value("HDF5: cannot list '\(path)'") }
            var names: [String] = []
            for i in 0..<info.nlinks {
                let n = H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, nil, 0, sk_h5p_default())
                guard n >= 0 else { continue }
                var buf = [CChar](repeating: 0, count: Int(n) + 1)
                H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, &buf, buf.count, sk_h5p_default())
                names.append(String(cString: buf))
            }
            return names
        }
    }

    /// A dataset as a tensor of the nearest engine dtype (half floats widen to float32).
    func read(_ path: String) throws -> Tensor {
        try H5File.locked {
            guard existsUnlocked(path) else { throw EngineError.value("HDF5: no dataset '\(path)'") }
            let d = H5Dopen2(id, path, sk_h5p_default())
            guard d >= 0 else { throw EngineError.value("HDF5: '\(path)' is not a dataset") }
            defer { H5Dclose(d) }
            let space = H5Dget_space(d)
            defer { H5Sclose(space) }
            let rank = Int(H5Sget_simple_extent_ndims(space))
            guard rank >= 0 && rank <= 32 else { throw EngineError.value("HDF5: bad rank for '\(path)'") }
            var dims = [hsize_t](repeating: 0, count: Swift.max(rank, 1))
            H5Sget_simple_extent_dims(space, &dims, nil)
            let shape = dims.prefix(rank).map { Int($0) }
            let ftype = H5Dget_type(d)
            defer { H5Tclose(ftype) }
            let size = H5Tget_size(ftype)
            let dtype: DType
            switch H5Tget_class(ftype) {
            case H5T_FLOAT: dtype = size == 8 ? .float64 : .float32
            case H5T_INTEGER:
                let signed = H5Tget_sign(ftype) != H5T_SGN_NONE
                switch (size, signed) {
                case (1, true): dtype = .int8
                case (1, false): dtype = .uint8
                case (2, true): dtype = .int16
                case (2, false): dtype = .uint16
                case (4, true): dtype = .int32
                case (4, false): dtype = .uint32
                case (_, true): dtype = .int64
                default: dtype = .uint64
                }
            case H5T_ENUM where size == 1: dtype = .bool  // h5py's bool
            default: throw EngineError.type("HDF5: dataset '\(path)' has a type SwiftKeras cannot read")
            }
            let t = try Tensor(zeros: shape, dtype: dtype)
            guard t.count > 0 else { return t }
            let mtype = dtype == .bool ? sk_h5t_native(5) : sk_h5t_native(Int32(dtype.rawValue))
            guard H5Dread(d, mtype, sk_h5s_all(), sk_h5s_all(), sk_h5p_default(), t.rawPointer) >= 0 else {
                throw EngineError.value("HDF5: cannot read '\(path)'")
            }
            return t
        }
    }

    /// Creates the group at `path` and any missing parent.
    func makeGroups(_ path: String) throws {
        try H5File.locked {
            var prefix = ""
            for part in path.split(separator: "/") {
                prefix += (prefix.isEmpty ? "" : "/") + part
                if H5Lexists(id, prefix, sk_h5p_default()) > 0 { continue }
                let g = H5Gcreate2(id, prefix, sk_h5p_default(), sk_h5p_default(), sk_h5p_default())
                guard g >= 0 else { throw EngineError.value("HDF5: cannot create group '\(prefix)'") }
                H5Gclose(g)
            }
        }
    }

    func write(_ path: String, _ t: Tensor) throws {
        let code = t.dtype == .bool ? 0 : Int32(t.dtype.rawValue)
        let type = sk_h5t_native(code)
        guard type >= 0 else { throw EngineError.type("HDF5: cannot write \(t.dtype) tensors") }
        try H5File.locked {
            let dims = t.shape.map { hsize_t($0) }
            let space = t.rank == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(Int32(t.rank), dims, nil)
            defer { H5Sclose(space) }
            let d = H5Dcreate2(id, path, type, space, sk_h5p_default(), sk_h5p_default(), sk_h5p_default())
            guard d >= 0 else { throw EngineError.value("HDF5: cannot create dataset '\(path)'") }
            defer { H5Dclose(d) }
            if t.count > 0, H5Dwrite(d, type, sk_h5s_all(), sk_h5s_all(), sk_h5p_default(), t.rawPointer) < 0 {
                throw EngineError.value("HDF5: cannot write '\(path)'")
            }
        }
    }

    /// A UTF-8 string attribute on the object at `path` ("" or "/" is the file's root group).
    func setAttribute(_ path: String, _ name: String, _ value: String) throws {
        try H5File.locked {
            let obj = H5Oopen(id, path.isEmpty ? "/" : path, sk_h5p_default())
            guard obj >= 0 else { throw EngineError.value("HDF5: no object '\(path)'") }
            defer { H5Oclose(obj) }
            let bytes = Array(value.utf8)
            let type = H5Tcopy(sk_h5t_c_s1())
            defer { H5Tclose(type) }
            H5Tset_size(type, Swift.max(bytes.count, 1))
            H5Tset_cset(type, H5T_CSET_UTF8)
            let space = H5Screate(H5S_SCALAR)
            defer { H5Sclose(space) }
            let a = H5Acreate2(obj, name, type, space, sk_h5p_default(), sk_h5p_default())
            guard a >= 0 else { throw EngineError.value("HDF5: cannot set attribute '\(name)' on '\(path)'") }
            defer { H5Aclose(a) }
            let padded = bytes.isEmpty ? [UInt8(0)] : bytes
            _ = padded.withUnsafeBytes { H5Awrite(a, type, $0.baseAddress) }
        }
    }
}
