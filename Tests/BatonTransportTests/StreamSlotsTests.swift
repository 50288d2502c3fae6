import BatonCore
import Testing

@testable import BatonTransport

/// ``StreamSlots``: which waiter gets what, decided as a value. No socket, no loop: each test
/// parks real continuations in a slot, applies one event, then performs the wakes it returned
/// the way the connection does once its lock is released, and checks what each waiter got.
@Suite("Stream slots: the connection's waiters as a value")
struct StreamSlotsTests {
  @Test("a message goes to a parked reader (its credit back at once), else into the inbox (credit later)")
  func deliverToReaderOrInbox() async throws {
    var slots = StreamSlots()
    slots.open(1, StreamSlot())
    var delivery: StreamSlots.Delivery?
    let got = try await withUnsafeThrowingContinuation { (reader: UnsafeContinuation<[UInt8]?, any Error>) in
      slots[1]?.receiver = reader
      var wakes: [StreamSlots.Wake] = []
      delivery = slots.deliver(1, &wakes, queue: { $0.append([9]) }, array: { [1, 2] })
      perform(wakes)
    }
    #expect(got == [1, 2])
    #expect(delivery == .consumed)
    #expect(slots[1]?.receiver == nil)

    var wakes: [StreamSlots.Wake] = []
    let queued = slots.deliver(1, &wakes, queue: { $0.append([7, 7, 7]) }, array: { [] })
    #expect(queued == .queued)
    #expect(wakes.isEmpty)
    #expect(slots[1]?.inbox.byteCount == 3)
    #expect(slots[1]?.received == 2, "both messages count towards a checkpoint's index")
    // A message for a stream that has gone is dropped, and its credit returned.
    let dropped = slots.deliver(5, &wakes, queue: { $0.append([1]) }, array: { [1] })
    #expect(dropped == .consumed)
  }

  @Test("a second response message on a call that takes one fails it with INTERNAL (PROTOCOL.md 7.2)")
  func secondResponse() {
    var slots = StreamSlots()
    slots.open(1, StreamSlot(singleResponse: true))
    var wakes: [StreamSlots.Wake] = []
    let first = slots.deliver(1, &wakes, queue: { $0.append([1]) }, array: { [1] })
    let second = slots.deliver(1, &wakes, queue: { $0.append([2]) }, array: { [2] })
    #expect(first == .queued)
    #expect(second == .secondResponse)
    #expect(slots[1]?.inbox.count == 1, "the second message is not kept")
    guard case .local(let error)? = slots[1]?.failure else {
      Issue.record("no failure: \(String(describing: slots[1]?.failure))")
      return
    }
    #expect(error.code == .internal)
  }

  @Test("an error status fails a parked reader and writer with it, and wakes the finisher")
  func errorTrailers() async throws {
    var slots = StreamSlots()
    slots.open(1, StreamSlot())
    let status = Trailers(RPCError(code: .permissionDenied, message: "no"))
    let readerError = await #expect(throws: RPCError.self) {
      try await withUnsafeThrowingContinuation { (reader: UnsafeContinuation<[UInt8]?, any Error>) in
        slots[1]?.receiver = reader
        var wakes: [StreamSlots.Wake] = []
        slots.trailers(1, status, resumable: false, &wakes)
        perform(wakes)
      }
    }
    #expect(readerError?.code == .permissionDenied)
    #expect(slots[1]?.inputDone == true)

