/// What a ``ConnectionCore`` learned from the bytes it was given, for its owner to act on.
///
/// Events never carry I/O: the owner resumes waiters, starts handlers and closes sockets.
public enum ConnectionEvent: Sendable, Hashable {
  /// The peer's preface and SETTINGS arrived: a client may now open streams.
  case ready(ConnectionSettings)
  /// (server) The client opened a stream.
  case opened(streamID: UInt32, RequestHead, endStream: Bool)
  /// (client) The server's response metadata.
  case headers(streamID: UInt32, Metadata)
  /// A complete message, reassembled from fragments. Call ``ConnectionCore/consumed(streamID:bytes:)``
  /// once the application has taken it, to return the flow-control credit.
  case message(streamID: UInt32, [UInt8])
  /// A complete message that came in one frame, left where it arrived: its bytes are
  /// `bytes[range]` of the buffer given to the ``ConnectionCore/receive(_:into:)`` call that
  /// reported it, valid only while the caller still holds that buffer. Not copied, so that the
  /// caller copies them once, to wherever its reader takes them. Credit as for ``message(streamID:_:)``.
  case messageBytes(streamID: UInt32, Range<Int>)
  /// (server) The client ended its side: no more messages on this stream.
  case endOfInput(streamID: UInt32)
  /// (client) The call ended with this status; the stream is gone.
  case trailers(streamID: UInt32, Trailers)
  /// The stream ended abnormally and is gone. `byPeer` tells whether the peer reset it (or, for
  /// ``ErrorCode/refusedStream``, refused it or left it above a GOAWAY's last id) or this side did
  /// because the peer broke a stream rule (a RESET was written).
  case streamReset(streamID: UInt32, ErrorCode, reason: String, byPeer: Bool)
  /// A message that was waiting for flow-control credit has now been written in full.
  case writable(streamID: UInt32)
  /// The peer sent GOAWAY. Streams above `lastStreamID` were already reported as refused.
  case goAway(lastStreamID: UInt32, ErrorCode, debug: String)
  /// The peer acknowledged one of this side's PINGs.
  case pingAck(UInt64)
  /// (client, 1.1) The server's checkpoint of a stream (PROTOCOL.md 18.2).
  case checkpoint(streamID: UInt32, consumed: UInt64, token: [UInt8])
  /// The peer broke a connection rule. A GOAWAY is already in ``ConnectionCore/outbound``: flush it,
  /// then close. Every stream is gone.
  case connectionError(WireError)
}
