import BatonCore
package import BatonTransport

/// The request messages of a client- or bidirectional-streaming call, in order.
///
/// Ends when the client ends its side; throws if the stream fails (reset, cancellation).
/// Iterate it once.
public struct RequestStream: AsyncSequence, Sendable {
  /// One request message.
  public typealias Element = [UInt8]
  let stream: StreamHandle
  /// The interceptors' request wrappers as one; nil (the usual case) costs one branch a message.
  @usableFromInline let transform: ServerCall.MessageTransform?
  /// Counts what the handler reads, for a resumable method's checkpoints; nil otherwise.
  let counter: ServerContext.RequestCounter?

  package init(stream: StreamHandle) {
    self.stream = stream
    self.transform = nil
    self.counter = nil
  }

  init(
    stream: StreamHandle, transform: ServerCall.MessageTransform?, counter: ServerContext.RequestCounter? = nil
  ) {
    self.stream = stream
    self.transform = transform
    self.counter = counter
  }

  /// Takes every message already received in one step (see the threading notes in README).
  public struct AsyncIterator: AsyncIteratorProtocol {
    let stream: StreamHandle
    @usableFromInline let transform: ServerCall.MessageTransform?
    let counter: ServerContext.RequestCounter?
    /// Messages that arrived together, taken from the connection in one step.
    var batch = MessageQueue()

    /// What `for try await` calls. It runs on the caller's executor (`nonisolated(nonsending)`)
    /// rather than on an `isolated` parameter: after a call into an `isolated` parameter the
    /// caller switches back to its own executor, once per message, and in a server handler (a
    /// task with an executor preference) each switch takes the task's status lock. The loop
    /// passes its own isolation as `actor`, so running where the caller runs is what it asked for.
    @inlinable
    public nonisolated(nonsending) mutating func next(isolation actor: (any Actor)?) async throws(any Error) -> [UInt8]?
    {
      try await next()
    }

    /// Inlinable, so that a message already in the batch costs the handler no call into an
    /// async function (each one allocates a frame on the task): only waiting for more does.
    @inlinable
    public nonisolated(nonsending) mutating func next() async throws -> [UInt8]? {
      if let transform { return try await nextTransformed(transform) }
      if let message = takeBatched() { return message }
      return try await receive()
    }

    /// The next message through the interceptors' request wrappers.
    @usableFromInline
    mutating func nextTransformed(_ transform: ServerCall.MessageTransform) async throws -> [UInt8]? {
      let message: [UInt8]?
      if let batched = takeBatched() { message = batched } else { message = try await receive() }
      guard let message else { return nil }
      return try await transform(message)
    }

    /// The next message of the batch in hand, giving back credit as the batch is consumed.
    @usableFromInline
    mutating func takeBatched() -> [UInt8]? {
      let message = batch.popFirst { stream.credit($0) }
      if message != nil, let counter { counter.value.add(1, ordering: .relaxed) }
      return message
    }

    /// Waits for the next message and takes the rest of its burst as the new batch.
    @usableFromInline
    mutating func receive() async throws -> [UInt8]? {
      do {
        let message = try await stream.receive(batch: &batch)
        if message != nil, let counter { counter.value.add(1, ordering: .relaxed) }
        return message
      } catch let failure as StreamFailure {
        throw failure.rpcError
      }
    }
  }

  /// The request messages in order; the iteration throws the call's failure, if any.
  public func makeAsyncIterator() -> AsyncIterator {
    AsyncIterator(stream: stream, transform: transform, counter: counter)
  }
}

/// Sends response messages of a server- or bidirectional-streaming call.
///
/// `write` waits while the client has not granted flow-control credit, so a slow reader slows
/// the handler down instead of growing memory.
public struct ResponseWriter: Sendable {
  let stream: StreamHandle
  let context: ServerContext
  /// The interceptors' response wrappers as one; nil (the usual case) costs one branch a message.
  @usableFromInline var transform: ServerCall.MessageTransform? = nil

  /// Sends one message (response metadata, if set, goes out first).
  ///
  /// Inlinable, so that a message the window has room for costs the handler no call into an
  /// async function: only waiting for credit does.
  @inlinable
  public func write(_ message: [UInt8]) async throws {
    if let transform { return try await writeTransformed(message, transform) }
    if try enqueue(message) { try await awaitCredit() }
  }

  /// A write through the interceptors' response wrappers.
  @usableFromInline
  func writeTransformed(_ message: [UInt8], _ transform: ServerCall.MessageTransform) async throws {
    if try enqueue(try await transform(message)) { try await awaitCredit() }
  }

  /// Queues the message; true if it waits for flow-control credit.
  @usableFromInline
  func enqueue(_ message: [UInt8]) throws -> Bool {
    if let headers = context.takeResponseHeaders() { stream.sendHeaders(headers) }
    do {
      return try stream.enqueue(message)
    } catch let failure as StreamFailure {
      throw failure.rpcError
    }
  }

  @usableFromInline
  func awaitCredit() async throws {
    do {
      try await stream.awaitCredit()
    } catch let failure as StreamFailure {
      throw failure.rpcError
    }
  }

  /// Sends one message and marks a checkpoint right after it (see ``checkpoint(_:)``).
  public func write(_ message: [UInt8], checkpoint token: [UInt8]) async throws {
    try await write(message)
    try checkpoint(token)
  }

  /// Marks a checkpoint of a resumable stream (protocol 1.1, PROTOCOL.md 18): `token` stands
  /// for everything written so far, and, given back as ``ServerContext/resumeToken``, lets a
  /// handler on any server continue with the next message. Keep it small (it travels in a frame
  /// and, base64-encoded, in the resumed call's metadata).
  ///
  /// Does nothing for a method not registered as resumable, or for a client that does not speak
  /// 1.1. While the server drains, the checkpoint also ends the stream, to be resumed elsewhere
  /// by the client, and throws `unavailable`: let it end the handler.
  public func checkpoint(_ token: [UInt8]) throws {
    guard context.isResumable else { return }
    let consumed = context.requestsRead?.value.load(ordering: .relaxed) ?? 0
    guard stream.sendCheckpoint(consumed: consumed, token: token) else { return }
    guard context.isDraining else { return }
    let ended = stream.finish(
      Trailers(
        status: RPCError.Code.unavailable.rawValue, message: "the server is stopping; continue elsewhere",
        metadata: [ResumableStreams.resumableKey: "1"]))
    if ended { context.noteMigrated() }
    throw RPCError(code: .unavailable, message: "the stream moved to another server at this checkpoint")
  }
}