    slots.open(3, StreamSlot())
    let writerError = await #expect(throws: RPCError.self) {
      try await withUnsafeThrowingContinuation { (writer: UnsafeContinuation<Void, any Error>) in
        slots[3]?.writer = writer
        var wakes: [StreamSlots.Wake] = []
        slots.trailers(3, status, resumable: false, &wakes)
        perform(wakes)
      }
    }
    #expect(writerError?.code == .permissionDenied)

    slots.open(5, StreamSlot())
    try await withUnsafeThrowingContinuation { (finisher: UnsafeContinuation<Void, any Error>) in
      slots[5]?.finisher = finisher
      var wakes: [StreamSlots.Wake] = []
      slots.trailers(5, status, resumable: false, &wakes)
      perform(wakes)
    }
    #expect(slots[5]?.trailers?.error?.code == .permissionDenied, "the finisher reads the outcome from the slot")
  }

  @Test("a status behind unread messages does not wake the reader: it reads them first")
  func statusBehindMessages() {
    var slots = StreamSlots()
    slots.open(1, StreamSlot())
    var wakes: [StreamSlots.Wake] = []
    _ = slots.deliver(1, &wakes, queue: { $0.append([1]) }, array: { [1] })
    slots.trailers(1, Trailers(status: 0), resumable: false, &wakes)
    #expect(wakes.isEmpty)
    #expect(slots[1]?.endError == nil)
    #expect(slots[1]?.inbox.count == 1)
  }

  @Test("an OK status lets a writer waiting for credit finish without error; a resumable one fails it")
  func okAndResumableTrailers() async throws {
    var slots = StreamSlots()
    slots.open(1, StreamSlot())
    try await withUnsafeThrowingContinuation { (writer: UnsafeContinuation<Void, any Error>) in
      slots[1]?.writer = writer
      var wakes: [StreamSlots.Wake] = []
      slots.trailers(1, Trailers(status: 0), resumable: false, &wakes)
      perform(wakes)
    }
    slots.open(3, StreamSlot())
    let resumed = await #expect(throws: StreamFailure.self) {
      try await withUnsafeThrowingContinuation { (writer: UnsafeContinuation<Void, any Error>) in
        slots[3]?.writer = writer
        var wakes: [StreamSlots.Wake] = []
        slots.trailers(3, Trailers(status: 0, message: "moving"), resumable: true, &wakes)
        perform(wakes)
      }
    }
    #expect(resumed == .resumable("moving"))
  }

  @Test("the first failure of a stream is its outcome; a failure cancels the handler unless told not to")
  func failures() async {
    var slots = StreamSlots()
    slots.open(1, StreamSlot())
    let handler = Task<Void, Never> {}
    let attached = slots.attach(1, task: handler)
    #expect(attached)
    var wakes: [StreamSlots.Wake] = []
    slots.fail(1, .reset(.cancel, "first"), &wakes, cancelHandler: false)
    #expect(wakes.isEmpty)
    slots.fail(1, .connectionLost("second"), &wakes)
    #expect(slots[1]?.failure == .reset(.cancel, "first"))
    perform(wakes)
    #expect(handler.isCancelled)
    // A handler attached to a stream that already failed is cancelled by its caller at once.
    let afterFailure = slots.attach(1, task: Task {})
    let unknown = slots.attach(9, task: Task {})
    #expect(!afterFailure && !unknown)
  }

  @Test("a writable stream resumes its parked writer, or lets the next writer through at once")
  func writable() async throws {
    var slots = StreamSlots()
    slots.open(1, StreamSlot())
    var wakes: [StreamSlots.Wake] = []
    slots.writable(1, &wakes)
    #expect(wakes.isEmpty)
    try await withUnsafeThrowingContinuation { (writer: UnsafeContinuation<Void, any Error>) in
      var wakes: [StreamSlots.Wake] = []
      slots.parkWriter(1, writer, streamOpen: true, &wakes)
      #expect(wakes.count == 1, "writable arrived first: the writer does not wait")
      perform(wakes)
    }
    #expect(slots[1]?.writableEarly == false)
    try await withUnsafeThrowingContinuation { (writer: UnsafeContinuation<Void, any Error>) in
      var wakes: [StreamSlots.Wake] = []
      slots.parkWriter(1, writer, streamOpen: true, &wakes)
      #expect(wakes.isEmpty && slots[1]?.writer != nil, "parked")
      slots.writable(1, &wakes)
      perform(wakes)
    }
    let failed = await #expect(throws: StreamFailure.self) {
      try await withUnsafeThrowingContinuation { (writer: UnsafeContinuation<Void, any Error>) in
        var wakes: [StreamSlots.Wake] = []
        slots.fail(1, .notProcessed("refused"), &wakes)
        slots.parkWriter(1, writer, streamOpen: true, &wakes)
        perform(wakes)
      }
    }
    #expect(failed == .notProcessed("refused"))
  }

  @Test("a release tells whoever still waits that the call ended, returns the unread credit, and says idle last")
  func release() async throws {
    var slots = StreamSlots()
    slots.notifyIdle = true
    slots.open(1, StreamSlot())
    slots.open(3, StreamSlot())
    var wakes: [StreamSlots.Wake] = []
    _ = slots.deliver(3, &wakes, queue: { $0.append([1, 2, 3, 4]) }, array: { [] })
    let released = slots.release(3, now: 42, &wakes)
    #expect(released?.unreadBytes == 4)
    #expect(slots.lastCallEndedAt == 42)
    #expect(wakes.isEmpty, "not the last stream: no idle notice")
    let again = slots.release(3, now: 43, &wakes)
    #expect(again == nil, "released once")

    let ended = await #expect(throws: StreamFailure.self) {
      try await withUnsafeThrowingContinuation { (reader: UnsafeContinuation<[UInt8]?, any Error>) in
        slots[1]?.receiver = reader
        var wakes: [StreamSlots.Wake] = []
        _ = slots.release(1, now: 44, &wakes)
        guard case .notice(.idle)? = wakes.last else {
          Issue.record("the last release did not end with an idle notice")
          return reader.resume(returning: nil)
        }
        perform(wakes)
      }
    }
    #expect(ended?.rpcError.code == .cancelled)
    #expect(slots.isEmpty)
  }

  @Test("a checkpoint covers the messages received so far; a cut call is marked and reported with its method")
  func checkpointAndCut() {
    var slots = StreamSlots()
    slots.open(1, StreamSlot())
    var wakes: [StreamSlots.Wake] = []
    for _ in 0..<3 { _ = slots.deliver(1, &wakes, queue: { $0.append([0]) }, array: { [] }) }
    slots.checkpoint(1, consumed: 2, token: [7])
    #expect(slots[1]?.checkpoint == StreamHandle.Checkpoint(index: 3, consumed: 2, token: [7]))

    slots.open(5, StreamSlot(method: "svc/Watch", openedAt: 10))
    #expect(slots[5]?.cut == false)
    let cut = slots.markCut(5)
    let gone = slots.markCut(7)
    #expect(cut == Connection.OpenCall(id: 5, method: "svc/Watch", openedAt: 10))
    #expect(slots[5]?.cut == true)
    #expect(gone == nil)
    #expect(slots.ids == [1, 5])
  }

  /// What the connection does with the wakes once its lock is released (no loop, no owner here).
  private func perform(_ wakes: [StreamSlots.Wake]) {
    for wake in wakes { wake.perform(cancelTimer: { _ in }, notice: { _ in }) }
  }
}

