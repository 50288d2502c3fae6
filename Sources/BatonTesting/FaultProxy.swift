import BatonCore
import BatonPosix
public import BatonServer
import Foundation
import Glibc

/// A TCP proxy that understands Baton frames and injects the faults of a ``FaultPlan`` between
/// any client and any server: GOAWAYs, RESETs, cut connections, stalls, withheld PING ACKs,
/// delayed or dripped frames. With no plan it copies every byte unchanged.
///
/// It stays protocol-correct: a GOAWAY or RESET REFUSED_STREAM it sends the client claims the
/// server did not process some streams, so it makes that true, by never forwarding those
/// streams' frames (see ``FaultPlan/Action``). A client that retries them transparently is
/// therefore provably safe, which is what a test of that client wants to show.
///
/// Every injection is logged through the ``Logger`` seam and recorded in ``trace``; tests await
/// them with ``injections(atLeast:)`` rather than sleeping.
///
/// Blocking sockets, two threads per connection: a test tool, built to be simple and exact
/// rather than to carry load. Memory per direction is bounded by one frame (at most 16 MiB, the
/// largest a frame header can announce) plus one 64 KiB read.
public final class FaultProxy: Sendable {
  /// The plan applied to the connections this proxy accepts.
  public let plan: FaultPlan
  private let logger: Logger
  private let gate = Gate()
  private let state: Locked<State>

  private struct State {
    var host: String
    var port: Int
    var upstream: Endpoint
    var listener: Int32 = -1
    var acceptDone: DispatchSemaphore?
    var connections: [Int: ProxyConnection] = [:]
    var accepted = 0
    var refusing = false
    var trace: [Injection] = []
    /// Injections beyond ``FaultProxy/traceLimit``: logged, not kept.
    var untraced = 0
    var waiters: [(count: Int, continuation: CheckedContinuation<[Injection], Never>)] = []
  }

  /// Listens on `host:port` (0: a free port) and forwards each connection to `upstream`.
  /// - Throws: ``RPCError`` `unavailable` if the address cannot be bound.
  public init(
    upstream: Endpoint, plan: FaultPlan = .none, host: String = "127.0.0.1", port: Int = 0,
    logger: Logger = .disabled
  ) throws {
    self.plan = plan
    self.logger = logger
    self.state = Locked(State(host: host, port: port, upstream: upstream))
    try listen()
  }

  /// Where clients connect.
  public var endpoint: Endpoint { state.withLock { Endpoint(host: $0.host, port: $0.port) } }

  /// Where connections are forwarded; a new value applies to connections accepted afterwards.
  public var upstream: Endpoint {
    get { state.withLock { $0.upstream } }
    set { state.withLock { $0.upstream = newValue } }
  }

  /// While true, every new connection is reset as soon as it is accepted, so a client sees its
  /// connect fail as if nothing listened there, while the port stays the proxy's (a cluster
  /// member that is down keeps its port for its restart, which no other socket can take).
  public var refusesConnections: Bool {
    get { state.withLock { $0.refusing } }
    set { state.withLock { $0.refusing = newValue } }
  }

  /// How many connections the proxy has accepted.
  public var connectionsAccepted: Int { state.withLock { $0.accepted } }

  /// How many injections ``trace`` keeps: a plan that delays every frame of a long-running
  /// `baton proxy` must not grow its memory without bound. Later ones are still logged.
  public static let traceLimit = 100_000

  /// Injections logged but not kept in ``trace``, past ``traceLimit``.
  public var untracedInjections: Int { state.withLock { $0.untraced } }

  /// Everything injected so far, in ``Injection``'s order (fault, connection, side, frame).
  public var trace: [Injection] { state.withLock { $0.trace }.sorted() }

  /// Waits until at least `count` injections have happened, and returns the trace then.
  public func injections(atLeast count: Int) async -> [Injection] {
    let trace = await withCheckedContinuation { (continuation: CheckedContinuation<[Injection], Never>) in
      let now: [Injection]? = state.withLock { s in
        if s.trace.count >= count { return s.trace }
        s.waiters.append((count, continuation))
        return nil
      }
      if let now { continuation.resume(returning: now) }
    }
    return trace.sorted()
  }

  /// Stops reading and forwarding on every connection, as a process that stopped (SIGSTOP)
  /// would: bytes pile up in the kernel's buffers, new connections are accepted by the kernel
  /// but not served. ``thaw()`` resumes.
  public func freeze() { gate.setFrozen(true) }

  /// Resumes after ``freeze()``.
  public func thaw() { gate.setFrozen(false) }

