import Testing

@testable import BatonTransport

/// ``MessageQueue``: a stream's inbox keeps its first message apart from the array that holds
/// a burst, so order and byte counts must survive every move between the two.
@Suite("MessageQueue")
struct MessageQueueTests {
  private func message(_ tag: UInt8, count: Int = 3) -> [UInt8] { [UInt8](repeating: tag, count: count) }

  @Test("messages leave in arrival order whether the queue held one or many")
  func order() {
    var queue = MessageQueue()
    #expect(queue.isEmpty)
    queue.append(message(1))
    #expect(!queue.isEmpty)
    #expect(queue.popFirst() == message(1))
    #expect(queue.isEmpty && queue.popFirst() == nil)

    // One held alone, then a burst behind it: the first stays first.
    queue.append(message(2))
    queue.append(message(3))
    queue.append(message(4))
    #expect(queue.popFirst() == message(2))
    queue.append(message(5))
    #expect(queue.popFirst() == message(3))
    #expect(queue.popFirst() == message(4))
    #expect(queue.popFirst() == message(5))
    #expect(queue.popFirst() == nil)

    // Emptied burst, then a single message again.
    queue.append(message(6))
    #expect(queue.popFirst() == message(6))
    #expect(queue.isEmpty)
  }

  @Test("byteCount follows appends, pops and removeAll in both forms")
  func byteCount() {
    var queue = MessageQueue()
    queue.append(message(1, count: 10))
    #expect(queue.byteCount == 10)
    queue.append(message(2, count: 5))
    #expect(queue.byteCount == 15)
    _ = queue.popFirst()
    #expect(queue.byteCount == 5)
    queue.append(message(3, count: 7))
    #expect(queue.removeAll() == 12)
    #expect(queue.isEmpty && queue.byteCount == 0)
    queue.append(message(4, count: 9))
    #expect(queue.removeAll() == 9)
    #expect(queue.popFirst() == nil)
  }

  @Test("a lent batch owes credit once half of it is consumed, whichever form held the message")
  func credit() {
    var single = MessageQueue()
    single.append(message(1, count: 8))
    single.lend(8)
    #expect(!single.owesCredit)
    _ = single.popFirst()
    #expect(single.owesCredit)
    #expect(single.takeOwedCredit() == 8)

    var burst = MessageQueue()
    for tag in 1...4 { burst.append(message(UInt8(tag), count: 4)) }
    burst.lend(16)
    _ = burst.popFirst()
    #expect(!burst.owesCredit, "4 of 16 bytes consumed")
    _ = burst.popFirst()
    #expect(burst.owesCredit, "8 of 16 bytes consumed")
    #expect(burst.takeOwedCredit() == 8)
  }

  private func appendCopying(_ queue: inout MessageQueue, _ message: [UInt8]) {
    message.withUnsafeBytes { queue.append(copying: $0) }
  }

  @Test("messages copied in behind others are packed, and leave in order among arrays, each its own array")
  func packedOrder() {
    var queue = MessageQueue()
    appendCopying(&queue, message(1, count: 5))
    #expect(queue.packedCapacity == 0, "a message alone is an array: a unary reply allocates once")
    appendCopying(&queue, message(2, count: 100))
    #expect(queue.packedCapacity > 0, "one behind another is packed")
    appendCopying(&queue, message(3, count: MessageQueue.largestPacked))
    queue.append(message(4, count: 7))
    appendCopying(&queue, message(5, count: 0))
    appendCopying(&queue, message(6, count: MessageQueue.largestPacked - 1))
    #expect(queue.byteCount == 5 + 100 + MessageQueue.largestPacked + 7 + 0 + MessageQueue.largestPacked - 1)
    let expected = [
      message(1, count: 5), message(2, count: 100), message(3, count: MessageQueue.largestPacked),
      message(4, count: 7), message(5, count: 0), message(6, count: MessageQueue.largestPacked - 1),
    ]
    var taken: [[UInt8]] = []
    while let next = queue.popFirst() { taken.append(next) }
    #expect(taken == expected)
    #expect(queue.isEmpty && queue.byteCount == 0)
    #expect(queue.packedCapacity > 0, "kept for the next burst")
    appendCopying(&queue, message(7, count: 3))
    #expect(queue.popFirst() == message(7, count: 3), "with a packed buffer kept, even one message is packed")
  }

