/// A FIFO of received messages for one stream. Its size is bounded by the stream's flow-control
/// window, because credit returns only as messages are taken out.
package struct MessageQueue: Sendable {
  private var items: [[UInt8]] = []
  private var head = 0
  /// The bytes of the messages still queued: the credit they will give back when taken.
  package private(set) var byteCount = 0

  package init() {}

  package var isEmpty: Bool { head == items.count }

  mutating func append(_ message: [UInt8]) {
    items.append(message)
    byteCount += message.count
  }

  package mutating func popFirst() -> [UInt8]? {
    guard head < items.count else { return nil }
    var message: [UInt8] = []
    swap(&message, &items[head])
    head += 1
    byteCount -= message.count
    if head == items.count {
      items.removeAll(keepingCapacity: true)
      head = 0
    }
    return message
  }

  /// Removes everything, returning the byte count so that its credit can be given back.
  mutating func removeAll() -> Int {
    let bytes = byteCount
    items.removeAll()
    head = 0
    byteCount = 0
    return bytes
  }
}
