/// Identifies a timer scheduled with ``EventLoop/schedule(at:_:)``, for cancelling it.
package struct TimerHandle: Hashable, Sendable {
  let id: UInt64
  let loop: ObjectIdentifier
}
