import BatonCore
import BatonPosix
import BatonTesting
import Dispatch
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// `baton proxy`: the fault proxy of BatonTesting as a standalone TCP proxy, so that clients in
/// any language (the Python SDK first) get the same interruption tests as Swift ones.
enum ProxyCommand {
  static let spec = CommandSpec(
    path: "baton proxy",
    summary: "a Baton-aware TCP proxy that injects planned faults",
    help: """
      usage: baton proxy --listen HOST:PORT --upstream HOST:PORT
                         [--faults SPEC | --faults-file PATH] [--seed N]

      Forwards every connection made to --listen to --upstream, frame by frame, injecting the
      faults of the plan (GOAWAY, RESET, cut connections, stalls, withheld PING ACKs, delayed
      or dripped frames) at the frames it names. With no plan it forwards bytes unchanged.
      Streams a GOAWAY or RESET REFUSED_STREAM says were not processed never reach the upstream
      server, so a client's transparent retry of them is safe.

      Prints 'listening HOST:PORT' on standard output once bound, then one line per injected
      fault on standard error ('baton info fault injected fault=1 ...'). Stops on SIGTERM or
      SIGINT, closing every connection.

      options:
        --listen HOST:PORT    address to listen on; port 0 picks a free one
        --upstream HOST:PORT  the server to forward to
        --faults SPEC         the fault plan, as text (see below)
        --faults-file PATH    the fault plan, read from a file
        --seed N              decides every choice the plan leaves open (default 0): the same
                              plan, seed and traffic inject the same faults
        --help                this text

      fault plan:
      \(FaultPlan.syntax.split(separator: "\n", omittingEmptySubsequences: false).map { "  \($0)" }.joined(separator: "\n"))

      exit status:
        0  stopped by a signal
        1  could not listen
        2  bad command line or fault plan
      """,
    valued: ["--listen", "--upstream", "--faults", "--faults-file", "--seed"]
  )

  static func run(_ arguments: Arguments, _ output: Output) async throws -> Int32 {
    guard let listenText = arguments.string("--listen") else { throw UsageError("option '--listen' is required") }
    guard let upstreamText = arguments.string("--upstream") else {
      throw UsageError("option '--upstream' is required")
    }
    let listen = try Arguments.endpoint(listenText, for: "--listen")
    let upstream = try Arguments.endpoint(upstreamText, for: "--upstream")
    let seedText = arguments.string("--seed") ?? "0"
    guard let seed = UInt64(seedText) else {
      throw UsageError("option '--seed' needs a whole number in 0...\(UInt64.max), not '\(seedText)'")
    }
    let planText: String
    switch (arguments.string("--faults"), arguments.string("--faults-file")) {
    case (let text?, nil): planText = text
    case (nil, let path?):
      guard let data = FileManager.default.contents(atPath: path) else {
        throw UsageError("cannot read the fault plan file '\(path)'")
      }
      planText = String(decoding: data, as: UTF8.self)
    case (nil, nil): planText = ""
    case (_?, _?): throw UsageError("give the plan with --faults or --faults-file, not both")
    }
    let plan: FaultPlan
    do {
      plan = try FaultPlan(parsing: planText, seed: seed)
    } catch {
      throw UsageError("\(error)")
    }
    let proxy: FaultProxy
    do {
      proxy = try FaultProxy(
        upstream: upstream, plan: plan, host: listen.host, port: listen.port, logger: output.logger())
    } catch {
      output.error("error: \(error)")
      return 1
    }
    output.line("listening \(proxy.endpoint)")
    for (index, fault) in plan.faults.enumerated() {
      output.error("baton info fault planned fault=\(index + 1) plan=\"\(fault)\" seed=\(seed)")
    }
    await StopSignal.wait()
    proxy.close()
    output.error("baton info stopped proxied=\(proxy.connectionsAccepted) injected=\(proxy.trace.count)")
    return 0
  }
}

/// The first SIGTERM or SIGINT, as an event to await. The `baton` executable holds both from
/// its first instant (``CLI/runFromMain(_:)``), so one that comes early waits here instead of
/// killing the process.
enum StopSignal {
  private static let queue = DispatchQueue(label: "baton.proxy.signals")
  /// The signal sources, kept for the life of the process (the proxy stops once).
  private final class Held: @unchecked Sendable {
    // @unchecked: written once, by the one `wait()` a process makes, and never read.
    var sources: [any DispatchSourceSignal] = []
  }
  private static let held = Held()

  static func wait() async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      let fired = Locked(false)
      let fire: @Sendable () -> Void = {
        let first = fired.withLock { fired -> Bool in
          defer { fired = true }
          return !fired
        }
        if first { continuation.resume() }
      }
      // Ignoring a signal discards it if pending, so note first whether one already is.
      var pending = sigset_t()
      sigemptyset(&pending)
      sigpending(&pending)
      let early = sigismember(&pending, SIGTERM) == 1 || sigismember(&pending, SIGINT) == 1
      for number in [SIGTERM, SIGINT] {
        signal(number, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
        source.setEventHandler(handler: fire)
        source.resume()
        held.sources.append(source)
      }
      if early { queue.async(execute: fire) }
    }
  }
}
