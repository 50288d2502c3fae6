import BatonClient
import BatonCore
import BatonPosix

/// `baton load`: closed-loop load over one client and several endpoints.
enum LoadCommand {
  static let spec = CommandSpec(
    path: "baton load",
    summary: "closed-loop load over one client and several endpoints",
    help: """
      usage: baton load --endpoints H:P,H:P,... --seconds S --concurrency C
                        [--method unary|stream|watch] [--size B] [--timeout SECONDS]
                        [--balance round-robin|least-loaded] [--keepalive I,T|off] [--json]

      C workers call in closed loops through one client balanced over the endpoints (every
      address of a name is one), for S seconds. unary: demo.Echo/Unary with B-byte payloads. stream: each worker runs a
      demo.Echo/Bidi stream, sending a B-byte message and awaiting its echo, for up to 1 s (or
      until its server starts to drain), then starts a new stream; a stream counts as one call
      and each round trip as one latency sample. watch: each worker keeps one demo.Echo/Watch
      stream open (a resumable numbered sequence, protocol 1.1) for the whole run and checks that
      no number is missing or repeated, whatever the servers do meanwhile.

      A progress line goes to standard error every second. The last line on standard output is
      the summary:
        ok=N failed=N retried=N p50_us=N p99_us=N failures={code:N,...}
      or with --json one object with keys ok, failed, retried, failures (code -> count), p50_us,
      p99_us, endpoints (address -> call attempts sent there), and messages, for streams; for
      watch also gaps, duplicates and resumed (streams moved to another server).

      options:
        --endpoints LIST     comma-separated HOST:PORT list (required)
        --seconds S          how long to run (required)
        --concurrency C      workers (required)
        --method M           unary, stream or watch (default unary)
        --size B             payload bytes (default 64)
        --timeout SECONDS    per-call deadline (default 5)
        --balance POLICY     round-robin (the client's default) or least-loaded (of two random
                             ready connections, the one with fewer calls running)
        --keepalive I,T      client keepalive: PING after I seconds of silence with calls
                             waiting, give up T seconds later (default: the client's, 1,2);
                             off: none
        --json               print the summary as JSON
        --help               this text

      exit status: 0 no call failed (and, for watch, no gap and no duplicate), 1 otherwise,
      2 bad command line.
      """,
    valued: [
      "--endpoints", "--seconds", "--concurrency", "--method", "--size", "--timeout", "--balance", "--keepalive",
    ],
    switches: ["--json"]
  )

  /// `I,T` in seconds, or `off`.
  private static func keepalive(_ text: String) throws -> Client.Keepalive? {
    if text == "off" { return nil }
    let parts = text.split(separator: ",").map { Double($0) }
    guard parts.count == 2, let interval = parts[0], let timeout = parts[1], (0.01...3_600).contains(interval),
      (0.01...3_600).contains(timeout)
    else { throw UsageError("option '--keepalive' takes INTERVAL,TIMEOUT in seconds (0.01 to 3600) or 'off'") }
    return Client.Keepalive(interval: .seconds(interval), timeout: .seconds(timeout))
  }

