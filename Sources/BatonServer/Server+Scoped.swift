import BatonCore

/// Runs a server for the duration of `body`: binds it, and only once it listens runs `body` with
/// it; when `body` returns (or throws) stops the server gracefully and waits until it has fully
/// stopped (connections closed, hooks run), then returns `body`'s value (or rethrows its error).
///
/// An error binding the address (say, the port is taken) is thrown before `body` runs, as the
/// ``RPCError`` `unavailable` "could not listen on HOST:PORT: ...": it cannot be lost in a task
/// nobody awaits, and `body` never runs against a server that is not there.
///
/// ```swift
/// try await withServer(configuration: .init(port: 8080), router: router) { server in
///   try await withClient(endpoints: [server.listeningAddress]) { client in ... }
/// }
/// ```
/// A process that only serves can wait in `body` for the stop a signal starts:
/// `withServer(configuration: .init(port: 8080, handleSignals: true), router: router) { server in await server.stopReport() }`.
///
/// - Parameters:
///   - stopDeadline: the graceful stop's drain deadline once `body` is done (default: the
///     configuration's `shutdown.deadline`).
/// - Throws: the bind error before `body` runs, else `body`'s error once the server has stopped.
public func withServer<Value: Sendable>(
  configuration: Server.Configuration = .defaults, router: Router, stopDeadline: Duration? = nil,
  _ body: (Server) async throws -> Value
) async throws -> Value {
  let server = Server(configuration: configuration, router: router)
  return try await withThrowingTaskGroup(of: Void.self, returning: Value.self) { group in
    group.addTask { try await server.run() }
    do {
      _ = try await server.listeningAddress
    } catch {
      // run() failed to bind and has stopped the server: it throws this same error.
      _ = try? await group.waitForAll()
      throw error
    }
    let outcome: Result<Value, any Error>
    do {
      outcome = .success(try await body(server))
    } catch {
      outcome = .failure(error)
    }
    await server.gracefulStop(deadline: stopDeadline)
    try await group.waitForAll()
    return try outcome.get()
  }
}
