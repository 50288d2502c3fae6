import Glibc

/// A value guarded by a plain (non-priority-inheriting) pthread mutex.
///
/// Same shape as `Synchronization.Mutex`, for state that many threads hit at once.
/// `Mutex` on Linux is built on priority-inheritance futexes, whose unlock hands the lock
/// to a sleeping waiter; with more contending threads than cores that turns into a convoy
/// where every acquisition waits for a context switch. Measured here (gVisor, 2 cores, 8
/// threads appending to one array): `Mutex` 24 thousand operations/s, this lock 21 million.
/// glibc's mutex lets a running thread take a just-released lock instead, so it degrades
/// gracefully. The mutex is glibc's adaptive kind: a thread that finds it taken spins briefly
/// before sleeping, because our critical sections are a few hundred nanoseconds and a futex
/// sleep and wake-up costs tens of microseconds on a VM (64 unary callers: the client spent 6 %
/// of its time waking lock waiters). Keep critical sections short and never call out of them.
public final class Locked<Value>: @unchecked Sendable {
  // @unchecked: `value` is only reached through `withLock`, under `mutex`.
  private let mutex: UnsafeMutablePointer<pthread_mutex_t>
  @usableFromInline let value: UnsafeMutablePointer<Value>

  /// A lock guarding `initialValue`.
  public init(_ initialValue: sending Value) {
    self.mutex = .allocate(capacity: 1)
    self.mutex.initialize(to: pthread_mutex_t())
    var attributes = pthread_mutexattr_t()
    _ = pthread_mutexattr_init(&attributes)
    _ = pthread_mutexattr_settype(&attributes, Int32(PTHREAD_MUTEX_ADAPTIVE_NP))
    _ = pthread_mutex_init(self.mutex, &attributes)
    _ = pthread_mutexattr_destroy(&attributes)
    self.value = .allocate(capacity: 1)
    self.value.initialize(to: initialValue)
  }

  deinit {
    _ = pthread_mutex_destroy(self.mutex)
    self.mutex.deallocate()
    self.value.deinitialize(count: 1)
    self.value.deallocate()
  }

  /// Runs `body` with exclusive access to the value. Not reentrant.
  @inlinable @inline(__always)
  public func withLock<Result, E: Error>(
    _ body: (inout sending Value) throws(E) -> sending Result
  ) throws(E) -> sending Result {
    lock()
    defer { unlock() }
    return try body(&self.value.pointee)
  }

  // Out of line, so that `withLock` can be inlined into other modules (and its closure with it)
  // without exposing Glibc in this module's interface.
  @usableFromInline func lock() { _ = pthread_mutex_lock(self.mutex) }
  @usableFromInline func unlock() { _ = pthread_mutex_unlock(self.mutex) }
}
