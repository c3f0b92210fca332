package linkpoll

import (
	"bytes"
	"crypto/hmac"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// RFC 8448 §3 (Simple 1-RTT Handshake, TLS_AES_128_GCM_SHA256): the
// application traffic secrets, the keys and IVs derived from them
// ("derive write traffic keys for application data"), and the
// application_data and alert records sent under them.
const (
	rfc8448ClientSecret = "9e 40 64 6c e7 9a 7f 9d c0 5a f8 88 9b ce 65 52 87 5a fa 0b 06 df 00 87 f7 92 eb b7 c1 75 04 a5"
	rfc8448ServerSecret = "a1 1a f9 f0 55 31 f8 56 ad 47 11 6b 45 a9 50 32 82 04 b4 f4 4b fb 6b 3a 4b 4f 1f 3f cb 63 16 43"
	rfc8448ClientKey    = "17 42 2d da 59 6e d5 d9 ac d8 90 e3 c6 3f 50 51"
	rfc8448ClientIV     = "5b 78 92 3d ee 08 57 90 33 e5 23 d9"
	rfc8448ServerKey    = "9f 02 28 3b 6c 9c 07 ef c2 6b b9 f2 ac 92 e3 56"
	rfc8448ServerIV     = "cf 78 2b 88 dd 83 54 9a ad f1 e9 84"
	// {client} send application_data record, sequence 0: 00 01 ... 31.
	rfc8448ClientData = "17 03 03 00 43 a2 3f 70 54 b6 2c 94 d0 af fa fe 82 28 ba 55 cb ef ac ea 42 f9 14 aa 66 bc ab 3f" +
		"2b 98 19 a8 a5 b4 6b 39 5b d5 4a 9a 20 44 1e 2b 62 97 4e 1f 5a 62 92 a2 97 70 14 bd 1e 3d ea e6 3a ee bb 21 69 49 15 e4"
	// {client} send alert record, sequence 1: close_notify.
	rfc8448ClientAlert = "17 03 03 00 13 c9 87 27 60 65 56 66 b7 4d 7f f1 15 3e fd 6d b6 d0 b0 e3"
	// {server} send application_data record, sequence 1 (after the
	// NewSessionTicket): the same 50 bytes.
	rfc8448ServerData = "17 03 03 00 43 2e 93 7e 11 ef 4a c7 40 e5 38 ad 36 00 5f c4 a4 69 32 fc 32 25 d0 5f 82 aa 1b 36" +
		"e3 0e fa f9 7d 90 e6 df fc 60 2d cb 50 1a 59 a8 fc c4 9c 4b f2 e5 f0 a2 1c 00 47 c2 ab f3 32 54 0d d0 32 e1 67 c2 95 5d"
)

func TestRFC8448(t *testing.T) {
	s := suiteByID(tls.TLS_AES_128_GCM_SHA256)
	payload := make([]byte, 50)
	for i := range payload {
		payload[i] = byte(i)
	}
	for _, tc := range []struct {
		name, secret, key, iv string
		seq                   uint64
		record                string
	}{
		{"client", rfc8448ClientSecret, rfc8448ClientKey, rfc8448ClientIV, 0, rfc8448ClientData},
		{"server", rfc8448ServerSecret, rfc8448ServerKey, rfc8448ServerIV, 1, rfc8448ServerData},
	} {
		t.Run(tc.name, func(t *testing.T) {
			secret := unhex(t, tc.secret)
			key, err := expandLabel(s, secret, "key", 16)
			if err != nil || !bytes.Equal(key, unhex(t, tc.key)) {
				t.Fatalf("key %x, %v; want %s", key, err, tc.key)
			}
			k, err := newTrafficKeys(s, secret, tc.seq)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(k.iv[:], unhex(t, tc.iv)) {
				t.Fatalf("iv %x, want %s", k.iv, tc.iv)
			}
			// Sealing the payload gives the RFC's record byte for byte
			// (no padding), and opening it gives the payload back.
			sealed, err := k.seal(nil, recordApplicationData, payload)
			if err != nil {
				t.Fatal(err)
			}
			want := unhex(t, tc.record)
			if !bytes.Equal(sealed, want) {
				t.Fatalf("sealed\n%x\nwant\n%x", sealed, want)
			}
			r := recordReader{keys: trafficKeys{suite: s}}
			if err := r.keys.set(secret); err != nil {
				t.Fatal(err)
			}
			r.keys.seq = tc.seq
			n, app, update, err := r.read(want)
			if err != nil || n != len(want) || update || !bytes.Equal(app, payload) {
				t.Fatalf("read: n %d, %x, update %v, %v", n, app, update, err)
			}
		})
	}
	// The client's close_notify, sequence 1.
	r := recordReader{}
	var err error
	if r.keys, err = newTrafficKeys(s, unhex(t, rfc8448ClientSecret), 0); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := r.read(unhex(t, rfc8448ClientData)); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := r.read(unhex(t, rfc8448ClientAlert)); err != io.EOF {
		t.Fatalf("close_notify read as %v, want io.EOF", err)
	}
}

// Both roles of each suite, across a KeyUpdate each way: what one seals
// the other opens, records of every size up to the limit.
func TestRecordRoundTrip(t *testing.T) {
	for _, s := range suites {
		t.Run(tls.CipherSuiteName(s.id), func(t *testing.T) {
			secret := bytes.Repeat([]byte{7}, s.hash().Size())
			w, r := keyPair(t, s, secret, 5)
			for round := range 3 {
				for _, n := range []int{1, 100, maxPlaintext - 1, maxPlaintext} {
					pt := bytes.Repeat([]byte{byte(n + round)}, n)
					rec, err := w.seal(nil, recordApplicationData, pt)
					if err != nil {
						t.Fatal(err)
					}
					if len(rec) != w.sealedLen(n) {
						t.Fatalf("%d bytes sealed as %d, sealedLen says %d", n, len(rec), w.sealedLen(n))
					}
					got, app, _, err := r.read(rec)
					if err != nil || got != len(rec) || !bytes.Equal(app, pt) {
						t.Fatalf("round %d, %d bytes: read %d, %v", round, n, got, err)
					}
				}
				rec, err := w.seal(nil, recordHandshake, keyUpdateMsg(round == 1))
				if err != nil {
					t.Fatal(err)
				}
				old := bytes.Clone(w.secret)
				if err := w.update(); err != nil {
					t.Fatal(err)
				}
				if bytes.Equal(old, w.secret) || w.seq != 0 {
					t.Fatal("update kept the secret or the sequence")
				}
				_, _, update, err := r.read(rec)
				if err != nil || update != (round == 1) {
					t.Fatalf("KeyUpdate read: update %v, %v", update, err)
				}
				if !bytes.Equal(r.keys.secret, w.secret) || r.keys.seq != 0 {
					t.Fatal("the reader's keys did not follow the KeyUpdate")
				}
			}
		})
	}
}

// The key schedule of TLS_AES_256_GCM_SHA384 (SHA-384, 32-byte keys),
// which a Go client never gets from a Go server: HKDF-Expand-Label's
// encoding against the "traffic upd" step computed another way.
func TestKeyScheduleSHA384(t *testing.T) {
	s := suiteByID(tls.TLS_AES_256_GCM_SHA384)
	secret := bytes.Repeat([]byte{1}, 48)
	k, err := newTrafficKeys(s, secret, 0)
	if err != nil {
		t.Fatal(err)
	}
	// HkdfLabel: length 48, "tls13 traffic upd", empty context.
	info := append([]byte{0, 48, byte(len("tls13 traffic upd"))}, "tls13 traffic upd"...)
	info = append(info, 0)
	want, err := hkdfExpandRef(s, secret, info, 48)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.update(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k.secret, want) {
		t.Fatalf("next secret %x, want %x", k.secret, want)
	}
	if k.aead.Overhead() != 16 {
		t.Fatalf("AEAD overhead %d", k.aead.Overhead())
	}
	if _, err := newTrafficKeys(s, secret[:32], 0); err == nil {
		t.Fatal("a 32-byte secret was taken for a SHA-384 suite")
	}
}

func hkdfExpandRef(s *suite, secret, info []byte, n int) ([]byte, error) {
	// RFC 5869 §2.3, T(i) = HMAC(PRK, T(i-1) | info | i), by hand.
	var out, prev []byte
	for i := byte(1); len(out) < n; i++ {
		m := hmac.New(s.hash, secret)
		m.Write(prev)
		m.Write(info)
		m.Write([]byte{i})
		prev = m.Sum(nil)
		out = append(out, prev...)
	}
	return out[:n], nil
}

// Hostile records, each refused with the alert RFC 8446 (and crypto/tls)
// gives it.
func TestRecordReaderRefuses(t *testing.T) {
	s := suiteByID(tls.TLS_AES_128_GCM_SHA256)
	secret := bytes.Repeat([]byte{3}, 32)
	sealed := func(typ byte, pt []byte) func(w *trafficKeys) []byte {
		return func(w *trafficKeys) []byte {
			b, err := w.seal(nil, typ, pt)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
	raw := func(b []byte) func(*trafficKeys) []byte { return func(*trafficKeys) []byte { return b } }
	for _, tc := range []struct {
		name   string
		record func(w *trafficKeys) []byte
		alert  alert
		remote bool
		why    string
	}{
		{"bad tag", func(w *trafficKeys) []byte {
			b := sealed(recordApplicationData, []byte("hello"))(w)
			b[len(b)-1] ^= 1
			return b
		}, alertBadRecordMAC, false, "does not authenticate"},
		{"shorter than the tag", raw([]byte{23, 3, 3, 0, 3, 1, 2, 3}), alertBadRecordMAC, false, "shorter than its tag"},
		{"oversized record", raw([]byte{23, 3, 3, (maxCiphertext + 1) >> 8, (maxCiphertext + 1) & 0xff}), alertRecordOverflow, false, "the limit is"},
		{"oversized plaintext", sealed(recordApplicationData, make([]byte, maxPlaintext+1)), alertRecordOverflow, false, "plaintext bytes"},
		{"wrong outer type", raw([]byte{22, 3, 3, 0, 1, 0}), alertUnexpectedMessage, false, "unprotected record of type 22"},
		{"wrong legacy version", raw([]byte{23, 3, 1, 0, 1, 0}), alertProtocolVersion, false, "legacy version"},
		{"change_cipher_spec after the handshake", raw([]byte{20, 3, 3, 0, 1, 1}), alertUnexpectedMessage, false, "change_cipher_spec"},
		{"alert of 3 bytes", sealed(recordAlert, []byte{2, 40, 0}), alertUnexpectedMessage, false, "alert record of 3 bytes"},
		{"the peer's fatal alert", sealed(recordAlert, []byte{2, 40}), 40, true, ""},
		{"unknown handshake type", sealed(recordHandshake, []byte{4, 0, 0, 1, 0}), alertUnexpectedMessage, false, "handshake message of type 4"},
		{"handshake header split", sealed(recordHandshake, []byte{24, 0}), alertUnexpectedMessage, false, "split across records"},
		{"truncated KeyUpdate", sealed(recordHandshake, []byte{24, 0, 0, 1}), alertUnexpectedMessage, false, "KeyUpdate split"},
		{"KeyUpdate too long", sealed(recordHandshake, []byte{24, 0, 0, 2, 0, 0}), alertDecodeError, false, "KeyUpdate of 2 bytes"},
		{"KeyUpdate and more", sealed(recordHandshake, []byte{24, 0, 0, 1, 0, 24, 0, 0, 1, 0}), alertDecodeError, false, "KeyUpdate of 1 bytes in a record of 10"},
		{"KeyUpdate request 2", sealed(recordHandshake, []byte{24, 0, 0, 1, 2}), alertIllegalParameter, false, "request_update 2"},
		{"all-zero inner plaintext", sealed(0, []byte{0, 0, 0}), alertUnexpectedMessage, false, "all zeros"},
		{"unknown content type", sealed(99, []byte{1}), alertUnexpectedMessage, false, "content type 99"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, r := keyPair(t, s, secret, 0)
			_, _, _, err := r.read(tc.record(&w))
			var te *tlsError
			if !errors.As(err, &te) || !errors.Is(err, ErrTLS) {
				t.Fatalf("read: %v, want a TLS error", err)
			}
			if te.alert != tc.alert || te.remote != tc.remote || !strings.Contains(err.Error(), tc.why) {
				t.Fatalf("read: %v (alert %s, remote %v), want alert %s, remote %v, saying %q", err, te.alert, te.remote, tc.alert, tc.remote, tc.why)
			}
		})
	}
	// Records without data, in a row, are bounded as crypto/tls bounds them.
	w, r := keyPair(t, s, secret, 0)
	var err error
	for i := 0; err == nil && i <= maxUseless+1; i++ {
		b, _ := w.seal(nil, recordApplicationData, nil)
		_, _, _, err = r.read(b)
		if i < maxUseless && err != nil {
			t.Fatalf("empty record %d refused: %v", i, err)
		}
	}
	if err == nil || !strings.Contains(err.Error(), "without application data") {
		t.Fatalf("%d empty records in a row: %v", maxUseless+1, err)
	}
}

func TestParseKeyLog(t *testing.T) {
	random := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		line  string
		label string
		n     int
	}{
		{"CLIENT_TRAFFIC_SECRET_0 " + random + " " + strings.Repeat("01", 32) + "\n", "CLIENT_TRAFFIC_SECRET_0", 32},
		{"SERVER_TRAFFIC_SECRET_0 " + random + " " + strings.Repeat("01", 48) + "\n", "SERVER_TRAFFIC_SECRET_0", 48},
		{"SERVER_TRAFFIC_SECRET_0 " + random + " " + strings.Repeat("01", 48), "", 0},                  // no newline
		{"SERVER_TRAFFIC_SECRET_0 " + random + " " + strings.Repeat("01", 40) + "\n", "", 0},           // 40 bytes
		{"SERVER_TRAFFIC_SECRET_0 " + random[2:] + " " + strings.Repeat("01", 32) + "\n", "", 0},       // short random
		{"SERVER_TRAFFIC_SECRET_0 " + random + "  " + strings.Repeat("01", 32) + "\n", "", 0},          // two spaces
		{"SERVER_TRAFFIC_SECRET_0 " + random + " " + strings.Repeat("0g", 32) + "\n", "", 0},           // not hex
		{"SERVER_TRAFFIC_SECRET_0 " + random + " " + strings.Repeat("01", 32) + " x\n", "", 0},         // four fields
		{strings.Repeat("A", maxKeyLog) + " " + random + " " + strings.Repeat("01", 32) + "\n", "", 0}, // too long
		{"\n", "", 0},
	} {
		label, secret, err := parseKeyLog([]byte(tc.line))
		if tc.label == "" {
			if err == nil {
				t.Errorf("%q taken", tc.line)
			}
			continue
		}
		if err != nil || label != tc.label || len(secret) != tc.n {
			t.Errorf("%q: %q, %d bytes, %v", tc.line, label, len(secret), err)
		}
	}
}

// feedReader feeds stream to r as the loop would, chunk bytes at a time
// (keeping the partial record between reads), and returns the
// application data and the error it ended with.
func feedReader(t testing.TB, r *recordReader, stream []byte, chunk int) ([]byte, error) {
	var app []byte
	for len(stream) > 0 {
		n := min(chunk, len(stream))
		data := append(r.partial, stream[:n]...)
		stream = stream[n:]
		r.partial = nil
		for {
			m, a, _, err := r.read(data)
			if err != nil {
				return app, err
			}
			if m == 0 {
				break
			}
			app = append(app, a...)
			data = data[m:]
		}
		if len(data) >= maxRecord {
			t.Fatalf("%d bytes kept for a partial record", len(data))
		}
		if len(data) > 0 {
			r.partial = append([]byte(nil), data...)
		}
	}
	return app, nil
}

// FuzzRecordReader: arbitrary bytes, and records sealed under the right
// keys around arbitrary inner plaintexts, never panic the reader, and
// what it keeps between reads is at most one record.
func FuzzRecordReader(f *testing.F) {
	f.Add([]byte{1, 23, 5, 'h', 'e', 'l', 'l', 'o'}, uint16(7))
	f.Add([]byte{1, 22, 5, 24, 0, 0, 1, 1, 1, 23, 1, 'x'}, uint16(3))
	f.Add([]byte{1, 21, 2, 1, 0}, uint16(1))
	f.Add([]byte{0, 8, 23, 3, 3, 0x40, 0x01, 0, 0, 0}, uint16(2))
	f.Add([]byte{0, 6, 20, 3, 3, 0, 1, 1}, uint16(100))
	f.Fuzz(func(t *testing.T, script []byte, chunk uint16) {
		s := suiteByID(tls.TLS_CHACHA20_POLY1305_SHA256)
		secret := bytes.Repeat([]byte{9}, 32)
		w, r := keyPair(t, s, secret, 0)
		// The script: op 0, n, n raw bytes; op 1, type, n, n bytes
		// sealed as one record of that inner type (n scaled up to reach
		// the limits).
		var stream []byte
		for len(script) >= 2 {
			op := script[0]
			switch op % 2 {
			case 0:
				n := min(int(script[1]), len(script)-2)
				stream = append(stream, script[2:2+n]...)
				script = script[2+n:]
			case 1:
				if len(script) < 3 {
					script = nil
					break
				}
				typ, n := script[1], min(int(script[2]), len(script)-3)
				pt := script[3 : 3+n]
				if op&0x80 != 0 { // a big record
					pt = bytes.Repeat(append(pt, 0xff), maxPlaintext/(n+1)+1)[:maxPlaintext]
				}
				var err error
				if stream, err = w.seal(stream, typ, pt); err != nil {
					t.Fatal(err)
				}
				script = script[3+n:]
			}
		}
		feedReader(t, &r, stream, int(chunk)%(2*maxRecord)+1)
	})
}

func TestFeedReaderSplits(t *testing.T) {
	s := suiteByID(tls.TLS_AES_256_GCM_SHA384)
	secret := bytes.Repeat([]byte{5}, 48)
	w, _ := newTrafficKeys(s, secret, 0)
	var stream, want []byte
	for i := range 20 {
		pt := bytes.Repeat([]byte{byte(i)}, i*800)
		want = append(want, pt...)
		stream, _ = w.seal(stream, recordApplicationData, pt)
	}
	for _, chunk := range []int{1, 7, 4096, 1 << 20} {
		r := recordReader{}
		r.keys, _ = newTrafficKeys(s, bytes.Clone(secret), 0)
		got, err := feedReader(t, &r, stream, chunk)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("chunks of %d: %d bytes, %v", chunk, len(got), err)
		}
	}
}

