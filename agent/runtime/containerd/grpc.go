package containerd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// This file speaks gRPC to containerd with the standard library alone:
// net/http's HTTP/2 client over the unix socket (unencrypted HTTP/2 with
// prior knowledge, Go ≥ 1.24) and protobuf messages encoded and decoded by
// hand with protowire. docs/containerd.md measures why: containerd's Go
// client, or its generated API stubs (which import google.golang.org/grpc),
// add 7.6–12.7 MB to a binary whose whole budget is 12 MB resident.

// Errors from containerd, matched with errors.Is.
var (
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists")
	// ErrUnavailable wraps a failure to reach containerd at all (socket
	// missing, connection refused or reset): containerd is down or
	// restarting, as opposed to refusing a request.
	ErrUnavailable = errors.New("containerd unavailable")
)

// grpcCodes names the gRPC status codes containerd returns.
var grpcCodes = map[int]string{1: "Canceled", 2: "Unknown", 3: "InvalidArgument", 4: "DeadlineExceeded", 5: "NotFound",
	6: "AlreadyExists", 7: "PermissionDenied", 8: "ResourceExhausted", 9: "FailedPrecondition", 10: "Aborted",
	11: "OutOfRange", 12: "Unimplemented", 13: "Internal", 14: "Unavailable"}

// statusError is a non-OK gRPC status.
type statusError struct {
	method string
	code   int
	msg    string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("containerd %s: %s: %s", e.method, grpcCodes[e.code], e.msg)
}

func (e *statusError) Is(target error) bool {
	return (target == ErrNotFound && e.code == 5) || (target == ErrAlreadyExists && e.code == 6)
}

// maxMessage bounds one response message; containerd's own default is 16 MiB.
const maxMessage = 16 << 20

// conn is a gRPC connection to containerd's socket.
type conn struct {
	address   string
	namespace string
	http      *http.Client
}

func newConn(address, namespace string) *conn {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", address)
	}
	tr.IdleConnTimeout = 90 * time.Second
	return &conn{address: address, namespace: namespace, http: &http.Client{Transport: tr}}
}

type leaseKey struct{}

// withLease makes calls in ctx run under a containerd lease, which keeps
// content and snapshots they create from garbage collection until it ends.
func withLease(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, leaseKey{}, id)
}

// frame prefixes msg with gRPC's 5-byte message header.
func frame(msg []byte) []byte {
	b := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(b[1:], uint32(len(msg)))
	return append(b, msg...)
}

// unary calls method ("containerd.services.tasks.v1.Tasks/Get") with one
// request message and returns the one response message.
func (c *conn) unary(ctx context.Context, method string, req []byte) ([]byte, error) {
	var resp []byte
	err := c.stream(ctx, method, bytes.NewReader(frame(req)), func(m []byte) error {
		resp = append([]byte(nil), m...)
		return nil
	})
	return resp, err
}

// stream calls method with the request frames read from body (one or more
// framed messages) and passes each response message to each, in order. It
// serves unary, server-streaming and client-streaming calls.
func (c *conn) stream(ctx context.Context, method string, body io.Reader, each func([]byte) error) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://containerd/"+method, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("TE", "trailers")
	req.Header.Set("containerd-namespace", c.namespace)
	if lease, ok := ctx.Value(leaseKey{}).(string); ok {
		req.Header.Set("containerd-lease", lease)
	}
	if dl, ok := ctx.Deadline(); ok {
		req.Header.Set("grpc-timeout", strconv.FormatInt(max(time.Until(dl).Milliseconds(), 1), 10)+"m")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("containerd %s on %s: %w", method, c.address, err)
		}
		return fmt.Errorf("containerd %s on %s: %w: %w", method, c.address, ErrUnavailable, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("containerd %s: HTTP %s", method, resp.Status)
	}
	var hdr [5]byte
	var buf []byte
	for {
		if _, err := io.ReadFull(resp.Body, hdr[:]); err != nil {
			if err == io.EOF {
				break
			}
			return fmt.Errorf("containerd %s: read response: %w", method, err)
		}
		n := binary.BigEndian.Uint32(hdr[1:])
		if hdr[0] != 0 {
			return fmt.Errorf("containerd %s: compressed response not supported", method)
		}
		if n > maxMessage {
			return fmt.Errorf("containerd %s: response message of %d bytes exceeds the %d limit", method, n, maxMessage)
		}
		if cap(buf) < int(n) {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(resp.Body, buf); err != nil {
			return fmt.Errorf("containerd %s: read response: %w", method, err)
		}
		if err := each(buf); err != nil {
			return err
		}
	}
	st := resp.Trailer.Get("Grpc-Status")
	msg := resp.Trailer.Get("Grpc-Message")
	if st == "" { // trailers-only response: status in the headers
		st, msg = resp.Header.Get("Grpc-Status"), resp.Header.Get("Grpc-Message")
	}
	code, err := strconv.Atoi(st)
	if err != nil {
		return fmt.Errorf("containerd %s: response without a gRPC status", method)
	}
	if code != 0 {
		if m, err := url.PathUnescape(msg); err == nil {
			msg = m
		}
		return &statusError{method: method, code: code, msg: msg}
	}
	return nil
}

