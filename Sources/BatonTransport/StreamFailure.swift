package import BatonCore

/// Why a stream ended without a status, in the terms the client's retry rules need
/// (PROTOCOL.md, "Retry rules").
package enum StreamFailure: Error, Sendable, Hashable, CustomStringConvertible {
  /// Refused, or above a GOAWAY's last id: provably never processed, safe to retry anywhere.
  case notProcessed(String)
  /// The connection ended with no GOAWAY covering the stream: it may have been processed.
  case connectionLost(String)
  /// The peer reset the stream, or broke a stream rule and this side reset it.
  case reset(ErrorCode, String)
  /// This side ended the stream (cancellation, deadline, server stop).
  case local(RPCError)
  /// (1.1) The server ended the stream at a checkpoint, to be continued elsewhere
  /// (PROTOCOL.md 18.3); the message is the server's.
  case resumable(String)

  /// What a reader, writer or finisher of a released stream gets: the stream is no longer the
  /// call's (it ended, or the client moved the call to another stream). Never "no more
  /// messages", which a reader would take for the call's end.
  package static let released = StreamFailure.local(RPCError(code: .cancelled, message: "the call has ended"))

  /// A RESET the peer sent, as the caller will see it. REFUSED_STREAM is *not processed*. A
  /// CANCEL that arrives once the stream's deadline has passed is that deadline: a server whose
  /// deadline passes inside a response message resets with CANCEL (PROTOCOL.md 10), and a busy
  /// loop may read it before its own timer for the same deadline fires.
  package static func peerReset(_ code: ErrorCode, _ reason: String, deadlinePassed: Bool) -> StreamFailure {
    switch code {
    case .refusedStream: .notProcessed(reason)
    case .cancel where deadlinePassed:
      .local(RPCError(code: .deadlineExceeded, message: "the deadline passed (the server ended the call)"))
    default: .reset(code, reason)
    }
  }

  package var description: String {
    switch self {
    case .notProcessed(let why): "not processed: \(why)"
    case .connectionLost(let why): why
    case .reset(let code, let why): "\(why) (\(code))"
    case .local(let error): error.description
    case .resumable(let why): "ended to be resumed elsewhere: \(why)"
    }
  }

  /// The caller-facing error, with words that say whether the call may have run.
  package var rpcError: RPCError {
    switch self {
    case .notProcessed(let why):
      RPCError(code: .unavailable, message: "the server did not process the call (\(why))")
    case .connectionLost(let why):
      RPCError(code: .unavailable, message: "\(why); the call may have been processed")
    case .reset(.cancel, let why):
      RPCError(code: .cancelled, message: why)
    case .reset(.messageTooLarge, let why), .reset(.enhanceYourCalm, let why):
      RPCError(code: .resourceExhausted, message: why)
    case .reset(.refusedStream, let why):
      RPCError(code: .unavailable, message: "the server did not process the call (\(why))")
    case .reset(let code, let why):
      RPCError(code: .internal, message: "stream reset: \(why) (\(code))")
    case .local(let error):
      error
    case .resumable(let why):
      RPCError(code: .unavailable, message: "the server ended the stream to be resumed elsewhere (\(why))")
    }
  }
}
