import Testing

@testable import BatonServer

/// ``ServerLifecycle`` as a pure value: `idle → running → draining → cancelling → closing → stopped`.
@Suite("ServerLifecycle")
struct ServerLifecycleTests {
  typealias State = ServerLifecycle.State

  /// A lifecycle in `state`, reached only through its own transitions.
  static func lifecycle(in state: State) -> ServerLifecycle {
    var lifecycle = ServerLifecycle()
    switch state {
    case .idle:
      break
    case .running:
      _ = lifecycle.start()
    case .draining:
      _ = lifecycle.start()
      _ = lifecycle.beginGracefulStop()
    case .cancelling:
      _ = lifecycle.start()
      _ = lifecycle.hardStop()
    case .closing:
      _ = lifecycle.start()
      _ = lifecycle.hardStop()
      _ = lifecycle.connectionsClosed()
    case .stopped:
      _ = lifecycle.beginGracefulStop()
    }
    #expect(lifecycle.state == state, "setup reached \(lifecycle.state), not \(state)")
    return lifecycle
  }

  static let allStates: [State] = [.idle, .running, .draining, .cancelling, .closing, .stopped]

  @Test("a new lifecycle is idle, not ready, and rejects connections")
  func initial() {
    let lifecycle = ServerLifecycle()
    #expect(lifecycle.state == .idle)
    #expect(!lifecycle.isReady)
    #expect(lifecycle.acceptDecision == .reject)
  }

  @Test("start moves idle to running exactly once; a second start is refused")
  func startTwice() {
    var lifecycle = ServerLifecycle()
    #expect(lifecycle.start() == true)
    #expect(lifecycle.state == .running)
    #expect(lifecycle.isReady)
    #expect(lifecycle.start() == false)
    #expect(lifecycle.state == .running)
  }

  @Test("start is refused in every state but idle (a server runs once)", arguments: allStates.filter { $0 != .idle })
  func startOnlyFromIdle(_ state: State) {
    var lifecycle = Self.lifecycle(in: state)
    #expect(lifecycle.start() == false)
    #expect(lifecycle.state == state)
  }

  @Test("a graceful stop before start stops at once, and start afterwards is refused")
  func gracefulBeforeStart() {
    var lifecycle = ServerLifecycle()
    #expect(lifecycle.beginGracefulStop() == .stoppedBeforeStart)
    #expect(lifecycle.state == .stopped)
    #expect(lifecycle.start() == false)
    #expect(lifecycle.acceptDecision == .reject)
  }

  @Test("a hard stop before start stops at once")
  func hardBeforeStart() {
    var lifecycle = ServerLifecycle()
    #expect(lifecycle.hardStop() == .stoppedBeforeStart)
    #expect(lifecycle.state == .stopped)
    #expect(lifecycle.start() == false)
  }

  @Test("a graceful stop of a running server starts the drain; a second one does nothing")
  func gracefulTwice() {
    var lifecycle = Self.lifecycle(in: .running)
    #expect(lifecycle.beginGracefulStop() == .drain)
    #expect(lifecycle.state == .draining)
    #expect(lifecycle.beginGracefulStop() == BeginStopResult.none)
    #expect(lifecycle.state == .draining)
  }

  @Test(
    "a graceful stop once a stop is under way or done does nothing",
    arguments: [State.draining, .cancelling, .closing, .stopped])
  func gracefulWhileStopping(_ state: State) {
    var lifecycle = Self.lifecycle(in: state)
    #expect(lifecycle.beginGracefulStop() == BeginStopResult.none)
    #expect(lifecycle.state == state)
  }

  @Test("graceful then hard: the hard stop cuts the drain")
  func gracefulThenHard() {
    var lifecycle = Self.lifecycle(in: .running)
    #expect(lifecycle.beginGracefulStop() == .drain)
    #expect(lifecycle.hardStop() == .cut)
    #expect(lifecycle.state == .cancelling)
  }

  @Test("a hard stop of a running server drains with a deadline of now")
  func hardFromRunning() {
    var lifecycle = Self.lifecycle(in: .running)
    #expect(lifecycle.hardStop() == .drainAndCut)
    #expect(lifecycle.state == .cancelling)
    #expect(!lifecycle.isReady)
  }