/// A RESET from the peer, as the caller sees it (``StreamFailure/peerReset(_:_:deadlinePassed:)``).
@Suite("A peer's RESET as a failure")
struct PeerResetTests {
  @Test(
    "CANCEL once the stream's deadline has passed is that deadline (a server's deadline inside a message, PROTOCOL.md 10); before it, CANCELLED"
  )
  func cancelAfterDeadline() {
    #expect(StreamFailure.peerReset(.cancel, "r", deadlinePassed: true).rpcError.code == .deadlineExceeded)
    #expect(StreamFailure.peerReset(.cancel, "r", deadlinePassed: false).rpcError.code == .cancelled)
    #expect(StreamFailure.peerReset(.refusedStream, "r", deadlinePassed: true) == .notProcessed("r"))
    #expect(StreamFailure.peerReset(.internalError, "r", deadlinePassed: true).rpcError.code == .internal)
  }

  @Test("a slot's deadline has passed from the instant it names, and never for a slot without one")
  func deadlinePassed() {
    var slots = StreamSlots()
    slots.open(1, StreamSlot())
    slots.open(3, StreamSlot())
    slots[1]?.deadline = 1_000
    #expect(!slots.deadlinePassed(1, now: 999))
    #expect(slots.deadlinePassed(1, now: 1_000))
    #expect(!slots.deadlinePassed(3, now: .max), "no deadline")
    #expect(!slots.deadlinePassed(5, now: .max), "no such stream")
  }
}
