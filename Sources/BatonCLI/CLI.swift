import BatonCore
import BatonPosix
import BatonServer
import Dispatch

/// The `baton` command: `serve`, `call`, `load`, `demo`, `proxy` and `bench`.
///
/// A library so that tests can run commands in-process with ``main(_:output:)`` and read what
/// they print; the `baton` executable only calls ``main(_:)`` and exits with its status.
public enum CLI {
  /// Runs the command line `arguments` (the first element is the program name) and returns the
  /// exit status: 0 success, 1 the work failed, 2 the command line was wrong; `serve` also
  /// returns 3 when its stop had to cut streams. `baton --version` prints ``BatonVersion/current``.
  public static func main(_ arguments: [String]) async -> Int32 {
    await main(arguments, output: .standard)
  }

  /// Like ``main(_:)``, writing to `output` instead of standard output and error.
  public static func main(_ arguments: [String], output: Output) async -> Int32 {
    let words = arguments.dropFirst()
    guard let name = words.first else {
      return usageError("baton", "missing command", output)
    }
    if name == "--help" || name == "-h" || name == "help" {
      output.line(help)
      return 0
    }
    if name == "--version" || name == "version" {
      output.line(BatonVersion.line)
      return 0
    }
    if name == "bench" {
      return await bench(words.dropFirst(), output)
    }
    guard let command = commands.first(where: { $0.spec.path == "baton \(name)" }) else {
      return usageError("baton", "unknown command '\(name)'", output)
    }
    return await run(command, words.dropFirst(), output)
  }

  /// What the `baton` executable runs: holds SIGTERM and SIGINT from the process's first instant
  /// (see ``StopSignals``), so that `serve` and `bench server` stop gracefully even when a signal
  /// comes during start-up (every other command releases them at once), then runs
  /// ``main(_:)`` and returns its status.
  ///
  /// Synchronous on purpose: the main thread waits here with the signals blocked. An async
  /// top-level `main` would park the main thread in Dispatch's `dispatch_main`, which waits
  /// with every signal unblocked, so an early SIGTERM would still kill the process.
  public static func runFromMain(_ arguments: [String]) -> Int32 {
    StopSignals.hold()
    let words = arguments.dropFirst()
    let path = (["baton"] + words.prefix(words.first == "bench" ? 2 : 1)).joined(separator: " ")
    if !serving.contains(path) { StopSignals.release() }
    let status = Locked<Int32>(1)
    let done = DispatchSemaphore(value: 0)
    Task {
      let result = await main(arguments)
      status.withLock { $0 = result }
      done.signal()
    }
    done.wait()
    return status.withLock { $0 }
  }

  /// The commands that take the stop signals themselves (their server handles them).
  static let serving: Set<String> = ["baton serve", "baton bench server", "baton proxy"]

  /// One runnable command: how it parses, and what it does.
  struct Command: Sendable {
    var spec: CommandSpec
    var run: @Sendable (Arguments, Output) async throws -> Int32
  }

  static let commands: [Command] = [
    Command(spec: ServeCommand.spec, run: ServeCommand.run),
    Command(spec: CallCommand.spec, run: CallCommand.run),
    Command(spec: LoadCommand.spec, run: LoadCommand.run),
    Command(spec: DemoCommand.spec, run: DemoCommand.run),
    Command(spec: ProxyCommand.spec, run: ProxyCommand.run),
  ]

  static let benchCommands: [Command] = [
    Command(spec: BenchServerCommand.spec, run: BenchServerCommand.run),
    Command(spec: BenchUnaryCommand.spec, run: BenchUnaryCommand.run),
    Command(spec: BenchStreamCommand.spec, run: BenchStreamCommand.run),
    Command(spec: BenchConnectionsCommand.spec, run: BenchConnectionsCommand.run),
    Command(spec: BenchRestartCommand.spec, run: BenchRestartCommand.run),
  ]

  static var help: String {
    """
    usage: baton COMMAND [OPTIONS]

    Baton's command-line tool: a demo server, a client, load generators, a fault-injecting
    proxy and benchmarks.

    commands:
    \(list(commands))
      bench       benchmarks (baton bench --help)

    options:
      --help      this text (also 'baton COMMAND --help' for a command's options)
      --version   the version of baton (\(BatonVersion.current))

    exit status:
      0  success
      1  the work failed (a call failed, a server could not listen)
      2  bad command line
      3  serve only: it stopped, but its drain deadline cut calls that were still running
    """
  }

  static var benchHelp: String {
    """
    usage: baton bench SCENARIO [OPTIONS]

    Benchmarks that print one 'RESULT ...' line on standard output. Each bounds its own run time.

    scenarios:
    \(list(benchCommands))

    Run 'baton bench SCENARIO --help' for a scenario's options.
    """
  }

  private static func list(_ commands: [Command]) -> String {
    commands.map { command in
      let name = String(command.spec.path.split(separator: " ").last ?? "")
      return "  " + name.padding(to: 13) + command.spec.summary
    }.joined(separator: "\n")
  }

  private static func bench(_ words: ArraySlice<String>, _ output: Output) async -> Int32 {
    guard let name = words.first else {
      return usageError("baton bench", "missing scenario", output)
    }
    if name == "--help" || name == "-h" {
      output.line(benchHelp)
      return 0
    }
    guard let command = benchCommands.first(where: { $0.spec.path == "baton bench \(name)" }) else {
      return usageError("baton bench", "unknown scenario '\(name)'", output)
    }
    return await run(command, words.dropFirst(), output)
  }

  private static func run(_ command: Command, _ words: ArraySlice<String>, _ output: Output) async -> Int32 {
    do {
      switch try Arguments.parse(words, command.spec) {
      case .help:
        output.line(command.spec.help)
        return 0
      case .run(let arguments):
        return try await command.run(arguments, output)
      }
    } catch let error as UsageError {
      return usageError(command.spec.path, error.message, output)
    } catch {
      output.error("error: \(error)")
      return 1
    }
  }

  private static func usageError(_ path: String, _ message: String, _ output: Output) -> Int32 {
    output.error("\(path): \(message)")
    output.error("Run '\(path) --help' for usage.")
    return 2
  }
}

extension String {
  /// Followed by spaces up to `width` characters.
  func padding(to width: Int) -> String { self + String(repeating: " ", count: max(0, width - count)) }

  /// Preceded by spaces up to `width` characters.
  func leftPadded(to width: Int) -> String { String(repeating: " ", count: max(0, width - count)) + self }
}
