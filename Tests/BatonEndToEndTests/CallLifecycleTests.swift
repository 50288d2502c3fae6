import BatonClient
import BatonServer
import Testing

@Suite("Deadlines, cancellation, flow control and scale", .timeLimit(.minutes(10)))
struct CallLifecycleTests {
  /// `test/Hang` sleeps until cancelled; `started` and `cancelled` fire as it does.
  func hangRouter(started: Signal, cancelled: Signal) -> Router {
    var router = Router()
    router.unary("test/Hang") { _, _ in
      started.fire()
      do {
        try await Task.sleep(for: .seconds(30))
      } catch {
        cancelled.fire()
        throw error
      }
      return []
    }
    return router
  }

  @Test("a deadline ends the call with deadlineExceeded and cancels the handler")
  func deadline() async throws {
    // The deadline must pass while the handler runs, but on a loaded machine it can pass before
    // the server has even read the call (or, without the wait for a connection below, before the
    // request is sent): then no handler runs, and nothing could ever cancel one. Such an attempt
    // is repeated with twice the deadline; the request names the attempt.
    let attempts = (0..<8).map { _ in (started: Signal(), cancelled: Signal()) }
    var router = echoRouter()
    router.unary("test/Hang") { request, _ in
      let attempt = attempts[Int(request.first ?? 0)]
      attempt.started.fire()
      do {
        try await Task.sleep(for: .seconds(3_600))
      } catch {
        attempt.cancelled.fire()
        throw error
      }
      return []
    }
    try await withTestServer(router) { _, address in
      try await withClient(endpoints: [address]) { client in
        try await client.waitUntilReady()
        var exercised = false
        for (index, attempt) in attempts.enumerated() where !exercised {
          let timeout = Duration.milliseconds(200 * (1 << index))
          let started = ContinuousClock.now
          let error = await #expect(throws: RPCError.self) {
            try await client.unary("test/Hang", [UInt8(index)], options: CallOptions(timeout: timeout))
          }
          #expect(error?.code == .deadlineExceeded)
          #expect(ContinuousClock.now - started < timeout + .seconds(20), "the call outlived its deadline")
          // Frames are handled in order and a handler starts inside the read that carries its
          // call: once this echo is answered, the attempt's handler has started if it ever will.
          _ = try await client.unary("echo/Unary", [])
          if attempt.started.isFired {
            await attempt.cancelled.wait()
            exercised = true
          }
        }
        #expect(exercised, "no deadline passed while its handler ran")
      }
    }
  }

  @Test(
    "a deadline that passes before the request is sent ends the call with deadlineExceeded, and the call holds nothing")
  func deadlineBeforeSending() async throws {
    let handlerStarted = Signal()
    try await withTestServer(hangRouter(started: handlerStarted, cancelled: Signal())) { _, address in
      try await withClient(endpoints: [address]) { client in
        // A new client is (almost always) still connecting: this deadline passes while the call
        // waits for a connection.
        let whileConnecting = await #expect(throws: RPCError.self) {
          try await client.unary("test/Hang", [], options: CallOptions(timeout: .zero))
        }
        #expect(whileConnecting?.code == .deadlineExceeded)
        // Connected: this one has passed by the time the call holds a connection's lease.
        try await client.waitUntilReady()
        let withLease = await #expect(throws: RPCError.self) {
          try await client.unary("test/Hang", [], options: CallOptions(timeout: .zero))
        }
        #expect(withLease?.code == .deadlineExceeded)
      }  // close() returns: neither call kept a lease
      #expect(!handlerStarted.isFired, "a call whose deadline had passed was sent")
    }
  }

  @Test("cancelling the calling task resets the stream and the handler sees the cancellation")
  func cancellation() async throws {
    let handlerStarted = Signal()
    let handlerCancelled = Signal()
    try await withTestServer(hangRouter(started: handlerStarted, cancelled: handlerCancelled)) { _, address in
      try await withClient(endpoints: [address]) { client in
        let call = Task { try await client.unary("test/Hang", []) }
        await handlerStarted.wait()
        call.cancel()
        let result = await call.result
        #expect(throws: RPCError.self) { try result.get() }
        if case .failure(let error as RPCError) = result { #expect(error.code == .cancelled) }
        await handlerCancelled.wait()
      }
    }
  }

  @Test("a slow reader bounds what a fast writer has in flight to the flow-control window")
  func slowReader() async throws {
    let written = Counter()
    let messageSize = 16 << 10
    var router = Router()
    router.serverStreaming("test/Firehose") { _, writer, _ in
      for _ in 0..<400 {
        try await writer.write([UInt8](repeating: 7, count: messageSize))
        written.increment()
      }
    }
    var clientConfiguration = Client.Configuration()
    clientConfiguration.connection.initialWindowSize = 128 << 10
    try await withTestServer(router) { _, address in
      try await withClient(endpoints: [address], configuration: clientConfiguration) { client in
        try await client.serverStreaming("test/Firehose", []) { responses in
          var read = 0
          var maxAhead = 0
          for try await message in responses {
            #expect(message.count == messageSize)
            read += 1
            maxAhead = max(maxAhead, written.current - read)
            if read % 50 == 0 { try await Task.sleep(for: .milliseconds(20)) }  // be slow, not a sync
          }
          #expect(read == 400)
          // 128 KiB window / 16 KiB messages = 8 in flight, plus the one being written.
          #expect(maxAhead <= 10, "the writer ran \(maxAhead) messages ahead of the reader")
        }
      }
    }
  }

  @Test("1,000 concurrent streams on one connection all complete")
  func thousandStreams() async throws {
    let barrier = Barrier(count: 1_000)
    var router = Router()
    router.unary("test/Together") { request, _ in
      await barrier.arrive()
      return request
    }
    try await withTestServer(router) { server, address in
      try await withClient(endpoints: [address]) { client in
        try await withThrowingTaskGroup(of: Void.self) { group in
          for index in 0..<1_000 {
            group.addTask {
              let reply = try await client.unary("test/Together", [UInt8]("\(index)"))
              #expect(reply.text == "\(index)")
            }
          }
          try await group.waitForAll()
        }
        #expect(barrier.arrived == 1_000)
        #expect(client.statistics.succeeded == 1_000)
        #expect(server.progress.connections.count == 1)
      }
    }
  }

  @Test("100 connections at once are all served")
  func hundredConnections() async throws {
    let barrier = Barrier(count: 100)
    let serverBox = Box<Server>()
    let countAtPeak = Counter()
    let arrivals = Counter()
    var router = Router()
    router.unary("test/Together") { request, _ in
      // The 100th arrival sees every connection still open: all 100 are in flight. (Counted
      // atomically: two handlers reading `barrier.arrived` at once could both see 98.)
      if arrivals.increment() == 100, let server = serverBox.value {
        for _ in 0..<server.progress.connections.count { countAtPeak.increment() }
      }
      await barrier.arrive()
      return request
    }
    try await withTestServer(router) { server, address in
      serverBox.value = server
      try await withThrowingTaskGroup(of: Void.self) { group in
        for index in 0..<100 {
          group.addTask {
            try await withClient(endpoints: [address]) { client in
              let got139 = try await client.unary("test/Together", [UInt8]("\(index)")).text
              #expect(got139 == "\(index)")
            }
          }
        }
        try await group.waitForAll()
      }
      #expect(countAtPeak.current == 100)
    }
  }
}

