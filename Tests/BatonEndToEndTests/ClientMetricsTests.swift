import BatonClient
import BatonPosix
import BatonServer
import BatonTesting
import Testing

/// Records every client event; a test awaits the one it needs instead of sleeping.
final class ClientEventLog: ClientObserver {
  private struct State {
    var seen: [ClientEvent] = []
    var waiters: [(predicate: @Sendable (ClientEvent) -> Bool, continuation: CheckedContinuation<Void, Never>)] = []
  }
  private let state = Locked(State())

  func observe(_ event: ClientEvent) {
    let due = state.withLock { s -> [CheckedContinuation<Void, Never>] in
      s.seen.append(event)
      let due = s.waiters.filter { $0.predicate(event) }.map(\.continuation)
      s.waiters.removeAll { $0.predicate(event) }
      return due
    }
    for continuation in due { continuation.resume() }
  }

  var events: [ClientEvent] { state.withLock { $0.seen } }

  /// The events of calls (started, retried, resumed, finished), in order, as short words.
  var callEvents: [String] {
    events.compactMap { event in
      switch event {
      case .callStarted(let method): "started \(method)"
      case .callFinished(let method, let status, _): "finished \(method) \(status.map { "\($0)" } ?? "ok")"
      case .retried(let method, let reason): "retried \(method) \(reason.rawValue)"
      case .resumed(let method): "resumed \(method)"
      case .goAwayReceived, .connectionLost: nil
      }
    }
  }

  /// Returns once an event matching `predicate` has been seen (at once if one was).
  func wait(for predicate: @escaping @Sendable (ClientEvent) -> Bool) async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      let seen = state.withLock { s in
        if s.seen.contains(where: predicate) { return true }
        s.waiters.append((predicate, continuation))
        return false
      }
      if seen { continuation.resume() }
    }
  }
}

@Suite("The client's metrics page, the one-page seam, and the client observer", .timeLimit(.minutes(5)))
struct ClientMetricsTests {
  static let weird = "odd\"name\\with\nbreaks"

  @Test("the client's page parses strictly and counts a known sequence of calls; the observer sees them in order")
  func knownSequence() async throws {
    var router = echoRouter()
    router.unary(Self.weird) { request, _ in request }
    let log = ClientEventLog()
    try await withTestServer(router) { _, address in
      try await withClient(endpoints: [address], configuration: .init(observer: log)) { client in
        for _ in 0..<4 { _ = try await client.unary("echo/Unary", [UInt8]("hi")) }
        for _ in 0..<2 {
          let error = await #expect(throws: RPCError.self) { try await client.unary("echo/Fail", []) }
          #expect(error?.code == .notFound)
        }
        _ = try await client.unary(Self.weird, [])
        let count = try await client.serverStreaming("echo/Expand", [UInt8]("3")) { responses in
          var count = 0
          for try await _ in responses { count += 1 }
          return count
        }
        #expect(count == 3)

        let text = try #require(client.metricsPage)
        let page = try PrometheusTextParser.parse(text)
        #expect(page.families["baton_client_calls_started_total"]?.type == "counter")
        #expect(page.families["baton_client_call_seconds"]?.type == "histogram")
        #expect(page.families["baton_client_open_connections"]?.type == "gauge")
        #expect(page.value("baton_client_calls_started_total", ["method": "echo/Unary"]) == 4)
        #expect(page.value("baton_client_calls_handled_total", ["method": "echo/Unary", "code": "ok"]) == 4)
        #expect(page.value("baton_client_calls_started_total", ["method": "echo/Fail"]) == 2)
        #expect(page.value("baton_client_calls_handled_total", ["method": "echo/Fail", "code": "notFound"]) == 2)
        #expect(page.value("baton_client_calls_handled_total", ["method": "echo/Fail", "code": "ok"]) == 0)
        #expect(page.value("baton_client_calls_handled_total", ["method": "echo/Expand", "code": "ok"]) == 1)
        // The odd name's label value round-trips through its escapes.
        #expect(page.value("baton_client_calls_handled_total", ["method": Self.weird, "code": "ok"]) == 1)
        #expect(page.value("baton_client_call_seconds_count", ["method": "echo/Unary"]) == 4)
        #expect(page.value("baton_client_call_seconds_count", ["method": "echo/Fail"]) == 2)
        #expect((page.value("baton_client_call_seconds_sum", ["method": "echo/Unary"]) ?? 0) > 0)
        // Four methods, no `other` (no name was past the cap).
        #expect(page.families["baton_client_calls_started_total"]?.samples.count == 4)
        #expect(page.value("baton_client_retries_total", ["reason": "not_processed"]) == 0)
        #expect(page.value("baton_client_retries_total", ["reason": "idempotent"]) == 0)
        #expect(page.value("baton_client_resumptions_total") == 0)
        let endpoint = ["endpoint": address.description]
        #expect(page.value("baton_client_attempts_total", endpoint) == 8)
        #expect(page.value("baton_client_goaways_received_total", endpoint) == 0)
        #expect(page.value("baton_client_connections_lost_total", endpoint) == 0)
        #expect(page.value("baton_client_open_connections", endpoint) == 1)
        #expect(page.value("baton_client_active_calls", endpoint) == 0)
        #expect((page.value("baton_client_sent_bytes_total", endpoint) ?? 0) > 0)
        #expect((page.value("baton_client_received_bytes_total", endpoint) ?? 0) > 0)
      }
    }
    let unary = ["started echo/Unary", "finished echo/Unary ok"]
    let fail = ["started echo/Fail", "finished echo/Fail notFound"]
    let expected =
      unary + unary + unary + unary + fail + fail
      + ["started \(Self.weird)", "finished \(Self.weird) ok", "started echo/Expand", "finished echo/Expand ok"]
    #expect(log.callEvents == expected)
  }

