import BatonCore
import BatonPosix
import BatonServer
import Synchronization

/// Demo servers in this process on 127.0.0.1, each restartable on its own port: what `demo` and
/// `bench restart` roll through.
final class LocalCluster: Sendable {
  /// Where each server listens; a restarted server keeps its slot's port.
  let endpoints: [Endpoint]
  /// Open while any server is being restarted.
  let window = RestartWindow()
  private let slots: [Slot]

  /// One server position: the server running there now, and the calls its servers took.
  private final class Slot: Sendable {
    let index: Int
    let logger: Logger
    let calls = Atomic<Int>(0)
    let current = Locked<(server: Server, running: Task<Void, any Error>)?>(nil)
    let restarting = Atomic<Bool>(false)

    init(index: Int, logger: Logger) {
      self.index = index
      self.logger = logger
    }

    /// Starts a server on `port` and waits until it listens. A port just released may take a
    /// moment to bind again, so a failed bind is retried for up to `patience` ns.
    func launch(port: Int, patience: UInt64 = 3_000_000_000) async throws -> Endpoint {
      let giveUp = MonotonicClock.now() &+ patience
      while true {
        let router = DemoService.router(observe: { [self] _ in _ = calls.add(1, ordering: .relaxed) })
        let server = Server(
          configuration: .init(host: "127.0.0.1", port: port, logger: logger), router: router)
        let running = Task { try await server.run() }
        do {
          let address = try await server.listeningAddress
          current.withLock { $0 = (server, running) }
          return address
        } catch {
          _ = try? await running.value
          if port == 0 || MonotonicClock.now() >= giveUp { throw error }
          try await Task.sleep(for: .milliseconds(50))
        }
      }
    }
  }

  private init(endpoints: [Endpoint], slots: [Slot]) {
    self.endpoints = endpoints
    self.slots = slots
  }

  /// Starts `count` servers on free ports; `logger(i)` is server i's logger.
  static func start(count: Int, logger: (Int) -> Logger) async throws -> LocalCluster {
    var slots: [Slot] = []
    var endpoints: [Endpoint] = []
    do {
      for index in 0..<count {
        let slot = Slot(index: index, logger: logger(index))
        slots.append(slot)
        endpoints.append(try await slot.launch(port: 0))
      }
    } catch {
      for slot in slots { await Self.stop(slot, deadline: .zero) }
      throw error
    }
    return LocalCluster(endpoints: endpoints, slots: slots)
  }

  /// What a restart did.
  struct Restart: Sendable {
    /// How long the graceful stop took, ns.
    var drain: UInt64
    /// From the start of the stop until the new server listened, ns.
    var total: UInt64
    var report: StopReport
  }

  /// Stops server `index` gracefully (open calls may run for `deadline`), then starts a new one
  /// on the same port and returns once it listens. The restart window is open throughout.
  func restart(_ index: Int, deadline: Duration) async throws -> Restart {
    let slot = slots[index]
    window.open()
    slot.restarting.store(true, ordering: .relaxed)
    defer {
      slot.restarting.store(false, ordering: .relaxed)
      window.close()
    }
    let start = MonotonicClock.now()
    guard let (server, running) = slot.current.withLock({ $0 }) else {
      throw RPCError(code: .failedPrecondition, message: "server \(index + 1) is not running")
    }
    let report = await server.gracefulStop(deadline: deadline)
    let drain = MonotonicClock.now() &- start
    _ = try? await running.value
    _ = try await slot.launch(port: endpoints[index].port)
    return Restart(drain: drain, total: MonotonicClock.now() &- start, report: report)
  }

  /// A rolling restart within a run of `seconds` that began at `start` (``MonotonicClock`` ns):
  /// a warm-up, then each server restarted in turn at evenly spaced times (a restart that
  /// overruns delays the next), then a steady tail. Returns after the tail.
  /// `event` is told of each restart as it begins (nil) and ends.
  func rollingRestart(
    seconds: Double, start: UInt64, deadline: Duration,
    event: @Sendable (Int, Result<Restart, any Error>?) -> Void = { _, _ in }
  ) async -> [Result<Restart, any Error>] {
    let warmup = min(2, seconds * 0.15)
    let tail = min(1.5, seconds * 0.1)
    let spacing = (seconds - warmup - tail) / Double(endpoints.count)
    var restarts: [Result<Restart, any Error>] = []
    for index in endpoints.indices {
      await LoadWorkers.sleep(until: start &+ UInt64((warmup + Double(index) * spacing) * 1e9))
      event(index, nil)
      let outcome: Result<Restart, any Error>
      do {
        outcome = .success(try await restart(index, deadline: deadline))
      } catch {
        outcome = .failure(error)
      }
      restarts.append(outcome)
      event(index, outcome)
    }
    await LoadWorkers.sleep(until: max(start &+ UInt64(seconds * 1e9), MonotonicClock.now() &+ UInt64(tail * 1e9)))
    return restarts
  }

  /// Calls each slot's servers have taken so far.
  var callCounts: [Int] { slots.map { $0.calls.load(ordering: .relaxed) } }

  /// Server `index`'s state in a few words: `serving`, or its stop phase and open streams.
  func status(_ index: Int) -> String {
    let slot = slots[index]
    guard let server = slot.current.withLock({ $0?.server }) else { return "down" }
    if !slot.restarting.load(ordering: .relaxed) { return "serving" }
    let phase = server.phase
    if phase == .stopped { return "starting again" }
    let open = server.progress.openStreams
    return "\(phase), \(open) open stream\(open == 1 ? "" : "s")"
  }

  /// Index of a server being restarted, if any.
  var restarting: Int? { slots.firstIndex { $0.restarting.load(ordering: .relaxed) } }

  /// Stops every server (open calls may run for `deadline`).
  func stopAll(deadline: Duration = .seconds(1)) async {
    await withTaskGroup(of: Void.self) { group in
      for slot in slots { group.addTask { await Self.stop(slot, deadline: deadline) } }
    }
  }

  private static func stop(_ slot: Slot, deadline: Duration) async {
    guard let (server, running) = slot.current.withLock({ $0 }) else { return }
    await server.gracefulStop(deadline: deadline)
    _ = try? await running.value
  }
}
