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
/// | `demo.Echo/Watch` | server-streaming, resumable | the request is `COUNT [EVERY_MS]`: sends the numbers 0, 1, ... (COUNT of them; 0: for ever), one every EVERY_MS (default 0), with a checkpoint every ``watchCheckpointEvery`` numbers whose token is the next number |
public enum DemoService {
  /// How many numbers `demo.Echo/Watch` sends between checkpoints.
  public static let watchCheckpointEvery = 5

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
    router.serverStreaming("demo.Echo/Watch", resumable: true) { request, responses, context in
      observe?(context.method)
      let words = String(decoding: request, as: UTF8.self).split(separator: " ")
      guard let count = words.first.flatMap({ Int($0) }), count >= 0,
        let every = words.count > 1 ? Int(words[1]) : 0, (0...60_000).contains(every)
      else {
        throw RPCError(
          code: .invalidArgument,
          message: "the request must be 'COUNT [EVERY_MS]', not '\(words.joined(separator: " "))'")
      }
      // Resumed: continue with the number the checkpoint's token names.
      var next = context.resumeToken.flatMap { Int(String(decoding: $0, as: UTF8.self)) } ?? 0
      while count == 0 || next < count {
        if every > 0 { try await Task.sleep(for: .milliseconds(every)) }
        let message = Array(String(next).utf8)
        next += 1
        if next % watchCheckpointEvery == 0 {
          try await responses.write(message, checkpoint: Array(String(next).utf8))
        } else {
          try await responses.write(message)
        }
      }
    }
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
