// Package wire is the protocol between the Outpost agent and the relay: the
// message types, their CBOR encoding and the limits both sides enforce.
//
// Every WebSocket binary message carries exactly one Frame. Frames and bodies
// are CBOR maps with small integer keys, encoded deterministically (RFC 8949
// core deterministic encoding) so equal messages are equal bytes. Decoding
// is strict about size and shape: a frame larger than MaxFrameSize, deeper
// than a few levels, or declaring more elements than it carries is rejected
// before anything is allocated for it, and every body is validated after
// decoding so a handler never sees a message with a required field missing.
//
// The package imports neither side: the agent and the relay both depend on
// it, and it depends on nothing but the CBOR library.
package wire
