// A user imports BatonServer and gets the wire types (RPCError, Metadata, Endpoint) and the
// logging seam with it; the transport's internals stay `package`.
@_exported public import BatonCore
@_exported public import BatonTransport
