/// A violation of PROTOCOL.md found while decoding or processing frames.
///
/// The scope decides the remedy: a connection error is answered with GOAWAY and a close; a stream
/// error is answered with RESET of that stream only, and the connection keeps serving.
public struct WireError: Error, Hashable, Sendable, CustomStringConvertible {
  public enum Scope: Hashable, Sendable {
    case connection
    case stream(UInt32)
  }

  public var scope: Scope
  public var code: ErrorCode
  /// Words for logs and the GOAWAY debug text; never parsed.
  public var reason: String
  /// The type byte of the offending frame, when there was one (a stream error on OPEN still uses up the id).
  public var frameType: UInt8?

  public init(_ scope: Scope, _ code: ErrorCode, _ reason: String, frameType: UInt8? = nil) {
    self.scope = scope
    self.code = code
    self.reason = reason
    self.frameType = frameType
  }

  static func connection(_ code: ErrorCode, _ reason: String) -> WireError {
    WireError(.connection, code, reason)
  }

  public var description: String {
    switch scope {
    case .connection: "connection error \(code): \(reason)"
    case .stream(let id): "stream \(id) error \(code): \(reason)"
    }
  }
}
