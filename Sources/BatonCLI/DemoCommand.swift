import BatonClient
import BatonCore
import BatonPosix
import BatonServer

/// `baton demo`: three servers restarted one by one under steady load, and no call fails.
enum DemoCommand {
  static let spec = CommandSpec(
    path: "baton demo",
    summary: "rolling restart of three in-process servers under load",
    help: """
      usage: baton demo [--seconds S] [--verbose]

      Starts three demo servers in this process on 127.0.0.1 and one client over the three,
      and keeps them busy: 16 workers making short unary calls, 4 short bidirectional streams
      that move to another server as soon as theirs starts to drain, and long work that is
      still in flight whenever a server stops: \(longCallWorkers) workers making \(longCallMilliseconds) ms calls
      (demo.Echo/Wait) and \(longStreamWorkers) keeping \(longStreamMilliseconds) ms streams open to the end, and
      \(watchWorkers) endless watch streams (demo.Echo/Watch, resumable) that must see every number once.
      After a warm-up each server in turn is stopped gracefully (deadline 5 s) and a new one is
      started on the same port. A live line shows calls ok / failed / retried, each server's
      share of the calls over the last second, and the restart under way. Each restart ends
      with one line:
        restart 2/3: server :PORT drained 14 streams in 212.0ms, 2 streams migrated, 1234 calls moved to the others, 0 failed (...)
      what the stopping server finished before it stopped (its long calls and streams
      included), how many endless streams it handed over at a checkpoint to continue on
      another server, how many calls the other two servers took while it was stopping and
      starting again, and how many calls failed meanwhile.

      options:
        --seconds S   length of the run, 3 to 3600 (default 12); restarts that overrun extend it
        --verbose     the servers' lifecycle lines on standard error, prefixed '[server N]'
        --help        this text

      exit status: 0 no call failed and no watch stream saw a gap or a duplicate, 1 otherwise
      (or a server could not restart).
      """,
    valued: ["--seconds"],
    switches: ["--verbose"]
  )

  static let unaryWorkers = 16
  static let streamWorkers = 4
  static let longCallWorkers = 12
  static let longStreamWorkers = 3
  static let watchWorkers = 4
  static let longCallMilliseconds = 400
  static let longStreamMilliseconds = 1_500
  static let drainDeadline: Duration = .seconds(5)

  /// The counters a restart's line compares before and after.
  private struct Counters: Sendable {
    var calls: [Int]
    var failed: Int
    var retried: Int
  }

  static func run(_ arguments: Arguments, _ output: Output) async throws -> Int32 {
    let seconds = try arguments.seconds("--seconds", default: 12, in: 3...3_600)
    let verbose = arguments.flag("--verbose")
    let cluster = try await LocalCluster.start(count: 3) { index in
      verbose ? output.logger(prefix: "[server \(index + 1)] ") : .disabled
    }
    output.line(
      "demo: servers on \(cluster.endpoints.map(\.description).joined(separator: ", ")); "
        + "\(unaryWorkers) unary + \(streamWorkers) stream workers, and \(longCallWorkers) workers making "
        + "\(longCallMilliseconds) ms calls + \(longStreamWorkers) keeping \(longStreamMilliseconds) ms streams open, "
        + "for \(Format.fixed(seconds, 0)) s; each server restarts in turn")

    let client = Client(endpoints: cluster.endpoints)
    let live = LiveCounters()
    let stop = StopTime()
    let options = CallOptions(timeout: .seconds(5))
    let payload = Array("baton demo".utf8)
    let start = MonotonicClock.now()
    // Three drains of at most 5 s, each with up to 3 s to bind again: the run cannot outlast this.
    let hardDeadline = start &+ UInt64((seconds + 3 * 9 + 10) * 1e9)
    let count = cluster.endpoints.count
    let before = Locked<Counters?>(nil)
    @Sendable func counters() -> Counters {
      Counters(calls: cluster.callCounts, failed: live.failures, retried: client.statistics.retried)
    }

    let driver = Task { () -> [Result<LocalCluster.Restart, any Error>] in
      defer { stop.stopNow() }
      return await cluster.rollingRestart(seconds: seconds, start: start, deadline: drainDeadline) { index, outcome in
        let at = Format.fixed(Double(MonotonicClock.now() &- start) / 1e9, 1) + "s"
        let text: String
        switch outcome {
        case nil:
          before.withLock { $0 = counters() }
          text =
            "\(at) restarting server \(index + 1) (\(cluster.endpoints[index])): graceful stop, deadline \(drainDeadline.readable)"
        case .success(let restart)?:
          let after = counters()
          let was = before.withLock { $0 } ?? after
          text = restartLine(
            index: index, of: count, port: cluster.endpoints[index].port, restart: restart, before: was, after: after)
        case .failure(let error)?:
          text =
            "restart \(index + 1)/\(count): server \(index + 1) (\(cluster.endpoints[index])) could not restart: \(error)"
        }
        // On a terminal, the event replaces the live line, which is redrawn below it.
        output.raw((output.isTerminal ? "\r\u{1B}[K" : "") + text + "\n", to: .standardOutput)
      }
    }
    let progress = Task { await showProgress(cluster, client, live, start: start, output) }
    let waitPayload = Array("\(longCallMilliseconds)".utf8)
    async let long = LoadWorkers.tally(count: longCallWorkers + longStreamWorkers, hardDeadline: hardDeadline) {
      index in
      index < longCallWorkers
        ? await LoadWorkers.unary(
          client: client, method: "demo.Echo/Wait", payload: waitPayload, options: options, stop: stop, live: live)
        : await LoadWorkers.stream(
          client: client, method: "demo.Echo/Bidi", payload: payload, options: options, stop: stop,
          streamLength: UInt64(longStreamMilliseconds) * 1_000_000, leaveOnDrain: false, live: live)
    }
    async let watches = LoadWorkers.tally(count: watchWorkers, hardDeadline: hardDeadline) { _ in
      await LoadWorkers.watch(client: client, everyMilliseconds: 2, options: CallOptions(), stop: stop, live: live)
    }
    let short = await LoadWorkers.tally(count: unaryWorkers + streamWorkers, hardDeadline: hardDeadline) { index in
      index < unaryWorkers
        ? await LoadWorkers.unary(
          client: client, method: "demo.Echo/Unary", payload: payload, options: options, stop: stop, live: live)
        : await LoadWorkers.stream(
          client: client, method: "demo.Echo/Bidi", payload: payload, options: options, stop: stop, live: live)
    }
    var total = short
    total.merge(await long)
    let watched = await watches
    total.merge(watched)
    let restarts = await driver.value
    progress.cancel()
    await progress.value
    let elapsed = MonotonicClock.now() &- start
    let retried = client.statistics.retried
    let resumed = client.statistics.resumed
    await LoadWorkers.close(client)
    await cluster.stopAll()

    output.line(
      "summary: ok=\(total.ok) failed=\(total.failed) retried=\(retried) in \(Format.fixed(Double(elapsed) / 1e9, 1)) s"
        + " (short unary calls p50 \(Format.micros(short.latency.percentile(50))) us, p99 \(Format.micros(short.latency.percentile(99))) us;"
        + " \(total.messages) stream messages)")
    output.line(
      "watch streams: \(watched.messages) numbers, \(resumed) moves to another server, \(watched.gaps) gaps, "
        + "\(watched.duplicates) duplicates")
    var restartFailed = false
    var drained = 0
    for outcome in restarts {
      switch outcome {
      case .success(let restart): drained += restart.report.drainedStreams
      case .failure: restartFailed = true
      }
    }
    if total.failed == 0 && !restartFailed && watched.gaps == 0 && watched.duplicates == 0 {
      output.line(
        "PASS: every server restarted and finished its open streams (\(drained) in all); no call failed")
      return 0
    }
    output.line(
      "FAIL: \(total.failed) calls failed (\(Format.failures(total.failures))), "
        + "\(watched.gaps) gaps and \(watched.duplicates) duplicates in watch streams"
        + (restartFailed ? "; a server could not restart" : ""))
    return 1
  }

