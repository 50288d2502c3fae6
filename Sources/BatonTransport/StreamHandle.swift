package import BatonCore

/// One stream of a ``Connection``, as the server's handler or the client's call sees it.
///
/// Cheap to pass around; every operation goes through the connection's lock. Whoever created it
/// must call ``release()`` exactly once when done (the scoped call APIs do).
package struct StreamHandle: Sendable {
  package let connection: Connection
  package let id: UInt32

  init(connection: Connection, id: UInt32) {
    self.connection = connection
    self.id = id
  }

  /// The next message, or nil once the peer ended its side. Throws the stream's failure, or
  /// (client) the call's non-OK status once the messages are read.
  package func receive() async throws -> [UInt8]? { try await connection.receive(id) }

  /// The next message, with every other one already received moved into `batch` (which must
  /// be empty): see ``Connection/receive(_:batch:)``.
  package func receive(batch: inout MessageQueue) async throws -> [UInt8]? {
    try await connection.receive(id, batch: &batch)
  }

  /// Credits bytes a reader consumed of its batch (see ``MessageQueue/popFirst(crediting:)``).
  package func credit(_ bytes: Int) {
    connection.credit(id, bytes)
  }

  /// Sends a message, waiting for flow-control credit if the peer has not granted enough.
  package func send(_ message: [UInt8], endStream: Bool = false) async throws {
    if try connection.enqueue(id, message, endStream: endStream) { try await connection.awaitCredit(id) }
  }

  /// Queues a message without waiting; true means it waits for credit and the caller must
  /// ``awaitCredit()`` before the next one. The per-message path of streaming writers.
  package func enqueue(_ message: [UInt8]) throws -> Bool {
    try connection.enqueue(id, message, endStream: false)
  }

  /// Waits until a message ``enqueue(_:)`` reported blocked is all written.
  package func awaitCredit() async throws { try await connection.awaitCredit(id) }

  /// (client) Ends the request side.
  package func end() { connection.end(id) }

  /// (server) Response metadata, before any message.
  package func sendHeaders(_ metadata: Metadata) { connection.sendHeaders(id, metadata) }

  /// (server) Headers, one message and the status in one write.
  package func respond(headers: Metadata?, message: [UInt8]?, trailers: Trailers) {
    connection.respond(id, headers: headers, message: message, trailers: trailers)
  }

  /// (server) Ends the stream with a status; false if it had already ended.
  @discardableResult
  package func finish(_ trailers: Trailers) -> Bool { connection.finish(id, trailers) }

  package func reset(_ code: ErrorCode, failure: StreamFailure) {
    connection.reset(id, code, failure: failure)
  }

  /// A server's checkpoint of a stream (PROTOCOL.md 18.2), as the client keeps it.
  package struct Checkpoint: Sendable, Hashable {
    /// How many response messages it covers: the stream's first `index`.
    package var index: Int
    /// How many request messages the handler had read.
    package var consumed: UInt64
    package var token: [UInt8]

    package init(index: Int, consumed: UInt64, token: [UInt8]) {
      self.index = index
      self.consumed = consumed
      self.token = token
    }
  }

  /// (client) The latest checkpoint the server sent on this stream.
  package var checkpoint: Checkpoint? { connection.checkpoint(id) }

  /// (client) The messages that arrived and that no reader has taken yet, taken now, with how
  /// many arrived in all (see ``Connection/takeUnread(_:)``).
  package func takeUnread() -> (unread: MessageQueue, arrived: Int) { connection.takeUnread(id) }

  /// (client) How many of the stream's messages a reader has taken.
  package var taken: Int { connection.taken(id) }

  /// (server) Marks a checkpoint after the messages written so far; false when resumption is
  /// off on this connection or the stream has ended.
  @discardableResult
  package func sendCheckpoint(consumed: UInt64, token: [UInt8]) -> Bool {
    connection.sendCheckpoint(id, consumed: consumed, token: token)
  }

  /// (client) Waits for the server's TRAILERS or the stream's failure (whichever comes first).
  package func awaitEnd() async throws { try await connection.awaitEnd(id) }

  /// What a stream received besides a stream of messages: a unary call's whole response.
  package struct Response: Sendable {
    package var headers: Metadata?
    package var trailers: Trailers?
    package var failure: StreamFailure?
    /// The first message, taken from the stream.
    package var message: [UInt8]?
  }

  /// (client) After ``awaitEnd()``: the headers, the outcome and the first message, at once;
  /// the stream is released with them (no ``release()`` afterwards).
  package func takeResponse() -> Response { connection.takeResponse(id) }

  package func setDeadline(at deadline: UInt64, timeout: UInt64) {
    connection.setDeadline(id, at: deadline, timeout: timeout)
  }

  package func attach(_ task: Task<Void, Never>) { connection.attach(id, task: task) }

  package func release() { connection.release(id) }

  /// (server) The server's stop cut the call before its handler ended it.
  package var wasCut: Bool { connection.wasCut(id) }
}
