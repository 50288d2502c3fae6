import BatonClient
import BatonCore
import BatonServer

/// `baton bench server`: the echo service for the benchmarks, until SIGTERM.
enum BenchServerCommand {
  static let spec = CommandSpec(
    path: "baton bench server",
    summary: "echo server for the benchmarks (until SIGTERM)",
    help: """
      usage: baton bench server [--port P] [--lifetime SECONDS] [--no-metrics] [--interceptor]

      Serves bench.Echo/Unary (echo) and bench.Echo/Stream (bidirectional echo) on 127.0.0.1:P
      (P 0 picks a free port) with logging off, and prints 'listening 127.0.0.1:PORT'. Raises
      its open-file limit to the hard limit first. SIGTERM or SIGINT stops it gracefully, with
      a 2 s deadline.

      options:
        --port P             port to bind (default 0)
        --lifetime SECONDS   stop by itself after this long (default: never)
        --no-metrics         count nothing for /metrics (what metrics cost)
        --interceptor        run every call through one interceptor that does nothing
                             (what the interceptor chain costs)
        --help               this text

      exit status: 0 once stopped, 1 could not listen.
      """,
    valued: ["--port", "--lifetime"],
    switches: ["--no-metrics", "--interceptor"]
  )

  static func run(_ arguments: Arguments, _ output: Output) async throws -> Int32 {
    let port = try arguments.int("--port", default: 0, in: 0...65_535)
    let lifetime = try arguments.seconds("--lifetime", default: 0, in: 0...31_536_000)
    SystemResources.raiseFileLimit()
    let configuration = Server.Configuration(
      host: "127.0.0.1", port: port, maxConnections: 1_000_000, shutdown: .init(deadline: .seconds(2)),
      handleSignals: true, logger: .disabled, collectsMetrics: !arguments.flag("--no-metrics"))
    var router = DemoService.router()
    if arguments.flag("--interceptor") { router.addInterceptor(PassThrough()) }
    let server = Server(configuration: configuration, router: router)
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

/// An interceptor that only calls on: what a chain of one costs (`--interceptor`).
struct PassThrough: ServerInterceptor, ClientInterceptor {
  func intercept(_ call: ServerCall, next: (ServerCall) async throws -> Void) async throws {
    try await next(call)
  }
  func intercept(_ call: ClientCall, next: (ClientCall) async throws -> Void) async throws {
    try await next(call)
  }
}
