/// The lifecycle of one stream (PROTOCOL.md, "Stream states"), as a value with explicit transitions.
///
/// Both roles use the same machine: "local" is this side, "remote" the peer. A stream enters as
/// `open` (or already half-closed when its OPEN carried END_STREAM) and leaves as `closed`; the
/// owner removes closed streams, so `closed` only ever appears as a transition's result.
public struct StreamStateMachine: Hashable, Sendable {
  public enum State: Hashable, Sendable {
    case open
    /// This side sent END_STREAM; it may still receive.
    case halfClosedLocal
    /// The peer sent END_STREAM; this side may still send.
    case halfClosedRemote
    case closed
  }

  public private(set) var state: State

  /// A stream this side opened (client) with OPEN, optionally already ending its input.
  public static func openedLocally(endStream: Bool) -> StreamStateMachine {
    StreamStateMachine(state: endStream ? .halfClosedLocal : .open)
  }

  /// A stream the peer opened (server) with OPEN.
  public static func openedRemotely(endStream: Bool) -> StreamStateMachine {
    StreamStateMachine(state: endStream ? .halfClosedRemote : .open)
  }

  public var canSend: Bool { state == .open || state == .halfClosedRemote }
  public var canReceive: Bool { state == .open || state == .halfClosedLocal }

  /// This side sends END_STREAM. Returns false (and changes nothing) if it already had.
  public mutating func sendEndStream() -> Bool {
    switch state {
    case .open: state = .halfClosedLocal
    case .halfClosedRemote: state = .closed
    case .halfClosedLocal, .closed: return false
    }
    return true
  }

  /// The peer sends END_STREAM. Throws STREAM_CLOSED when the peer had already ended its side.
  public mutating func receiveEndStream() throws(StreamClosed) {
    switch state {
    case .open: state = .halfClosedRemote
    case .halfClosedLocal: state = .closed
    case .halfClosedRemote, .closed: throw StreamClosed()
    }
  }

  /// TRAILERS (either direction) or RESET (either direction) end the stream at once.
  public mutating func close() { state = .closed }

  /// The peer sent on a side it had already closed.
  public struct StreamClosed: Error, Hashable, Sendable {}
}
