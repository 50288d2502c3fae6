import BatonCLI
import BatonClient
import BatonPosix
import BatonServer
import Foundation
import Testing

@Suite("The baton command, run in-process", .serialized, .timeLimit(.minutes(10)))
struct CLITests {
  /// Runs `baton ARGUMENTS...` and returns its status and what it printed.
  private func baton(_ arguments: String...) async -> (status: Int32, out: String, err: String) {
    let captured = CapturedOutput()
    let status = await CLI.main(["baton"] + arguments, output: captured.output)
    return (status, captured.standardOutput, captured.standardError)
  }

  /// The `name=value` fields of the line starting with `prefix`.
  private func fields(_ text: String, line prefix: String) throws -> [String: String] {
    let line = try #require(text.split(separator: "\n").last { $0.hasPrefix(prefix) })
    var fields: [String: String] = [:]
    for word in line.split(separator: " ") {
      guard let equals = word.firstIndex(of: "=") else { continue }
      fields[String(word[..<equals])] = String(word[word.index(after: equals)...])
    }
    return fields
  }

  // MARK: - Arguments

  @Test("a bad option, a missing value or an unknown command exits 2 with a message on stderr")
  func badArguments() async {
    let unknown = await baton("serve", "--bogus")
    #expect(unknown.status == 2)
    #expect(unknown.err.contains("unknown option '--bogus'"))
    #expect(unknown.err.contains("baton serve --help"))
    #expect(unknown.out.isEmpty)

    let missing = await baton("bench", "unary", "--port")
    #expect(missing.status == 2)
    #expect(missing.err.contains("'--port' needs a value"))

    let notANumber = await baton("bench", "unary", "--port=http")
    #expect(notANumber.status == 2)
    #expect(notANumber.err.contains("--port"))

    let twice = await baton("serve", "--port", "1", "--port", "2")
    #expect(twice.status == 2)

    let badEndpoint = await baton("call", "localhost", "demo.Echo/Unary")
    #expect(badEndpoint.status == 2)
    #expect(badEndpoint.err.contains("HOST:PORT"))

    let missingPositional = await baton("call", "127.0.0.1:1")
    #expect(missingPositional.status == 2)
    #expect(missingPositional.err.contains("missing METHOD"))

    let command = await baton("frobnicate")
    #expect(command.status == 2)
    #expect(command.err.contains("unknown command 'frobnicate'"))

    let scenario = await baton("bench", "nothing")
    #expect(scenario.status == 2)

    let required = await baton("load", "--seconds", "1", "--concurrency", "1")
    #expect(required.status == 2)
    #expect(required.err.contains("--endpoints"))

    #expect(await baton().status == 2)
  }

