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