  /// Closes every connection at once, both sides, with no GOAWAY: what the peers see when the
  /// process between them dies.
  public func cutConnections() {
    let connections = state.withLock { Array($0.connections.values) }
    for connection in connections { connection.cut() }
  }

  /// Closes the listening socket (connects are then refused) and waits until nothing accepts.
  /// Open connections are left alone. ``listen()`` binds the same port again.
  public func stopListening() {
    let (fd, done) = state.withLock { s -> (Int32, DispatchSemaphore?) in
      defer {
        s.listener = -1
        s.acceptDone = nil
      }
      return (s.listener, s.acceptDone)
    }
    guard fd >= 0 else { return }
    // Wakes the blocked accept(2) with EINVAL; the accepting thread closes the socket.
    Glibc.shutdown(fd, Int32(SHUT_RDWR))
    done?.wait()
  }

  /// Listens again on the proxy's port (after ``stopListening()``); nothing if it listens.
  /// - Throws: ``RPCError`` `unavailable` if the port cannot be bound.
  public func listen() throws {
    let (host, port, listening) = state.withLock { ($0.host, $0.port, $0.listener >= 0) }
    guard !listening else { return }
    let fd: Int32
    let bound: SocketAddress
    do {
      guard let address = try SocketAddress.resolve(host: host, port: port).first else {
        throw RPCError(code: .unavailable, message: "\(host) resolves to no address")
      }
      fd = try Socket.listen(on: address, backlog: 128)
      bound = try Socket.localAddress(fd)
    } catch {
      throw RPCError(code: .unavailable, message: "proxy could not listen on \(host):\(port): \(error)")
    }
    setBlocking(fd)
    let done = DispatchSemaphore(value: 0)
    state.withLock { s in
      s.listener = fd
      s.port = bound.port
      s.host = bound.host
      s.acceptDone = done
    }
    Thread { [weak self] in
      self?.acceptLoop(fd)
      Glibc.close(fd)
      done.signal()
    }.start()
  }

  /// Stops listening and closes every connection. Call it when done: the accepting thread keeps
  /// the proxy alive until then.
  public func close() {
    stopListening()
    cutConnections()
  }

  // MARK: - Internals

  private func acceptLoop(_ listener: Int32) {
    while true {
      let fd = Glibc.accept(listener, nil, nil)
      if fd < 0 {
        if errno == EINTR || errno == ECONNABORTED { continue }
        return
      }
      _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
      let (number, upstream, refusing) = state.withLock { s -> (Int, Endpoint, Bool) in
        s.accepted += 1
        return (s.accepted, s.upstream, s.refusing)
      }
      if refusing {
        // A zero linger turns close(2) into a RST: the client's connect fails at once.
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        Glibc.close(fd)
        continue
      }
      guard let server = connectBlocking(to: upstream) else {
        logger.warning("proxy upstream unreachable", ("upstream", upstream.description))
        Glibc.close(fd)
        continue
      }
      try? Socket.setNoDelay(fd)
      let connection = ProxyConnection(
        number: number, client: fd, server: server, engine: FaultEngine(plan: plan, connection: number), proxy: self)
      state.withLock { $0.connections[number] = connection }
      connection.start()
    }
  }

  fileprivate var connectionGate: Gate { gate }

  fileprivate func ended(_ number: Int) {
    _ = state.withLock { $0.connections.removeValue(forKey: number) }
    gate.forget(number)
  }

  fileprivate func record(_ injections: [Injection]) {
    guard !injections.isEmpty else { return }
    for injection in injections {
      logger.info(
        "fault injected", ("fault", "\(injection.fault)"), ("connection", "\(injection.connection)"),
        ("side", injection.side.rawValue), ("frame", "\(injection.frame)"), ("stream", "\(injection.stream)"),
        ("message", injection.message.map { "\($0)" } ?? "-"), ("action", "\"\(injection.action)\""))
    }
    let ready = state.withLock { s -> [(CheckedContinuation<[Injection], Never>, [Injection])] in
      let room = max(0, Self.traceLimit - s.trace.count)
      s.trace += injections.prefix(room)
      s.untraced += max(0, injections.count - room)
      let count = s.trace.count
      let ready = s.waiters.filter { $0.count <= count }
      s.waiters.removeAll { $0.count <= count }
      return ready.map { ($0.continuation, s.trace) }
    }
    for (continuation, trace) in ready { continuation.resume(returning: trace) }
  }

