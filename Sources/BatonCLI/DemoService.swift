import BatonCore
public import BatonServer

/// The service `baton serve`, `baton demo` and `baton bench server` answer.
///
/// | method | shape | does |
/// | --- | --- | --- |
/// | `demo.Echo/Unary` | unary | replies with the request |
/// | `demo.Echo/Bidi` | bidirectional | replies to each message with that message |
/// | `demo.Echo/Wait` | unary | the request is a decimal number of milliseconds: sleeps that long, then replies with the request |
/// | `demo.Echo/Ledger` | unary | records the request (an id) in the ``Ledger`` and replies with it |
/// | `demo.Echo/LedgerDump` | unary | replies with the ledger's ids, one per line |
/// | `bench.Echo/Unary` | unary | replies with the request |
/// | `bench.Echo/Stream` | bidirectional | replies to each message with that message |
public enum DemoService {
  /// The longest `demo.Echo/Wait` sleeps: one hour.
  public static let maxWaitMilliseconds = 3_600_000

  /// The router; `observe`, if given, is called once per call with its method name (the demo
  /// counts calls per server with it).
  public static func router(ledger: Ledger = Ledger(), observe: (@Sendable (String) -> Void)? = nil) -> Router {
    var router = Router()
    let echo: @Sendable ([UInt8], ServerContext) async throws -> [UInt8] = { request, context in
      observe?(context.method)
      return request
    }
    let echoEach: @Sendable (RequestStream, ResponseWriter, ServerContext) async throws -> Void = {
      requests, responses, context in
      observe?(context.method)
      for try await message in requests { try await responses.write(message) }
    }
    router.unary("demo.Echo/Unary", echo)
    router.bidirectional("demo.Echo/Bidi", echoEach)
    router.unary("bench.Echo/Unary", echo)
    router.bidirectional("bench.Echo/Stream", echoEach)
    router.unary("demo.Echo/Wait") { request, context in
      observe?(context.method)
      let text = String(decoding: request, as: UTF8.self).trimmingWhitespace
      guard let millis = Int(text), (0...maxWaitMilliseconds).contains(millis) else {
        throw RPCError(
          code: .invalidArgument,
          message: "the request must be a whole number of milliseconds in 0...\(maxWaitMilliseconds), not '\(text)'")
      }
      try await Task.sleep(for: .milliseconds(millis))
      return request
    }
    router.unary("demo.Echo/Ledger") { request, context in
      observe?(context.method)
      ledger.record(String(decoding: request, as: UTF8.self))
      return request
    }
    router.unary("demo.Echo/LedgerDump") { _, context in
      observe?(context.method)
      return Array(ledger.entries.joined(separator: "\n").utf8)
    }
    return router
  }
}

extension String {
  /// Without leading and trailing spaces, tabs and line breaks.
  var trimmingWhitespace: String {
    let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
    guard let first = firstIndex(where: { !isSpace($0) }), let last = lastIndex(where: { !isSpace($0) }) else {
      return ""
    }
    return String(self[first...last])
  }
}
