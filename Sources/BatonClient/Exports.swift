// A user imports BatonClient and gets the wire types (RPCError, Metadata, Endpoint) and the
// logging seam with it, and nothing of the server.
@_exported public import BatonCore
@_exported public import BatonTransport
