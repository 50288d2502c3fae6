import Testing

@testable import BatonPosix

@Suite("EventLoop.TimerQueue")
struct TimerQueueTests {
  @Test("pops due timers in deadline order, ties in insertion order, leaving later ones")
  func popsInOrder() {
    var queue = EventLoop.TimerQueue()
    let deadlines: [UInt64] = [50, 10, 40, 10, 30, 20, 60]
    var ids: [UInt64] = []
    for deadline in deadlines {
      ids.append(queue.insert(deadline: deadline) {}.id)
    }
    #expect(queue.earliestDeadline() == 10)

    // Closures cannot be compared, so tag them by re-inserting in a second queue below.
    var tagged = EventLoop.TimerQueue()
    let order = LoopConfined([Int]())
    for (index, deadline) in deadlines.enumerated() {
      _ = tagged.insert(deadline: deadline) { order.value.append(index) }
    }
    var due: [EventLoop.TimerQueue.Work] = []
    tagged.popDue(now: 40, into: &due)
    for work in due { work() }
    #expect(order.value == [1, 3, 5, 4, 2])
    #expect(tagged.count == 2)
    #expect(tagged.earliestDeadline() == 50)
    #expect(Set(ids).count == ids.count)
  }

  @Test("insert reports whether the new timer is now the earliest")
  func reportsEarliest() {
    var queue = EventLoop.TimerQueue()
    #expect(queue.insert(deadline: 100) {}.isEarliest)
    #expect(!queue.insert(deadline: 200) {}.isEarliest)
    #expect(!queue.insert(deadline: 100) {}.isEarliest)
    #expect(queue.insert(deadline: 99) {}.isEarliest)
  }

  @Test("cancel returns the closure once, and a cancelled timer is never popped")
  func cancel() {
    var queue = EventLoop.TimerQueue()
    let ran = LoopConfined([Int]())
    let first = queue.insert(deadline: 1) { ran.value.append(1) }.id
    _ = queue.insert(deadline: 2) { ran.value.append(2) }
    #expect(queue.cancel(first) != nil)
    #expect(queue.cancel(first) == nil)
    #expect(queue.earliestDeadline() == 2)
    var due: [EventLoop.TimerQueue.Work] = []
    queue.popDue(now: .max, into: &due)
    for work in due { work() }
    #expect(ran.value == [2])
    #expect(queue.isEmpty)
    #expect(queue.earliestDeadline() == nil)
  }

  @Test("compaction after mass cancellation keeps the survivors in order")
  func compaction() {
    var queue = EventLoop.TimerQueue()
    let ran = LoopConfined([Int]())
    var ids: [Int: UInt64] = [:]
    // Deadlines in a scrambled order so the heap is not trivially sorted.
    for index in 0..<1000 {
      let deadline = UInt64((index * 389) % 1000)
      ids[index] = queue.insert(deadline: deadline) { ran.value.append(Int(deadline)) }.id
    }
    for (index, id) in ids where index % 10 != 0 {
      #expect(queue.cancel(id) != nil)
    }
    #expect(queue.count == 100)
    var due: [EventLoop.TimerQueue.Work] = []
    queue.popDue(now: .max, into: &due)
    for work in due { work() }
    #expect(ran.value.count == 100)
    #expect(ran.value == ran.value.sorted())
    #expect(queue.isEmpty)
  }

  @Test("removeAll hands back every pending closure")
  func removeAll() {
    var queue = EventLoop.TimerQueue()
    for deadline in 0..<10 {
      _ = queue.insert(deadline: UInt64(deadline)) {}
    }
    _ = queue.cancel(3)
    #expect(queue.removeAll().count == 9)
    #expect(queue.isEmpty)
  }
}
