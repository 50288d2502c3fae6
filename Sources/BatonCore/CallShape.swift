/// The four shapes of a call (PROTOCOL.md 7.2): how many messages go each way.
///
/// Interceptors on both sides are told the shape, so that one interceptor can serve every
/// method and still know whether a request or response stream has one message or many.
public enum CallShape: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
  /// One request, one response.
  case unary
  /// One request, any number of responses.
  case serverStreaming
  /// Any number of requests, one response.
  case clientStreaming
  /// Any number each way, independently.
  case bidirectional

  /// The shape's name as in Swift, e.g. `serverStreaming`.
  public var description: String { rawValue }
}