  @Test("a second hard stop does nothing, nor does a graceful one after it")
  func hardTwice() {
    var lifecycle = Self.lifecycle(in: .running)
    #expect(lifecycle.hardStop() == .drainAndCut)
    #expect(lifecycle.hardStop() == HardStopResult.none)
    #expect(lifecycle.state == .cancelling)
    #expect(lifecycle.beginGracefulStop() == BeginStopResult.none)
    #expect(lifecycle.state == .cancelling)
  }

  @Test(
    "a hard stop once cancelling, closing or stopped does nothing", arguments: [State.cancelling, .closing, .stopped])
  func hardWhileStopping(_ state: State) {
    var lifecycle = Self.lifecycle(in: state)
    #expect(lifecycle.hardStop() == HardStopResult.none)
    #expect(lifecycle.state == state)
  }

  @Test("the drain deadline applies only while draining", arguments: allStates)
  func deadline(_ state: State) {
    var lifecycle = Self.lifecycle(in: state)
    let applied = lifecycle.deadlinePassed()
    #expect(applied == (state == .draining))
    #expect(lifecycle.state == (state == .draining ? .cancelling : state))
  }

  @Test("connectionsClosed applies only while draining or cancelling", arguments: allStates)
  func connectionsClosed(_ state: State) {
    var lifecycle = Self.lifecycle(in: state)
    let applies = state == .draining || state == .cancelling
    #expect(lifecycle.connectionsClosed() == applies)
    #expect(lifecycle.state == (applies ? .closing : state))
  }

  @Test("hooksFinished applies only while closing and ends at stopped", arguments: allStates)
  func hooksFinished(_ state: State) {
    var lifecycle = Self.lifecycle(in: state)
    let finished = lifecycle.hooksFinished()
    #expect(finished == (state == .closing))
    #expect(lifecycle.state == (state == .closing ? .stopped : state))
  }

  @Test(
    "acceptDecision: serve while running, serve-and-GOAWAY while draining, reject otherwise",
    arguments: [
      (State.idle, ServerLifecycle.Accept.reject), (.running, .serve), (.draining, .serveDraining),
      (.cancelling, .reject),
      (.closing, .reject), (.stopped, .reject),
    ])
  func acceptDecision(_ state: State, _ decision: ServerLifecycle.Accept) {
    #expect(Self.lifecycle(in: state).acceptDecision == decision)
  }

  @Test("isReady is true only while running: false from the first instant of any stop", arguments: allStates)
  func isReady(_ state: State) {
    #expect(Self.lifecycle(in: state).isReady == (state == .running))
  }

  @Test("isReady turns false in the same transition that begins a graceful or hard stop")
  func notReadyFromFirstInstant() {
    var graceful = Self.lifecycle(in: .running)
    #expect(graceful.isReady)
    _ = graceful.beginGracefulStop()
    #expect(!graceful.isReady)
    var hard = Self.lifecycle(in: .running)
    _ = hard.hardStop()
    #expect(!hard.isReady)
  }

  @Test("a full graceful stop walks running → draining → closing → stopped")
  func fullGracefulPath() {
    var lifecycle = ServerLifecycle()
    #expect(lifecycle.start() == true)
    #expect(lifecycle.beginGracefulStop() == .drain)
    #expect(lifecycle.connectionsClosed() == true)
    #expect(lifecycle.state == .closing)
    #expect(lifecycle.deadlinePassed() == false, "a deadline after the connections closed changes nothing")
    #expect(lifecycle.hooksFinished() == true)
    #expect(lifecycle.state == .stopped)
    #expect(lifecycle.hardStop() == HardStopResult.none)
  }

  @Test("a drain that hits its deadline walks draining → cancelling → closing → stopped")
  func deadlinePath() {
    var lifecycle = Self.lifecycle(in: .draining)
    #expect(lifecycle.deadlinePassed() == true)
    #expect(lifecycle.deadlinePassed() == false)
    #expect(lifecycle.hardStop() == HardStopResult.none, "already cutting")
    #expect(lifecycle.connectionsClosed() == true)
    #expect(lifecycle.hooksFinished() == true)
    #expect(lifecycle.state == .stopped)
  }
}

typealias BeginStopResult = ServerLifecycle.BeginStop
typealias HardStopResult = ServerLifecycle.HardStop