  @Test("--help prints usage on stdout and exits 0, for every command")
  func help() async {
    let top = await baton("--help")
    #expect(top.status == 0)
    for command in ["serve", "call", "load", "demo", "bench"] { #expect(top.out.contains("  \(command) ")) }
    let bench = await baton("bench", "--help")
    #expect(bench.status == 0)
    for scenario in ["server", "unary", "stream", "connections", "restart"] {
      #expect(bench.out.contains("  \(scenario) "))
    }
    for words in [
      ["serve"], ["call"], ["load"], ["demo"], ["bench", "server"], ["bench", "unary"], ["bench", "stream"],
      ["bench", "connections"], ["bench", "restart"],
    ] {
      let captured = CapturedOutput()
      let status = await CLI.main(["baton"] + words + ["--help"], output: captured.output)
      #expect(status == 0)
      #expect(captured.standardOutput.hasPrefix("usage: baton \(words.joined(separator: " "))"))
      #expect(captured.standardError.isEmpty)
    }
    let serve = await baton("serve", "--help")
    #expect(serve.out.contains("3  stopped, but the deadline cut"))
    // The top-level exit statuses are a list; status 3 is not read as a count of streams.
    #expect(top.out.contains("3  serve only: it stopped, but its drain deadline cut calls"))
    #expect(!top.out.contains("3 streams were cut"))
    #expect(top.out.contains("--version"))
  }

  @Test("--version prints 'baton VERSION' on stdout and exits 0")
  func version() async {
    for word in ["--version", "version"] {
      let run = await baton(word)
      #expect(run.status == 0)
      #expect(run.out == "baton \(BatonVersion.current)\n")
      #expect(run.err.isEmpty)
    }
    let parts = BatonVersion.current.split(separator: ".")
    #expect(parts.count == 3 && parts.allSatisfy { Int($0) != nil }, "not MAJOR.MINOR.PATCH: \(BatonVersion.current)")
  }

  // MARK: - Commands against in-process servers

  @Test("call prints the echo, and a failed call prints 'error: CODE: message' and exits 1")
  func call() async throws {
    try await withTestServer(DemoService.router()) { _, address in
      let echo = await baton(
        "call", address.description, "demo.Echo/Unary", "--data", "hello baton", "--metadata", "k=v")
      #expect(echo.status == 0)
      #expect(echo.out == "hello baton\n")

      let waited = await baton("call", address.description, "demo.Echo/Wait", "--data", "20")
      #expect(waited.out == "20\n")

      let missing = await baton("call", address.description, "demo.Echo/Missing")
      #expect(missing.status == 1)
      #expect(missing.err.hasPrefix("error: unimplemented: "))

      let slow = await baton("call", address.description, "demo.Echo/Wait", "--data", "5000", "--timeout", "0.2")
      #expect(slow.status == 1)
      #expect(slow.err.hasPrefix("error: deadlineExceeded: "))
    }
  }

  @Test("the ledger records ids in order and dumps them")
  func ledger() async throws {
    let ledger = BatonCLI.Ledger()
    try await withTestServer(DemoService.router(ledger: ledger)) { _, address in
      for id in ["a", "b", "c"] {
        #expect(await baton("call", address.description, "demo.Echo/Ledger", "--data", id).status == 0)
      }
      #expect(await baton("call", address.description, "demo.Echo/LedgerDump").out == "a\nb\nc\n")
    }
    #expect(ledger.entries == ["a", "b", "c"])
  }

  @Test("bench unary prints a RESULT line with calls and no errors")
  func benchUnary() async throws {
    try await withTestServer(DemoService.router()) { _, address in
      let run = await baton(
        "bench", "unary", "--port", "\(address.port)", "--seconds", "0.5", "--warmup", "0.1", "--size", "64",
        "--concurrency", "4")
      #expect(run.status == 0)
      let result = try fields(run.out, line: "RESULT unary impl=baton")
      #expect(result["conc"] == "4")
      #expect(result["size"] == "64")
      #expect(result["errors"] == "0")
      #expect(Int(result["calls"] ?? "") ?? 0 > 0)
      #expect(Int(result["rps"] ?? "") ?? 0 > 0)
      let p50 = try #require(Double(result["p50_us"] ?? ""))
      let p99 = try #require(Double(result["p99_us"] ?? ""))
      let max = try #require(Double(result["max_us"] ?? ""))
      #expect(p50 > 0 && p50 <= p99 && p99 <= max)
      #expect(result["secs"]?.split(separator: ".").last?.count == 2)
    }
  }

  @Test("bench stream prints a RESULT line with messages")
  func benchStream() async throws {
    try await withTestServer(DemoService.router()) { _, address in
      // 3 s measured after a 0.25 s warm-up (both counted from when the connection is ready):
      // short, but not so short that a loaded machine (the parallel suite on two cores beside
      // other busy processes) can leave the window without a sample, as 1 s did.
      let run = await baton(
        "bench", "stream", "--port", "\(address.port)", "--seconds", "3", "--warmup", "0.25", "--size", "256")
      #expect(run.status == 0, "\(run.out)\(run.err)")
      let result = try fields(run.out, line: "RESULT stream impl=baton")
      #expect(result["error"] == nil)
      #expect(result["size"] == "256")
      #expect(Double(result["secs"] ?? "") ?? 0 > 0)
      #expect(Int(result["msgs"] ?? "") ?? 0 > 0)
      #expect(Int(result["msgs_per_s"] ?? "") ?? 0 > 0)
      #expect(Double(result["MB_per_s"] ?? "") ?? 0 > 0)
    }
  }

  @Test("bench stream with no echoes to measure exits 1 with an error key and no figures")
  func benchStreamTooFew() async throws {
    // A server that takes the stream's messages but echoes none.
    var router = Router()
    router.bidirectional("bench.Echo/Stream") { requests, _, _ in
      for try await _ in requests {}
    }
    try await withTestServer(router) { _, address in
      let run = await baton(
        "bench", "stream", "--port", "\(address.port)", "--seconds", "0.2", "--warmup", "0", "--size", "16")
      #expect(run.status == 1, "\(run.out)\(run.err)")
      let result = try fields(run.out, line: "RESULT stream impl=baton")
      #expect(result["error"] == "too-few-messages")
      #expect(result["total"] == "0")
      #expect(result["msgs"] == nil && result["msgs_per_s"] == nil && result["MB_per_s"] == nil)
    }
    // And a stream the server fails: its code, not figures.
    var failing = Router()
    failing.bidirectional("bench.Echo/Stream") { _, _, _ in
      throw RPCError(code: .resourceExhausted, message: "no streams today")
    }
    try await withTestServer(failing) { _, address in
      let run = await baton("bench", "stream", "--port", "\(address.port)", "--seconds", "0.2", "--warmup", "0")
      #expect(run.status == 1, "\(run.out)\(run.err)")
      let result = try fields(run.out, line: "RESULT stream impl=baton")
      #expect(result["error"] == "resourceExhausted")
      #expect(result["msgs"] == nil)
    }
  }

  @Test("demo: each restart says what the stopping server finished, what moved and that nothing failed")
  func demo() async throws {
    let run = await baton("demo", "--seconds", "3")
    #expect(run.status == 0, "\(run.out)\(run.err)")
    #expect(run.out.contains("PASS: every server restarted and finished its open streams"), "\(run.out)")
    // restart K/3: server :PORT drained N streams in D, M calls moved to the others, F failed (...)
    let restarts = run.out.split(separator: "\n").filter { $0.hasPrefix("restart ") }
    #expect(restarts.count == 3, "\(run.out)")
    var drained = 0
    var moved = 0
    var migrated = 0
    for (index, fullLine) in restarts.enumerated() {
      // "K streams migrated, " appears when the stopping server handed watch streams over.
      var line = fullLine
      if let match = line.firstMatch(of: #/(\d+) streams migrated, /#) {
        migrated += Int(match.1) ?? 0
        line.removeSubrange(match.range)
      }
      let words = line.split(separator: " ").map(String.init)
      #expect(words.count > 14, "\(line)")
      guard words.count > 14 else { continue }
      #expect(words[1] == "\(index + 1)/3:")
      #expect(words[2] == "server" && words[3].hasPrefix(":") && Int(words[3].dropFirst()) != nil, "\(line)")
      #expect(words[4] == "drained" && words[6] == "streams" && words[7] == "in", "\(line)")
      #expect(words[8].hasSuffix("s,"), "a duration with its unit: \(line)")
      #expect(Array(words[10...14]) == ["calls", "moved", "to", "the", "others,"], "\(line)")
      #expect(words[15...].starts(with: ["0", "failed"]), "\(line)")
      drained += Int(words[5]) ?? -1_000_000
      moved += Int(words[9]) ?? -1_000_000
    }
    // Long calls and streams are in flight whenever a server stops, and the other two servers
    // keep taking calls while it is away.
    #expect(drained > 0, "\(run.out)")
    // Every server stops once, so the endless watch streams move at least once, and each sees
    // every number exactly once.
    #expect(migrated > 0, "\(run.out)")
    #expect(
      run.out.contains(#/watch streams: \d+ numbers, [1-9]\d* moves to another server, 0 gaps, 0 duplicates/#),
      "\(run.out)")
    #expect(moved > 0, "\(run.out)")
  }

  @Test("bench restart: three servers restart under load and no call fails")
  func benchRestart() async throws {
    let run = await baton("bench", "restart", "--seconds", "3", "--concurrency", "4")
    #expect(run.status == 0, "\(run.out)\(run.err)")
    let result = try fields(run.out, line: "RESULT restart impl=baton")
    #expect(result["failed"] == "0")
    #expect(Int(result["calls"] ?? "") ?? 0 > 0)
    let drains = try #require(result["drains_ms"]).split(separator: ",")
    #expect(drains.count == 3)
    #expect(drains.allSatisfy { Double($0) != nil })
  }

  @Test("load over two servers reports JSON with calls on both and no failures")
  func load() async throws {
    let counts = [CallCounter(), CallCounter()]
    try await withTestServer(DemoService.router(observe: { _ in counts[0].add() })) { _, first in
      try await withTestServer(DemoService.router(observe: { _ in counts[1].add() })) { _, second in
        // 2 s, so that at least one once-a-second progress line is due even on a loaded machine.
        let run = await baton(
          "load", "--endpoints", "\(first),\(second)", "--seconds", "2", "--concurrency", "4", "--timeout", "60",
          "--json")
        #expect(run.status == 0, "\(run.err)")
        let last = try #require(run.out.split(separator: "\n").last)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any])
        #expect(object["failed"] as? Int == 0)
        #expect((object["ok"] as? Int ?? 0) > 0)
        #expect(object["retried"] as? Int != nil)
        #expect((object["failures"] as? [String: Any])?.isEmpty == true)
        #expect(object["p50_us"] is NSNumber)
        #expect(object["p99_us"] is NSNumber)
        #expect(run.err.contains("load t=1s"))
      }
    }
    #expect(counts.allSatisfy { $0.value > 0 })
  }

  @Test("load with --method watch keeps resumable streams open through a graceful stop: no gap, no duplicate")
  func loadWatch() async throws {
    try await withTestServer(DemoService.router()) { firstServer, first in
      try await withTestServer(DemoService.router()) { secondServer, second in
        let stop = Task {
          // Once the watches run, stop a server that carries some: its streams must move.
          var carrier: Server?
          try await eventually("watch streams are open") {
            carrier = [firstServer, secondServer].first { $0.progress.openStreams > 0 }
            return carrier != nil
          }
          return await carrier?.gracefulStop(deadline: .seconds(30))
        }
        let run = await baton(
          "load", "--endpoints", "\(first),\(second)", "--seconds", "3", "--concurrency", "4", "--timeout", "60",
          "--method", "watch", "--json")
        #expect(run.status == 0, "\(run.err)")
        let last = try #require(run.out.split(separator: "\n").last)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any])
        #expect(object["failed"] as? Int == 0, "\(last)")
        #expect(object["gaps"] as? Int == 0, "\(last)")
        #expect(object["duplicates"] as? Int == 0, "\(last)")
        #expect((object["messages"] as? Int ?? 0) > 0, "\(last)")
        let report = try #require(try await stop.value)
        #expect(report.migratedStreams > 0)
        #expect(object["resumed"] as? Int == report.migratedStreams, "\(last)")
      }
    }
  }

  @Test("load with --method stream counts streams and echoed messages")
  func loadStream() async throws {
    try await withTestServer(DemoService.router()) { _, address in
      let run = await baton(
        // 3 s: a stream that opens after the run's end (a loaded machine) echoes nothing.
        "load", "--endpoints", address.description, "--seconds", "3", "--concurrency", "2", "--timeout", "60",
        "--method", "stream")
      #expect(run.status == 0, "\(run.err)")
      let result = try fields(run.out, line: "ok=")
      #expect(result["failed"] == "0")
      #expect(Int(result["ok"] ?? "") ?? 0 > 0)
      #expect(Int(result["messages"] ?? "") ?? 0 > 0)
      #expect(result["failures"] == "{}")
    }
  }

  // MARK: - Histogram

  @Test("histogram percentiles are within 1% of the exact values")
  func histogram() {
    // A skewed distribution: 1 µs to ~200 ms, denser at the low end, in a fixed shuffled order.
    var values: [UInt64] = []
    var state: UInt64 = 0x9E37_79B9_7F4A_7C15
    for _ in 0..<200_000 {
      state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
      let unit = Double(state >> 11) / Double(1 << 53)
      values.append(UInt64(1_000 * pow(200_000, unit * unit)))
    }
    var whole = LatencyHistogram()
    var halves = (LatencyHistogram(), LatencyHistogram())
    for (index, value) in values.enumerated() {
      whole.record(nanoseconds: value)
      if index % 2 == 0 { halves.0.record(nanoseconds: value) } else { halves.1.record(nanoseconds: value) }
    }
    var merged = halves.0
    merged.merge(halves.1)
    let sorted = values.sorted()
    #expect(whole.count == values.count)
    #expect(merged.count == values.count)
    #expect(whole.max == sorted.last)
    #expect(whole.min == sorted.first)
    for percent in [1.0, 10, 25, 50, 75, 90, 99, 99.9, 99.99] {
      let rank = max(1, Int((percent / 100 * Double(sorted.count)).rounded(.up)))
      let exact = Double(sorted[rank - 1])
      let got = Double(whole.percentile(percent))
      #expect(abs(got - exact) <= exact * 0.01, "p\(percent): \(got) vs exact \(exact)")
      #expect(merged.percentile(percent) == whole.percentile(percent))
    }
    #expect(whole.percentile(100) == sorted.last)
  }

  @Test("histogram: small values are exact, and an empty histogram reports 0")
  func histogramEdges() {
    var histogram = LatencyHistogram()
    #expect(histogram.percentile(50) == 0)
    #expect(histogram.count == 0)
    for value: UInt64 in 1...100 { histogram.record(nanoseconds: value) }
    #expect(histogram.percentile(50) == 50)
    #expect(histogram.percentile(99) == 99)
    #expect(histogram.max == 100)
    histogram.record(nanoseconds: .max)
    #expect(histogram.max == .max)
    #expect(histogram.percentile(100) == .max)
  }
}

/// Counts calls a test server took.
private final class CallCounter: Sendable {
  private let count = Locked<Int>(0)
  func add() { count.withLock { $0 += 1 } }
  var value: Int { count.withLock { $0 } }
}
