#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Every failure a caller can cause. The C ABI maps each case to a status code and
/// Python maps it to ValueError / TypeError / IndexError / NotImplementedError.
public enum EngineError: Error, CustomStringConvertible {
    case value(String)
    case type(String)
    case index(String)
    case notImplemented(String)
    case `internal`(String)

    public var message: String {
        switch self {
        case .value(let m), .type(let m), .index(let m), .notImplemented(let m), .internal(let m): return m
        }
    }
    public var description: String { message }
}

/// The calling thread's last error message as a C string, for the C ABIs' `*_last_error`
/// (each dynamic library that links the engine gets its own slot).
public enum ThreadError {
    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key) { free($0) }
        return key
    }()

    private static let empty: UnsafeMutablePointer<CChar> = strdup("")

    public static func set(_ message: String) {
        if let old = pthread_getspecific(key) { free(old) }
        pthread_setspecific(key, strdup(message))
    }

    /// The message; valid until the thread's next error.
    public static var message: UnsafePointer<CChar> {
        UnsafePointer(pthread_getspecific(key)?.assumingMemoryBound(to: CChar.self) ?? empty)
    }

    /// Runs `body`; a thrown error's message becomes the thread's, and the error is returned
    /// as an `EngineError` (anything else as `.internal`).
    public static func catching(_ body: () throws -> Void) -> EngineError? {
        do {
            try body()
            return nil
        } catch let e as EngineError {
            set(e.message)
            return e
        } catch {
            set("\(error)")
            return .internal("\(error)")
        }
    }
}
