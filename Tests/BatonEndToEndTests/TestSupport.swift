import BatonClient
import BatonPosix
import BatonServer
import Foundation
import Testing

/// A running server on 127.0.0.1:0 for the duration of `body`; stopped (hard) afterwards.
func withTestServer<R: Sendable>(
  _ router: Router, configuration: Server.Configuration = .init(logger: .disabled),
  _ body: (Server, Endpoint) async throws -> R
) async throws -> R {
  try await Watchdog.watching {
    let server = Server(configuration: configuration, router: router)
    Watchdog.current?.watch { server.debugState }
    let running = Task { try await server.run() }
    do {
      let address = try await server.listeningAddress
      let result = try await body(server, address)
      server.stopNow()
      try await running.value
      return result
    } catch {
      server.stopNow()
      _ = try? await running.value
      throw error
    }
  }
}

/// `BatonClient.withClient`, watched (this target's declaration shadows the library's): a test
/// that hangs names itself and shows what its client's calls and connections wait for.
func withClient<Result: Sendable>(
  endpoints: [Endpoint], configuration: Client.Configuration = .defaults,
  _ body: (Client) async throws -> Result
) async throws -> Result {
  try await Watchdog.watching {
    try await BatonClient.withClient(endpoints: endpoints, configuration: configuration) { client in
      Watchdog.current?.watch { client.debugState }
      return try await body(client)
    }
  }
}

/// Names a hung test. Swift Testing's `.timeLimit` cannot end a test whose task waits on a
/// continuation nobody resumes, so a stalled parallel run would name no test: if the watched
/// scope is still running after `patience`, this writes to stderr the test's name and the state
/// of the servers and clients registered with ``watch(_:)`` (what each stream slot has parked).
final class Watchdog: Sendable {
  @TaskLocal static var current: Watchdog?
  static let patience: Duration = .seconds(30)

  private let name: String
  private let subjects = Locked<[@Sendable () -> String]>([])

  private init(name: String) { self.name = name }

  /// Runs `body` under a watchdog, or under the enclosing scope's one.
  static func watching<R>(_ body: () async throws -> R) async throws -> R {
    if current != nil { return try await body() }
    let test = Test.current.map { "\"\($0.displayName ?? $0.name)\" (\($0.sourceLocation))" } ?? "(not in a test)"
    let watchdog = Watchdog(name: test)
    let timer = Task.detached {
      try await Task.sleep(for: patience)
      watchdog.report()
    }
    defer { timer.cancel() }
    return try await $current.withValue(watchdog) { try await body() }
  }

  /// Adds a server's or client's state to the report.
  func watch(_ describe: @escaping @Sendable () -> String) {
    subjects.withLock { $0.append(describe) }
  }

  private func report() {
    let states = subjects.withLock { $0 }.map { $0() }
    let text = (["test \(name) still running after \(Self.patience):"] + states).joined(separator: "\n")
    let lines = text.split(separator: "\n").map { "WATCHDOG \($0)\n" }.joined()
    FileHandle.standardError.write(Data(lines.utf8))
  }
}

/// The echo service the tests and the demo share.
func echoRouter() -> Router {
  var router = Router()
  router.unary("echo/Unary") { request, _ in request }
  router.serverStreaming("echo/Expand") { request, writer, _ in
    let count = Int(String(decoding: request, as: UTF8.self)) ?? 0
    for index in 0..<count { try await writer.write(Array("\(index)".utf8)) }
  }
  router.clientStreaming("echo/Collect") { requests, _ in
    var total: [UInt8] = []
    for try await message in requests { total += message }
    return total
  }
  router.bidirectional("echo/Bidi") { requests, writer, _ in
    for try await message in requests { try await writer.write(message) }
  }
  router.unary("echo/Metadata") { request, context in
    context.setResponseMetadata(["reply-to": context.requestMetadata["who"] ?? "nobody"])
    context.setTrailingMetadata(["done": "yes"])
    return request
  }
  router.unary("echo/Fail") { _, _ in
    throw RPCError(code: .notFound, message: "no such thing")
  }
  router.unary("echo/Crash") { _, _ in
    struct Secret: Error {}
    throw Secret()
  }
  router.unary("echo/Sleep") { request, context in
    let millis = Int(String(decoding: request, as: UTF8.self)) ?? 0
    try await Task.sleep(for: .milliseconds(millis))
    return request
  }
  return router
}

extension Array where Element == UInt8 {
  init(_ text: String) { self = Array(text.utf8) }
  var text: String { String(decoding: self, as: UTF8.self) }
}

/// Runs `count` copies of `call` at once and returns how each ended, in start order.
func concurrentOutcomes(
  _ count: Int, _ call: @escaping @Sendable () async throws -> [UInt8]
) async -> [Result<[UInt8], RPCError>] {
  let tasks = (0..<count).map { _ in
    Task { () -> Result<[UInt8], RPCError> in
      do { return .success(try await call()) } catch {
        return .failure(error as? RPCError ?? RPCError(code: .unknown, message: "\(error)"))
      }
    }
  }
  var outcomes: [Result<[UInt8], RPCError>] = []
  for task in tasks { outcomes.append(await task.value) }
  return outcomes
}