// capture counts the records under the application keys however the
// stream is cut, skips those under other keys, and refuses adoption on
// anything it cannot vouch for.
func TestCaptureCounts(t *testing.T) {
	random := strings.Repeat("cd", 32)
	clientSecret, serverSecret := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	line := func(label string, secret []byte) []byte {
		return []byte(label + " " + random + " " + hex.EncodeToString(secret) + "\n")
	}
	s := suiteByID(tls.TLS_CHACHA20_POLY1305_SHA256)
	seal := func(secret []byte, seq uint64, typ byte, pt string) []byte {
		k, err := newTrafficKeys(s, secret, seq)
		if err != nil {
			t.Fatal(err)
		}
		b, err := k.seal(nil, typ, []byte(pt))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	handshakeKey := bytes.Repeat([]byte{3}, 32)
	var in, out []byte
	in = append(in, 22, 3, 3, 0, 2, 1, 2)                                         // a plaintext handshake record
	in = append(in, seal(handshakeKey, 0, recordHandshake, "client finished")...) // under the handshake keys
	for i := range 3 {
		in = append(in, seal(clientSecret, uint64(i), recordApplicationData, strings.Repeat("r", 100*i))...)
	}
	out = append(out, seal(handshakeKey, 0, recordHandshake, "server flight")...)
	out = append(out, seal(serverSecret, 0, recordApplicationData, "HTTP/1.1 101")...)
	for _, chunk := range []int{1, 7, 5, 1 << 20} {
		c := newCapture(true)
		c.Write(line("CLIENT_HANDSHAKE_TRAFFIC_SECRET", handshakeKey))
		c.Write(line("CLIENT_TRAFFIC_SECRET_0", clientSecret))
		c.Write(line("SERVER_TRAFFIC_SECRET_0", serverSecret))
		for _, dir := range []struct {
			d      int
			stream []byte
		}{{dirIn, in}, {dirOut, out}} {
			for p := dir.stream; len(p) > 0; {
				n := min(chunk, len(p))
				if dir.d == dirIn {
					if l := c.readLimit(); l > 0 {
						n = min(n, l)
					}
				}
				c.feed(dir.d, p[:n])
				p = p[n:]
			}
		}
		rd, wr, err := c.adoptKeys(s.id)
		if err != nil || rd.seq != 3 || wr.seq != 1 {
			t.Fatalf("chunks of %d: read sequence %d, write %d, %v", chunk, rd.seq, wr.seq, err)
		}
		if !bytes.Equal(rd.secret, clientSecret) || !bytes.Equal(wr.secret, serverSecret) {
			t.Fatal("the keys are not the traffic secrets'")
		}
	}

	for _, tc := range []struct {
		name string
		run  func(c *capture)
		want string
	}{
		{"TLS 1.2", func(c *capture) { c.Write(line("CLIENT_RANDOM", bytes.Repeat([]byte{1}, 48))) }, "TLS 1.2 negotiated"},
		{"no secrets", func(c *capture) {}, "were not captured"},
		{"bad key log line", func(c *capture) { c.Write([]byte("CLIENT_TRAFFIC_SECRET_0 zz\n")) }, "three fields"},
		{"secret twice", func(c *capture) {
			c.Write(line("CLIENT_TRAFFIC_SECRET_0", clientSecret))
			c.Write(line("CLIENT_TRAFFIC_SECRET_0", clientSecret))
		}, "logged twice"},
		{"secret inside a record", func(c *capture) {
			c.feed(dirIn, []byte{23, 3, 3, 0, 40, 1})
			c.Write(line("CLIENT_TRAFFIC_SECRET_0", clientSecret))
		}, "in the middle of a record"},
		{"a record in progress at adoption", func(c *capture) {
			c.Write(line("CLIENT_TRAFFIC_SECRET_0", clientSecret))
			c.Write(line("SERVER_TRAFFIC_SECRET_0", serverSecret))
			c.feed(dirIn, []byte{23, 3, 3})
		}, "in progress at adoption"},
		{"a KeyUpdate before adoption", func(c *capture) {
			c.Write(line("CLIENT_TRAFFIC_SECRET_0", clientSecret))
			c.feed(dirIn, seal(clientSecret, 0, recordHandshake, string(keyUpdateMsg(false))))
		}, "other than application data"},
		{"unknown keys after the application keys", func(c *capture) {
			c.Write(line("CLIENT_TRAFFIC_SECRET_0", clientSecret))
			c.feed(dirIn, seal(clientSecret, 0, recordApplicationData, "GET"))
			c.feed(dirIn, seal(handshakeKey, 0, recordApplicationData, "?"))
		}, "unknown keys"},
		{"too many application records", func(c *capture) {
			c.Write(line("CLIENT_TRAFFIC_SECRET_0", clientSecret))
			for i := range maxCounted + 1 {
				c.feed(dirIn, seal(clientSecret, uint64(i), recordApplicationData, "x"))
			}
		}, "over 64 application records"},
		{"too many records", func(c *capture) {
			for range maxWatched + 1 {
				c.feed(dirOut, []byte{22, 3, 3, 0, 1, 0})
			}
		}, "over 128 records"},
		{"oversized record", func(c *capture) { c.feed(dirIn, []byte{23, 3, 3, 0xff, 0xff}) }, "a record of 65535 bytes"},
	} {
		c := newCapture(true)
		tc.run(c)
		if _, _, err := c.adoptKeys(s.id); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: adoption %v, want an error saying %q", tc.name, err, tc.want)
		}
		if c.readLimit() != 0 {
			t.Errorf("%s: reads still cut at records after the capture stopped", tc.name)
		}
	}
}

