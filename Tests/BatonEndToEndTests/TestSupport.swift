import BatonClient
import BatonServer
import Foundation
import Testing

/// A running server on 127.0.0.1:0 for the duration of `body`; stopped (hard) afterwards.
func withTestServer<R: Sendable>(
  _ router: Router, configuration: Server.Configuration = .init(logger: .disabled),
  _ body: (Server, Endpoint) async throws -> R
) async throws -> R {
  let server = Server(configuration: configuration, router: router)
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
