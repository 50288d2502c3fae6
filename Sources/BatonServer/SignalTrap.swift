import Dispatch
#if canImport(Glibc)
import Glibc
#endif

/// SIGTERM and SIGINT as stop requests: the first calls `first`, any later one calls `second`.
/// Dispatch delivers them on its own queue, so the handlers may take locks.
final class SignalTrap: @unchecked Sendable {
  private let sources: [any DispatchSourceSignal]
  private let queue = DispatchQueue(label: "baton.signals")
  private var count = 0  // touched only on `queue`

  init(first: @escaping @Sendable () -> Void, second: @escaping @Sendable () -> Void) {
    var sources: [any DispatchSourceSignal] = []
    for signalNumber in [SIGTERM, SIGINT] {
      signal(signalNumber, SIG_IGN)
      let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: queue)
      sources.append(source)
    }
    self.sources = sources
    for source in sources {
      source.setEventHandler { [unowned self] in
        count += 1
        if count == 1 { first() } else { second() }
      }
      source.resume()
    }
  }

  /// After the drain, a signal should still stop at once (hooks are running).
  func disarmFirst() { queue.async { self.count = max(self.count, 1) } }

  deinit {
    for source in sources { source.cancel() }
  }
}
