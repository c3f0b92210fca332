package linkpoll

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"

	"golang.org/x/crypto/chacha20poly1305"
)

// The TLS 1.3 record layer (RFC 8446 §5) of an adopted connection, with
// its application traffic secrets (§7.1) and KeyUpdate (§4.6.3). The
// ciphers are the standard library's and golang.org/x/crypto's; this is
// only the framing and the key schedule around them.

const (
	recordHeaderLen = 5
	maxPlaintext    = 1 << 14
	maxCiphertext   = maxPlaintext + 256 // RFC 8446 §5.2
	maxRecord       = recordHeaderLen + maxCiphertext

	recordChangeCipherSpec = 20
	recordAlert            = 21
	recordHandshake        = 22
	recordApplicationData  = 23

	handshakeKeyUpdate = 24

	// maxUseless bounds the records in a row that carry nothing
	// (empty application data, key updates, user_canceled), as
	// crypto/tls does.
	maxUseless = 16
)

// writeKeyLimit is the number of records sealed under one write key
// before it is updated (RFC 8446 §5.5: AES-GCM's limit is 2^24.5 full
// records). A variable for the tests.
var writeKeyLimit uint64 = 1 << 24

// alert is a TLS alert description (RFC 8446 §6).
type alert byte

const (
	alertCloseNotify       alert = 0
	alertUnexpectedMessage alert = 10
	alertBadRecordMAC      alert = 20
	alertRecordOverflow    alert = 22
	alertIllegalParameter  alert = 47
	alertDecodeError       alert = 50
	alertProtocolVersion   alert = 70
	alertInternalError     alert = 80
	alertUserCanceled      alert = 90
)

var alertNames = map[alert]string{
	0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac",
	21: "decryption_failed", 22: "record_overflow", 40: "handshake_failure",
	42: "bad_certificate", 43: "unsupported_certificate", 44: "certificate_revoked",
	45: "certificate_expired", 46: "certificate_unknown", 47: "illegal_parameter",
	48: "unknown_ca", 49: "access_denied", 50: "decode_error", 51: "decrypt_error",
	70: "protocol_version", 71: "insufficient_security", 80: "internal_error",
	86: "inappropriate_fallback", 90: "user_canceled", 109: "missing_extension",
	110: "unsupported_extension", 112: "unrecognized_name", 116: "certificate_required",
	120: "no_application_protocol",
}

func (a alert) String() string {
	if s, ok := alertNames[a]; ok {
		return s
	}
	return fmt.Sprintf("alert(%d)", byte(a))
}

// ErrTLS is what a connection that broke the TLS record layer, or that
// the peer ended with an alert other than close_notify, ends with
// (wrapped, with the reason and the alert).
var ErrTLS = errors.New("linkpoll: tls")

// tlsError is a record-layer failure: ours (the alert is sent to the
// peer) or the peer's alert (remote).
type tlsError struct {
	alert  alert
	remote bool
	why    string
}

func (e *tlsError) Error() string {
	if e.remote {
		return fmt.Sprintf("linkpoll: tls: the peer sent alert %s", e.alert)
	}
	return fmt.Sprintf("linkpoll: tls: %s (alert %s)", e.why, e.alert)
}

func (e *tlsError) Unwrap() error { return ErrTLS }

func fail(a alert, format string, args ...any) error {
	return &tlsError{alert: a, why: fmt.Sprintf(format, args...)}
}

// suite is a TLS 1.3 cipher suite (RFC 8446 §B.4).
type suite struct {
	id     uint16
	keyLen int
	hash   func() hash.Hash
	aead   func(key []byte) (cipher.AEAD, error)
}

