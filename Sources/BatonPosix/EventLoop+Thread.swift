import CBatonShims
import Glibc

// Starting, naming, stopping and joining the loop's thread.
extension EventLoop {
  /// Starts the loop thread. The thread keeps the loop alive until it exits.
  /// - Throws: ``IOError`` (call "pthread_create") if the thread cannot be created.
  func start() throws(IOError) {
    let context = Unmanaged.passRetained(self).toOpaque()
    var handle = pthread_t()
    let status = pthread_create(
      &handle,
      nil,
      { context in
        guard let context else {
          return nil
        }
        let loop = Unmanaged<EventLoop>.fromOpaque(context).takeRetainedValue()
        loop.threadMain()
        return nil
      },
      context
    )
    guard status == 0 else {
      Unmanaged<EventLoop>.fromOpaque(context).release()
      throw IOError(errno: status, call: "pthread_create")
    }
    self.thread.withLock { $0 = handle }
  }

  /// The calling thread's name (`baton-loop-<index>` on a loop's thread), for diagnostics and tests.
  package static var currentThreadName: String {
    var buffer = [CChar](repeating: 0, count: 32)
    _ = baton_get_thread_name(&buffer, buffer.count)
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
  }

  private func threadMain() {
    self.owner.store(UInt(pthread_self()), ordering: .relaxed)
    _ = baton_set_thread_name("baton-loop-\(self.index)")
    self.run()
    self.owner.store(0, ordering: .relaxed)
  }

  /// Asks the loop to stop after the work queued so far (FIFO) and the current turn.
  func requestStop() {
    self.execute {
      self.stopRequested = true
    }
  }

  /// Waits for the loop thread to exit. Must not be called on the loop thread.
  func join() {
    precondition(!self.inEventLoop, "an event loop cannot join its own thread")
    let handle = self.thread.withLock { handle in
      defer { handle = nil }
      return handle
    }
    if let handle {
      _ = pthread_join(handle, nil)
    }
  }
}
