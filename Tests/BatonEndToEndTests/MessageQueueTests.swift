@testable import BatonTransport
import Testing

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
}
