import BatonCore
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
    #if os(Linux)
    // Dispatch reads stop signals through a signalfd, which also takes one already pending,
    // held since the process started (``StopSignals``, or a mask inherited from the parent). So
    // nothing here may discard a pending signal: setting SIG_IGN would, and a SIGTERM that came
    // between a check of the pending set and SIG_IGN was lost (the process then ran on until
    // killed; 1 start in ~200 when the signal came right as the server started). A handler that
    // does nothing keeps the default action (death) away while the sources are set up, and
    // discards nothing.
    for signalNumber in [SIGTERM, SIGINT] { Self.installNoOpHandler(signalNumber) }
    let early = 0
    #else
    // Elsewhere (kqueue) a source sees only signals delivered after it exists, and needs
    // SIG_IGN. Ignoring a signal discards it if it is pending, so note which are first.
    var pending = sigset_t()
    sigemptyset(&pending)
    sigpending(&pending)
    let early = [SIGTERM, SIGINT].filter { sigismember(&pending, $0) == 1 }.count
    for signalNumber in [SIGTERM, SIGINT] { signal(signalNumber, SIG_IGN) }
    #endif
    var sources: [any DispatchSourceSignal] = []
    for signalNumber in [SIGTERM, SIGINT] {
      sources.append(DispatchSource.makeSignalSource(signal: signalNumber, queue: queue))
    }
    self.sources = sources
    for source in sources {
      source.setEventHandler { [unowned self] in
        count += 1
        if count == 1 { first() } else { second() }
      }
      source.resume()
    }
    for _ in 0..<early {
      queue.async { [self] in
        count += 1
        if count == 1 { first() } else { second() }
      }
    }
  }

  #if os(Linux)
  private static func installNoOpHandler(_ signalNumber: Int32) {
    var action = sigaction()
    sigemptyset(&action.sa_mask)
    action.__sigaction_handler.sa_handler = { _ in }
    action.sa_flags = SA_RESTART
    sigaction(signalNumber, &action, nil)
  }
  #endif

  /// After the drain, a signal should still stop at once (hooks are running).
  func disarmFirst() { queue.async { self.count = max(self.count, 1) } }

  deinit {
    for source in sources { source.cancel() }
  }
}

/// SIGTERM and SIGINT held from the first instant of a process until a server takes them.
///
/// A server with ``Server/Configuration/handleSignals`` takes the stop signals as soon as
/// ``Server/run()`` begins; but a process needs some time to get there, and a SIGTERM in that
/// window (an orchestrator scaling down a pod that is still starting) would kill it by the
/// signal's default action. Called first thing in `main`, ``hold()`` blocks both signals, so one
/// that arrives early stays pending and becomes the server's graceful stop once `run()` begins.
public enum StopSignals {
  /// Blocks SIGTERM and SIGINT on the calling thread and on every thread it starts afterwards.
  /// Call it from `main` before anything else starts threads.
  public static func hold() { mask(SIG_BLOCK) }

  /// Unblocks them on the calling thread, for a process that turns out not to serve: the
  /// signals then have their default action again.
  public static func release() { mask(SIG_UNBLOCK) }

  private static func mask(_ how: Int32) {
    var set = sigset_t()
    sigemptyset(&set)
    sigaddset(&set, SIGTERM)
    sigaddset(&set, SIGINT)
    pthread_sigmask(how, &set, nil)
  }
}
