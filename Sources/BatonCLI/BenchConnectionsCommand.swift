import BatonClient
import BatonCore
import BatonPosix
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// `baton bench connections`: what N idle connections cost the server in memory.
enum BenchConnectionsCommand {
  static let spec = CommandSpec(
    path: "baton bench connections",
    summary: "server memory per open connection",
    help: """
      usage: baton bench connections --count N [--port P [--pid PID]]

      Without --port, starts 'baton bench server' as a child process so that its memory can be
      measured. Reads the server's resident memory (VmRSS), opens N connections (N clients of
      one endpoint each, each making one call so the connection is really up), reads it again,
      and prints:
        RESULT connections impl=baton count=N rss_before_kib=N rss_after_kib=N per_connection_kib=N.N
      then closes the connections and stops the child. With --port, connects to a server
      already running there; its memory is read only if --pid names its process (else the rss
      fields are 'n/a'). Raises the open-file limit to the hard limit first.

      options:
        --count N    connections to open (required)
        --port P     use the server on 127.0.0.1:P instead of starting one
        --pid PID    that server's process id, to read its memory
        --help       this text

      exit status: 0 every connection made its call, 1 otherwise.
      """,
    valued: ["--count", "--port", "--pid"]
  )

  static func run(_ arguments: Arguments, _ output: Output) async throws -> Int32 {
    let count = try arguments.int("--count", default: nil, in: 1...1_000_000)
    let givenPort = arguments.string("--port") == nil ? nil : try arguments.int("--port", default: nil, in: 1...65_535)
    let givenPID =
      arguments.string("--pid") == nil ? nil : try arguments.int("--pid", default: nil, in: 1...Int(Int32.max))
    if givenPort == nil && givenPID != nil { throw UsageError("--pid needs --port") }

    let limit = SystemResources.raiseFileLimit() ?? 1_024
    guard UInt64(count) + 64 <= limit else {
      output.error("error: the open-file limit is \(limit), too low for \(count) connections (raise the hard limit)")
      return 1
    }

    let child: Process?
    let port: Int
    let pid: Int32?
    if let givenPort {
      child = nil
      port = givenPort
      pid = givenPID.map { Int32($0) }
    } else {
      let (process, childPort) = try await spawnServer()
      child = process
      port = childPort
      pid = process.processIdentifier
    }
    let result = await measure(count, port: port, pid: pid)
    if let child { await stop(child) }
    output.line(result.line)
    return result.ok ? 0 : 1
  }

  /// Memory before, N connections, memory after; the connections are closed again.
  private static func measure(_ count: Int, port: Int, pid: Int32?) async -> (line: String, ok: Bool) {
    try? await Task.sleep(for: .milliseconds(200))
    let before = pid.flatMap { SystemResources.residentKiB(pid: $0) }
    let (clients, failures) = await open(count, to: Endpoint(host: "127.0.0.1", port: port))
    try? await Task.sleep(for: .milliseconds(300))
    let after = pid.flatMap { SystemResources.residentKiB(pid: $0) }
    await closeAll(clients)

    var perConnection = "n/a"
    if let before, let after { perConnection = Format.fixed(Double(after - before) / Double(count), 1) }
    let line =
      "RESULT connections impl=baton count=\(count) rss_before_kib=\(before.map(String.init) ?? "n/a")"
      + " rss_after_kib=\(after.map(String.init) ?? "n/a") per_connection_kib=\(perConnection)"
      + (failures.isEmpty ? "" : " errors=\(failures.values.reduce(0, +)) error_codes=\(Format.failures(failures))")
    return (line, failures.isEmpty)
  }

  /// `count` clients of `endpoint`, each after one call; opened 256 at a time.
  private static func open(_ count: Int, to endpoint: Endpoint) async -> ([Client], [String: Int]) {
    var clients: [Client] = []
    var failures: [String: Int] = [:]
    clients.reserveCapacity(count)
    var opened = 0
    while opened < count {
      let batch = min(256, count - opened)
      opened += batch
      await withTaskGroup(of: (Client, String?).self) { group in
        for _ in 0..<batch {
          group.addTask {
            let client = Client(endpoints: [endpoint])
            do {
              _ = try await client.unary("bench.Echo/Unary", [1], options: CallOptions(timeout: .seconds(10)))
              return (client, nil)
            } catch {
              return (client, Format.errorKey(error))
            }
          }
        }
        for await (client, failure) in group {
          clients.append(client)
          if let failure { failures[failure, default: 0] += 1 }
        }
      }
    }
    return (clients, failures)
  }

  private static func closeAll(_ clients: [Client]) async {
    var index = 0
    while index < clients.count {
      let batch = clients[index..<min(clients.count, index + 256)]
      index += batch.count
      await withTaskGroup(of: Void.self) { group in
        for client in batch { group.addTask { await client.close() } }
      }
    }
  }

  /// Starts `baton bench server --port 0` as a child and reads the port from its first line.
  private static func spawnServer() async throws -> (Process, Int) {
    let path = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? "/proc/self/exe"
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    // The lifetime is a backstop: the child goes away even if this process dies first.
    process.arguments = ["bench", "server", "--port", "0", "--lifetime", "900"]
    let pipe = Pipe()
    process.standardOutput = pipe
    try process.run()
    let fd = pipe.fileHandleForReading.fileDescriptor
    var text: [UInt8] = []
    let giveUp = MonotonicClock.now() &+ 10_000_000_000
    while MonotonicClock.now() < giveUp {
      var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
      if poll(&poller, 1, 0) > 0 {
        var buffer = [UInt8](repeating: 0, count: 512)
        let got = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if got <= 0 { break }
        text += buffer[..<got]
        for line in String(decoding: text, as: UTF8.self).split(separator: "\n") {
          if line.hasPrefix("listening "), let endpoint = Endpoint(String(line.dropFirst("listening ".count))) {
            return (process, endpoint.port)
          }
        }
      } else {
        try await Task.sleep(for: .milliseconds(10))
      }
    }
    await stop(process)
    throw RPCError(code: .unavailable, message: "the child bench server did not report its port within 10 s")
  }

  /// SIGTERM, then SIGKILL if it has not exited within 5 s.
  private static func stop(_ process: Process) async {
    guard process.isRunning else { return }
    process.terminate()
    let giveUp = MonotonicClock.now() &+ 5_000_000_000
    while process.isRunning && MonotonicClock.now() < giveUp {
      try? await Task.sleep(for: .milliseconds(20))
    }
    if process.isRunning { kill(process.processIdentifier, SIGKILL) }
  }
}
