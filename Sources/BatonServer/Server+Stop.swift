import BatonCore
import BatonPosix

// The stop sequence: graceful (drain, then cut at the deadline) or at once, then the hooks and
// workers, then the report. Each connection's own drain (two GOAWAYs around a PING) is in
// Server.swift, with the rest of the connection's management.
extension Server {
  // MARK: - Stopping

  /// Starts a graceful stop and returns at once; idempotent. See ``gracefulStop(deadline:)``.
  public func beginGracefulStop(deadline: Duration? = nil) {
    let action = state.withLock { $0.lifecycle.beginGracefulStop() }
    switch action {
    case .drain:
      requestStop(StopRequest(deadline: deadline ?? configuration.shutdown.deadline, hard: false))
    case .stoppedBeforeStart:
      finish(StopReport())
    case .none:
      break
    }
  }

  /// Stops without failing a call, within one deadline:
  /// 1. readiness turns false at once (``isReady``), then the propagation delay passes;
  /// 2. the listener closes; a connection that still arrives is told GOAWAY at once;
  /// 3. each connection gets GOAWAY(2^31-1) and a PING, then on the PING's ACK (or after a wait
  ///    of four measured round trips, capped) the final GOAWAY with the real last stream id, so
  ///    the client knows exactly which calls to retry elsewhere;
  /// 4. handlers are told (``ServerContext/isDraining``) and open streams run on;
  /// 5. at the deadline the remaining handlers are cancelled and their streams end with
  ///    `unavailable`; every connection closes with FIN after its last frame;
  /// 6. shutdown hooks and workers stop in reverse order, each within its timeout.
  /// The sequence runs in ``run()``'s task. Returns the report once all of that is done
  /// (``run()`` returns at the same moment).
  @discardableResult
  public func gracefulStop(deadline: Duration? = nil) async -> StopReport {
    beginGracefulStop(deadline: deadline)
    return await stopReport()
  }

  /// Stops at once: open streams are cut with `unavailable`, frames are flushed, hooks still run.
  public func stopNow() {
    let action = state.withLock { $0.lifecycle.hardStop() }
    switch action {
    case .drainAndCut:
      requestStop(StopRequest(deadline: .zero, hard: true))
    case .cut:
      wakeConnectionsWaiter()
    case .stoppedBeforeStart:
      finish(StopReport())
    case .none:
      break
    }
  }

  /// Waits until the server has stopped and returns what the stop did.
  public func stopReport() async -> StopReport {
    await withCheckedContinuation { continuation in
      let report = state.withLock { s -> StopReport? in
        if let report = s.report { return report }
        s.stopWaiters.append(continuation)
        return nil
      }
      if let report { continuation.resume(returning: report) }
    }
  }

  func stopSequence(deadline: Duration, hard: Bool) async {
    let start = MonotonicClock.now()
    let deadlineAt = start &+ deadline.nanoseconds
    var report = StopReport()
    drainSignal.fire()
    let (connections, streams) = openConnectionsAndCalls
    logger.info(
      "draining", ("connections", "\(connections)"), ("streams", "\(streams)"), ("deadline", deadline.readable))

    let delay = configuration.shutdown.readinessPropagationDelay
    if !hard && delay > .zero {
      logger.info("readiness off", ("propagation_delay", "\(delay)"))
      try? await Task.sleep(for: delay)
    }
    state.withLock { $0.listener }?.close()
    for id in state.withLock({ Array($0.connections.keys) }) { beginDrain(id) }

    let drained = await waitForConnections(until: deadlineAt, endOnHardStop: true)
    let drainEnd = MonotonicClock.now()
    report.phases.append(.init(name: "draining", duration: .nanoseconds(drainEnd &- start)))
    if drained {
      logger.info("drained", ("duration", Duration.nanoseconds(drainEnd &- start).readable))
    } else {
      // Either the deadline passed, or a hard stop (a second signal, `stopNow()`, cancellation)
      // ended the drain first: whichever moved the lifecycle to cancelling says why.
      let byDeadline = !hard && state.withLock { $0.lifecycle.deadlinePassed() }
      let cause: StopReport.CutCause = byDeadline ? .deadline : .stoppedAtOnce
      report.cutCause = cause
      report.cutStreams = cutEverything(
        reason: byDeadline
          ? "the server stopped: its drain deadline of \(deadline.readable) passed"
          : "the server stopped at once: a second stop request came during the drain")
      logger.warning("cut", ("streams", "\(report.cutStreams.count)"), ("reason", "\(cause)"))
      let flushed = await waitForConnections(
        until: MonotonicClock.now() &+ configuration.shutdown.flushGrace.nanoseconds)
      if !flushed {
        for entry in state.withLock({ Array($0.connections.values) }) { entry.connection.forceClose() }
        _ = await waitForConnections(until: MonotonicClock.now() &+ 1_000_000_000)
      }
      report.phases.append(.init(name: "cancelling", duration: .nanoseconds(MonotonicClock.now() &- drainEnd)))
    }
    report.migratedStreams = dispatcher.drainSignal.migrated.load(ordering: .relaxed)
    report.drainedStreams = dispatcher.drainedCalls.load(ordering: .relaxed) - report.migratedStreams

    let (services, workers) = state.withLock { s in
      _ = s.lifecycle.connectionsClosed()
      s.signals?.disarmFirst()
      return (s.services, s.workers)
    }
    let hooksStart = MonotonicClock.now()
    for (index, service) in services.enumerated().reversed() {
      let began = MonotonicClock.now()
      let outcome: StopReport.Hook.Outcome
      switch service.kind {
      case .hook(let body):
        outcome = await runBounded(service.timeout, body)
      case .worker:
        guard let task = workers[index] else { continue }
        task.cancel()
        outcome = await runBounded(service.timeout) { await task.value }
      }
      let took = Duration.nanoseconds(MonotonicClock.now() &- began)
      report.hooks.append(.init(name: service.name, duration: took, outcome: outcome))
      logger.info("hook", ("name", service.name), ("duration", took.readable), ("outcome", "\(outcome)"))
    }
    if !services.isEmpty {
      report.phases.append(.init(name: "closing", duration: .nanoseconds(MonotonicClock.now() &- hooksStart)))
    }
    report.total = .nanoseconds(MonotonicClock.now() &- start)
    logger.info(
      "stopped", ("total", report.total.readable), ("drained", "\(report.drainedStreams)"),
      ("migrated", "\(report.migratedStreams)"),
      ("cut", "\(report.cutStreams.count)"))
    finish(report)
  }

