import BatonClient
import BatonPosix
import BatonServer
import Testing

/// Hands every server event to the test, which awaits the ones it needs instead of sleeping.
final class EventStream: ServerObserver {
  let events: AsyncStream<ServerEvent>
  private let continuation: AsyncStream<ServerEvent>.Continuation
  let seen = Locked<[ServerEvent]>([])

  init() {
    (events, continuation) = AsyncStream.makeStream(of: ServerEvent.self, bufferingPolicy: .unbounded)
  }

  func observe(_ event: ServerEvent) {
    seen.withLock { $0.append(event) }
    continuation.yield(event)
  }

  /// Returns once `count` call-finished events have been seen since the stream began.
  func waitForFinishedCalls(_ count: Int) async {
    var finished = 0
    for await event in events {
      if case .callFinished = event { finished += 1 }
      if finished >= count { return }
    }
  }
}

@Suite("GET /metrics: Prometheus text format 0.0.4, and the observer seam", .timeLimit(.minutes(10)))
struct MetricsTests {
  static let weird = "odd\"name\\with\nbreaks"

  @Test("the page parses strictly and counts a known sequence of calls, a deadline cut, GOAWAYs and a drain")
  func knownSequence() async throws {
    var router = echoRouter()
    router.unary(Self.weird) { request, _ in request }
    let observer = EventStream()
    let server = Server(
      configuration: .init(logger: .disabled, healthPort: 0, observer: observer), router: router)
    let running = Task { try await server.run() }
    let address = try await server.listeningAddress
    try await withClient(endpoints: [address]) { client in
      for _ in 0..<3 { _ = try await client.unary("echo/Unary", [UInt8]("hi")) }
      await #expect(throws: RPCError.self) { try await client.unary("echo/Fail", []) }
      await #expect(throws: RPCError.self) { try await client.unary("no/SuchMethod", []) }
      _ = try await client.unary(Self.weird, [])
      let expanded = try await client.serverStreaming("echo/Expand", [UInt8]("5")) { responses in
        var count = 0
        for try await _ in responses { count += 1 }
        return count
      }
      #expect(expanded == 5)
      let cut = await #expect(throws: RPCError.self) {
        try await client.unary("echo/Sleep", [UInt8]("60000"), options: CallOptions(timeout: .milliseconds(50)))
      }
      #expect(cut?.code == .deadlineExceeded)
      await observer.waitForFinishedCalls(8)

      let health = try #require(server.healthAddress)
      let response = await httpGet(port: health.port, "/metrics")
      #expect(response.status == 200)
      let page = try PrometheusTextParser.parse(response.body)
      #expect(page.families["baton_server_calls_started_total"]?.type == "counter")
      #expect(page.families["baton_server_handling_seconds"]?.type == "histogram")
      #expect(page.value("baton_server_calls_started_total", ["method": "echo/Unary"]) == 3)
      #expect(page.value("baton_server_calls_handled_total", ["method": "echo/Unary", "code": "ok"]) == 3)
      #expect(page.value("baton_server_calls_handled_total", ["method": "echo/Fail", "code": "notFound"]) == 1)
      #expect(page.value("baton_server_calls_started_total", ["method": "unknown"]) == 1)
      #expect(page.value("baton_server_calls_handled_total", ["method": "unknown", "code": "unimplemented"]) == 1)
      // The label value round-trips through its escapes.
      #expect(page.value("baton_server_calls_handled_total", ["method": Self.weird, "code": "ok"]) == 1)
      #expect(page.value("baton_server_calls_handled_total", ["method": "echo/Expand", "code": "ok"]) == 1)
      // The server's deadline timer and the client's reset at its own (same) deadline race:
      // either the server cut the call (deadlineExceeded, counted as cut) or saw it cancelled.
      let atDeadline =
        page.value("baton_server_calls_handled_total", ["method": "echo/Sleep", "code": "deadlineExceeded"]) ?? 0
      let cancelled =
        page.value("baton_server_calls_handled_total", ["method": "echo/Sleep", "code": "cancelled"]) ?? 0
      #expect(atDeadline + cancelled == 1)
      #expect(page.value("baton_server_streams_cut_total", ["reason": "call_deadline"]) == atDeadline)
      #expect(page.value("baton_server_handling_seconds_count", ["method": "echo/Unary"]) == 3)
      #expect(page.value("baton_server_handling_seconds_count", ["method": "echo/Sleep"]) == 1)
      #expect(page.value("baton_server_open_connections") == 1)
      #expect(page.value("baton_server_connections_accepted_total") == 1)
      #expect(page.value("baton_server_goaways_sent_total") == 0)
      #expect((page.value("baton_server_received_bytes_total") ?? 0) > 0)
      #expect((page.value("baton_server_sent_bytes_total") ?? 0) > 0)
      // Bounded: the router's eight methods, the odd one, and `unknown`.
      #expect(page.families["baton_server_calls_started_total"]?.samples.count == 10)
      // Stopped while the client is connected: its connection drains.
      await server.gracefulStop(deadline: .seconds(30))
    }
    try await running.value
    let after = try PrometheusTextParser.parse(try #require(server.metricsPage))
    // The stop's drain: GOAWAY(2^31-1) and the final GOAWAY, one drain observed at the close.
    #expect(after.value("baton_server_goaways_sent_total") == 2)
    #expect(after.value("baton_server_connection_drain_seconds_count") == 1)
    #expect(after.value("baton_server_open_connections") == 0)
    let events = observer.seen.withLock { $0 }
    #expect(events.contains { if case .connectionDrained = $0 { true } else { false } })
    #expect(events.contains { if case .callStarted("unknown") = $0 { true } else { false } })
  }

  @Test("with collectsMetrics off there is no page")
  func metricsOff() async throws {
    try await withTestServer(echoRouter(), configuration: .init(logger: .disabled, collectsMetrics: false)) {
      server, address in
      try await withClient(endpoints: [address]) { client in
        _ = try await client.unary("echo/Unary", [])
      }
      #expect(server.metricsPage == nil)
    }
  }

  @Test("the strict parser rejects what the format forbids")
  func parserRejects() throws {
    let good = """
      # HELP a_total A counter.
      # TYPE a_total counter
      a_total{method="x\\"y\\\\z\\n"} 1
      # TYPE h histogram
      h_bucket{le="0.1"} 1
      h_bucket{le="+Inf"} 2
      h_sum 0.3
      h_count 2

      """
    let parsed = try PrometheusTextParser.parse(good)
    #expect(parsed.value("a_total", ["method": "x\"y\\z\n"]) == 1)
    let bad = [
      "a_total{method=\"x\\q\"} 1\n",  // unknown escape
      "# TYPE a counter\n# TYPE a counter\na 1\n",  // second TYPE
      "a 1\n# TYPE a counter\n",  // TYPE after samples
      "a 1\nb 1\na{x=\"1\"} 1\n",  // not contiguous
      "a 1\na 1\n",  // repeated series
      "1a 1\n",  // bad metric name
      "a{1x=\"1\"} 1\n",  // bad label name
      "a{x=\"1\",x=\"2\"} 1\n",  // repeated label
      "a one\n",  // bad value
      "a 1",  // no final line feed
      "# TYPE c counter\nc -1\n",  // negative counter
      "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",  // decreasing
      "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",  // no +Inf
      "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",  // +Inf != count
      "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 2\n",  // no sum
    ]
    for text in bad {
      #expect(throws: PrometheusTextParser.Failure.self, "\(text)") { try PrometheusTextParser.parse(text) }
    }
  }
}