  /// `restart 2/3: server :PORT drained 14 streams in 212.0ms, 37 calls moved to the others, 0 failed`,
  /// then when it listened again and how many calls the client retried meanwhile.
  private static func restartLine(
    index: Int, of count: Int, port: Int, restart: LocalCluster.Restart, before: Counters, after: Counters
  ) -> String {
    let moved = after.calls.indices.filter { $0 != index }.reduce(0) { $0 + after.calls[$1] - before.calls[$1] }
    let failed = after.failed - before.failed
    let cut = restart.report.cutStreams.count
    let migrated = restart.report.migratedStreams
    return "restart \(index + 1)/\(count): server :\(port) drained \(restart.report.drainedStreams) streams in "
      + "\(Duration.nanoseconds(restart.drain).readable), "
      + (migrated == 0 ? "" : "\(migrated) streams migrated, ")
      + "\(moved) calls moved to the others, \(failed) failed"
      + (cut == 0 ? "" : ", \(cut) cut at its deadline")
      + " (listening again after \(Duration.nanoseconds(restart.total).readable); "
      + "\(after.retried - before.retried) calls retried on another server)"
  }

  /// The live line: every 250 ms redrawn in place on a terminal, else one line a second.
  private static func showProgress(
    _ cluster: LocalCluster, _ client: Client, _ live: LiveCounters, start: UInt64, _ output: Output
  ) async {
    let interval: UInt64 = output.isTerminal ? 250_000_000 : 1_000_000_000
    var history: [(at: UInt64, counts: [Int])] = [(start, cluster.callCounts)]
    var tick: UInt64 = 1
    while !Task.isCancelled {
      await LoadWorkers.sleep(until: start &+ tick &* interval)
      if Task.isCancelled { break }
      tick += 1
      let now = MonotonicClock.now()
      let counts = cluster.callCounts
      // Shares over the last second, so a draining server visibly drops to 0%.
      while history.count > 1, let second = history.dropFirst().first, now &- second.at >= 1_000_000_000 {
        history.removeFirst()
      }
      let base = history.first?.counts ?? counts
      history.append((now, counts))
      let deltas = zip(counts, base).map { $0 - $1 }
      let sum = max(1, deltas.reduce(0, +))
      let shares = zip(cluster.endpoints, deltas).map { endpoint, delta in
        ":\(endpoint.port) \(String(delta * 100 / sum).leftPadded(to: 3))%"
      }.joined(separator: " ")
      let phase: String
      if let index = cluster.restarting {
        phase = "restarting server \(index + 1): \(cluster.status(index))"
      } else {
        phase = "steady"
      }
      let line =
        "\(Format.fixed(Double(now &- start) / 1e9, 1))s ok=\(live.ok) failed=\(live.failures) "
        + "retried=\(client.statistics.retried) resumed=\(client.statistics.resumed) | share \(shares) | \(phase)"
      if output.isTerminal {
        output.raw("\r" + line + "\u{1B}[K", to: .standardOutput)
      } else {
        output.line(line)
      }
    }
    if output.isTerminal { output.raw("\n", to: .standardOutput) }
  }
}