func aesGCM(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

var suites = []*suite{
	{tls.TLS_AES_128_GCM_SHA256, 16, sha256.New, aesGCM},
	{tls.TLS_AES_256_GCM_SHA384, 32, sha512.New384, aesGCM},
	{tls.TLS_CHACHA20_POLY1305_SHA256, 32, sha256.New, chacha20poly1305.New},
}

func suiteByID(id uint16) *suite {
	for _, s := range suites {
		if s.id == id {
			return s
		}
	}
	return nil
}

// expandLabel is HKDF-Expand-Label (RFC 8446 §7.1) with an empty context.
func expandLabel(s *suite, secret []byte, label string, n int) ([]byte, error) {
	full := "tls13 " + label
	info := make([]byte, 0, 4+len(full))
	info = binary.BigEndian.AppendUint16(info, uint16(n))
	info = append(info, byte(len(full)))
	info = append(info, full...)
	info = append(info, 0) // context: empty
	return hkdf.Expand(s.hash, secret, string(info), n)
}

// trafficKeys protects one direction: the traffic secret (kept for
// KeyUpdate), the AEAD and IV it gives (RFC 8446 §7.3), and the sequence
// number of the next record.
type trafficKeys struct {
	suite  *suite
	secret []byte
	aead   cipher.AEAD
	iv     [12]byte
	seq    uint64
}

func newTrafficKeys(s *suite, secret []byte, seq uint64) (trafficKeys, error) {
	k := trafficKeys{suite: s, seq: seq}
	return k, k.set(secret)
}

// set derives the key and IV of secret and restarts the sequence.
func (k *trafficKeys) set(secret []byte) error {
	if len(secret) != k.suite.hash().Size() {
		return fmt.Errorf("linkpoll: a %d-byte traffic secret for cipher suite %s", len(secret), tls.CipherSuiteName(k.suite.id))
	}
	key, err := expandLabel(k.suite, secret, "key", k.suite.keyLen)
	if err != nil {
		return err
	}
	iv, err := expandLabel(k.suite, secret, "iv", 12)
	if err != nil {
		return err
	}
	aead, err := k.suite.aead(key)
	if err != nil {
		return err
	}
	k.secret, k.aead = secret, aead
	copy(k.iv[:], iv)
	return nil
}

// update moves to the next traffic secret (RFC 8446 §7.2), sequence 0.
func (k *trafficKeys) update() error {
	next, err := expandLabel(k.suite, k.secret, "traffic upd", len(k.secret))
	if err != nil {
		return err
	}
	k.seq = 0
	return k.set(next)
}

// nonce is the per-record nonce (RFC 8446 §5.3).
func (k *trafficKeys) nonce() [12]byte {
	n := k.iv
	for i := range 8 {
		n[4+i] ^= byte(k.seq >> (56 - 8*i))
	}
	return n
}

// header checks a record header of the application epoch: the outer
// type and legacy version every record after the handshake has (RFC
// 8446 §5.1, §5.2), and its length. It returns the length.
func checkHeader(hdr []byte) (int, error) {
	n := int(binary.BigEndian.Uint16(hdr[3:5]))
	switch {
	case hdr[0] == recordChangeCipherSpec:
		return 0, fail(alertUnexpectedMessage, "change_cipher_spec record after the handshake")
	case hdr[0] != recordApplicationData:
		return 0, fail(alertUnexpectedMessage, "unprotected record of type %d after the handshake", hdr[0])
	case hdr[1] != 3 || hdr[2] != 3:
		return 0, fail(alertProtocolVersion, "record with legacy version %#04x, want 0x0303", binary.BigEndian.Uint16(hdr[1:3]))
	case n > maxCiphertext:
		return 0, fail(alertRecordOverflow, "record of %d bytes, the limit is %d", n, maxCiphertext)
	}
	return n, nil
}

// open opens rec (a whole record whose header passed checkHeader) in
// place: the inner content type and the plaintext, which aliases rec.
func (k *trafficKeys) open(rec []byte) (byte, []byte, error) {
	if k.seq == ^uint64(0) {
		return 0, nil, fail(alertInternalError, "read sequence number exhausted")
	}
	body := rec[recordHeaderLen:]
	if len(body) < k.aead.Overhead() {
		return 0, nil, fail(alertBadRecordMAC, "record of %d bytes is shorter than its tag", len(body))
	}
	nonce := k.nonce()
	pt, err := k.aead.Open(body[:0], nonce[:], body, rec[:recordHeaderLen])
	if err != nil {
		return 0, nil, fail(alertBadRecordMAC, "record does not authenticate")
	}
	k.seq++
	i := len(pt) - 1
	for i >= 0 && pt[i] == 0 {
		i--
	}
	if i < 0 {
		return 0, nil, fail(alertUnexpectedMessage, "record without a content type (all zeros)")
	}
	if i > maxPlaintext {
		return 0, nil, fail(alertRecordOverflow, "record of %d plaintext bytes, the limit is %d", i, maxPlaintext)
	}
	return pt[i], pt[:i], nil
}

// sealedLen bounds the bytes n bytes of plaintext take sealed.
func (k *trafficKeys) sealedLen(n int) int {
	records := max(1, (n+maxPlaintext-1)/maxPlaintext)
	return n + records*(recordHeaderLen+1+k.aead.Overhead())
}

// seal appends pt (at most maxPlaintext bytes) as one record of inner
// type typ, without padding.
func (k *trafficKeys) seal(dst []byte, typ byte, pt []byte) ([]byte, error) {
	if k.seq == ^uint64(0) {
		return dst, errors.New("linkpoll: tls: write sequence number exhausted")
	}
	size := len(pt) + 1 + k.aead.Overhead()
	start := len(dst)
	dst = append(dst, recordApplicationData, 3, 3, byte(size>>8), byte(size))
	body := len(dst)
	dst = append(dst, pt...)
	dst = append(dst, typ)
	nonce := k.nonce()
	dst = k.aead.Seal(dst[:body], nonce[:], dst[body:], dst[start:body])
	k.seq++
	return dst, nil
}

// recordReader is a connection's read side: its keys, the partial
// record waiting for its end (nil when idle), and the records in a row
// that carried nothing.
type recordReader struct {
	keys    trafficKeys
	partial []byte
	useless uint8
}

// read takes the record at the front of data. n == 0 (and no error):
// data holds no whole record yet. app is the application data it
// carried (aliasing data; maybe none); update is set when the peer asked
// for a key update, to be answered (writer.keyUpdate). err is io.EOF
// for close_notify, else a *tlsError. A record over the limits is
// refused from its header.
func (r *recordReader) read(data []byte) (n int, app []byte, update bool, err error) {
	if len(data) < recordHeaderLen {
		return 0, nil, false, nil
	}
	size, err := checkHeader(data)
	if err != nil {
		return 0, nil, false, err
	}
	n = recordHeaderLen + size
	if len(data) < n {
		return 0, nil, false, nil
	}
	typ, pt, err := r.keys.open(data[:n])
	if err != nil {
		return 0, nil, false, err
	}
	if typ == recordApplicationData && len(pt) > 0 {
		r.useless = 0
		return n, pt, false, nil
	}
	if r.useless++; r.useless > maxUseless {
		return 0, nil, false, fail(alertUnexpectedMessage, "over %d records in a row without application data", maxUseless)
	}
	switch typ {
	case recordApplicationData:
		return n, nil, false, nil
	case recordAlert:
		if len(pt) != 2 {
			return 0, nil, false, fail(alertUnexpectedMessage, "alert record of %d bytes", len(pt))
		}
		switch alert(pt[1]) {
		case alertCloseNotify:
			return 0, nil, false, io.EOF
		case alertUserCanceled:
			return n, nil, false, nil
		}
		return 0, nil, false, &tlsError{alert: alert(pt[1]), remote: true}
	case recordHandshake:
		// Only KeyUpdate follows the handshake here (no session
		// tickets, no post-handshake authentication), alone in its
		// record: it changes the keys, so it must end the record
		// (RFC 8446 §5.1), and it is too short to be split.
		if len(pt) < 4 {
			return 0, nil, false, fail(alertUnexpectedMessage, "handshake message split across records")
		}
		if pt[0] != handshakeKeyUpdate {
			return 0, nil, false, fail(alertUnexpectedMessage, "handshake message of type %d after the handshake", pt[0])
		}
		if l := int(pt[1])<<16 | int(pt[2])<<8 | int(pt[3]); l != 1 || len(pt) != 5 {
			if len(pt) < 4+l {
				return 0, nil, false, fail(alertUnexpectedMessage, "KeyUpdate split across records")
			}
			return 0, nil, false, fail(alertDecodeError, "KeyUpdate of %d bytes in a record of %d", l, len(pt))
		}
		if pt[4] > 1 {
			return 0, nil, false, fail(alertIllegalParameter, "KeyUpdate request_update %d", pt[4])
		}
		if err := r.keys.update(); err != nil {
			return 0, nil, false, fail(alertInternalError, "%v", err)
		}
		return n, nil, pt[4] == 1, nil
	}
	return 0, nil, false, fail(alertUnexpectedMessage, "record of content type %d", typ)
}

// keyUpdateMsg is a KeyUpdate handshake message (RFC 8446 §4.6.3).
func keyUpdateMsg(requested bool) []byte {
	m := []byte{handshakeKeyUpdate, 0, 0, 1, 0}
	if requested {
		m[4] = 1
	}
	return m
}
