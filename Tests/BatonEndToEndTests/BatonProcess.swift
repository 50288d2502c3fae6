import Foundation
import Glibc
import Testing

/// A real `baton` process (the executable this package builds), for tests that need signals.
final class BatonProcess: @unchecked Sendable {
  let process = Process()
  let port: Int
  /// The health endpoint's port, when started with `--health-port`.
  let healthPort: Int?
  private let stderrPipe = Pipe()

  /// The `baton` binary built next to the test bundle (`swift build --build-tests` builds it).
  static var executable: URL {
    get throws {
      let beside = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
      for directory in [beside, beside.deletingLastPathComponent()] {
        let candidate = directory.appendingPathComponent("baton")
        if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
      }
      let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
      let fallback = root.appendingPathComponent(".build/debug/baton")
      guard FileManager.default.isExecutableFile(atPath: fallback.path) else {
        throw BatonProcessError.notBuilt
      }
      return fallback
    }
  }

  /// Starts `baton serve --quiet` with `arguments` and waits for its `listening` line (and,
  /// with `--health-port`, its `health` line). In `namespace` (a network namespace), it runs
  /// through `ip netns exec`, which becomes the same process.
  convenience init(serve arguments: [String] = [], namespace: String? = nil) async throws {
    let command = ["serve"] + (arguments.contains("--port") ? [] : ["--port", "0"]) + ["--quiet"] + arguments
    try await self.init(
      launching: command, wantsHealth: arguments.contains("--health-port"), namespace: namespace)
  }

  /// Starts `baton ARGUMENTS...` (a command that prints `listening HOST:PORT`, such as `serve`
  /// or `proxy`) and waits for that line; in `namespace`, through `ip netns exec`.
  init(launching arguments: [String], wantsHealth: Bool = false, namespace: String? = nil) async throws {
    let stdoutPipe = Pipe()
    if let namespace {
      process.executableURL = URL(fileURLWithPath: NetworkNamespace.ip)
      process.arguments = ["netns", "exec", namespace, try Self.executable.path] + arguments
    } else {
      process.executableURL = try Self.executable
      process.arguments = arguments
    }
    process.standardOutput = stdoutPipe
    process.standardError = stderrPipe
    try process.run()
    let handle = stdoutPipe.fileHandleForReading
    (port, healthPort) = try await withCheckedThrowingContinuation { continuation in
      Thread {
        var text = ""
        func port(after prefix: String) -> Int? {
          // Whole lines only: a read may end in the middle of one.
          text.split(separator: "\n", omittingEmptySubsequences: false).dropLast().first { $0.hasPrefix(prefix) }
            .flatMap { Int($0.split(separator: ":").last ?? "") }
        }
        while true {
          let data = handle.availableData
          if data.isEmpty { return continuation.resume(throwing: BatonProcessError.noListeningLine(text)) }
          text += String(decoding: data, as: UTF8.self)
          if let listening = port(after: "listening ") {
            if !wantsHealth { return continuation.resume(returning: (listening, nil)) }
            if let health = port(after: "health ") { return continuation.resume(returning: (listening, health)) }
          }
        }
      }.start()
    }
  }

  /// The server's `/drainz` document (needs `--health-port`): its `phase` and its `open_streams`
  /// (calls in their handlers), or nil if the probe got no answer.
  func drainz() async -> (phase: String, openStreams: Int)? {
    guard let healthPort else { return nil }
    let answer = await httpGet(port: healthPort, "/drainz")
    guard answer.status == 200,
      let object = try? JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any],
      let phase = object["phase"] as? String, let open = object["open_streams"] as? Int
    else { return nil }
    return (phase, open)
  }

  func signal(_ number: Int32) { kill(process.processIdentifier, number) }

  /// Stops the process with SIGSTOP and returns once the kernel reports it stopped: a signal is
  /// delivered asynchronously, and a process still running could answer a call sent just after.
  func freeze() async throws {
    signal(SIGSTOP)
    let stat = "/proc/\(process.processIdentifier)/stat"
    try await eventually("process \(process.processIdentifier) is stopped") {
      // The state is the field after the command name in parentheses: "T" once stopped.
      guard let text = try? String(contentsOfFile: stat, encoding: .utf8), let close = text.lastIndex(of: ")") else {
        return false
      }
      return text[close...].dropFirst().trimmingCharacters(in: .whitespaces).hasPrefix("T")
    }
  }

  /// Everything the process wrote to standard error, once it has exited.
  func standardError() -> String {
    String(decoding: stderrPipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
  }

  /// Waits for the process to exit and returns its status (or nil if it is still running after
  /// `timeout`, in which case it is killed).
  func exitStatus(timeout: Duration) async -> Int32? {
    let process = self.process
    return await withCheckedContinuation { continuation in
      Thread {
        let deadline = Date().addingTimeInterval(
          Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning {
          kill(process.processIdentifier, SIGKILL)
          process.waitUntilExit()
          return continuation.resume(returning: nil)
        }
        continuation.resume(returning: process.terminationStatus)
      }.start()
    }
  }

  deinit {
    if process.isRunning { kill(process.processIdentifier, SIGKILL) }
  }
}

enum BatonProcessError: Error {
  case notBuilt
  case noListeningLine(String)
}
