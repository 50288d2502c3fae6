import Testing

@testable import BatonTesting

@Suite("Fault plan text: parsing and errors")
struct FaultPlanTests {
  @Test("the README's plan parses into the faults it names, and prints back the same")
  func parsesExample() throws {
    let plan = try FaultPlan(
      parsing: """
        goaway last=3 after-opens=3; reset stream=5 code=cancel at-message=2
        stall 500ms after-frames=10  # a comment
        cut mid-frame after-frames=20
        withhold-ping-ack count=2 from=server after-frames=1
        delay 15ms frames=4 after-frames=2..6 connection=2
        drip bytes=3 every=2ms
        """, seed: 9)
    #expect(plan.seed == 9)
    #expect(
      plan.faults == [
        .init(.goAway(lastStreamID: 3, code: .noError), at: .afterOpens(.exactly(3))),
        .init(.reset(stream: 5, code: .cancel), at: .atMessage(stream: 5, 2, from: .client)),
        .init(.stall(.milliseconds(500)), at: .afterFrames(.exactly(10), from: .client)),
        .init(.cut(midFrame: true), at: .afterFrames(.exactly(20), from: .client)),
        .init(.withholdPingAck(count: 2), at: .afterFrames(.exactly(1), from: .server)),
        .init(.delay(.milliseconds(15), frames: 4), at: .afterFrames(.between(2, 6), from: .client), connection: 2),
        .init(.drip(maxPiece: 3, every: .milliseconds(2), frames: 1), at: .start),
      ])
    let again = try FaultPlan(parsing: plan.description, seed: 9)
    #expect(again == plan)
  }

  @Test("defaults: goaway NO_ERROR with no last, a reset with no message fires at the OPEN, an empty plan")
  func defaults() throws {
    #expect(try FaultPlan(parsing: "goaway").faults == [.init(.goAway(lastStreamID: nil, code: .noError))])
    #expect(
      try FaultPlan(parsing: "reset stream=3 code=refused").faults == [
        .init(.reset(stream: 3, code: .refusedStream), at: .atMessage(stream: 3, 0, from: .client))
      ])
    #expect(try FaultPlan(parsing: " ;\n# nothing\n").faults.isEmpty)
    #expect(
      try FaultPlan(parsing: "goaway code=enhance-your-calm last=0").faults.first?.action
        == .goAway(lastStreamID: 0, code: .enhanceYourCalm))
  }

  @Test(
    "bad plans fail with the line, the column and the reason",
    arguments: [
      ("goawya", 1, 1, "unknown action 'goawya'"),
      ("goaway lst=3", 1, 8, "unknown option 'lst' for goaway"),
      ("stall 500ms; goaway last=x", 1, 26, "last must be a whole number"),
      ("goaway\nreset stream=4 code=cancel", 2, 14, "stream must be odd"),
      ("reset code=cancel", 1, 1, "reset needs stream=N"),
      ("reset stream=1 code=nope", 1, 21, "code must be one of refused, cancel"),
      ("reset stream=1 code=refused at-message=2 from=server", 1, 47, "refused means the server never saw"),
      ("stall", 1, 1, "stall needs a duration"),
      ("stall 5m", 1, 7, "'5m' is not a duration"),
      ("delay 10ms after-frames=3 after-opens=2", 1, 39, "a fault has one trigger"),
      ("goaway after-frames=9..2", 1, 21, "range 9..2 is empty"),
      ("cut sideways", 1, 5, "cut takes only 'mid-frame'"),
      ("goaway last=3 last=4", 1, 15, "given twice"),
      ("goaway at-message=2", 1, 19, "at-message needs stream=S"),
      ("drip every=", 1, 6, "needs a value"),
    ])
  func errors(_ text: String, line: Int, column: Int, message: String) {
    #expect {
      try FaultPlan(parsing: text)
    } throws: { error in
      guard let error = error as? FaultPlan.ParseError else { return false }
      #expect(error.line == line, "\(error)")
      #expect(error.column == column, "\(error)")
      #expect(error.message.contains(message), "\(error)")
      return true
    }
  }

  @Test("any text at all parses or fails cleanly, never traps")
  func fuzz() {
    var random = SplitMix64(seed: 1)
    let alphabet: [Character] = Array(
      "goaway reset cut stall drip delay last=3 stream=5 at-message=2 ..;\n#=ms s0123456789-")
    for _ in 0..<2_000 {
      let length = Int(random.next() % 60)
      let text = String((0..<length).map { _ in alphabet[Int(random.next() % UInt64(alphabet.count))] })
      _ = try? FaultPlan(parsing: text)
    }
  }
}
