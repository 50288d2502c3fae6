import Glibc

/// `getaddrinfo` could not resolve a name: the `EAI_*` code and what was asked.
package struct ResolutionError: Error, Sendable, Hashable, CustomStringConvertible {
  /// The `EAI_*` code, e.g. `EAI_NONAME`.
  package let code: Int32
  package let host: String
  package let port: Int

  package init(code: Int32, host: String, port: Int) {
    self.code = code
    self.host = host
    self.port = port
  }

  /// For example `"getaddrinfo(nowhere.invalid:80): Name or service not known"`.
  package var description: String {
    let message = gai_strerror(self.code).map { String(cString: $0) } ?? "Unknown error"
    return "getaddrinfo(\(self.host):\(self.port)): \(message)"
  }
}