  @Test("a drained queue keeps a packed buffer and an item list of up to 64 KiB each and gives larger ones back")
  func packedCapacityBound() {
    var queue = MessageQueue()
    for _ in 0..<100 { appendCopying(&queue, message(1, count: 100)) }
    while queue.popFirst() != nil {}
    #expect(queue.packedCapacity >= 100 * 99 && queue.packedCapacity <= MessageQueue.keptPackedCapacity)
    for _ in 0..<1_000 { appendCopying(&queue, message(2, count: 100)) }
    #expect(queue.packedCapacity > MessageQueue.keptPackedCapacity)
    while queue.popFirst() != nil {}
    #expect(queue.packedCapacity == 0, "a burst's buffer is not held by an idle stream")
    for _ in 0..<10_000 { queue.append(message(4, count: 2)) }  // moved in: items only
    #expect(queue.capacityBytes > 2 * MessageQueue.keptPackedCapacity)
    while queue.popFirst() != nil {}
    #expect(queue.capacityBytes <= 2 * MessageQueue.keptPackedCapacity, "nor a burst's item list")
    appendCopying(&queue, message(3, count: 10))
    #expect(queue.removeAll() == 10)
    #expect(queue.packedCapacity == 0 && queue.popFirst() == nil)
  }

  @Test(
    "random appends (copied and moved), pops, clears and inbox/batch swaps agree with a plain array",
    arguments: [1, 2, 3] as [UInt64])
  func matchesModel(seed: UInt64) {
    var random = SeededRandom(seed: seed)
    // Two queues that trade places like a stream's inbox and its reader's batch.
    var inbox = MessageQueue()
    var batch = MessageQueue()
    var model: [[UInt8]] = []
    var modelBatch: [[UInt8]] = []
    let sizes = [0, 1, 64, 1_000, MessageQueue.largestPacked - 1, MessageQueue.largestPacked, 3_000]
    for step in 0..<20_000 {
      let tag = UInt8(truncatingIfNeeded: step)
      switch random.next() % 10 {
      case 0...3:
        let message = message(tag, count: sizes[Int(random.next() % UInt64(sizes.count))])
        appendCopying(&inbox, message)
        model.append(message)
      case 4:
        let message = message(tag, count: Int(random.next() % 200))
        inbox.append(message)
        model.append(message)
      case 5...7:
        #expect(inbox.popFirst() == model.first, "step \(step)")
        if !model.isEmpty { model.removeFirst() }
      case 8:
        // The reader's batch is drained and swapped for the inbox, as `takeMessage` does.
        while let message = batch.popFirst() {
          #expect(message == modelBatch.first, "step \(step)")
          modelBatch.removeFirst()
        }
        #expect(modelBatch.isEmpty)
        swap(&inbox, &batch)
        swap(&model, &modelBatch)
      default:
        if random.next() % 20 == 0 {
          #expect(inbox.removeAll() == model.reduce(0) { $0 + $1.count })
          model.removeAll()
        }
      }
      #expect(inbox.byteCount == model.reduce(0) { $0 + $1.count }, "step \(step)")
      #expect(inbox.isEmpty == model.isEmpty, "step \(step)")
    }
  }
}

/// A deterministic generator (Knuth's MMIX LCG, high bits), so that a failure can be replayed.
private struct SeededRandom {
  var state: UInt64
  init(seed: UInt64) { state = seed }
  mutating func next() -> UInt64 {
    state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
    return state >> 33
  }
}