  @Test("a call refused by a GOAWAY is a not_processed retry; the GOAWAY counts on its endpoint only")
  func transparentRetry() async throws {
    // Member 0's proxy answers the first OPEN it sees with GOAWAY(last 0): the server never
    // saw that stream, so the client moves the call to member 1, for free.
    let plan = try FaultPlan(parsing: "goaway last=0 after-opens=1")
    let log = ClientEventLog()
    try await withTestCluster(count: 2, router: echoRouter(), faults: [0: plan]) { cluster in
      try await withClient(endpoints: cluster.endpoints, configuration: .init(observer: log)) { client in
        try await client.waitUntilReady()
        // Two calls, one at a time: whichever member the first goes to, one of them opens
        // member 0's first stream.
        for _ in 0..<2 { _ = try await client.unary("echo/Unary", [UInt8]("x")) }
        let first = cluster.endpoints[0]
        // The GOAWAY's count is made before its event; the call may return before either.
        await log.wait { if case .goAwayReceived(first) = $0 { true } else { false } }
        let page = try PrometheusTextParser.parse(try #require(client.metricsPage))
        #expect(page.value("baton_client_retries_total", ["reason": "not_processed"]) == 1)
        #expect(page.value("baton_client_retries_total", ["reason": "idempotent"]) == 0)
        #expect(page.value("baton_client_calls_handled_total", ["method": "echo/Unary", "code": "ok"]) == 2)
        #expect(page.value("baton_client_goaways_received_total", ["endpoint": first.description]) == 1)
        #expect(page.value("baton_client_goaways_received_total", ["endpoint": cluster.endpoints[1].description]) == 0)
        // Three attempts: two calls and the retry (which member the second call took depends on
        // whether member 0 had reconnected).
        let attempts = cluster.endpoints.map {
          page.value("baton_client_attempts_total", ["endpoint": $0.description]) ?? 0
        }
        #expect(attempts.reduce(0, +) == 3)
        #expect(client.statistics.retried == 1)
      }
      #expect(cluster[0].proxy.trace.first?.action == "goaway last=0 NO_ERROR")
    }
    let calls = log.callEvents
    #expect(calls.filter { $0.hasPrefix("retried") } == ["retried echo/Unary not_processed"])
    // The retry sits inside its call: after a start, before that call's end.
    let retry = try #require(calls.firstIndex(of: "retried echo/Unary not_processed"))
    #expect(retry > 0 && calls[retry - 1] == "started echo/Unary")
    #expect(retry + 1 < calls.count && calls[retry + 1] == "finished echo/Unary ok")
    #expect(calls.count == 5)
  }

  @Test("an idempotent call on a lost connection is an idempotent retry; the loss counts on its endpoint")
  func idempotentRetry() async throws {
    // Member 0's proxy cuts both connections at the first OPEN: the call may have been
    // processed, so only an idempotent call moves to member 1 (from the retry budget).
    let plan = try FaultPlan(parsing: "cut after-opens=1")
    let log = ClientEventLog()
    try await withTestCluster(count: 2, router: echoRouter(), faults: [0: plan]) { cluster in
      try await withClient(endpoints: cluster.endpoints, configuration: .init(observer: log)) { client in
        try await client.waitUntilReady()
        for _ in 0..<2 {
          _ = try await client.unary("echo/Unary", [UInt8]("x"), options: CallOptions(idempotent: true))
        }
        let first = cluster.endpoints[0]
        await log.wait { if case .connectionLost(first) = $0 { true } else { false } }
        let page = try PrometheusTextParser.parse(try #require(client.metricsPage))
        #expect(page.value("baton_client_retries_total", ["reason": "idempotent"]) == 1)
        #expect(page.value("baton_client_retries_total", ["reason": "not_processed"]) == 0)
        #expect(page.value("baton_client_connections_lost_total", ["endpoint": first.description]) == 1)
        #expect(page.value("baton_client_connections_lost_total", ["endpoint": cluster.endpoints[1].description]) == 0)
        #expect(page.value("baton_client_goaways_received_total", ["endpoint": first.description]) == 0)
        #expect(page.value("baton_client_calls_handled_total", ["method": "echo/Unary", "code": "ok"]) == 2)
      }
    }
    #expect(log.callEvents.filter { $0.hasPrefix("retried") } == ["retried echo/Unary idempotent"])
  }

  @Test("the first 100 method names get a label each; the rest share method=\"other\"")
  func methodCap() async throws {
    try await withTestServer(echoRouter()) { _, address in
      try await withClient(endpoints: [address]) { client in
        // Names the server does not have: each call fails at once with `unimplemented`.
        for index in 0..<105 {
          let error = await #expect(throws: RPCError.self) { try await client.unary("m/\(index)", []) }
          #expect(error?.code == .unimplemented)
        }
        let page = try PrometheusTextParser.parse(try #require(client.metricsPage))
        #expect(page.families["baton_client_calls_started_total"]?.samples.count == 101)
        #expect(page.value("baton_client_calls_started_total", ["method": "m/99"]) == 1)
        #expect(page.value("baton_client_calls_started_total", ["method": "m/100"]) == nil)
        #expect(page.value("baton_client_calls_started_total", ["method": "other"]) == 5)
        #expect(page.value("baton_client_calls_handled_total", ["method": "other", "code": "unimplemented"]) == 5)
        #expect(page.value("baton_client_call_seconds_count", ["method": "other"]) == 5)
        // A name that has its label keeps it after the cap is reached.
        _ = try await client.unary("echo/Unary", [])
        _ = await #expect(throws: RPCError.self) { try await client.unary("m/3", []) }
        let after = try PrometheusTextParser.parse(try #require(client.metricsPage))
        #expect(after.value("baton_client_calls_started_total", ["method": "m/3"]) == 2)
        #expect(after.value("baton_client_calls_started_total", ["method": "other"]) == 6)
      }
    }
  }

  @Test("a server's /metrics carries its clients' series: one page, strictly valid, two clients told apart")
  func onePage() async throws {
    try await withTestServer(echoRouter()) { _, upstream in
      let firstLabels = Client.Configuration(metricsLabels: ["client": "first"])
      let secondLabels = Client.Configuration(metricsLabels: ["client": "second"])
      try await withClient(endpoints: [upstream], configuration: firstLabels) { first in
        try await withClient(endpoints: [upstream], configuration: secondLabels) { second in
          try await withClient(endpoints: [upstream], configuration: .init(collectsMetrics: false)) { off in
            for _ in 0..<3 { _ = try await first.unary("echo/Unary", []) }
            _ = try await second.unary("echo/Unary", [])
            _ = try await off.unary("echo/Unary", [])
            #expect(off.metricsPage == nil)
            try await checkOnePage(sources: [first, second, off], upstream: upstream)
          }
        }
      }
    }
  }

  private func checkOnePage(sources: [any MetricsExposition], upstream: Endpoint) async throws {
    let configuration = Server.Configuration(logger: .disabled, healthPort: 0, metricsSources: sources)
    try await withTestServer(echoRouter(), configuration: configuration) { server, address in
      try await withClient(endpoints: [address]) { client in
        _ = try await client.unary("echo/Unary", [])
      }
      let health = try #require(server.healthAddress)
      let response = await httpGet(port: health.port, "/metrics")
      #expect(response.status == 200)
      let page = try PrometheusTextParser.parse(response.body)
      // The server's own series, then both clients' (each family one group: the parser checks).
      #expect(page.value("baton_server_calls_started_total", ["method": "echo/Unary"]) == 1)
      #expect(page.value("baton_client_calls_started_total", ["client": "first", "method": "echo/Unary"]) == 3)
      #expect(page.value("baton_client_calls_started_total", ["client": "second", "method": "echo/Unary"]) == 1)
      // The third client collects nothing, so it adds nothing.
      #expect(page.families["baton_client_calls_started_total"]?.samples.count == 2)
      let endpoint = upstream.description
      #expect(page.value("baton_client_attempts_total", ["client": "first", "endpoint": endpoint]) == 3)
      #expect(page.value("baton_client_attempts_total", ["client": "second", "endpoint": endpoint]) == 1)
      let ownText = try #require(server.metricsPage)
      #expect(ownText.hasPrefix("# HELP baton_server_calls_started_total "))
    }
  }

  @Test("with collectsMetrics off there is no page, and the observer still sees every call")
  func metricsOff() async throws {
    let log = ClientEventLog()
    try await withTestServer(echoRouter()) { _, address in
      try await withClient(endpoints: [address], configuration: .init(collectsMetrics: false, observer: log)) {
        client in
        _ = try await client.unary("echo/Unary", [])
        #expect(client.metricsPage == nil)
        var page = PrometheusPage()
        client.writeMetrics(into: &page)
        #expect(page.text.isEmpty)
      }
    }
    #expect(log.callEvents == ["started echo/Unary", "finished echo/Unary ok"])
  }
}
