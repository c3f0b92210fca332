package linkpoll

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
)

// capture follows a connection's TLS records both ways while crypto/tls
// serves it (the handshake and the upgrade request), so that the
// connection can be adopted without crypto/tls: it learns the
// application traffic secrets from the key log (Poller.TLSConfig) and
// counts the records sealed under them each way, which are the sequence
// numbers the record layer goes on from. A record under the application
// keys is told from one under the handshake keys by opening it (only the
// right key authenticates it), which needs nothing of crypto/tls's
// internals nor of how the peer packs its handshake records. The reads
// crypto/tls makes are cut at the end of each record (readLimit), so at
// adoption crypto/tls holds no byte of a record not yet opened.
//
// It stops (the connection is then not adoptable, and pays nothing more)
// on anything unexpected, and after maxCounted application records or
// maxWatched records either way: the other HTTPS connections served
// through the same listener.
type capture struct {
	server bool // the server's side: "in" is the client's records

	mu      sync.Mutex
	stopped error // why the connection cannot be adopted
	secrets [2][]byte
	dirs    [2]recordCount
	// suite is the cipher suite the server's hello named, when its first
	// record held it whole: the only suite whose keys are made. Without
	// it, the keys of every suite the secrets' length allows are tried.
	suite *suite
}

const (
	dirIn  = 0
	dirOut = 1

	maxCounted = 64
	maxWatched = 128
	maxKeyLog  = 256 // bytes of a key log line: a label, 64 + 96 hex digits
)

// recordCount is one direction of a capture.
type recordCount struct {
	hdr  [recordHeaderLen]byte
	hdrN int
	size int // the current record's body
	left int // its bytes still to come
	// open: the current record is to be opened; rec is its body when it
	// comes in pieces (a copy, until the record's end).
	open    bool
	rec     []byte
	records int
	apps    uint64 // application records: the next sequence number
	// cands are the keys of the suites a record may be sealed under
	// (capture.candidates), until a record opens under one of them.
	cands []trafficKeys
}

var (
	errNoSecrets  = errors.New("linkpoll: the application traffic secrets were not captured (the server's tls.Config must come from Poller.TLSConfig)")
	errTLS12      = errors.New("linkpoll: TLS 1.2 negotiated; adoption needs TLS 1.3")
	errTooMany    = fmt.Errorf("linkpoll: over %d application records before adoption", maxCounted)
	errLongServed = fmt.Errorf("linkpoll: over %d records before adoption", maxWatched)
	errAdopted    = errors.New("linkpoll: adopted")
)

func newCapture(server bool) *capture { return &capture{server: server} }

// stop ends the capture with err and lets go of what it held; c.mu held.
func (c *capture) stop(err error) {
	if c.stopped == nil {
		c.stopped = err
	}
	c.secrets = [2][]byte{}
	c.dirs = [2]recordCount{}
}

// readLimit is the most the next read of the incoming stream may take:
// the rest of the current record; 0 once stopped (no limit).
func (c *capture) readLimit() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped != nil {
		return 0
	}
	d := &c.dirs[dirIn]
	if d.hdrN < recordHeaderLen {
		return recordHeaderLen - d.hdrN
	}
	return d.left
}

// feed follows p, bytes of the stream dir.
func (c *capture) feed(dir int, p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d := &c.dirs[dir]
	for c.stopped == nil && len(p) > 0 {
		if d.hdrN < recordHeaderLen {
			n := copy(d.hdr[d.hdrN:], p)
			d.hdrN += n
			p = p[n:]
			if d.hdrN < recordHeaderLen {
				return
			}
			d.size = int(binary.BigEndian.Uint16(d.hdr[3:]))
			d.left = d.size
			if d.size > maxCiphertext {
				c.stop(fmt.Errorf("linkpoll: a record of %d bytes before adoption", d.size))
				return
			}
			d.open = c.secrets[dir] != nil && d.hdr[0] == recordApplicationData
			if d.size == 0 {
				c.record(dir, nil)
				continue
			}
		}
		n := min(len(p), d.left)
		body := p[:n]
		if n == d.size && d.records == 0 && d.hdr[0] == recordHandshake && dir == c.helloDir() {
			c.suite = serverHelloSuite(body)
		}
		if d.open && (d.rec != nil || n < d.size) { // in pieces: copied
			if d.rec == nil {
				d.rec = make([]byte, 0, d.size)
			}
			d.rec = append(d.rec, body...)
			body = d.rec
		}
		d.left -= n
		p = p[n:]
		if d.left == 0 {
			c.record(dir, body)
		}
	}
}

