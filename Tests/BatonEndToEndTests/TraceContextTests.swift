import BatonClient
import BatonServer
import Testing

@Suite("W3C trace context: traceparent parsing and propagation through interceptors", .timeLimit(.minutes(10)))
struct TraceContextTests {
  static let example = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

  @Test("a valid traceparent parses into its fields and prints back the same")
  func valid() throws {
    let trace = try #require(TraceContext(traceparent: Self.example, tracestate: "congo=t61rcWkgMzE"))
    #expect(trace.traceID == "4bf92f3577b34da6a3ce929d0e0e4736")
    #expect(trace.spanID == "00f067aa0ba902b7")
    #expect(trace.flags == 1 && trace.isSampled)
    #expect(trace.traceState == "congo=t61rcWkgMzE")
    #expect(trace.traceparent == Self.example)
    let unsampled = try #require(TraceContext(traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"))
    #expect(!unsampled.isSampled)
    // Unknown flag bits are kept; a later version is read for its first four fields.
    #expect(TraceContext(traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff")?.flags == 0xFF)
    let future = TraceContext(traceparent: "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next")
    #expect(future?.traceparent == Self.example)
    #expect(TraceContext(traceparent: "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") != nil)
  }

  @Test(
    "an invalid traceparent is rejected",
    arguments: [
      "",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",  // short
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",  // version 00 with more
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",  // version 00 too long
      "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  // version ff
      "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  // version not hex
      "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  // upper case
      "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  // zero trace id
      "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  // zero parent id
      "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  // separator
      "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",  // separator
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",  // separator
      "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",  // field lengths
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0z",  // flags not hex
      "00-4bf92f3577b34da6a3ce929d0e0e47 6-00f067aa0ba902b7-01",  // space
      "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",  // later version, no dash after flags
    ]
  )
  func invalid(_ header: String) {
    #expect(TraceContext(traceparent: header) == nil)
  }

  @Test("new traces and child spans have valid, fresh ids")
  func newIDs() throws {
    let root = TraceContext.newTrace()
    #expect(TraceContext(traceparent: root.traceparent)?.traceID == root.traceID)
    let child = root.childSpan()
    #expect(child.traceID == root.traceID && child.parentSpanID == root.spanID && child.spanID != root.spanID)
    #expect(TraceContext(traceparent: child.traceparent) != nil)
  }

  @Test("the client interceptor sends the current trace; the server interceptor gives the handler a child span of it")
  func propagation() async throws {
    var router = Router()
    router.addInterceptor(ExtractTraceContext())
    router.unary("trace/Current") { _, _ in
      let trace = TraceContext.current
      return [UInt8]("\(trace?.traceID ?? "-") \(trace?.parentSpanID ?? "-") \(trace?.spanID ?? "-")")
    }
    try await withTestServer(router) { _, address in
      let configuration = Client.Configuration(interceptors: [PropagateTraceContext()])
      try await withClient(endpoints: [address], configuration: configuration) { client in
        let root = TraceContext.newTrace()
        let seen = try await TraceContext.$current.withValue(root) {
          try await client.unary("trace/Current", [], options: CallOptions(metadata: ["traceparent": "junk"]))
        }
        let parts = seen.text.split(separator: " ").map(String.init)
        #expect(parts.count == 3)
        #expect(parts.first == root.traceID)
        #expect(parts.dropFirst().first == root.spanID)
        #expect(parts.last != root.spanID)

        // Outside any trace: nothing is sent, and the server starts a new trace.
        let fresh = try await client.unary("trace/Current", []).text.split(separator: " ").map(String.init)
        #expect(fresh.count == 3 && fresh[0] != root.traceID && fresh[1] == "-")
      }
      // An invalid header from a client without the interceptor also starts a new trace.
      try await withClient(endpoints: [address]) { client in
        let invalid = "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
        let seen = try await client.unary("trace/Current", [], options: CallOptions(metadata: ["traceparent": invalid]))
        let parts = seen.text.split(separator: " ").map(String.init)
        #expect(parts.count == 3 && parts[0] != "00000000000000000000000000000000" && parts[1] == "-")
      }
    }
  }
}
