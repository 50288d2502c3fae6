import BatonCore
import BatonServer

/// `baton bench server`: the echo service for the benchmarks, until SIGTERM.
enum BenchServerCommand {
  static let spec = CommandSpec(
    path: "baton bench server",
    summary: "echo server for the benchmarks (until SIGTERM)",
    help: """
      usage: baton bench server [--port P] [--lifetime SECONDS]

      Serves bench.Echo/Unary (echo) and bench.Echo/Stream (bidirectional echo) on 127.0.0.1:P
      (P 0 picks a free port) with logging off, and prints 'listening 127.0.0.1:PORT'. Raises
      its open-file limit to the hard limit first. SIGTERM or SIGINT stops it gracefully, with
      a 2 s deadline.

      options:
        --port P             port to bind (default 0)
        --lifetime SECONDS   stop by itself after this long (default: never)
        --help               this text

      exit status: 0 once stopped, 1 could not listen.
      """,
    valued: ["--port", "--lifetime"]
  )

  static func run(_ arguments: Arguments, _ output: Output) async throws -> Int32 {
    let port = try arguments.int("--port", default: 0, in: 0...65_535)
    let lifetime = try arguments.seconds("--lifetime", default: 0, in: 0...31_536_000)
    SystemResources.raiseFileLimit()
    let configuration = Server.Configuration(
      host: "127.0.0.1", port: port, maxConnections: 1_000_000, shutdown: .init(deadline: .seconds(2)),
      handleSignals: true, logger: .disabled)
    let server = Server(configuration: configuration, router: DemoService.router())
    let running = Task { try await server.run() }
    do {
      output.line("listening \(try await server.listeningAddress)")
    } catch {
      _ = try? await running.value
      output.error("error: \(error)")
      return 1
    }
    let timer = Task {
      guard lifetime > 0 else { return }
      try await Task.sleep(for: .seconds(lifetime))
      server.beginGracefulStop()
    }
    _ = try? await running.value
    timer.cancel()
    return 0
  }
}
