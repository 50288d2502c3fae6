// grpc-echo: the grpc-swift-2 side of Baton's benchmarks. Same loads, same output lines as
// `baton bench server|unary|stream`, so that Benchmarks/run.sh drives both the same way.
//
//   grpc-echo server [--port P] [--lifetime S]
//   grpc-echo unary --port P [--concurrency C] [--seconds S] [--warmup W] [--size B]
//   grpc-echo stream --port P [--seconds S] [--warmup W] [--size B]
//
// grpc-swift-2 2.4.3 on its HTTP/2 NIO posix transport, default settings, plaintext.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

let usage = """
  usage: grpc-echo server [--port P] [--lifetime S]
         grpc-echo unary --port P [--concurrency C] [--seconds S] [--warmup W] [--size B]
         grpc-echo stream --port P [--seconds S] [--warmup W] [--size B]
  """

let arguments = CommandLine.arguments.dropFirst()
do {
  switch arguments.first {
  case "server":
    let options = try Options(arguments.dropFirst(), allowed: ["--port", "--lifetime"])
    try await serve(port: try options.int("--port", 0), lifetime: try options.seconds("--lifetime", 600))
  case "unary":
    let options = try Options(
      arguments.dropFirst(), allowed: ["--port", "--concurrency", "--seconds", "--warmup", "--size"])
    let failed = try await benchUnary(
      port: try options.int("--port", nil), concurrency: max(1, try options.int("--concurrency", 1)),
      seconds: try options.seconds("--seconds", 5), warmup: try options.seconds("--warmup", 1),
      size: try options.int("--size", 64))
    exit(failed ? 1 : 0)
  case "stream":
    let options = try Options(arguments.dropFirst(), allowed: ["--port", "--seconds", "--warmup", "--size"])
    let failed = try await benchStream(
      port: try options.int("--port", nil), seconds: try options.seconds("--seconds", 5),
      warmup: try options.seconds("--warmup", 1), size: try options.int("--size", 64))
    exit(failed ? 1 : 0)
  default:
    emit(usage)
    exit(arguments.first == "--help" ? 0 : 2)
  }
} catch let error as UsageError {
  emit("error: \(error)\n\(usage)")
  exit(2)
} catch {
  emit("error: \(error)")
  exit(1)
}
