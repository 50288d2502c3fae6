import BatonClient
import BatonServer
import Testing

@Suite("A server that ends a call before the client stops writing", .timeLimit(.minutes(3)))
struct EarlyEndTests {
  /// The natural client: a writer and a reader at once, the first error fails the call. The
  /// server's OK arrives while the writer is still writing: before the fix, the next write threw
  /// `cancelled: the peer already ended the call` and turned the OK into a failure.
  @Test(
    "a bidirectional call the server ends early with OK is OK for a client that writes and reads at once (300 rounds)")
  func earlyOK() async throws {
    var router = Router()
    router.bidirectional("test/FirstOnly") { requests, writer, _ in
      for try await message in requests {
        try await writer.write(message)
        return  // OK after the first message, with the client still writing
      }
    }
    try await withTestServer(router) { _, address in
      try await withClient(endpoints: [address]) { client in
        var failures: [String] = []
        for round in 0..<300 {
          do {
            let replies = try await client.bidirectional("test/FirstOnly", options: CallOptions(timeout: .seconds(20)))
            {
              writer, responses in
              try await withThrowingTaskGroup(of: Int.self) { group in
                group.addTask {
                  for index in 0..<200 { try await writer.write([UInt8(index & 0xFF)]) }
                  writer.finish()
                  return 0
                }
                group.addTask {
                  var count = 0
                  for try await _ in responses { count += 1 }
                  return count
                }
                var replies = 0
                for try await count in group { replies += count }  // the first error ends the call
                return replies
              }
            }
            if replies != 1 { failures.append("round \(round): \(replies) replies") }
          } catch {
            failures.append("round \(round): \(error)")
          }
        }
        #expect(failures.isEmpty, "\(failures.count) of 300 calls failed, first: \(failures.prefix(3))")
      }
    }
  }

  @Test("after an error status a write throws that status, as the reader does")
  func earlyError() async throws {
    var router = Router()
    router.bidirectional("test/Refuse") { requests, _, _ in
      for try await _ in requests { throw RPCError(code: .permissionDenied, message: "no") }
    }
    try await withTestServer(router) { _, address in
      try await withClient(endpoints: [address]) { client in
        let error = await #expect(throws: RPCError.self) {
          try await client.bidirectional("test/Refuse") { writer, responses in
            try await writer.write([1])
            for try await _ in responses {}
          }
        }
        #expect(error?.code == .permissionDenied)
        // Writing on after the status: the status again, never a generic cancellation.
        let writeError = await #expect(throws: RPCError.self) {
          try await client.bidirectional("test/Refuse") { writer, responses in
            try await writer.write([1])
            do { for try await _ in responses {} } catch {}
            try await writer.write([2])
          }
        }
        #expect(writeError?.code == .permissionDenied)
      }
    }
  }

  /// The server may answer a call before the client has queued its request: an unknown method,
  /// or an interceptor that rejects on metadata alone, sends the status in reply to OPEN. The
  /// call must fail with that status, not with `internal` wrapping its text (seen in CI once in
  /// a few hundred calls, when the status won the race against the request).
  @Test("a status that arrives before the request is queued is the call's error, for every shape (200 rounds)")
  func statusBeforeRequest() async throws {
    try await withTestServer(Router()) { _, address in
      try await withClient(endpoints: [address]) { client in
        var wrong: [String] = []
        for round in 0..<200 {
          do {
            switch round % 3 {
            case 0:
              try await client.serverStreaming("test/Missing", [1]) { responses in for try await _ in responses {} }
            case 1:
              _ = try await client.clientStreaming("test/Missing") { writer in try await writer.write([1]) }
            default:
              try await client.bidirectional("test/Missing") { writer, responses in
                try await writer.write([1])
                for try await _ in responses {}
              }
            }
            wrong.append("round \(round): succeeded")
          } catch let error as RPCError where error.code == .unimplemented {
            continue
          } catch {
            wrong.append("round \(round): \(error)")
          }
        }
        #expect(wrong.isEmpty, "\(wrong.count) of 200 calls failed otherwise, first: \(wrong.prefix(3))")
        #expect(client.statistics.retried == 0)
      }
    }
  }
}