// enc builds a protobuf message.
type enc []byte

func (e enc) str(num protowire.Number, s string) enc {
	if s == "" {
		return e
	}
	e = protowire.AppendTag(e, num, protowire.BytesType)
	return protowire.AppendString(e, s)
}

func (e enc) bytes(num protowire.Number, b []byte) enc {
	if len(b) == 0 {
		return e
	}
	e = protowire.AppendTag(e, num, protowire.BytesType)
	return protowire.AppendBytes(e, b)
}

func (e enc) msg(num protowire.Number, m enc) enc {
	e = protowire.AppendTag(e, num, protowire.BytesType)
	return protowire.AppendBytes(e, m)
}

func (e enc) uint(num protowire.Number, v uint64) enc {
	if v == 0 {
		return e
	}
	e = protowire.AppendTag(e, num, protowire.VarintType)
	return protowire.AppendVarint(e, v)
}

func (e enc) bool(num protowire.Number, v bool) enc {
	if !v {
		return e
	}
	return e.uint(num, 1)
}

// labels appends a map<string, string> field.
func (e enc) labels(num protowire.Number, m map[string]string) enc {
	for k, v := range m {
		e = e.msg(num, enc(nil).str(mapKey, k).str(mapValue, v))
	}
	return e
}

// badReply wraps err, a failure to decode method's reply.
func badReply(method string, err error) error {
	return fmt.Errorf("containerd %s: malformed reply (is the socket containerd's, version 1.6 or later?): %w", method, err)
}

// field is one field of a protobuf message being decoded. Decoders read
// it with the accessor of the field's type, which checks its wire type.
type field struct {
	num  protowire.Number
	typ  protowire.Type
	v    uint64 // a varint's value
	data []byte // a length-delimited value
}

// fields calls fn for each field of protobuf message b, named msg (its
// full name, for errors), in order. A malformed message, or an error from
// fn, is an error naming the message and the field; fn ignores the fields
// it does not know, as protobuf readers do.
func fields(b []byte, msg string, fn func(f field) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("malformed %s: %w", msg, protowire.ParseError(n))
		}
		b = b[n:]
		f := field{num: num, typ: typ}
		switch typ {
		case protowire.VarintType:
			f.v, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			f.data, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("malformed %s field %d: %w", msg, num, protowire.ParseError(n))
		}
		b = b[n:]
		if err := fn(f); err != nil {
			return fmt.Errorf("%s field %d: %w", msg, num, err)
		}
	}
	return nil
}

// wireTypes names protobuf wire types in errors.
var wireTypes = map[protowire.Type]string{protowire.VarintType: "varint", protowire.Fixed32Type: "fixed32",
	protowire.Fixed64Type: "fixed64", protowire.BytesType: "length-delimited",
	protowire.StartGroupType: "group start", protowire.EndGroupType: "group end"}

func (f field) want(t protowire.Type) error {
	if f.typ != t {
		return fmt.Errorf("wire type %s, want %s", wireTypes[f.typ], wireTypes[t])
	}
	return nil
}

// bytes is a bytes or embedded message field's value.
func (f field) bytes() ([]byte, error) {
	return f.data, f.want(protowire.BytesType)
}

// str is a string field's value, which must be UTF-8 as proto3 requires.
func (f field) str() (string, error) {
	if err := f.want(protowire.BytesType); err != nil {
		return "", err
	}
	if !utf8.Valid(f.data) {
		return "", errors.New("string is not valid UTF-8")
	}
	return string(f.data), nil
}

