import GRPCCore
import GRPCNIOTransportHTTP2Posix

func transport(port: Int) throws -> HTTP2ClientTransport.Posix {
  try HTTP2ClientTransport.Posix(
    target: .ipv4(address: "127.0.0.1", port: port),
    transportSecurity: .plaintext,
    config: .defaults
  )
}

/// `concurrency` closed-loop callers (send, await the reply, repeat) over one client, hence one
/// HTTP/2 connection, for `seconds`; returns every latency (ns), the failures and the phase's length.
private func unaryPhase(
  _ client: GRPCClient<HTTP2ClientTransport.Posix>, _ message: [UInt8], concurrency: Int, seconds: Double
) async -> (latencies: [Int64], failures: Int, elapsed: Int64) {
  let start = now()
  let end = start + Int64(seconds * 1e9)
  var latencies: [Int64] = []
  var failures = 0
  await withTaskGroup(of: ([Int64], Int).self) { group in
    for _ in 0..<concurrency {
      group.addTask {
        var mine: [Int64] = []
        var failed = 0
        while true {
          let sent = now()
          if sent >= end { break }
          do {
            let reply = try await client.unary(
              request: ClientRequest(message: message), descriptor: Echo.unary,
              serializer: BytesSerializer(), deserializer: BytesDeserializer(), options: .defaults
            ) { try $0.message }
            if reply.count == message.count { mine.append(now() - sent) } else { failed += 1 }
          } catch {
            failed += 1
          }
        }
        return (mine, failed)
      }
    }
    for await (mine, failed) in group {
      latencies += mine
      failures += failed
    }
  }
  return (latencies, failures, now() - start)
}

/// Prints `RESULT unary impl=grpc-swift-2 ...` as `baton bench unary` does; true if a call failed.
func benchUnary(port: Int, concurrency: Int, seconds: Double, warmup: Double, size: Int) async throws -> Bool {
  let message = payload(size)
  let measured = try await withGRPCClient(transport: try transport(port: port)) { client in
    if warmup > 0 { _ = await unaryPhase(client, message, concurrency: concurrency, seconds: warmup) }
    return await unaryPhase(client, message, concurrency: concurrency, seconds: seconds)
  }
  let sorted = measured.latencies.sorted()
  let secs = Double(measured.elapsed) / 1e9
  emit(
    "RESULT unary impl=grpc-swift-2 conc=\(concurrency) size=\(size) secs=\(fixed(secs, 2))"
      + " calls=\(sorted.count) errors=\(measured.failures) rps=\(fixed(Double(sorted.count) / secs, 0))"
      + " p50_us=\(micros(percentile(sorted, 50))) p90_us=\(micros(percentile(sorted, 90)))"
      + " p99_us=\(micros(percentile(sorted, 99))) max_us=\(micros(sorted.last ?? 0))")
  return measured.failures > 0
}

/// One bidirectional stream: the client writes as fast as flow control lets it and counts the
/// echoes that arrive in the measured window (after `warmup`). Prints `RESULT stream ...`.
func benchStream(port: Int, seconds: Double, warmup: Double, size: Int) async throws -> Bool {
  let message = payload(size)
  let windowStart = now() + Int64(warmup * 1e9)
  let windowEnd = windowStart + Int64(seconds * 1e9)

  struct Count: Sendable {
    var received = 0
    var first = -1, firstAt: Int64 = 0
    var last = -1, lastAt: Int64 = 0
  }
  let count = try await withGRPCClient(transport: try transport(port: port)) { client in
    try await client.bidirectionalStreaming(
      request: StreamingClientRequest(of: [UInt8].self) { writer in
        while now() < windowEnd { try await writer.write(message) }
      },
      descriptor: Echo.stream, serializer: BytesSerializer(), deserializer: BytesDeserializer(),
      options: .defaults
    ) { response in
      var count = Count()
      for try await _ in response.messages {
        count.received += 1
        guard count.last < 0 else { continue }
        let at = now()
        if count.first < 0, at >= windowStart { (count.first, count.firstAt) = (count.received, at) }
        if at >= windowEnd { (count.last, count.lastAt) = (count.received, at) }
      }
      return count
    }
  }
  guard count.first >= 0, count.last > count.first else {
    emit("RESULT stream impl=grpc-swift-2 size=\(size) error=too-few-messages total=\(count.received)")
    return true
  }
  let messages = count.last - count.first
  let secs = Double(count.lastAt - count.firstAt) / 1e9
  let rate = Double(messages) / secs
  emit(
    "RESULT stream impl=grpc-swift-2 size=\(size) secs=\(fixed(secs, 2)) msgs=\(messages)"
      + " msgs_per_s=\(fixed(rate, 0)) MB_per_s=\(fixed(rate * Double(size) / 1e6, 1))")
  return false
}
