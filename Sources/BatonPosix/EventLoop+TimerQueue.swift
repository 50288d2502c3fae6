extension EventLoop {
  /// Pending timers: a binary min-heap of (deadline, id) plus the closures by id.
  ///
  /// Cancelling removes the closure at once (so it never runs and its captures are freed)
  /// and leaves the heap entry behind; such entries are skipped when they reach the top, and
  /// the heap is rebuilt without them when they outnumber the live ones. Ties in deadline
  /// break by id, so equal deadlines run in scheduling order.
  struct TimerQueue {
    typealias Work = @Sendable () -> Void

    private struct Entry {
      var deadline: UInt64
      var id: UInt64

      @inline(__always)
      func precedes(_ other: Entry) -> Bool {
        self.deadline < other.deadline || (self.deadline == other.deadline && self.id < other.id)
      }
    }

    private var heap: [Entry] = []
    private var pending: [UInt64: Work] = [:]
    private var cancelledInHeap = 0
    private var lastID: UInt64 = 0

    /// No timer is pending.
    var isEmpty: Bool {
      self.pending.isEmpty
    }

    /// Pending timers.
    var count: Int {
      self.pending.count
    }

    /// Adds a timer. `isEarliest` is true when it now has the earliest deadline of the heap
    /// (a sleeping loop must wake to rearm for it).
    mutating func insert(deadline: UInt64, _ work: @escaping Work) -> (id: UInt64, isEarliest: Bool) {
      let id = self.makeID()
      self.pending[id] = work
      self.heap.append(Entry(deadline: deadline, id: id))
      self.siftUp(self.heap.count - 1)
      return (id, self.heap[0].id == id)
    }

    /// A fresh timer id, never reused by this queue.
    mutating func makeID() -> UInt64 {
      self.lastID &+= 1
      return self.lastID
    }

    /// Removes a pending timer and returns its closure, or nil if it is not pending.
    mutating func cancel(_ id: UInt64) -> Work? {
      guard let work = self.pending.removeValue(forKey: id) else {
        return nil
      }
      self.cancelledInHeap += 1
      if self.cancelledInHeap > 64, self.cancelledInHeap * 2 > self.heap.count {
        self.compact()
      }
      return work
    }

    /// The earliest pending deadline, discarding cancelled entries on top.
    mutating func earliestDeadline() -> UInt64? {
      self.dropCancelledTop()
      return self.heap.first?.deadline
    }

    /// Moves the closures of every timer due at `now` into `due`, in deadline order.
    mutating func popDue(now: UInt64, into due: inout [Work]) {
      while let top = self.heap.first, top.deadline <= now {
        self.removeTop()
        if let work = self.pending.removeValue(forKey: top.id) {
          due.append(work)
        } else {
          self.cancelledInHeap -= 1
        }
      }
    }

    /// Removes every timer and returns the closures (so the caller can release them).
    mutating func removeAll() -> [Work] {
      let works = Array(self.pending.values)
      self.pending.removeAll()
      self.heap.removeAll()
      self.cancelledInHeap = 0
      return works
    }

    // MARK: Heap

    private mutating func dropCancelledTop() {
      while let top = self.heap.first, self.pending[top.id] == nil {
        self.removeTop()
        self.cancelledInHeap -= 1
      }
    }

    private mutating func compact() {
      self.heap.removeAll { self.pending[$0.id] == nil }
      self.cancelledInHeap = 0
      var index = self.heap.count / 2
      while index > 0 {
        index -= 1
        self.siftDown(index)
      }
    }

    private mutating func removeTop() {
      let last = self.heap.removeLast()
      if !self.heap.isEmpty {
        self.heap[0] = last
        self.siftDown(0)
      }
    }

    private mutating func siftUp(_ start: Int) {
      var child = start
      let entry = self.heap[child]
      while child > 0 {
        let parent = (child - 1) / 2
        guard entry.precedes(self.heap[parent]) else {
          break
        }
        self.heap[child] = self.heap[parent]
        child = parent
      }
      self.heap[child] = entry
    }

    private mutating func siftDown(_ start: Int) {
      var parent = start
      let entry = self.heap[parent]
      let count = self.heap.count
      while true {
        var child = 2 * parent + 1
        guard child < count else {
          break
        }
        if child + 1 < count, self.heap[child + 1].precedes(self.heap[child]) {
          child += 1
        }
        guard self.heap[child].precedes(entry) else {
          break
        }
        self.heap[parent] = self.heap[child]
        parent = child
      }
      self.heap[parent] = entry
    }
  }
}
