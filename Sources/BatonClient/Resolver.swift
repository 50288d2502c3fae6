import BatonCore
import BatonPosix
import Dispatch

/// Where a client's calls may go: the seam between Baton and whatever knows the addresses (DNS,
/// a service registry, a file).
///
/// The client asks at start, every ``Client/Configuration/resolveInterval``, and at once when a
/// connection is lost or receives GOAWAY (at most once a second). Each address it returns gets
/// its own connection; an address that disappears from the answer is drained (its running calls
/// finish, no new ones go there), and a new one is connected. An error, or an empty answer,
/// keeps the addresses of the last good answer; if there never was one, calls fail with
/// `unavailable` and the error.
///
/// To feed the client from your own discovery, return its current view:
///
/// ```swift
/// struct Registry: Resolver {
///   let service: String
///   func resolve() async throws -> [Endpoint] { try await myRegistry.instances(of: service) }
/// }
/// let client = Client(resolver: Registry(service: "greeter"))
/// ```
public protocol Resolver: Sendable {
  /// The addresses calls may go to now.
  func resolve() async throws -> [Endpoint]
}

/// Every A and AAAA record of each name is its own endpoint: a Kubernetes headless Service (one
/// record per ready pod) gets a connection per pod, and calls spread over all of them. Numeric
/// addresses stand for themselves. This is what ``Client/init(endpoints:configuration:)`` uses.
///
/// A name that does not resolve is left out while others do; if none does, ``resolve()`` throws
/// `unavailable` with the resolver's reasons.
public struct DNSResolver: Resolver {
  /// The names (or addresses) and ports to resolve.
  public let targets: [Endpoint]

  /// A resolver for these names.
  public init(_ targets: [Endpoint]) { self.targets = targets }

  public func resolve() async throws -> [Endpoint] {
    // getaddrinfo blocks: it runs on a thread of its own, never on an event loop or the
    // cooperative pool.
    if let numeric = Self.numeric(targets) { return numeric }
    let targets = targets
    return try await withCheckedThrowingContinuation { continuation in
      DispatchQueue.global().async { continuation.resume(with: Result { try Self.lookUp(targets) }) }
    }
  }

  /// The targets themselves when each is a numeric address: no lookup, no thread.
  static func numeric(_ targets: [Endpoint]) -> [Endpoint]? {
    guard targets.allSatisfy({ SocketAddress.isNumeric(host: $0.host) }) else { return nil }
    var unique: [Endpoint] = []
    for target in targets {
      let endpoint = Endpoint(host: target.host.trimmingBrackets, port: target.port)
      if !unique.contains(endpoint) { unique.append(endpoint) }
    }
    return unique
  }

  private static func lookUp(_ targets: [Endpoint]) throws -> [Endpoint] {
    var found: [Endpoint] = []
    var failures: [String] = []
    for target in targets {
      do {
        for address in try SocketAddress.resolve(host: target.host, port: target.port) {
          let endpoint = Endpoint(host: address.host, port: address.port)
          if !found.contains(endpoint) { found.append(endpoint) }
        }
      } catch {
        failures.append("\(target): \(error)")
      }
    }
    if found.isEmpty {
      throw RPCError(code: .unavailable, message: "no address resolved (\(failures.joined(separator: "; ")))")
    }
    return found
  }
}

/// A fixed list, used as given: one connection per entry, a name resolved when connecting (the
/// first of its addresses that accepts). For a single virtual address behind a load balancer.
public struct StaticResolver: Resolver {
  /// The endpoints, as given.
  public let endpoints: [Endpoint]

  /// A resolver that always answers `endpoints`.
  public init(_ endpoints: [Endpoint]) { self.endpoints = endpoints }

  public func resolve() async throws -> [Endpoint] { endpoints }
}

extension String {
  fileprivate var trimmingBrackets: String {
    hasPrefix("[") && hasSuffix("]") ? String(dropFirst().dropLast()) : self
  }
}