// varint is the value of a varint field (uint32, int64, enum, bool, …),
// to be converted as protobuf does: uint32(v), int64(v), int32(v).
func (f field) varint() (uint64, error) {
	return f.v, f.want(protowire.VarintType)
}

// Timestamps must lie in 0001-01-01T00:00:00Z..9999-12-31T23:59:59Z.
const (
	minTimestamp = -62135596800
	maxTimestamp = 253402300799
)

// decodeTime decodes a google.protobuf.Timestamp.
func decodeTime(b []byte) (time.Time, error) {
	var sec int64
	var nsec int32
	err := fields(b, "google.protobuf.Timestamp", func(f field) error {
		var v uint64
		var err error
		switch f.num {
		case timestampSeconds:
			v, err = f.varint()
			sec = int64(v)
		case timestampNanos:
			v, err = f.varint()
			nsec = int32(v)
		}
		return err
	})
	if err != nil {
		return time.Time{}, err
	}
	if sec < minTimestamp || sec > maxTimestamp || nsec < 0 || nsec > 999_999_999 {
		return time.Time{}, fmt.Errorf("google.protobuf.Timestamp %ds %dns is out of range", sec, nsec)
	}
	return time.Unix(sec, int64(nsec)).UTC(), nil
}

// decodeAny decodes a google.protobuf.Any.
func decodeAny(b []byte) (typeURL string, value []byte, err error) {
	err = fields(b, "google.protobuf.Any", func(f field) error {
		var err error
		switch f.num {
		case anyTypeURL:
			typeURL, err = f.str()
		case anyValue:
			value, err = f.bytes()
		}
		return err
	})
	return typeURL, value, err
}

// decodeLabel decodes one map<string, string> entry of message msg.
func decodeLabel(b []byte, msg string) (k, v string, err error) {
	err = fields(b, msg+".LabelsEntry", func(f field) error {
		var err error
		switch f.num {
		case mapKey:
			k, err = f.str()
		case mapValue:
			v, err = f.str()
		}
		return err
	})
	return k, v, err
}

// mount is containerd.types.Mount.
type mount struct {
	Type, Source, Target string
	Options              []string
}

func (m mount) enc() enc {
	e := enc(nil).str(mountType, m.Type).str(mountSource, m.Source).str(mountTarget, m.Target)
	for _, o := range m.Options {
		e = e.str(mountOptions, o)
	}
	return e
}

func decodeMount(b []byte) (mount, error) {
	var m mount
	err := fields(b, "containerd.types.Mount", func(f field) error {
		var err error
		switch f.num {
		case mountType:
			m.Type, err = f.str()
		case mountSource:
			m.Source, err = f.str()
		case mountTarget:
			m.Target, err = f.str()
		case mountOptions:
			var o string
			o, err = f.str()
			m.Options = append(m.Options, o)
		}
		return err
	})
	return m, err
}

// decodeMounts decodes the mounts of a snapshots response: resp is
// PrepareSnapshotResponse or MountsResponse, which have the same field.
func decodeMounts(b []byte, resp string) ([]mount, error) {
	var ms []mount
	err := fields(b, "containerd.services.snapshots.v1."+resp, func(f field) error {
		if f.num != snapshotMounts {
			return nil
		}
		d, err := f.bytes()
		if err != nil {
			return err
		}
		m, err := decodeMount(d)
		ms = append(ms, m)
		return err
	})
	if err != nil {
		return nil, err
	}
	return ms, nil
}

// descriptor is containerd.types.Descriptor (an OCI descriptor).
type descriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
	Platform  *struct {
		Architecture string `json:"architecture"`
		OS           string `json:"os"`
		Variant      string `json:"variant,omitempty"`
	} `json:"platform,omitempty"`
}

func (d descriptor) enc() enc {
	return enc(nil).str(descriptorMediaType, d.MediaType).str(descriptorDigest, d.Digest).uint(descriptorSize, uint64(d.Size))
}

// decodeDescriptor decodes a containerd.types.Descriptor (not its platform).
func decodeDescriptor(b []byte) (descriptor, error) {
	var d descriptor
	err := fields(b, "containerd.types.Descriptor", func(f field) error {
		var err error
		switch f.num {
		case descriptorMediaType:
			d.MediaType, err = f.str()
		case descriptorDigest:
			d.Digest, err = f.str()
		case descriptorSize:
			var v uint64
			v, err = f.varint()
			d.Size = int64(v)
		}
		return err
	})
	return d, err
}
