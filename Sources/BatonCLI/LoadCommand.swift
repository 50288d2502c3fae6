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
                        [--method unary|stream] [--size B] [--timeout SECONDS]
                        [--balance round-robin|least-loaded] [--json]

      C workers call in closed loops through one client balanced over the endpoints (every
      address of a name is one), for S seconds. unary: demo.Echo/Unary with B-byte payloads. stream: each worker runs a
      demo.Echo/Bidi stream, sending a B-byte message and awaiting its echo, for up to 1 s (or
      until its server starts to drain), then starts a new stream; a stream counts as one call
      and each round trip as one latency sample.

      A progress line goes to standard error every second. The last line on standard output is
      the summary:
        ok=N failed=N retried=N p50_us=N p99_us=N failures={code:N,...}
      or with --json one object with keys ok, failed, retried, failures (code -> count), p50_us,
      p99_us, endpoints (address -> call attempts sent there), and messages, for streams.

      options:
        --endpoints LIST     comma-separated HOST:PORT list (required)
        --seconds S          how long to run (required)
        --concurrency C      workers (required)
        --method M           unary or stream (default unary)
        --size B             payload bytes (default 64)
        --timeout SECONDS    per-call deadline (default 5)
        --balance POLICY     round-robin (the client's default) or least-loaded (of two random
                             ready connections, the one with fewer calls running)
        --json               print the summary as JSON
        --help               this text

      exit status: 0 no call failed, 1 some call failed, 2 bad command line.
      """,
    valued: ["--endpoints", "--seconds", "--concurrency", "--method", "--size", "--timeout", "--balance"],
    switches: ["--json"]
  )

  static func run(_ arguments: Arguments, _ output: Output) async throws -> Int32 {
    guard let list = arguments.string("--endpoints") else { throw UsageError("option '--endpoints' is required") }
    var endpoints: [Endpoint] = []
    for item in list.split(separator: ",", omittingEmptySubsequences: true) {
      endpoints.append(try Arguments.endpoint(String(item), for: "each endpoint"))
    }
    guard !endpoints.isEmpty else { throw UsageError("option '--endpoints' needs at least one HOST:PORT") }
    let seconds = try arguments.seconds("--seconds", default: nil, in: 0...86_400)
    let concurrency = try arguments.int("--concurrency", default: nil, in: 1...100_000)
    let method = try arguments.choice("--method", ["unary", "stream"], default: "unary")
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
    let client = Client(
      endpoints: endpoints,
      configuration: Client.Configuration(loadBalancing: balance == "least-loaded" ? .leastLoaded : .roundRobin))

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
            + (method == "stream" ? " messages=\(live.messages)" : ""))
        lastOK = ok
        tick += 1
      }
    }
    let total = await LoadWorkers.tally(count: concurrency, hardDeadline: hardDeadline) { _ in
      method == "unary"
        ? await LoadWorkers.unary(
          client: client, method: "demo.Echo/Unary", payload: payload, options: options, stop: stop, live: live)
        : await LoadWorkers.stream(
          client: client, method: "demo.Echo/Bidi", payload: payload, options: options, stop: stop, live: live)
    }
    progress.cancel()
    await progress.value
    let retried = client.statistics.retried
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
      if method == "stream" { fields.append("\"messages\":\(total.messages)") }
      fields.append(
        "\"endpoints\":{" + perEndpoint.map { "\(Format.json($0.0)):\($0.1)" }.joined(separator: ",") + "}")
      output.line("{" + fields.joined(separator: ",") + "}")
    } else {
      var line =
        "ok=\(total.ok) failed=\(total.failed) retried=\(retried) p50_us=\(p50) p99_us=\(p99)"
        + " failures={" + failures.map { "\($0.key):\($0.value)" }.joined(separator: ",") + "}"
      if method == "stream" { line += " messages=\(total.messages)" }
      output.line(line)
    }
    return total.failed == 0 ? 0 : 1
  }
}
