/// The one error type a Baton call throws.
///
/// `code` follows gRPC's numbering, so people who know gRPC know what each means. Codes that mean
/// "this call was not processed, try another endpoint" are documented on each code; Baton's client
/// already retries those transparently when it can prove it is safe.
public struct RPCError: Error, Sendable, Hashable, CustomStringConvertible {
  /// What went wrong, in gRPC's numbering: decides whether to retry, report or give up.
  public var code: Code
  /// Words a person can act on.
  public var message: String
  /// Trailing metadata the server sent with the error, if any.
  public var metadata: Metadata
  /// The error underneath, when this one stands for another (a socket error behind
  /// `unavailable`, a decoding error behind `invalidArgument`): for logs, and for a caller that
  /// wants to look inside instead of parsing ``message``. Local only: never sent on the wire,
  /// and not part of equality or hashing.
  public var cause: (any Error)?

  /// An error to throw from a handler (it becomes the call's status) or to report to a caller.
  public init(code: Code, message: String, metadata: Metadata = [:]) {
    self.code = code
    self.message = message
    self.metadata = metadata
    self.cause = nil
  }

  /// An error that stands for `cause` (kept in ``cause``).
  public init(code: Code, message: String, metadata: Metadata = [:], cause: any Error) {
    self.code = code
    self.message = message
    self.metadata = metadata
    self.cause = cause
  }

  /// Code, message and metadata are equal (``cause`` is not compared).
  public static func == (a: RPCError, b: RPCError) -> Bool {
    a.code == b.code && a.message == b.message && a.metadata == b.metadata
  }

  /// Hashes code, message and metadata (not ``cause``).
  public func hash(into hasher: inout Hasher) {
    hasher.combine(code)
    hasher.combine(message)
    hasher.combine(metadata)
  }

  /// `code: message`, for logs.
  public var description: String { "\(code): \(message)" }

  /// A status code other than OK. A struct over a raw value so that codes can be added later.
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    /// gRPC's number for this code (1 ... 16).
    public let rawValue: UInt8

    private init(_ rawValue: UInt8) { self.rawValue = rawValue }

    /// The code for a wire status, `nil` for 0 (OK); unknown numbers become ``unknown``.
    public init?(wireStatus: UInt8) {
      guard wireStatus != 0 else { return nil }
      self.init(wireStatus <= 16 ? wireStatus : 2)
    }

    /// The caller (or its Task) cancelled the call.
    public static let cancelled = Code(1)
    /// An error with no better code, or a status this version does not know.
    public static let unknown = Code(2)
    /// The request is invalid whatever the server's state (including reserved `baton-` metadata).
    public static let invalidArgument = Code(3)
    /// The call's deadline passed before it finished.
    public static let deadlineExceeded = Code(4)
    /// A requested entity does not exist.
    public static let notFound = Code(5)
    /// The entity to create already exists.
    public static let alreadyExists = Code(6)
    /// The caller may not do this.
    public static let permissionDenied = Code(7)
    /// A limit was crossed (message, metadata or queue size).
    public static let resourceExhausted = Code(8)
    /// The system is not in the state the call requires.
    public static let failedPrecondition = Code(9)
    /// Aborted, typically by a concurrency conflict.
    public static let aborted = Code(10)
    /// An argument is past the valid range.
    public static let outOfRange = Code(11)
    /// The server has no such method.
    public static let unimplemented = Code(12)
    /// An internal error, including a broken protocol or call-shape rule.
    public static let `internal` = Code(13)
    /// The service could not be reached or went away. The message says whether the call may have
    /// been processed; Baton retries on its own every call that provably was not.
    public static let unavailable = Code(14)
    /// Unrecoverable data loss or corruption.
    public static let dataLoss = Code(15)
    /// Missing or invalid credentials.
    public static let unauthenticated = Code(16)

    static let names = [
      "ok", "cancelled", "unknown", "invalidArgument", "deadlineExceeded", "notFound",
      "alreadyExists", "permissionDenied", "resourceExhausted", "failedPrecondition", "aborted",
      "outOfRange", "unimplemented", "internal", "unavailable", "dataLoss", "unauthenticated",
    ]

    /// The code's name as in Swift, e.g. `unavailable`.
    public var description: String { Self.names[Int(rawValue)] }
  }
}

extension Trailers {
  /// The error these trailers report, or `nil` for OK.
  public var error: RPCError? {
    guard let code = RPCError.Code(wireStatus: status) else { return nil }
    return RPCError(code: code, message: message, metadata: metadata)
  }

  public init(_ error: RPCError) {
    self.init(status: error.code.rawValue, message: error.message, metadata: error.metadata)
  }

  public static let ok = Trailers(status: 0)
}
