/// A violation of PROTOCOL.md found while decoding or processing frames.
///
/// The scope decides the remedy: a connection error is answered with GOAWAY and a close; a stream
/// error is answered with RESET of that stream only, and the connection keeps serving.
package struct WireError: Error, Hashable, Sendable, CustomStringConvertible {
  package enum Scope: Hashable, Sendable {
    case connection
    case stream(UInt32)
  }

  package var scope: Scope
  package var code: ErrorCode
  /// Words for logs and the GOAWAY debug text; never parsed.
  package var reason: String
  /// The type byte of the offending frame, when there was one (a stream error on OPEN still uses up the id).
  package var frameType: UInt8?

  package init(_ scope: Scope, _ code: ErrorCode, _ reason: String, frameType: UInt8? = nil) {
    self.scope = scope
    self.code = code
    self.reason = reason
    self.frameType = frameType
  }

  static func connection(_ code: ErrorCode, _ reason: String) -> WireError {
    WireError(.connection, code, reason)
  }

  package var description: String {
    switch scope {
    case .connection: "connection error \(code): \(reason)"
    case .stream(let id): "stream \(id) error \(code): \(reason)"
    }
  }
}
