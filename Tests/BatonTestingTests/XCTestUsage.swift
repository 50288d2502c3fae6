import BatonClient
import BatonTesting
import XCTest

/// The kit from XCTest: nothing in it depends on Swift Testing (the ledger throws, the
/// scopes are plain async functions).
final class XCTestUsage: XCTestCase {
  func testRefusedCallIsRetriedAndRunsOnce() async throws {
    let ledger = CallLedger()
    let plan = try FaultPlan(parsing: "reset stream=1 code=refused")
    try await withTestServer(router: Service.router(ledger), faults: plan) { test in
      try await withClient(endpoints: [test.endpoint]) { client in
        let outcome = await ledger.call("x") { try await client.unary("test/Echo", [UInt8]("x")).text }
        XCTAssertEqual(outcome, .succeeded(reply: "x"))
      }
      XCTAssertEqual(test.proxy?.trace.map(\.action), ["reset stream=1 REFUSED_STREAM"])
    }
    XCTAssertNoThrow(try ledger.verify())
    XCTAssertEqual(ledger.timesProcessed("x"), 1)
  }
}
