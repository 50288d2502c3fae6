import BatonClient
import BatonCore
import BatonPosix
import Glibc
import Testing

@testable import BatonTransport

/// A call started while its connection dies must fail with the connection (`unavailable`, "may
/// have been processed") or not start at all, never wait on a dead socket: before the fix, a
/// stream opened between the socket's failure and its owner hearing `.closed` was never failed
/// and waited for its deadline, or for ever without one.
@Suite("A dead connection racing new streams", .timeLimit(.minutes(5)))
struct DeadConnectionRaceTests {
  @Test("a stream opened as its socket dies fails with the connection, or is refused (300 rounds)")
  func openRacingDeath() async throws {
    let group = EventLoopGroup(threads: 1)
    defer { group.shutdown() }
    let loop = group.next()
    var opensAfterDeath = 0
    for round in 0..<300 {
      let (peerFD, clientFD) = try Socket.makePair()
      let (notices, noticeSink) = AsyncStream.makeStream(of: String.self)
      let client = Connection(
        fd: clientFD, loop: loop, role: .client, peer: "pair", settings: .defaults, limits: TransportLimits()
      ) { _, notice in
        switch notice {
        case .ready: noticeSink.yield("ready")
        case .closed: noticeSink.yield("closed")
        default: break
        }
      }
      var hello = Preface.bytes
      FrameEncoder.encode(.settings([]), into: &hello)
      _ = hello.withUnsafeBytes { Glibc.write(peerFD, $0.baseAddress, $0.count) }
      client.start()
      var iterator = notices.makeAsyncIterator()
      #expect(await iterator.next() == "ready")

      // Calls open streams on another thread, as fast as they can, while the peer dies under
      // them; the oldest end (released) so that the connection never runs out of stream slots.
      let opener = Task.detached { () -> (opened: [StreamHandle], refused: Bool) in
        var opened: [StreamHandle] = []
        let giveUp = MonotonicClock.now() &+ 3_000_000_000
        while MonotonicClock.now() < giveUp {
          do throws(ConnectionCore.OpenError) {
            opened.append(try client.openStream(RequestHead(method: "test/Unary"), message: [1], endStream: true))
            if opened.count > 64 { opened.removeFirst().release() }
          } catch .goingAway {
            return (opened, true)
          } catch {
            await Task.yield()
          }
        }
        return (opened, false)
      }
      usleep(UInt32.random(in: 0...400))
      Glibc.close(peerFD)
      let (opened, refused) = await opener.value
      #expect(await iterator.next() == "closed")
      // Opening after the close must be refused: the connection can never take a stream again.
      #expect(throws: ConnectionCore.OpenError.goingAway) {
        try client.openStream(RequestHead(method: "test/Unary"), message: [1], endStream: true)
      }
      // Each opened stream has failed already, or fails with the connection: a generous
      // deadline only catches a stream that would otherwise wait for ever.
      var stuck = 0
      let bound = MonotonicClock.now() &+ 5_000_000_000
      for stream in opened { stream.setDeadline(at: bound, timeout: 5_000_000_000) }
      for stream in opened {
        try await stream.awaitEnd()
        let response = stream.takeResponse()
        guard case .connectionLost(_)? = response.failure else {
          stuck += 1
          continue
        }
      }
      #expect(stuck == 0, "round \(round): \(stuck) of \(opened.count) streams did not fail with their connection")
      if !refused { opensAfterDeath += 1 }
      if stuck > 0 { break }
    }
    #expect(opensAfterDeath == 0, "in \(opensAfterDeath) rounds the dead connection kept opening streams for 3 s")
  }
}

@Suite("Calls racing their connection's death", .timeLimit(.minutes(5)))
struct CallsRacingDeathTests {
  /// Answers every unary request on `peer` with one message and OK, until the connection ends.
  private func respond(on peer: RawPeer) -> Task<Void, Never> {
    Task.detached {
      _ = await peer.read { frame in
        if case .data(let id, _, true, true) = frame {
          peer.send(
            .data(streamID: id, payload: [2], endMessage: true, endStream: false),
            .trailers(streamID: id, Trailers(status: 0)))
        }
        return false
      }
    }
  }

