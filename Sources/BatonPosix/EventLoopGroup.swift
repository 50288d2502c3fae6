import CBatonShims
import Synchronization

/// A fixed set of ``EventLoop``s, each on its own thread (`baton-loop-0`, `baton-loop-1`, …).
package final class EventLoopGroup: Sendable {
  /// The loops, in thread-name order.
  package let loops: [EventLoop]
  private let cursor = Atomic<UInt>(0)
  private let isShutDown = Locked(false)

  /// The process-wide group: one loop per CPU this process may use (at least one), created
  /// on first use and never shut down.
  package static let shared = EventLoopGroup(threads: max(1, Int(baton_available_cpus())))

  /// Starts `threads` loops (at least one).
  ///
  /// Traps if the kernel refuses the epoll set, eventfd, timerfd or thread; use
  /// ``start(threads:)`` to get that as an error instead.
  package convenience init(threads: Int) {
    do {
      self.init(loops: try Self.startLoops(threads))
    } catch {
      preconditionFailure("cannot start \(threads) event loops: \(error)")
    }
  }

  /// Starts `threads` loops (at least one).
  /// - Throws: ``IOError`` if any loop cannot be created; those already started are stopped.
  package static func start(threads: Int) throws -> EventLoopGroup {
    EventLoopGroup(loops: try self.startLoops(threads))
  }

  private init(loops: [EventLoop]) {
    self.loops = loops
  }

  private static func startLoops(_ threads: Int) throws(IOError) -> [EventLoop] {
    var loops: [EventLoop] = []
    do {
      for index in 0..<max(1, threads) {
        let loop = try EventLoop.make(index: index)
        try loop.start()
        loops.append(loop)
      }
    } catch {
      for loop in loops {
        loop.requestStop()
        loop.join()
      }
      throw error
    }
    return loops
  }

  /// The next loop in round-robin order. Lock-free; callable from any thread.
  package func next() -> EventLoop {
    let ticket = self.cursor.wrappingAdd(1, ordering: .relaxed).oldValue
    return self.loops[Int(ticket % UInt(self.loops.count))]
  }

  /// Stops every loop after the work already queued on it, and joins the threads. Returns
  /// once all have exited; idempotent. Work queued later is dropped, and tasks that prefer
  /// a stopped loop never resume, so shut down only when nothing runs there any more.
  ///
  /// Must not be called from one of the group's loops, and never on ``shared``.
  package func shutdown() {
    precondition(!self.loops.contains { $0.inEventLoop }, "shutdown() called on one of its own loops")
    self.isShutDown.withLock { isShutDown in
      guard !isShutDown else {
        return
      }
      isShutDown = true
      for loop in self.loops {
        loop.requestStop()
      }
      for loop in self.loops {
        loop.join()
      }
    }
  }
}