  /// A blocking socket connected to `endpoint`, or nil (refused, unreachable, or 10 s passed).
  private func connectBlocking(to endpoint: Endpoint) -> Int32? {
    guard let address = try? SocketAddress.resolve(host: endpoint.host, port: endpoint.port).first,
      let (fd, inProgress) = try? Socket.connect(to: address)
    else { return nil }
    if inProgress {
      var poller = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
      guard poll(&poller, 1, 10_000) == 1, Socket.pendingError(fd) == 0 else {
        Socket.close(fd)
        return nil
      }
    }
    setBlocking(fd)
    try? Socket.setNoDelay(fd)
    return fd
  }
}

private func setBlocking(_ fd: Int32) {
  let flags = fcntl(fd, F_GETFL)
  if flags >= 0 { _ = fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) }
}

/// One proxied connection: a thread per direction, each reading whole frames from one socket and
/// doing what the ``FaultEngine`` decides with them.
private final class ProxyConnection: @unchecked Sendable {
  // @unchecked: the descriptors are immutable and closed only by the last pump to finish; the
  // mutable parts are behind `Locked`.
  let number: Int
  let client: Int32
  let server: Int32
  private let engine: Locked<FaultEngine>
  private weak var proxy: FaultProxy?
  private let gate: Gate
  /// Held while writing a frame to that socket, so the two directions' writes (a forwarded frame
  /// and an injected one) never interleave inside a frame.
  private let clientWrites = Locked(())
  private let serverWrites = Locked(())
  /// Frames injected for the client before the server's SETTINGS went through: they wait for it,
  /// since SETTINGS must be the client's first frame.
  private let clientStart = Locked<(settingsSent: Bool, pending: [UInt8])>((false, []))
  private let pumpsLeft = Locked(2)
  /// False once the descriptors are closed: a late ``cut()`` (from ``FaultProxy/cutConnections()``)
  /// must not shut down numbers another socket may have been given since.
  private let descriptorsOpen = Locked(true)
  private let isIdle: Bool

  init(number: Int, client: Int32, server: Int32, engine: FaultEngine, proxy: FaultProxy) {
    self.number = number
    self.client = client
    self.server = server
    self.isIdle = engine.isIdle
    self.engine = Locked(engine)
    self.proxy = proxy
    self.gate = proxy.connectionGate
  }

  func start() {
    let decision = engine.withLock { $0.start() }
    _ = execute(decision, frame: [], from: .client)
    Thread { self.pump(from: .client) }.start()
    Thread { self.pump(from: .server) }.start()
  }

  /// Ends both sides at once; the pumps see it and finish.
  func cut() {
    gate.kill(number)
    descriptorsOpen.withLock { open in
      guard open else { return }
      Glibc.shutdown(client, Int32(SHUT_RDWR))
      Glibc.shutdown(server, Int32(SHUT_RDWR))
    }
  }

  private func pump(from side: FaultPlan.Side) {
    let input = side == .client ? client : server
    let output = side == .client ? server : client
    var buffer: [UInt8] = []
    var prefaceLeft = Preface.length
    var raw = isIdle
    var chunk = [UInt8](repeating: 0, count: 65_536)
    var cleanEnd = false
    reading: while gate.pass(number) {
      let count = chunk.withUnsafeMutableBytes { recv(input, $0.baseAddress, $0.count, 0) }
      if count < 0 && errno == EINTR { continue }
      guard count > 0 else {
        cleanEnd = count == 0
        break
      }
      guard gate.pass(number) else { break }
      buffer += chunk[..<count]
      if prefaceLeft > 0 {
        let taken = min(prefaceLeft, buffer.count)
        let expected = Preface.bytes[(Preface.length - prefaceLeft)...].prefix(taken)
        // Not a Baton peer: copy bytes from here on; the endpoints will say what is wrong.
        if !buffer.prefix(taken).elementsEqual(expected) { raw = true }
        write(buffer.prefix(taken), to: output)
        buffer.removeFirst(taken)
        prefaceLeft -= taken
      }
      if raw {
        if !buffer.isEmpty { write(buffer[...], to: output) }
        buffer.removeAll(keepingCapacity: true)
        continue
      }
      var offset = 0
      while let header = FrameHeader(buffer[offset...]), buffer.count - offset >= header.total {
        // A stall or a freeze holds the next frame, even one that came in the same read.
        guard gate.pass(number) else { break reading }
        let frame = buffer[offset..<(offset + header.total)]
        let decision = engine.withLock { $0.frame(header, from: side) }
        offset += header.total
        guard execute(decision, frame: frame, from: side) else { break reading }
        if side == .server { settingsSent() }
      }
      buffer.removeFirst(offset)
    }
    if cleanEnd {
      Glibc.shutdown(output, Int32(SHUT_WR))  // pass the end of the stream on
    } else {
      cut()
    }
    finish()
  }

