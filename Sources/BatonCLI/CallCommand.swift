import BatonClient
import BatonCore

/// `baton call`: one unary call, the reply on standard output.
enum CallCommand {
  static let spec = CommandSpec(
    path: "baton call",
    summary: "make one unary call and print the reply",
    help: """
      usage: baton call HOST:PORT METHOD [--data TEXT] [--timeout SECONDS] [--metadata k=v]...

      Sends TEXT (default empty) to METHOD (e.g. demo.Echo/Unary) and prints the reply as UTF-8
      text on standard output. On failure prints 'error: CODE: message' on standard error.

      options:
        --data TEXT          the request message (default empty)
        --timeout SECONDS    deadline for the call, connecting included (default 10)
        --metadata k=v       call metadata; repeat for more pairs
        --help               this text

      exit status: 0 the call succeeded, 1 it failed, 2 bad command line.
      """,
    valued: ["--data", "--timeout", "--metadata"],
    repeatable: ["--metadata"],
    positionals: ["HOST:PORT", "METHOD"]
  )

  static func run(_ arguments: Arguments, _ output: Output) async throws -> Int32 {
    let endpoint = try Arguments.endpoint(arguments.positionals[0], for: "the address")
    let method = arguments.positionals[1]
    let timeout = try arguments.seconds("--timeout", default: 10, in: 0.001...86_400)
    var metadata = Metadata()
    for pair in arguments.strings("--metadata") {
      guard let equals = pair.firstIndex(of: "=") else {
        throw UsageError("--metadata needs k=v, not '\(pair)'")
      }
      let name = String(pair[..<equals]).lowercased()
      guard Metadata.isValidName(Array(name.utf8)) else {
        throw UsageError("metadata name '\(name)' may only have a-z, 0-9, '-', '_' and '.'")
      }
      metadata.add(name, String(pair[pair.index(after: equals)...]))
    }
    let request = Array((arguments.string("--data") ?? "").utf8)
    let options = CallOptions(timeout: .seconds(timeout), metadata: metadata)
    do {
      let reply = try await withClient(endpoints: [endpoint]) { client in
        try await client.unary(method, request, options: options)
      }
      output.line(String(decoding: reply, as: UTF8.self))
      return 0
    } catch let error as RPCError {
      output.error("error: \(error.code): \(error.message)")
      return 1
    } catch {
      output.error("error: unknown: \(error)")
      return 1
    }
  }
}
