import BatonClient
import BatonCore
import BatonPosix

/// `baton bench restart`: call latency while servers restart one by one.
enum BenchRestartCommand {
  static let spec = CommandSpec(
    path: "baton bench restart",
    summary: "unary latency through a rolling restart of three servers",
    help: """
      usage: baton bench restart [--seconds S] [--concurrency C] [--size B]

      Starts three echo servers in this process and one client over them; C callers call
      demo.Echo/Unary in closed loops for S seconds while each server in turn is stopped
      gracefully (deadline 5 s) and restarted on its port. Calls that overlap a restart (from
      the start of the stop until the new server listens) are timed apart from the others.
      Prints:
        RESULT restart impl=baton secs=S calls=N failed=N retried=N p99_us_steady=N p99_us_restart=N drains_ms=a,b,c
      calls counts successful calls; drains_ms is each graceful stop's length.

      options:
        --seconds S        length of the run, at least 1 (default 10)
        --concurrency C    callers (default 16)
        --size B           payload bytes (default 64)
        --help             this text

      exit status: 0 no call failed and every server restarted, 1 otherwise.
      """,
    valued: ["--seconds", "--concurrency", "--size"]
  )

  static func run(_ arguments: Arguments, _ output: Output) async throws -> Int32 {
    let seconds = try arguments.seconds("--seconds", default: 10, in: 1...3_600)
    let concurrency = try arguments.int("--concurrency", default: 16, in: 1...100_000)
    let size = try arguments.int("--size", default: 64, in: 0...(4 << 20) - 1_024)
    let payload = Format.payload(size)

    let cluster = try await LocalCluster.start(count: 3) { _ in .disabled }
    let client = Client(endpoints: cluster.endpoints)
    let stop = StopTime()
    let options = CallOptions(timeout: .seconds(5))
    let start = MonotonicClock.now()
    let hardDeadline = start &+ UInt64((seconds + 3 * 9 + 10) * 1e9)
    let driver = Task { () -> [Result<LocalCluster.Restart, any Error>] in
      defer { stop.stopNow() }
      return await cluster.rollingRestart(seconds: seconds, start: start, deadline: .seconds(5))
    }
    let total = await LoadWorkers.tally(count: concurrency, hardDeadline: hardDeadline) { _ in
      await LoadWorkers.unary(
        client: client, method: "demo.Echo/Unary", payload: payload, options: options, stop: stop,
        window: cluster.window)
    }
    let restarts = await driver.value
    let elapsed = MonotonicClock.now() &- start
    let retried = client.statistics.retried
    await LoadWorkers.close(client)
    await cluster.stopAll()

    var drains: [String] = []
    var restartFailures: [String] = []
    for (index, outcome) in restarts.enumerated() {
      switch outcome {
      case .success(let restart): drains.append(Format.millis(restart.drain))
      case .failure(let error):
        drains.append("failed")
        restartFailures.append("server \(index + 1): \(error)")
      }
    }
    output.line(
      "RESULT restart impl=baton secs=\(Format.fixed(Double(elapsed) / 1e9, 2)) calls=\(total.ok) failed=\(total.failed)"
        + " retried=\(retried) p99_us_steady=\(Format.micros(total.latency.percentile(99)))"
        + " p99_us_restart=\(Format.micros(total.restartLatency.percentile(99))) drains_ms=\(drains.joined(separator: ","))"
        + (total.failed == 0 ? "" : " error_codes=\(Format.failures(total.failures))"))
    for failure in restartFailures { output.error("error: could not restart \(failure)") }
    return total.failed == 0 && restartFailures.isEmpty ? 0 : 1
  }
}
