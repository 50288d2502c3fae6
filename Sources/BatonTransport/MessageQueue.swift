/// A FIFO of received messages for one stream. Its size is bounded by the stream's flow-control
/// window, because credit returns only as messages are taken out.
package struct MessageQueue: Sendable {
  /// The only message, while there is just one: a unary call's request or reply then never
  /// allocates the array below. Non-nil only while `items` holds nothing.
  private var single: [UInt8]?
  /// Taken messages leave nil behind, so that clearing the array releases nothing.
  private var items: [[UInt8]?] = []
  private var head = 0
  /// The bytes of the messages still queued: the credit they will give back when taken.
  package private(set) var byteCount = 0
  /// For a batch a reader took: bytes the connection still counts as lent (not yet credited).
  private var lentBytes = 0
  /// Bytes of the batch consumed since the last credit.
  private var consumedBytes = 0

  package init() {}

  package var isEmpty: Bool { single == nil && head == items.count }

  /// Consuming: the connection hands over the bytes it decoded, with no retain and release.
  mutating func append(_ message: consuming [UInt8]) {
    byteCount += message.count
    if head == items.count {
      guard let first = single.take() else {
        single = message
        return
      }
      items.append(first)
    }
    items.append(message)
  }

  package mutating func popFirst() -> [UInt8]? {
    // Kept optional throughout: unwrapping into a local costs a retain and release per message.
    var message = single.take()
    if message == nil {
      guard head < items.count else { return nil }
      swap(&message, &items[head])
      head += 1
      if head == items.count {
        items.removeAll(keepingCapacity: true)
        head = 0
      }
    }
    let count = message?.count ?? 0
    byteCount -= count
    if lentBytes > 0 { consumedBytes += count }
    return message
  }

  /// The next message of a reader's batch. Once the reader has consumed half of what is still
  /// lent (see ``owesCredit``), `giveBack` gets those bytes to credit to the sender, so that it
  /// keeps a window open while a large batch is read.
  package mutating func popFirst(crediting giveBack: (Int) -> Void) -> [UInt8]? {
    guard let message = popFirst() else { return nil }
    if owesCredit { giveBack(takeOwedCredit()) }
    return message
  }

  /// Removes everything, returning the byte count so that its credit can be given back.
  mutating func removeAll() -> Int {
    let bytes = byteCount
    single = nil
    items.removeAll()
    head = 0
    byteCount = 0
    lentBytes = 0
    consumedBytes = 0
    return bytes
  }

  /// Marks this queue as a batch whose messages' credit (`bytes`) the connection has not yet
  /// returned.
  mutating func lend(_ bytes: Int) {
    lentBytes = bytes
    consumedBytes = 0
  }

  /// True once the reader has consumed half of what is still lent: time to give that back, so
  /// that the sender keeps a window open while a large batch is read.
  package var owesCredit: Bool { consumedBytes > 0 && consumedBytes * 2 >= lentBytes }

  /// The consumed bytes to credit now (see ``owesCredit``).
  package mutating func takeOwedCredit() -> Int {
    let bytes = consumedBytes
    lentBytes -= bytes
    consumedBytes = 0
    return bytes
  }
}
