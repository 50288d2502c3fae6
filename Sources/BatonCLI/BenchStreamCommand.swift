import BatonClient
import BatonCore
import BatonPosix

/// `baton bench stream`: one bidirectional stream, written as fast as flow control allows.
enum BenchStreamCommand {
  static let spec = CommandSpec(
    path: "baton bench stream",
    summary: "one bidirectional stream at full speed",
    help: """
      usage: baton bench stream --port P [--seconds S] [--warmup W] [--size B]

      Connects to 127.0.0.1:P (waiting up to 10 s), then opens one bench.Echo/Stream stream. One
      task writes B-byte messages as fast as flow control allows for W + S seconds, counted from
      when the connection was ready, then ends its side; another reads the echoes. Echoes that
      arrive between the end of the warm-up and the deadline are measured. Prints:
        RESULT stream impl=baton size=B secs=S msgs=N msgs_per_s=N MB_per_s=N
      or, when nothing could be measured:
        RESULT stream impl=baton size=B error=CODE [total=N]

      options:
        --port P        the bench server's port (required)
        --seconds S     measured seconds (default 5)
        --warmup W      unmeasured seconds at the start of the same stream (default 1)
        --size B        payload bytes (default 64)
        --help          this text

      exit status: 0 measured, 1 the stream failed or too few echoes arrived.
      """,
    valued: ["--port", "--seconds", "--warmup", "--size"]
  )

  /// Echo counts, with the count and time at the start and end of the measured span.
  struct Counts: Sendable {
    var total = 0
    var atStart = -1
    var startTime: UInt64 = 0
    var atEnd = -1
    var endTime: UInt64 = 0
  }

  static func run(_ arguments: Arguments, _ output: Output) async throws -> Int32 {
    let port = try arguments.int("--port", default: nil, in: 1...65_535)
    let seconds = try arguments.seconds("--seconds", default: 5, in: 0.01...86_400)
    let warmup = try arguments.seconds("--warmup", default: 1, in: 0...86_400)
    let size = try arguments.int("--size", default: 64, in: 0...(4 << 20) - 1_024)
    let payload = Format.payload(size)

    let client = Client(endpoints: [Endpoint(host: "127.0.0.1", port: port)])
    do {
      // The warm-up and the measured span are for the stream, not for connecting: on a loaded
      // machine the connect and handshake alone could take all of a short run.
      try await client.waitUntilReady(timeout: .seconds(10))
    } catch {
      await LoadWorkers.close(client)
      output.line("RESULT stream impl=baton size=\(size) error=\(Format.errorKey(error))")
      output.error("error: \(error)")
      return 1
    }
    let start = MonotonicClock.now()
    let measureStart = start &+ UInt64(warmup * 1e9)
    let deadline = measureStart &+ UInt64(seconds * 1e9)
    let outcome = await LoadWorkers.run(count: 1, hardDeadline: deadline &+ 30_000_000_000) { _ in
      await stream(client, payload, measureStart: measureStart, deadline: deadline)
    }
    await LoadWorkers.close(client)

    let counts: Counts
    switch outcome?.first {
    case .success(let value)?:
      counts = value
    case .failure(let error)?:
      output.line("RESULT stream impl=baton size=\(size) error=\(Format.errorKey(error))")
      output.error("error: \(error)")
      return 1
    case nil:
      output.line("RESULT stream impl=baton size=\(size) error=stuck")
      return 1
    }
    guard counts.atStart >= 0, counts.atEnd > counts.atStart else {
      output.line("RESULT stream impl=baton size=\(size) error=too-few-messages total=\(counts.total)")
      return 1
    }
    let messages = counts.atEnd - counts.atStart
    let secs = Double(counts.endTime &- counts.startTime) / 1e9
    let perSecond = Double(messages) / secs
    output.line(
      "RESULT stream impl=baton size=\(size) secs=\(Format.fixed(secs, 2)) msgs=\(messages)"
        + " msgs_per_s=\(Format.fixed(perSecond, 0)) MB_per_s=\(Format.fixed(perSecond * Double(size) / 1e6, 1))")
    return 0
  }

  private static func stream(
    _ client: Client, _ payload: [UInt8], measureStart: UInt64, deadline: UInt64
  ) async -> Result<Counts, any Error> {
    // A deadline well past the run, so that a server that never answers cannot hold the stream.
    let options = CallOptions(timeout: .nanoseconds(Int64(deadline &- MonotonicClock.now()) + 20_000_000_000))
    do {
      return .success(
        try await client.bidirectional("bench.Echo/Stream", options: options) { writer, responses in
          try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
              // write() waits while the server has not granted flow-control credit. The clock is
              // read every 32 messages: at a million messages a second that is 32 µs of slack,
              // and reading it per message cost 6 % of the client's time.
              var sent = 0
              while sent & 31 != 0 || MonotonicClock.now() < deadline {
                try await writer.write(payload)
                sent += 1
              }
              writer.finish()
            }
            var counts = Counts()
            for try await _ in responses {
              counts.total += 1
              if counts.atEnd < 0 && (counts.total & 31 == 0 || counts.atStart < 0) {
                let now = MonotonicClock.now()
                if counts.atStart < 0 && now >= measureStart {
                  counts.atStart = counts.total
                  counts.startTime = now
                }
                if now >= deadline {
                  counts.atEnd = counts.total
                  counts.endTime = now
                }
              }
            }
            if counts.atStart >= 0 && counts.atEnd < 0 {
              // The clock is read every 32 echoes, so the last one can be read just before the
              // deadline (the writer, reading it after its last write, stopped): the span ends
              // with the stream.
              counts.atEnd = counts.total
              counts.endTime = MonotonicClock.now()
            }
            try await group.waitForAll()
            return counts
          }
        })
    } catch {
      return .failure(error)
    }
  }
}
