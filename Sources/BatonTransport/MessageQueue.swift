/// A FIFO of received messages for one stream. Its size is bounded by the stream's flow-control
/// window, because credit returns only as messages are taken out.
struct MessageQueue: Sendable {
  private var items: [[UInt8]] = []
  private var head = 0

  var isEmpty: Bool { head == items.count }

  mutating func append(_ message: [UInt8]) { items.append(message) }

  mutating func popFirst() -> [UInt8]? {
    guard head < items.count else { return nil }
    let message = items[head]
    items[head] = []
    head += 1
    if head == items.count {
      items.removeAll(keepingCapacity: true)
      head = 0
    }
    return message
  }

  /// Removes everything, returning the byte count so that its credit can be given back.
  mutating func removeAll() -> Int {
    var bytes = 0
    while let message = popFirst() { bytes += message.count }
    return bytes
  }
}
