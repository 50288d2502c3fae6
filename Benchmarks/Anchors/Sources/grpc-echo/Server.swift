import Dispatch
import GRPCCore
import GRPCNIOTransportHTTP2Posix

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Serves the echo service on 127.0.0.1:port until SIGTERM/SIGINT (graceful shutdown) or until
/// `lifetime` seconds have passed; prints `listening 127.0.0.1:PORT` once bound.
func serve(port: Int, lifetime: Double) async throws {
  let server = GRPCServer(
    transport: .http2NIOPosix(
      address: .ipv4(host: "127.0.0.1", port: port),
      transportSecurity: .plaintext,
      config: .defaults
    ),
    services: [EchoService()]
  )

  signal(SIGTERM, SIG_IGN)
  signal(SIGINT, SIG_IGN)
  let signals = [SIGTERM, SIGINT].map { number in
    let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
    source.setEventHandler { server.beginGracefulShutdown() }
    source.resume()
    return source
  }
  defer { signals.forEach { $0.cancel() } }

  try await withThrowingDiscardingTaskGroup { group in
    group.addTask {
      if let address = try await server.listeningAddress?.ipv4 {
        emit("listening \(address.host):\(address.port)")
      }
    }
    group.addTask {
      try? await Task.sleep(for: .milliseconds(Int64(lifetime * 1000)))
      server.beginGracefulShutdown()
    }
    try await server.serve()
    group.cancelAll()
  }
}