// candidates makes the keys a direction's records are tried with, once
// the first record to try comes: by then the server's hello has gone by
// (crypto/tls's server logs the secrets before it sends its first
// flight), so only its suite's keys are made; false when the capture
// stopped; c.mu held.
func (c *capture) candidates(dir int) bool {
	d := &c.dirs[dir]
	for _, s := range suites {
		if s.hash().Size() != len(c.secrets[dir]) || c.suite != nil && s != c.suite {
			continue
		}
		k, err := newTrafficKeys(s, c.secrets[dir], 0)
		if err != nil {
			c.stop(err)
			return false
		}
		d.cands = append(d.cands, k)
	}
	if len(d.cands) == 0 {
		c.stop(errors.New("linkpoll: no cipher suite for the application traffic secret"))
		return false
	}
	return true
}

// helloDir is the direction the server's hello comes: out from the
// server, in to the client.
func (c *capture) helloDir() int {
	if c.server {
		return dirOut
	}
	return dirIn
}

// serverHelloSuite is the cipher suite a ServerHello (or a
// HelloRetryRequest, which names the same one; RFC 8446 §4.1.3-4) names
// at the start of record body b, or nil when b does not start with one
// or names a suite this package has no record layer for.
func serverHelloSuite(b []byte) *suite {
	const (
		typeServerHello = 2
		sessionIDAt     = 4 + 2 + 32 // type and length, version, random
	)
	if len(b) <= sessionIDAt || b[0] != typeServerHello {
		return nil
	}
	at := sessionIDAt + 1 + int(b[sessionIDAt])
	if len(b) < at+2 {
		return nil
	}
	return suiteByID(binary.BigEndian.Uint16(b[at:]))
}

// record ends d's current record, whose body is body; c.mu held.
func (c *capture) record(dir int, body []byte) {
	d := &c.dirs[dir]
	open := d.open
	d.hdrN, d.rec, d.open = 0, nil, false
	if d.records++; d.records > maxWatched {
		c.stop(errLongServed)
		return
	}
	if !open {
		return
	}
	if d.cands == nil && !c.candidates(dir) {
		return
	}
	for i := range d.cands {
		k := &d.cands[i]
		nonce := k.nonce()
		pt, err := k.aead.Open(nil, nonce[:], body, d.hdr[:])
		if err != nil {
			continue
		}
		// An application record: it must carry application data (no
		// session ticket, no key update, no alert before adoption).
		end := len(pt) - 1
		for end >= 0 && pt[end] == 0 {
			end--
		}
		if end < 0 || pt[end] != recordApplicationData {
			c.stop(errors.New("linkpoll: a record other than application data under the application keys before adoption"))
			return
		}
		k.seq++
		d.cands = d.cands[i : i+1 : i+1]
		if d.apps++; d.apps > maxCounted {
			c.stop(errTooMany)
		}
		return
	}
	if d.apps > 0 {
		c.stop(errors.New("linkpoll: a record under unknown keys after the application keys were in use"))
	}
}

