import BatonClient
import BatonCore
import BatonPosix

/// The closed-loop callers behind `load`, `demo` and the benchmarks.
enum LoadWorkers {
  /// How long workers get to wind down once cancelled, and a client to close, in ns.
  static let grace: UInt64 = 5_000_000_000

  /// Runs `count` copies of `body` at once and returns their results. If they have not all
  /// returned by `hardDeadline` (``MonotonicClock`` ns), they are cancelled: their calls end with
  /// `cancelled` and the loops stop. nil if even that did not end them within ``grace``.
  static func run<Result: Sendable>(
    count: Int, hardDeadline: UInt64, _ body: @escaping @Sendable (Int) async -> Result
  ) async -> [Result]? {
    await Bounded.run(until: hardDeadline &+ grace) {
      await group(count: count, hardDeadline: hardDeadline, body)
    }
  }

  /// ``run(count:hardDeadline:_:)`` for workers that tally: their merged tally. Workers that
  /// could not be stopped count as failures under `stuck`.
  static func tally(
    count: Int, hardDeadline: UInt64, _ body: @escaping @Sendable (Int) async -> Tally
  ) async -> Tally {
    var total = Tally()
    guard let tallies = await run(count: count, hardDeadline: hardDeadline, body) else {
      total.failures["stuck", default: 0] += count
      return total
    }
    for tally in tallies { total.merge(tally) }
    return total
  }

  /// Closes `client`, waiting at most ``grace`` for calls still running.
  static func close(_ client: Client) async {
    _ = await Bounded.run(until: MonotonicClock.now() &+ grace) { await client.close() }
  }

  private static func group<Result: Sendable>(
    count: Int, hardDeadline: UInt64, _ body: @escaping @Sendable (Int) async -> Result
  ) async -> [Result] {
    await withTaskGroup(of: Result?.self) { group in
      for index in 0..<count {
        group.addTask { await body(index) }
      }
      group.addTask {
        await sleep(until: hardDeadline)
        return nil
      }
      var results: [Result] = []
      for await result in group {
        if let result {
          results.append(result)
          if results.count == count { group.cancelAll() }  // ends the watchdog
        } else if results.count < count {
          group.cancelAll()  // the watchdog fired: stop the stragglers
        }
      }
      return results
    }
  }

  /// Sleeps until `deadline` (``MonotonicClock`` ns), or until the task is cancelled.
  static func sleep(until deadline: UInt64) async {
    let now = MonotonicClock.now()
    if deadline > now { try? await Task.sleep(nanoseconds: deadline - now) }
  }

  /// Unary calls in a closed loop until `stop`; each reply must have the request's length.
  static func unary(
    client: Client, method: String, payload: [UInt8], options: CallOptions, stop: StopTime,
    live: LiveCounters? = nil, window: RestartWindow? = nil
  ) async -> Tally {
    var tally = Tally()
    while !stop.isOver {
      let mark = window?.mark ?? 0
      let start = MonotonicClock.now()
      do {
        let reply = try await client.unary(method, payload, options: options)
        let took = MonotonicClock.now() &- start
        guard reply.count == payload.count else {
          tally.fail("wrong-length")
          live?.failed()
          continue
        }
        tally.ok += 1
        live?.succeeded()
        if let window, window.overlaps(since: mark) {
          tally.restartLatency.record(nanoseconds: took)
        } else {
          tally.latency.record(nanoseconds: took)
        }
      } catch {
        tally.fail(Format.errorKey(error))
        live?.failed()
        // A call that fails fast (no endpoint reachable) may not suspend: yield, so that a
        // closed loop of such failures cannot starve the other workers and the progress lines.
        await Task.yield()
      }
    }
    return tally
  }

  /// Watch streams (`demo.Echo/Watch`, resumable) until `stop`: each reads the numbers 0, 1, ...
  /// and checks that none is missing or repeated, through any stop of the server carrying it.
  /// One stream runs until `stop` (a stream that fails counts as a failed call, and the next
  /// starts over); each number is a message.
  static func watch(
    client: Client, everyMilliseconds: Int, options: CallOptions, stop: StopTime, live: LiveCounters? = nil
  ) async -> Tally {
    var tally = Tally()
    while !stop.isOver {
      do {
        let run = try await client.serverStreaming(
          "demo.Echo/Watch", Array("0 \(everyMilliseconds)".utf8), options: options
        ) { responses in
          var run = Tally()
          var expected = 0
          for try await message in responses {
            guard let number = Int(String(decoding: message, as: UTF8.self)) else {
              throw RPCError(code: .dataLoss, message: "a watch message is not a number")
            }
            if number > expected { run.gaps += number - expected }
            if number < expected { run.duplicates += 1 } else { expected = number + 1 }
            run.messages += 1
            live?.echoed()
            if stop.isOver { break }
          }
          return run
        }
        tally.merge(run)
        tally.ok += 1
        live?.succeeded()
      } catch {
        tally.fail(Format.errorKey(error))
        live?.failed()
        await Task.yield()
      }
    }
    return tally
  }

  /// Bidirectional streams in a closed loop until `stop`: each stream sends a message, waits
  /// for its echo, and repeats for up to `streamLength` ns (or, if `leaveOnDrain`, until its
  /// server starts to drain), then ends and the next one starts. A stream is one call; each
  /// round trip is one latency.
  static func stream(
    client: Client, method: String, payload: [UInt8], options: CallOptions, stop: StopTime,
    streamLength: UInt64 = 1_000_000_000, leaveOnDrain: Bool = true, live: LiveCounters? = nil,
    window: RestartWindow? = nil
  ) async -> Tally {
    var tally = Tally()
    while !stop.isOver {
      let streamEnd = MonotonicClock.now() &+ streamLength
      do {
        let run = try await client.bidirectional(method, options: options) { writer, responses in
          var run = Tally()
          var replies = responses.makeAsyncIterator()
          while MonotonicClock.now() < streamEnd && !stop.isOver && !(leaveOnDrain && writer.isConnectionDraining) {
            let mark = window?.mark ?? 0
            let start = MonotonicClock.now()
            try await writer.write(payload)
            guard let reply = try await replies.next() else {
              throw RPCError(code: .internal, message: "the stream ended before echoing every message")
            }
            let took = MonotonicClock.now() &- start
            guard reply.count == payload.count else {
              throw RPCError(code: .dataLoss, message: "an echo had \(reply.count) bytes, not \(payload.count)")
            }
            run.messages += 1
            live?.echoed()
            if let window, window.overlaps(since: mark) {
              run.restartLatency.record(nanoseconds: took)
            } else {
              run.latency.record(nanoseconds: took)
            }
          }
          writer.finish()
          while try await replies.next() != nil {}
          return run
        }
        tally.merge(run)
        tally.ok += 1
        live?.succeeded()
      } catch {
        tally.fail(Format.errorKey(error))
        live?.failed()
        await Task.yield()  // as in `unary`: a fast failure may not suspend
      }
    }
    return tally
  }
}
