import BatonCore
import Testing

/// ``StreamStateMachine`` as a pure value: every transition of PROTOCOL.md section 6.2, in both
/// roles, legal and illegal.
@Suite("StreamStateMachine")
struct StreamStateMachineTests {
  typealias State = StreamStateMachine.State

  /// A machine in `state`, reached only through public transitions.
  static func machine(in state: State) -> StreamStateMachine {
    switch state {
    case .open:
      return .openedLocally(endStream: false)
    case .halfClosedLocal:
      return .openedLocally(endStream: true)
    case .halfClosedRemote:
      return .openedRemotely(endStream: true)
    case .closed:
      var machine = StreamStateMachine.openedLocally(endStream: false)
      machine.close()
      return machine
    }
  }

  static let allStates: [State] = [.open, .halfClosedLocal, .halfClosedRemote, .closed]

  @Test("a client's OPEN starts the stream open, or half-closed (local) with END_STREAM")
  func openedLocally() {
    #expect(StreamStateMachine.openedLocally(endStream: false).state == .open)
    #expect(StreamStateMachine.openedLocally(endStream: true).state == .halfClosedLocal)
  }

  @Test("a server's received OPEN starts the stream open, or half-closed (remote) with END_STREAM")
  func openedRemotely() {
    #expect(StreamStateMachine.openedRemotely(endStream: false).state == .open)
    #expect(StreamStateMachine.openedRemotely(endStream: true).state == .halfClosedRemote)
  }

  @Test(
    "canSend and canReceive follow the state",
    arguments: [
      (State.open, true, true), (.halfClosedLocal, false, true), (.halfClosedRemote, true, false),
      (.closed, false, false),
    ])
  func directions(_ state: State, canSend: Bool, canReceive: Bool) {
    let machine = Self.machine(in: state)
    #expect(machine.state == state)
    #expect(machine.canSend == canSend)
    #expect(machine.canReceive == canReceive)
  }

  @Test(
    "sending END_STREAM moves open to half-closed (local) and half-closed (remote) to closed",
    arguments: [(State.open, State.halfClosedLocal), (.halfClosedRemote, .closed)])
  func sendEndStream(_ from: State, _ to: State) {
    var machine = Self.machine(in: from)
    #expect(machine.sendEndStream() == true)
    #expect(machine.state == to)
  }

  @Test(
    "sending END_STREAM after this side already ended (or on a closed stream) returns false and changes nothing",
    arguments: [State.halfClosedLocal, .closed])
  func sendEndStreamTwice(_ state: State) {
    var machine = Self.machine(in: state)
    #expect(machine.sendEndStream() == false)
    #expect(machine.state == state)
  }

  @Test("a client sending END_STREAM twice: the second is refused")
  func clientEndsTwice() {
    var machine = StreamStateMachine.openedLocally(endStream: false)
    #expect(machine.sendEndStream() == true)
    #expect(machine.sendEndStream() == false)
    #expect(machine.state == .halfClosedLocal)
  }

  @Test(
    "receiving END_STREAM moves open to half-closed (remote) and half-closed (local) to closed",
    arguments: [(State.open, State.halfClosedRemote), (.halfClosedLocal, .closed)])
  func receiveEndStream(_ from: State, _ to: State) throws {
    var machine = Self.machine(in: from)
    try machine.receiveEndStream()
    #expect(machine.state == to)
  }

  @Test(
    "receiving END_STREAM after the peer already ended its side throws STREAM_CLOSED and changes nothing",
    arguments: [State.halfClosedRemote, .closed])
  func receiveEndStreamTwice(_ state: State) {
    var machine = Self.machine(in: state)
    #expect(throws: StreamStateMachine.StreamClosed.self) { try machine.receiveEndStream() }
    #expect(machine.state == state)
  }

  @Test("a server receiving END_STREAM twice: the second throws")
  func serverReceivesEndTwice() throws {
    var machine = StreamStateMachine.openedRemotely(endStream: false)
    try machine.receiveEndStream()
    #expect(throws: StreamStateMachine.StreamClosed.self) { try machine.receiveEndStream() }
  }

  @Test("TRAILERS or RESET (close) ends the stream from any state", arguments: allStates)
  func closeFromAnyState(_ state: State) {
    var machine = Self.machine(in: state)
    machine.close()
    #expect(machine.state == .closed)
    #expect(!machine.canSend && !machine.canReceive)
  }

  @Test("client unary: OPEN, DATA+END_STREAM, then TRAILERS closes")
  func clientUnaryPath() {
    var machine = StreamStateMachine.openedLocally(endStream: false)
    #expect(machine.sendEndStream() == true)
    #expect(machine.state == .halfClosedLocal)
    #expect(machine.canReceive)
    machine.close()
    #expect(machine.state == .closed)
  }

  @Test("server: both sides ending closes the stream, whichever ends first")
  func bothEnds() throws {
    var serverFirst = StreamStateMachine.openedRemotely(endStream: false)
    #expect(serverFirst.sendEndStream() == true)
    try serverFirst.receiveEndStream()
    #expect(serverFirst.state == .closed)

    var clientFirst = StreamStateMachine.openedRemotely(endStream: false)
    try clientFirst.receiveEndStream()
    #expect(clientFirst.sendEndStream() == true)
    #expect(clientFirst.state == .closed)
  }
}
