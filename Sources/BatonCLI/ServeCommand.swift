import BatonCore
import BatonServer

/// `baton serve`: the demo service on one address until SIGTERM or SIGINT.
enum ServeCommand {
  static let spec = CommandSpec(
    path: "baton serve",
    summary: "run the demo service until SIGTERM/SIGINT",
    help: """
      usage: baton serve [--host H] [--port P] [--deadline SECONDS] [--health-port P]
                         [--propagation-delay SECONDS] [--quiet]

      Serves the demo service: demo.Echo/Unary (echo), demo.Echo/Bidi (echo each message),
      demo.Echo/Wait (the request is a number of milliseconds: sleep, then echo),
      demo.Echo/Ledger (record the request as an id and echo it), demo.Echo/LedgerDump (the
      recorded ids, one per line), and bench.Echo/Unary, bench.Echo/Stream.

      Prints 'listening HOST:PORT' on standard output once bound. The first SIGTERM or SIGINT
      starts a graceful stop: open calls may run until the deadline, then they are cut; a second
      signal stops at once. Lifecycle lines and the stop's summary go to standard error.

      options:
        --host H             address to bind (default 127.0.0.1)
        --port P             port to bind; 0 picks a free one (default 0)
        --deadline SECONDS   how long open calls may run once a stop begins (default 30)
        --health-port P      serve /livez, /readyz, /drainz over plain HTTP on this port
                             (0 picks one; it is printed as 'health HOST:PORT')
        --propagation-delay SECONDS
                             after readiness turns off, wait this long before the first
                             GOAWAY, for load balancers to notice (default 0)
        --quiet              no lifecycle lines (the stop's summary is still printed)
        --help               this text

      exit status:
        0  stopped cleanly: every call finished on its own
        1  could not listen
        2  bad command line
        3  stopped, but the deadline cut calls that were still running
      """,
    valued: ["--host", "--port", "--deadline", "--health-port", "--propagation-delay"],
    switches: ["--quiet"]
  )

  static func run(_ arguments: Arguments, _ output: Output) async throws -> Int32 {
    let host = arguments.string("--host") ?? "127.0.0.1"
    let port = try arguments.int("--port", default: 0, in: 0...65_535)
    let deadline = try arguments.seconds("--deadline", default: 30, in: 0...86_400)
    let delay = try arguments.seconds("--propagation-delay", default: 0, in: 0...3_600)
    let healthPort: Int? =
      arguments.string("--health-port") == nil ? nil : try arguments.int("--health-port", default: 0, in: 0...65_535)
    let configuration = Server.Configuration(
      host: host, port: port,
      shutdown: .init(deadline: .seconds(deadline), readinessPropagationDelay: .seconds(delay)),
      handleSignals: true, logger: arguments.flag("--quiet") ? .disabled : output.logger(),
      healthPort: healthPort)
    let server = Server(configuration: configuration, router: DemoService.router())
    // Started in place, so that the server takes the stop signals before this returns.
    let running = Task.immediate { try await server.run() }
    do {
      let address = try await server.listeningAddress
      output.line("listening \(address)")
      if let health = server.healthAddress { output.line("health \(health)") }
      try await running.value
    } catch {
      _ = try? await running.value
      output.error("error: \(error)")
      return 1
    }
    let report = await server.stopReport()
    let cut = report.cutCause.map { " (\($0): \(report.cutStreams.count) streams cut)" } ?? ""
    output.error("stopped \(report.description)\(report.isClean ? "" : cut)")
    return report.isClean ? 0 : 3
  }
}