// FuzzCapture: whatever a client sends before adoption (the capture
// follows its records while crypto/tls reads them), the capture never
// panics, keeps at most one record's body, and cuts reads at record
// ends until it stops.
func FuzzCapture(f *testing.F) {
	secret := bytes.Repeat([]byte{1}, 32)
	s := suiteByID(tls.TLS_AES_128_GCM_SHA256)
	k, _ := newTrafficKeys(s, secret, 0)
	app, _ := k.seal(nil, recordApplicationData, []byte("GET /connect"))
	f.Add(append([]byte{22, 3, 3, 0, 1, 1}, app...), uint8(3))
	f.Add([]byte{23, 3, 3, 0xff, 0xff}, uint8(1))
	f.Add(bytes.Repeat([]byte{23, 3, 3, 0, 0}, 200), uint8(9))
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint8) {
		c := newCapture(true)
		c.Write([]byte("CLIENT_TRAFFIC_SECRET_0 " + strings.Repeat("00", 32) + " " + hex.EncodeToString(secret) + "\n"))
		for p := stream; len(p) > 0; {
			n := min(int(chunk)+1, len(p))
			if l := c.readLimit(); l > 0 {
				n = min(n, l)
			}
			c.feed(dirIn, p[:n])
			p = p[n:]
			c.mu.Lock()
			if d := c.dirs[dirIn]; cap(d.rec) > maxCiphertext || d.left > maxCiphertext {
				t.Fatalf("capture holds %d bytes for a record", cap(d.rec))
			}
			c.mu.Unlock()
		}
		c.adoptKeys(s.id)
	})
}

