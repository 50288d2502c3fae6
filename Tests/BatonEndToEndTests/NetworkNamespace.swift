import Foundation
import Glibc

/// A network namespace for tests that need real addresses: each server its own address, a name
/// with several addresses (through the namespace's own `/etc/netns/NAME/hosts`), and links that
/// can be taken down to partition a server without stopping it. Needs root and iproute2; the
/// tests that use it are skipped where either is missing.
final class NetworkNamespace: @unchecked Sendable {
  static let ip =
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].first {
      FileManager.default.isExecutableFile(atPath: $0)
    } ?? "/usr/sbin/ip"

  /// Root, iproute2, and the kernel lets us make a namespace (checked once, by making one).
  static let isAvailable: Bool = {
    guard geteuid() == 0, FileManager.default.isExecutableFile(atPath: ip) else { return false }
    let probe = "baton-probe-\(getpid())"
    guard (try? run(["netns", "add", probe])) != nil else { return false }
    _ = try? run(["netns", "del", probe])
    return true
  }()

  let name: String
  private var links: [String] = []

  /// A new namespace with its loopback up.
  init(tag: String) throws {
    name = "baton-\(tag)-\(getpid())"
    _ = try? Self.run(["netns", "del", name])  // a leftover of a killed run
    try Self.run(["netns", "add", name])
    try run(["link", "set", "lo", "up"])
  }

  /// Runs `ip ARGS` inside the namespace.
  func run(_ arguments: [String]) throws {
    try Self.run(["-n", name] + arguments)
  }

  /// Gives the namespace's loopback one more address.
  func addLoopbackAddress(_ address: String) throws {
    try run(["addr", "add", "\(address)/32", "dev", "lo"])
  }

  /// The namespace's `/etc/hosts` (what `ip netns exec` shows its processes).
  func setHosts(_ lines: [String]) throws {
    let directory = "/etc/netns/\(name)"
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    try (["127.0.0.1 localhost"] + lines).joined(separator: "\n").appending("\n")
      .write(toFile: "\(directory)/hosts", atomically: true, encoding: .utf8)
  }

  /// A veth pair between this process's namespace (`outside`, address `.1`) and this one
  /// (`.2`) on a /30 of `prefix` ("10.214.7" gives 10.214.7.1 and 10.214.7.2). Returns the
  /// outside link's name, which ``setLink(_:up:)`` takes down and up.
  func connect(prefix: String) throws -> String {
    let outside = "bt\(getpid() % 100_000)\(links.count)o"
    let inside = "bt\(getpid() % 100_000)\(links.count)i"
    _ = try? Self.run(["link", "del", outside])
    try Self.run(["link", "add", outside, "type", "veth", "peer", "name", inside])
    links.append(outside)
    try Self.run(["link", "set", inside, "netns", name])
    try Self.run(["addr", "add", "\(prefix).1/30", "dev", outside])
    try Self.run(["link", "set", outside, "up"])
    try run(["addr", "add", "\(prefix).2/30", "dev", inside])
    try run(["link", "set", inside, "up"])
    return outside
  }

  /// Takes a link of this process's namespace down (a silent partition) or up again.
  func setLink(_ link: String, up: Bool) throws {
    try Self.run(["link", "set", link, up ? "up" : "down"])
  }

  deinit {
    for link in links { _ = try? Self.run(["link", "del", link]) }
    _ = try? Self.run(["netns", "del", name])
    try? FileManager.default.removeItem(atPath: "/etc/netns/\(name)")
  }

  struct Failure: Error, CustomStringConvertible {
    var description: String
  }

  /// Runs `ip` and returns its standard output; throws with its standard error if it fails.
  @discardableResult
  static func run(_ arguments: [String], executable: String = ip) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let output = Pipe()
    let errors = Pipe()
    process.standardOutput = output
    process.standardError = errors
    try process.run()
    let out = output.fileHandleForReading.readDataToEndOfFile()
    let err = errors.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
      throw Failure(
        description:
          "\(executable) \(arguments.joined(separator: " ")) exited \(process.terminationStatus): "
          + String(decoding: err, as: UTF8.self))
    }
    return String(decoding: out, as: UTF8.self)
  }
}