@Suite("Messages larger than the flow-control window", .timeLimit(.minutes(10)))
struct LargeMessageTests {
  @Test("a 3 MiB unary request and reply cross a 1 MiB window intact")
  func largeUnary() async throws {
    let message = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
    try await withTestServer(echoRouter()) { _, address in
      try await withClient(endpoints: [address]) { client in
        let reply = try await client.unary("echo/Unary", message, options: CallOptions(timeout: .seconds(60)))
        #expect(reply == message)
      }
    }
  }

  @Test("messages on both sides of the size above which payloads are sent by reference echo intact and in order")
  func aroundReferenceThreshold() async throws {
    // Copied and referenced payloads interleave in one gathered write, and 70,000 bytes spans
    // several frames (fragments are referenced slices): a misplaced piece changes some message.
    let sizes = [1, 1_023, 1_024, 1_025, 4_096, 70_000, 64, 16_384]
    let messages = (0..<400).map { index in
      (0..<sizes[index % sizes.count]).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ index &* 13) }
    }
    try await withTestServer(echoRouter()) { _, address in
      try await withClient(endpoints: [address]) { client in
        let echoed = try await client.bidirectional("echo/Bidi", options: CallOptions(timeout: .seconds(60))) {
          writer, replies in
          try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
              for message in messages { try await writer.write(message) }
              writer.finish()
            }
            var echoed: [[UInt8]] = []
            for try await reply in replies { echoed.append(reply) }
            try await group.waitForAll()
            return echoed
          }
        }
        #expect(echoed.count == messages.count)
        let wrong = zip(echoed, messages).enumerated().first { $0.element.0 != $0.element.1 }?.offset
        #expect(wrong == nil, "echo \(wrong ?? -1) differs from its request")
        for size in sizes {
          let reply = try await client.unary("echo/Unary", [UInt8](repeating: UInt8(size % 251), count: size))
          #expect(reply == [UInt8](repeating: UInt8(size % 251), count: size))
        }
      }
    }
  }

  /// The echo methods, and "test/RejectFirst": a client-streaming call whose handler fails
  /// with `failedPrecondition` on the first message, leaving the rest unread.
  private static func rejectingRouter() -> Router {
    var router = echoRouter()
    router.clientStreaming("test/RejectFirst") { requests, _ in
      for try await _ in requests { throw RPCError(code: .failedPrecondition, message: "no thanks") }
      return []
    }
    return router
  }

  @Test("fragmented messages on streams that are then reset leak no connection credit")
  func noCreditLeak() async throws {
    let router = Self.rejectingRouter()
    var configuration = Server.Configuration(logger: .disabled)
    configuration.connection.connectionWindowSize = 1 << 20
    configuration.connection.initialWindowSize = 256 << 10
    configuration.connection.maxFrameSize = 16 << 10
    let big = [UInt8](repeating: 5, count: 700 << 10)
    try await withTestServer(router, configuration: configuration) { _, address in
      try await withClient(endpoints: [address]) { client in
        // 20 × 700 KiB through a 1 MiB connection window: it only works if every byte's
        // credit comes back, whether consumed, discarded with a reset stream, or still buffered.
        for _ in 0..<20 {
          let error = await #expect(throws: RPCError.self) {
            _ = try await client.clientStreaming("test/RejectFirst", options: CallOptions(timeout: .seconds(60))) {
              writer in
              try await writer.write(big)
              try await writer.write(big)
            }
          }
          #expect(error?.code == .failedPrecondition)
        }
        let reply = try await client.unary("echo/Unary", big, options: CallOptions(timeout: .seconds(60)))
        #expect(reply.count == big.count)
      }
    }
  }

  @Test("small messages left unread (packed in a stream's queue) leak no connection credit, on either side")
  func noCreditLeakFromPackedMessages() async throws {
    var router = Self.rejectingRouter()
    router.serverStreaming("test/Flood") { _, writer, _ in
      for _ in 0..<1_000 { try await writer.write([UInt8](repeating: 9, count: 64)) }
    }
    let window = ConnectionSettings(initialWindowSize: 64 << 10, connectionWindowSize: 64 << 10)
    var serverConfiguration = Server.Configuration(logger: .disabled)
    serverConfiguration.connection = window
    var clientConfiguration = Client.Configuration()
    clientConfiguration.connection = window
    let small = [UInt8](repeating: 3, count: 64)
    try await withTestServer(router, configuration: serverConfiguration) { _, address in
      try await withClient(endpoints: [address], configuration: clientConfiguration) { client in
        // Each round leaves up to a whole 64 KiB window of 64 B messages unread in a stream's
        // queue; 20 rounds only get through if every such byte's credit comes back when the
        // stream ends. A leak stalls a later round until its deadline.
        for round in 0..<20 {
          let rejected = await #expect(throws: RPCError.self, "round \(round)") {
            _ = try await client.clientStreaming("test/RejectFirst", options: CallOptions(timeout: .seconds(60))) {
              writer in
              for _ in 0..<1_000 { try await writer.write(small) }
            }
          }
          #expect(rejected?.code == .failedPrecondition, "round \(round)")
          let first = try await client.serverStreaming("test/Flood", [], options: CallOptions(timeout: .seconds(60))) {
            replies in
            for try await reply in replies { return reply }
            return []
          }
          #expect(first == [UInt8](repeating: 9, count: 64), "round \(round)")
        }
        let whole = [UInt8](repeating: 7, count: 60 << 10)
        #expect(try await client.unary("echo/Unary", whole, options: CallOptions(timeout: .seconds(60))) == whole)
      }
    }
  }
}