// keyPair is the two ends of one direction at sequence seq: the writer's
// keys and a reader with its own copy of them.
func keyPair(t testing.TB, s *suite, secret []byte, seq uint64) (trafficKeys, recordReader) {
	t.Helper()
	w, err := newTrafficKeys(s, secret, seq)
	if err != nil {
		t.Fatal(err)
	}
	r := recordReader{}
	if r.keys, err = newTrafficKeys(s, bytes.Clone(secret), seq); err != nil {
		t.Fatal(err)
	}
	return w, r
}

func TestServerHelloSuite(t *testing.T) {
	hello := func(sessionID int, suite uint16) []byte {
		b := []byte{2, 0, 0, 0, 3, 3}
		b = append(b, bytes.Repeat([]byte{0xaa}, 32)...)
		b = append(b, byte(sessionID))
		b = append(b, bytes.Repeat([]byte{0xbb}, sessionID)...)
		return binary.BigEndian.AppendUint16(b, suite)
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want uint16 // 0: none
	}{
		{"AES-128-GCM, no session id", hello(0, tls.TLS_AES_128_GCM_SHA256), tls.TLS_AES_128_GCM_SHA256},
		{"ChaCha20, 32-byte session id", hello(32, tls.TLS_CHACHA20_POLY1305_SHA256), tls.TLS_CHACHA20_POLY1305_SHA256},
		{"AES-256-GCM", hello(8, tls.TLS_AES_256_GCM_SHA384), tls.TLS_AES_256_GCM_SHA384},
		{"a TLS 1.2 suite", hello(0, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256), 0},
		{"cut in the suite", hello(32, tls.TLS_AES_128_GCM_SHA256)[:4+2+32+1+32+1], 0},
		{"cut in the session id", hello(32, tls.TLS_AES_128_GCM_SHA256)[:50], 0},
		{"not a server hello", append([]byte{1}, hello(0, tls.TLS_AES_128_GCM_SHA256)[1:]...), 0},
		{"empty", nil, 0},
	} {
		s := serverHelloSuite(tc.b)
		switch {
		case tc.want == 0 && s != nil:
			t.Errorf("%s: suite %s, want none", tc.name, tls.CipherSuiteName(s.id))
		case tc.want != 0 && (s == nil || s.id != tc.want):
			t.Errorf("%s: suite %v, want %s", tc.name, s, tls.CipherSuiteName(tc.want))
		}
	}
}
