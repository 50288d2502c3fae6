package import BatonTransport

/// The request messages of a client- or bidirectional-streaming call, in order.
///
/// Ends when the client ends its side; throws if the stream fails (reset, cancellation).
/// Iterate it once.
public struct RequestStream: AsyncSequence, Sendable {
  public typealias Element = [UInt8]
  let stream: StreamHandle

  package init(stream: StreamHandle) { self.stream = stream }

  public struct AsyncIterator: AsyncIteratorProtocol {
    let stream: StreamHandle
    /// Messages that arrived together, taken from the connection in one step.
    var batch = MessageQueue()

    /// What `for try await` calls. It runs on the caller's executor (`nonisolated(nonsending)`)
    /// rather than on an `isolated` parameter: after a call into an `isolated` parameter the
    /// caller switches back to its own executor, once per message, and in a server handler (a
    /// task with an executor preference) each switch takes the task's status lock. The loop
    /// passes its own isolation as `actor`, so running where the caller runs is what it asked for.
    public nonisolated(nonsending) mutating func next(isolation actor: (any Actor)?) async throws(any Error) -> [UInt8]? {
      try await next()
    }

    public nonisolated(nonsending) mutating func next() async throws -> [UInt8]? {
      if let message = batch.popFirst() {
        if batch.owesCredit { stream.credit(&batch) }
        return message
      }
      do {
        return try await stream.receive(batch: &batch)
      } catch let failure as StreamFailure {
        throw failure.rpcError
      }
    }
  }

  public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(stream: stream) }
}

/// Sends response messages of a server- or bidirectional-streaming call.
///
/// `write` waits while the client has not granted flow-control credit, so a slow reader slows
/// the handler down instead of growing memory.
public struct ResponseWriter: Sendable {
  let stream: StreamHandle
  let context: ServerContext

  /// Sends one message (response metadata, if set, goes out first).
  public func write(_ message: [UInt8]) async throws {
    if let headers = context.takeResponseHeaders() { stream.sendHeaders(headers) }
    do {
      if try stream.enqueue(message) { try await stream.awaitCredit() }
    } catch let failure as StreamFailure {
      throw failure.rpcError
    }
  }
}