// Write takes a line of the key log crypto/tls writes (NSS key log
// format: "LABEL <client random hex> <secret hex>\n"). It never fails the
// handshake: a line it cannot take makes the connection not adoptable.
func (c *capture) Write(line []byte) (int, error) {
	label, secret, err := parseKeyLog(line)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped != nil {
		return len(line), nil
	}
	if err != nil {
		c.stop(err)
		return len(line), nil
	}
	dir := -1
	switch label {
	case "CLIENT_TRAFFIC_SECRET_0":
		dir = dirOut
		if c.server {
			dir = dirIn
		}
	case "SERVER_TRAFFIC_SECRET_0":
		dir = dirIn
		if c.server {
			dir = dirOut
		}
	case "CLIENT_RANDOM": // TLS 1.2's master secret
		c.stop(errTLS12)
	}
	if dir < 0 {
		return len(line), nil // the handshake's secrets, the exporter's: not needed
	}
	d := &c.dirs[dir]
	switch {
	case c.secrets[dir] != nil:
		c.stop(fmt.Errorf("linkpoll: %s logged twice", label))
	case d.hdrN > 0:
		c.stop(fmt.Errorf("linkpoll: %s logged in the middle of a record", label))
	default:
		c.secrets[dir] = secret
	}
	return len(line), nil
}

// parseKeyLog parses one key log line strictly: three fields separated
// by one space, a 32-byte client random and a 32- or 48-byte secret in
// hex, a newline at the end.
func parseKeyLog(line []byte) (label string, secret []byte, err error) {
	if len(line) > maxKeyLog || len(line) == 0 || line[len(line)-1] != '\n' {
		return "", nil, fmt.Errorf("linkpoll: key log line of %d bytes is not one line of at most %d", len(line), maxKeyLog)
	}
	fields := bytes.Split(line[:len(line)-1], []byte{' '})
	if len(fields) != 3 || len(fields[0]) == 0 {
		return "", nil, errors.New("linkpoll: key log line has not three fields")
	}
	random := make([]byte, hex.DecodedLen(len(fields[1])))
	if _, err := hex.Decode(random, fields[1]); err != nil || len(random) != 32 {
		return "", nil, errors.New("linkpoll: key log line's client random is not 32 bytes in hex")
	}
	secret = make([]byte, hex.DecodedLen(len(fields[2])))
	if _, err := hex.Decode(secret, fields[2]); err != nil || (len(secret) != 32 && len(secret) != 48) {
		return "", nil, errors.New("linkpoll: key log line's secret is not 32 or 48 bytes in hex")
	}
	return string(fields[0]), secret, nil
}

// adoptKeys ends the capture and returns the keys the record layer goes
// on with: the read keys (the peer's records) and the write keys, each
// at the sequence number of its next record, for the negotiated suite.
func (c *capture) adoptKeys(suiteID uint16) (rd, wr trafficKeys, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.stop(errAdopted)
	if c.stopped != nil {
		return rd, wr, c.stopped
	}
	s := suiteByID(suiteID)
	if c.suite != nil && c.suite != s {
		return rd, wr, fmt.Errorf("linkpoll: the server's hello named %s, but %s was negotiated", tls.CipherSuiteName(c.suite.id), tls.CipherSuiteName(suiteID))
	}
	if s == nil {
		return rd, wr, fmt.Errorf("linkpoll: cipher suite %s negotiated; adoption takes TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384 or TLS_CHACHA20_POLY1305_SHA256", tls.CipherSuiteName(suiteID))
	}
	var keys [2]trafficKeys
	for dir := range 2 {
		d := &c.dirs[dir]
		if c.secrets[dir] == nil {
			return rd, wr, errNoSecrets
		}
		if d.hdrN != 0 {
			return rd, wr, errors.New("linkpoll: a record was in progress at adoption (data sent before the upgrade was answered)")
		}
		switch {
		case d.apps > 0 && d.cands[0].suite != s:
			return rd, wr, fmt.Errorf("linkpoll: records opened under %s, but %s was negotiated", tls.CipherSuiteName(d.cands[0].suite.id), tls.CipherSuiteName(suiteID))
		case d.apps > 0:
			keys[dir] = d.cands[0] // at sequence d.apps
		default:
			if keys[dir], err = newTrafficKeys(s, c.secrets[dir], 0); err != nil {
				return rd, wr, err
			}
		}
	}
	return keys[dirIn], keys[dirOut], nil
}
