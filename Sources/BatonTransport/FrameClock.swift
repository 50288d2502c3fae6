/// How long the frame now arriving has been arriving: the rule behind
/// ``TransportLimits/frameTimeout``, as a value so that it is tested without a socket or a clock.
///
/// A frame's clock starts at the read that leaves its first bytes behind, and restarts at every
/// read that completes a frame (the bytes left over then belong to the next one), so a busy
/// stream whose reads keep ending mid-frame is never mistaken for a slow sender. Time in which
/// this side itself stopped reading (backpressure) does not count against the peer.
struct FrameClock: Equatable {
  let timeout: UInt64
  /// When the frame now partly received began to arrive; nil when no frame is partly received.
  private(set) var since: UInt64?

  init(timeout: UInt64) { self.timeout = timeout }

  /// After a read that processed what it could: `partialLeft`, bytes of an incomplete frame are
  /// buffered; `completedFrame`, the read completed at least one frame. Returns when a check is
  /// due if a frame is now arriving (the owner arms a timer for it unless one runs).
  mutating func afterRead(partialLeft: Bool, completedFrame: Bool, now: UInt64) -> UInt64? {
    guard partialLeft else {
      since = nil
      return nil
    }
    if completedFrame || since == nil { since = now }
    return since.map { $0 &+ timeout }
  }

  enum Verdict: Equatable {
    /// No frame is partly received: nothing to watch.
    case idle
    /// Look again at this time.
    case checkAgain(at: UInt64)
    /// The frame has taken longer than the timeout: a connection error.
    case expired(waited: UInt64)
  }

  /// The check a timer asked for.
  mutating func check(now: UInt64, readPaused: Bool) -> Verdict {
    guard let started = since else { return .idle }
    if readPaused {
      // We are not reading, not the peer: the frame's clock restarts when reading resumes.
      since = now
      return .checkAgain(at: now &+ timeout)
    }
    let waited = now &- started
    return waited >= timeout ? .expired(waited: waited) : .checkAgain(at: started &+ timeout)
  }
}
