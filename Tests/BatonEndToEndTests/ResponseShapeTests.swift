import BatonClient
import BatonCore
import Testing

/// PROTOCOL.md 7.2, client side: a unary or client-streaming call takes exactly one response
/// message. Driven by a scripted server, since a Baton server never breaks the shape.
@Suite("The client enforces the response shape of unary and client-streaming calls", .timeLimit(.minutes(2)))
struct ResponseShapeTests {
  enum Shape: CaseIterable { case unary, clientStreaming }

  /// Starts one call of `shape` against a scripted server, waits for its request to end (the
  /// half-close), lets `script` answer on the stream, and returns the call's outcome and the
  /// frames the client sent afterwards (until `stop`).
  private func call(
    _ shape: Shape, script: @escaping @Sendable (RawPeer, UInt32) -> Void,
    until stop: @escaping @Sendable (Frame) -> Bool = { _ in false }
  ) async throws -> (Result<[UInt8], any Error>, [Frame]) {
    let server = try RawServer()
    let client = Client(endpoints: [server.endpoint])
    let options = CallOptions(timeout: .seconds(20))
    let outcome = Task { () -> Result<[UInt8], any Error> in
      do {
        switch shape {
        case .unary: return .success(try await client.unary("test/One", [1], options: options))
        case .clientStreaming:
          return .success(
            try await client.clientStreaming("test/One", options: options) { writer in try await writer.write([1]) })
        }
      } catch {
        return .failure(error)
      }
    }
    let peer = try #require(await server.accept())
    let (request, _) = await peer.read {
      if case .data(_, _, _, true) = $0 { true } else { false }
    }
    guard case .data(let id, _, _, true)? = request.last else {
      Issue.record("no half-close: \(request)")
      return (await outcome.value, [])
    }
    script(peer, id)
    let result = await outcome.value
    await client.close()  // the client's FIN ends the reading below
    let (after, _) = await peer.read(until: stop)
    return (result, after)
  }

  private func internalError(_ result: Result<[UInt8], any Error>) -> RPCError? {
    guard case .failure(let error as RPCError) = result, error.code == .internal else { return nil }
    return error
  }

  @Test(
    "a second response message fails the call with INTERNAL and resets the open stream with CANCEL",
    arguments: Shape.allCases)
  func secondMessage(_ shape: Shape) async throws {
    let (result, after) = try await call(
      shape,
      script: { peer, id in
        // No TRAILERS: the stream stays open, so the client must end it.
        peer.send(
          .data(streamID: id, payload: [1], endMessage: true, endStream: false),
          .data(streamID: id, payload: [2], endMessage: true, endStream: false))
      }, until: { $0.resetCode(stream: 1) != nil })
    #expect(internalError(result) != nil, "\(result)")
    #expect(after.contains { $0.resetCode(stream: 1) == .cancel }, "no RESET CANCEL: \(after)")
  }

  @Test("a second response message before TRAILERS OK still fails the call with INTERNAL", arguments: Shape.allCases)
  func secondMessageThenOK(_ shape: Shape) async throws {
    let (result, _) = try await call(
      shape,
      script: { peer, id in
        peer.send(
          .data(streamID: id, payload: [1], endMessage: true, endStream: false),
          .data(streamID: id, payload: [2], endMessage: true, endStream: false),
          .trailers(streamID: id, Trailers(status: 0)))
      })
    #expect(internalError(result) != nil, "\(result)")
  }

  @Test("TRAILERS OK with no response message fails the call with INTERNAL", arguments: Shape.allCases)
  func noMessage(_ shape: Shape) async throws {
    let (result, _) = try await call(
      shape,
      script: { peer, id in
        peer.send(.trailers(streamID: id, Trailers(status: 0)))
      })
    #expect(internalError(result) != nil, "\(result)")
  }

  @Test("one message and OK is the reply", arguments: Shape.allCases)
  func oneMessage(_ shape: Shape) async throws {
    let (result, _) = try await call(
      shape,
      script: { peer, id in
        peer.send(
          .data(streamID: id, payload: [7], endMessage: true, endStream: false),
          .trailers(streamID: id, Trailers(status: 0)))
      })
    guard case .success(let reply) = result else {
      Issue.record("\(result)")
      return
    }
    #expect(reply == [7])
  }
}