  @Test(
    "calls without a deadline racing their connection's death end with it or move to the next one, never hang (150 rounds)"
  )
  func callsRacingDeath() async throws {
    var failures: [String] = []
    for round in 0..<150 {
      let server = try RawServer()
      let client = Client(endpoints: [server.endpoint])
      guard let first = await server.accept() else {
        failures.append("round \(round): the client did not connect")
        break
      }
      let firstResponder = respond(on: first)
      let stop = Locked(false)
      let callers = (0..<4).map { _ in
        Task { () -> [String] in
          var errors: [String] = []
          while !stop.withLock({ $0 }) {
            do {
              _ = try await client.unary("test/Unary", [1])
            } catch let error as RPCError where error.code == .unavailable {
              // Lost with the connection ("may have been processed"), or failed fast: allowed.
              // A failure can come without a suspension: yield, or four callers spinning on
              // two cores' worth of pool threads would starve every other task in the process.
              await Task.yield()
            } catch {
              errors.append("\(error)")
              await Task.yield()
            }
          }
          return errors
        }
      }
      try await until("calls flow") { client.statistics.succeeded >= 8 }
      usleep(UInt32.random(in: 0...300))
      first.shutdown()  // the server dies under the callers
      // The client reconnects by itself (no GOAWAY: the socket just ended)...
      guard let second = await server.accept() else {
        failures.append("round \(round): the client never reconnected after its connection died")
        stop.withLock { $0 = true }
        break
      }
      let secondResponder = respond(on: second)
      let before = client.statistics.succeeded
      try await until("calls flow on the new connection") { client.statistics.succeeded >= before + 8 }
      stop.withLock { $0 = true }
      // ... and every caller ends: none waits on the dead connection.
      var stuck = 0
      for caller in callers {
        guard let errors = await value(of: caller, within: .seconds(10)) else {
          stuck += 1
          continue
        }
        failures += errors.map { "round \(round): \($0)" }
      }
      if stuck > 0 {
        failures.append(
          "round \(round): \(stuck) callers still waiting 10 s after their connection died: \(client.debugState)")
        break  // closing would wait for the stuck calls
      }
      await client.close()
      second.shutdown()
      await firstResponder.value
      await secondResponder.value
    }
    #expect(failures.isEmpty, "\(failures.prefix(5))")
  }
}

/// `task`'s value, or nil if it has not finished within `timeout` (the task is left running):
/// awaiting a task's value is not cancellable, so a hung one would otherwise hang the test run.
func value<T: Sendable>(of task: Task<T, Never>, within timeout: Duration) async -> T? {
  let pending = Locked<CheckedContinuation<T?, Never>?>(nil)
  return await withCheckedContinuation { continuation in
    pending.withLock { $0 = continuation }
    Task {
      let value = await task.value
      pending.withLock { slot in
        defer { slot = nil }
        return slot
      }?.resume(returning: value)
    }
    Task {
      try? await Task.sleep(for: timeout)
      pending.withLock { slot in
        defer { slot = nil }
        return slot
      }?.resume(returning: nil)
    }
  }
}

@Suite("A client closed while its connection is being set up", .timeLimit(.minutes(5)))
struct CloseDuringConnectTests {
  /// The server's socket accepts nothing (the kernel completes TCP, nobody answers the preface):
  /// every connection stays in its handshake. Closing the client then must end a call waiting
  /// for it at once, whether the call is still being placed or already parked, and return.
  @Test("a client closed during its connection's handshake fails the waiting call at once and returns (60 rounds)")
  func closeDuringHandshake() async throws {
    let server = try RawServer()
    try await closeWhileConnecting(to: server.endpoint, rounds: 60)
  }

}

/// `rounds` times: a client whose only endpoint never becomes ready starts a call that waits for
/// it and is closed, half the rounds once the call is parked, the others as it starts. The call
/// must fail at once (`unavailable` or `cancelled`) and the close return.
func closeWhileConnecting(to endpoint: Endpoint, rounds: Int) async throws {
  for round in 0..<rounds {
    let client = Client(endpoints: [endpoint], configuration: Client.Configuration(connectTimeout: .seconds(60)))
    let call = Task {
      try await client.unary("test/Any", [1], options: CallOptions(timeout: .seconds(60), waitForReady: true))
    }
    if round % 2 == 1 { try await until("the call waits for the connection") { client.waitingCalls == 1 } }
    await client.close()
    let result = await call.result
    guard case .failure(let error as RPCError) = result else {
      Issue.record("round \(round): \(result)")
      continue
    }
    #expect(error.code == .unavailable || error.code == .cancelled, "round \(round): \(error.code) \(error.message)")
  }
}
