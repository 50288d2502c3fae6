import BatonClient
import BatonCore
import BatonPosix

/// `baton bench unary`: closed-loop unary echo over one connection.
enum BenchUnaryCommand {
  static let spec = CommandSpec(
    path: "baton bench unary",
    summary: "C closed-loop unary callers over one connection",
    help: """
      usage: baton bench unary --port P [--concurrency C] [--seconds S] [--warmup W] [--size B]
                               [--executor loop|global] [--interceptor] [--no-metrics]

      C callers call bench.Echo/Unary on 127.0.0.1:P in closed loops (send, await the reply,
      repeat) over one client, which keeps one connection. W unmeasured seconds come first, then
      S measured seconds. Prints one line:
        RESULT unary impl=baton conc=C size=B secs=S calls=N errors=N rps=N p50_us=N p90_us=N p99_us=N max_us=N
      calls counts replies of the measured phase, secs is that phase's length, latencies are in
      microseconds (1% histogram buckets). With errors, error_codes=code:N,... follows.

      options:
        --port P           the bench server's port (required)
        --concurrency C    callers (default 1)
        --seconds S        measured seconds (default 5)
        --warmup W         unmeasured seconds first (default 1)
        --size B           payload bytes (default 64)
        --executor E       where the callers run: 'loop' on the client connection's
                           event loop (Client.preferredExecutor: no thread hop per call), or
                           'global' (default) on Swift's global executor, as plain tasks do
        --interceptor      run every call through one client interceptor that does nothing
        --no-metrics       count nothing for the client's metrics page (what they cost)
        --help             this text

      exit status: 0 no call failed, 1 some call failed.
      """,
    valued: ["--port", "--concurrency", "--seconds", "--warmup", "--size", "--executor"],
    switches: ["--interceptor", "--no-metrics"]
  )

  static func run(_ arguments: Arguments, _ output: Output) async throws -> Int32 {
    let port = try arguments.int("--port", default: nil, in: 1...65_535)
    let concurrency = try arguments.int("--concurrency", default: 1, in: 1...100_000)
    let seconds = try arguments.seconds("--seconds", default: 5, in: 0.01...86_400)
    let warmup = try arguments.seconds("--warmup", default: 1, in: 0...86_400)
    let size = try arguments.int("--size", default: 64, in: 0...(4 << 20) - 1_024)
    let payload = Format.payload(size)
    let onLoop: Bool
    switch arguments.string("--executor") ?? "global" {
    case "loop": onLoop = true
    case "global": onLoop = false
    case let other: throw UsageError("option '--executor' takes 'loop' or 'global', not '\(other)'")
    }

    let client = Client(
      endpoints: [Endpoint(host: "127.0.0.1", port: port)],
      configuration: .init(
        interceptors: arguments.flag("--interceptor") ? [PassThrough()] : [],
        collectsMetrics: !arguments.flag("--no-metrics")))
    if warmup > 0 {
      _ = await phase(client, payload, concurrency, seconds: warmup, onLoop: onLoop)
    }
    let (tally, elapsed) = await phase(client, payload, concurrency, seconds: seconds, onLoop: onLoop)
    await LoadWorkers.close(client)

    let latency = tally.latency
    let secs = Double(elapsed) / 1e9
    var line =
      "RESULT unary impl=baton conc=\(concurrency) size=\(size) secs=\(Format.fixed(secs, 2))"
      + " calls=\(latency.count) errors=\(tally.failed) rps=\(Format.fixed(Double(latency.count) / secs, 0))"
      + " p50_us=\(Format.micros(latency.percentile(50))) p90_us=\(Format.micros(latency.percentile(90)))"
      + " p99_us=\(Format.micros(latency.percentile(99))) max_us=\(Format.micros(latency.max))"
    if tally.failed > 0 { line += " error_codes=\(Format.failures(tally.failures))" }
    output.line(line)
    return tally.failed == 0 ? 0 : 1
  }

  /// `concurrency` callers for `seconds`; returns their merged tally and the phase's length (ns),
  /// measured until the last caller returned.
  private static func phase(
    _ client: Client, _ payload: [UInt8], _ concurrency: Int, seconds: Double, onLoop: Bool
  ) async -> (Tally, UInt64) {
    let start = MonotonicClock.now()
    let stop = StopTime(at: start &+ UInt64(seconds * 1e9))
    let total = await LoadWorkers.tally(count: concurrency, hardDeadline: start &+ UInt64((seconds + 10) * 1e9)) { _ in
      let executor: (any TaskExecutor)? = onLoop ? client.preferredExecutor : nil
      return await withTaskExecutorPreference(executor) {
        await LoadWorkers.unary(
          client: client, method: "bench.Echo/Unary", payload: payload, options: .defaults, stop: stop)
      }
    }
    let elapsed = MonotonicClock.now() &- start
    return (total, elapsed)
  }
}