  func finish(_ report: StopReport) {
    state.withLock { $0.health }?.close()
    let stopWaiters = state.withLock { s in
      _ = s.lifecycle.hooksFinished()
      s.report = report
      s.signals = nil
      defer { s.stopWaiters.removeAll() }
      return s.stopWaiters
    }
    for waiter in stopWaiters { waiter.resume(returning: report) }
  }

  /// Waits until every connection has closed (true) or `deadline` passes (false). With
  /// `endOnHardStop`, a hard stop (now or already requested) also ends the wait.
  func waitForConnections(until deadline: UInt64, endOnHardStop: Bool = false) async -> Bool {
    let loop = group.next()  // cancel on the loop that scheduled: `next()` moves on each call
    let timer = loop.schedule(at: deadline) { [weak self] in self?.wakeConnectionsWaiter() }
    defer { loop.cancel(timer) }
    return await withCheckedContinuation { continuation in
      let done = state.withLock { s -> Bool? in
        if s.connections.isEmpty { return true }
        if endOnHardStop && s.lifecycle.state == .cancelling { return false }
        // The timer may already have run and found no waiter: past the deadline, do not park.
        if MonotonicClock.now() >= deadline { return false }
        s.connectionsWaiter = continuation
        return nil
      }
      if let done { continuation.resume(returning: done) }
    }
  }

  func wakeConnectionsWaiter() {
    let waiter = state.withLock { s in
      defer { s.connectionsWaiter = nil }
      return s.connectionsWaiter
    }
    waiter?.resume(returning: state.withLock { $0.connections.isEmpty })
  }

  /// The deadline passed: cancel every handler, end its stream with `unavailable`, close.
  func cutEverything(reason: String) -> [StopReport.CutStream] {
    let entries = state.withLock { s in
      for id in Array(s.connections.keys) { s.connections[id]?.manager.forceClosing() }
      return Array(s.connections.values)
    }
    return entries.flatMap { cut($0, reason: reason) }
  }

  func runBounded(
    _ timeout: Duration, _ body: @escaping @Sendable () async throws -> Void
  ) async -> StopReport.Hook.Outcome {
    let once = ResumeOnce<StopReport.Hook.Outcome>()
    let loop = group.next()
    return await withCheckedContinuation { continuation in
      once.set(continuation)
      let timer = loop.schedule(at: MonotonicClock.now() &+ timeout.nanoseconds) { once.resume(.timedOut) }
      Task {
        do {
          try await body()
          once.resume(.finished)
        } catch {
          once.resume(.failed("\(error)"))
        }
        loop.cancel(timer)
      }
    }
  }
}

/// Resumes a continuation exactly once, whichever of several racers comes first.
final class ResumeOnce<Value: Sendable>: Sendable {
  private let state = Locked<(continuation: CheckedContinuation<Value, Never>?, early: Value?)>((nil, nil))

  func set(_ continuation: CheckedContinuation<Value, Never>) {
    let early = state.withLock { s -> Value? in
      if let early = s.early { return early }
      s.continuation = continuation
      return nil
    }
    if let early { continuation.resume(returning: early) }
  }

  func resume(_ value: Value) {
    let continuation = state.withLock { s -> CheckedContinuation<Value, Never>? in
      if let continuation = s.continuation {
        s.continuation = nil
        s.early = value
        return continuation
      }
      if s.early == nil { s.early = value }
      return nil
    }
    continuation?.resume(returning: value)
  }
}