  /// Carries out a decision; false once the connection is cut.
  private func execute(_ decision: Decision, frame: ArraySlice<UInt8>, from side: FaultPlan.Side) -> Bool {
    if let delay = decision.delay { Thread.sleep(forTimeInterval: delay.seconds) }
    let output = side == .client ? server : client
    switch decision.forward {
    case .whole: write(frame, to: output)
    case .drop: break
    case .prefix(let count): write(frame.prefix(count), to: output)
    case .pieces(let sizes, let every):
      lock(for: output).withLock { _ in
        var start = frame.startIndex
        for (index, size) in sizes.enumerated() {
          if index > 0 { Thread.sleep(forTimeInterval: every.seconds) }
          sendAll(output, frame[start..<(start + size)])
          start += size
        }
      }
    }
    if !decision.toServer.isEmpty { write(decision.toServer[...], to: server) }
    if !decision.toClient.isEmpty { injectToClient(decision.toClient) }
    proxy?.record(decision.injections)
    if decision.cut {
      cut()
      return false
    }
    if let stall = decision.stall { gate.stall(number, for: stall) }
    return true
  }

  private func injectToClient(_ bytes: [UInt8]) {
    let now = clientStart.withLock { start -> Bool in
      if start.settingsSent { return true }
      start.pending += bytes
      return false
    }
    if now { write(bytes[...], to: client) }
  }

  private func settingsSent() {
    let pending = clientStart.withLock { start -> [UInt8]? in
      guard !start.settingsSent else { return nil }
      start.settingsSent = true
      defer { start.pending = [] }
      return start.pending
    }
    if let pending, !pending.isEmpty { write(pending[...], to: client) }
  }

  private func lock(for fd: Int32) -> Locked<Void> { fd == client ? clientWrites : serverWrites }

  private func write(_ bytes: ArraySlice<UInt8>, to fd: Int32) {
    lock(for: fd).withLock { _ in sendAll(fd, bytes) }
  }

  private func finish() {
    let last = pumpsLeft.withLock { left -> Bool in
      left -= 1
      return left == 0
    }
    guard last else { return }
    descriptorsOpen.withLock { open in
      open = false
      Glibc.close(client)
      Glibc.close(server)
    }
    proxy?.ended(number)
  }
}

/// Writes every byte unless the socket fails (the reading side then sees the end).
private func sendAll(_ fd: Int32, _ bytes: ArraySlice<UInt8>) {
  bytes.withUnsafeBytes { buffer in
    guard let base = buffer.baseAddress else { return }
    var offset = 0
    while offset < buffer.count {
      let sent = Glibc.send(fd, base + offset, buffer.count - offset, Int32(MSG_NOSIGNAL))
      if sent < 0 && errno == EINTR { continue }
      if sent <= 0 { return }
      offset += sent
    }
  }
}

extension Duration {
  var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

/// Where the pumps wait while the proxy is frozen or a connection is stalled. A condition
/// variable, not a lock: a pump must sleep until the state changes or a stall's time is up.
final class Gate: @unchecked Sendable {
  // @unchecked: every field is touched only with `condition` locked.
  private let condition = NSCondition()
  private var frozen = false
  private var stalls: [Int: ContinuousClock.Instant] = [:]
  private var dead: Set<Int> = []

  /// Waits while the proxy is frozen or `connection` stalled; false once it is cut.
  func pass(_ connection: Int) -> Bool {
    condition.lock()
    defer { condition.unlock() }
    while true {
      if dead.contains(connection) { return false }
      if frozen {
        condition.wait()
        continue
      }
      if let until = stalls[connection] {
        let left = until - ContinuousClock.now
        if left > .zero {
          _ = condition.wait(until: Date(timeIntervalSinceNow: left.seconds))
          continue
        }
        stalls[connection] = nil
      }
      return true
    }
  }

  func setFrozen(_ value: Bool) { change { $0.frozen = value } }
  func stall(_ connection: Int, for duration: Duration) {
    change { $0.stalls[connection] = ContinuousClock.now + duration }
  }
  func kill(_ connection: Int) { change { _ = $0.dead.insert(connection) } }
  func forget(_ connection: Int) {
    change {
      $0.dead.remove(connection)
      $0.stalls[connection] = nil
    }
  }

  private func change(_ body: (Gate) -> Void) {
    condition.lock()
    body(self)
    condition.broadcast()
    condition.unlock()
  }
}