  static func run(_ arguments: Arguments, _ output: Output) async throws -> Int32 {
    guard let list = arguments.string("--endpoints") else { throw UsageError("option '--endpoints' is required") }
    var endpoints: [Endpoint] = []
    for item in list.split(separator: ",", omittingEmptySubsequences: true) {
      endpoints.append(try Arguments.endpoint(String(item), for: "each endpoint"))
    }
    guard !endpoints.isEmpty else { throw UsageError("option '--endpoints' needs at least one HOST:PORT") }
    let seconds = try arguments.seconds("--seconds", default: nil, in: 0...86_400)
    let concurrency = try arguments.int("--concurrency", default: nil, in: 1...100_000)
    let method = try arguments.choice("--method", ["unary", "stream", "watch"], default: "unary")
    let size = try arguments.int("--size", default: 64, in: 0...(4 << 20) - 1_024)
    let timeout = try arguments.seconds("--timeout", default: 5, in: 0.001...86_400)
    let json = arguments.flag("--json")
    let balance = try arguments.choice("--balance", ["round-robin", "least-loaded"], default: "round-robin")

    let payload = Format.payload(size)
    let options = CallOptions(timeout: .seconds(timeout))
    let live = LiveCounters()
    let start = MonotonicClock.now()
    let stop = StopTime(at: start &+ UInt64(seconds * 1e9))
    let hardDeadline = start &+ UInt64((seconds + timeout + 10) * 1e9)
    var configuration = Client.Configuration(loadBalancing: balance == "least-loaded" ? .leastLoaded : .roundRobin)
    if let text = arguments.string("--keepalive") {
      configuration.keepalive = try keepalive(text)
    }
    let client = Client(endpoints: endpoints, configuration: configuration)

    let progress = Task {
      var tick: UInt64 = 1
      var lastOK = 0
      while !Task.isCancelled {
        let next = start &+ tick &* 1_000_000_000
        let now = MonotonicClock.now()
        if next > now { try? await Task.sleep(nanoseconds: next - now) }
        if Task.isCancelled { break }
        let ok = live.ok
        output.error(
          "load t=\(tick)s ok=\(ok) failed=\(live.failures) retried=\(client.statistics.retried) per_s=\(ok - lastOK)"
            + (method == "unary" ? "" : " messages=\(live.messages)")
            + (method == "watch" ? " resumed=\(client.statistics.resumed)" : ""))
        lastOK = ok
        tick += 1
      }
    }
    let total = await LoadWorkers.tally(count: concurrency, hardDeadline: hardDeadline) { _ in
      switch method {
      case "unary":
        await LoadWorkers.unary(
          client: client, method: "demo.Echo/Unary", payload: payload, options: options, stop: stop, live: live)
      case "watch":
        // A watch lives for the whole run: its deadline is the run's, not a call's.
        await LoadWorkers.watch(
          client: client, everyMilliseconds: 1, options: CallOptions(timeout: .seconds(seconds + timeout)), stop: stop,
          live: live)
      default:
        await LoadWorkers.stream(
          client: client, method: "demo.Echo/Bidi", payload: payload, options: options, stop: stop, live: live)
      }
    }
    progress.cancel()
    await progress.value
    let retried = client.statistics.retried
    let resumed = client.statistics.resumed
    let perEndpoint = client.endpointStates.map { ($0.endpoint.description, $0.attempts) }
    await LoadWorkers.close(client)

    let latency = total.allLatency
    let p50 = Format.micros(latency.percentile(50))
    let p99 = Format.micros(latency.percentile(99))
    let failures = total.failures.sorted { $0.key < $1.key }
    if json {
      var fields = [
        "\"ok\":\(total.ok)", "\"failed\":\(total.failed)", "\"retried\":\(retried)",
        "\"failures\":{" + failures.map { "\(Format.json($0.key)):\($0.value)" }.joined(separator: ",") + "}",
        "\"p50_us\":\(p50)", "\"p99_us\":\(p99)",
      ]
      if method != "unary" { fields.append("\"messages\":\(total.messages)") }
      if method == "watch" {
        fields += ["\"gaps\":\(total.gaps)", "\"duplicates\":\(total.duplicates)", "\"resumed\":\(resumed)"]
      }
      fields.append(
        "\"endpoints\":{" + perEndpoint.map { "\(Format.json($0.0)):\($0.1)" }.joined(separator: ",") + "}")
      output.line("{" + fields.joined(separator: ",") + "}")
    } else {
      var line =
        "ok=\(total.ok) failed=\(total.failed) retried=\(retried) p50_us=\(p50) p99_us=\(p99)"
        + " failures={" + failures.map { "\($0.key):\($0.value)" }.joined(separator: ",") + "}"
      if method != "unary" { line += " messages=\(total.messages)" }
      if method == "watch" { line += " gaps=\(total.gaps) duplicates=\(total.duplicates) resumed=\(resumed)" }
      output.line(line)
    }
    return total.failed == 0 && total.gaps == 0 && total.duplicates == 0 ? 0 : 1
  }
}
