package mqtt

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// mochi-mqtt's packets package keeps its test fixtures in a non-test
// file: a table of every packet case (TPacketData) that its init builds on
// the heap, about 360 KB nothing outside its tests reads. Dropping it lets
// the garbage collector take that memory back.
func init() { packets.TPacketData = nil }

// ErrNotConnected is returned by Publish while an external broker is
// unreachable; the message is dropped.
var ErrNotConnected = errors.New("mqtt: not connected to the broker")

// Limits of the connection to an external broker.
const (
	keepAlive      = 30 * time.Second
	connectTimeout = 10 * time.Second
	writeTimeout   = 10 * time.Second
	// maxIncoming bounds one packet from the broker; twin and desired
	// messages are well under 1 KiB.
	maxIncoming = 64 << 10
	// maxQueued bounds the packets waiting to be written. Publish never
	// waits for a slow broker: past this it drops the message.
	maxQueued = 256
)

// ErrQueueFull is returned by Publish when the broker takes packets more
// slowly than the agent publishes; the message is dropped.
var ErrQueueFull = errors.New("mqtt: the broker is not keeping up; message dropped")

// session is one connection to the broker. Packets are written by one
// goroutine from a bounded queue, so no caller waits on the network.
type session struct {
	c    net.Conn
	out  chan []byte   // encoded packets; nil closes the connection
	quit chan struct{} // closed by the reader when the connection is over
	done chan struct{} // closed when the writer has stopped
}

// writeLoop writes queued packets until the connection is over; a failed
// write closes it, so the reader sees the failure.
func (s *session) writeLoop() {
	defer close(s.done)
	for {
		select {
		case <-s.quit:
			return
		case b := <-s.out:
			if b == nil {
				s.c.Close()
				return
			}
			s.c.SetWriteDeadline(time.Now().Add(writeTimeout))
			if _, err := s.c.Write(b); err != nil {
				s.c.Close()
				return
			}
		}
	}
}

// send queues an encoded packet: without waiting when wait is false
// (ErrQueueFull if the queue is full), else until there is room or the
// writer has stopped.
func (s *session) send(b []byte, wait bool) error {
	if !wait {
		select {
		case s.out <- b:
			return nil
		default:
			return ErrQueueFull
		}
	}
	select {
	case s.out <- b:
		return nil
	case <-s.done:
		return ErrNotConnected
	}
}

// external is an MQTT 3.1.1 client of a broker the agent does not run,
// written on the packet codec of the embedded broker's library so that
// the agent links one MQTT implementation. It connects in the background
// with backoff and logs one line per state change, never one per attempt.
// Messages go out at QoS 0; the status topic and subscriptions use QoS 1.
type external struct {
	addr   string // HOST:PORT
	url    string // for logs, without credentials
	tls    *tls.Config
	user   string
	pass   string
	node   string
	log    *slog.Logger
	stop   chan struct{}
	done   chan struct{}
	closed sync.Once

	mu        sync.Mutex
	conn      *session // nil while disconnected
	nextID    uint16
	subs      map[string]Handler
	onConnect []func()
	lastState string
	attempts  int // first-connection attempts that failed
	everUp    bool
}

func dialExternal(cfg Config) (Conn, error) {
	u, err := brokerURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	e := &external{addr: u.Host, url: u.Redacted(), user: cfg.Username, pass: cfg.Password, node: cfg.Node, log: cfg.Log,
		stop: make(chan struct{}), done: make(chan struct{}), subs: map[string]Handler{}}
	if u.Scheme == "ssl" {
		e.tls = &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.CAFile != "" {
			if e.tls, err = LoadCA(cfg.CAFile); err != nil {
				return nil, err
			}
		}
	}
	go e.run()
	return e, nil
}

// run connects, serves the connection until it fails, and reconnects
// with backoff, until Close.
func (e *external) run() {
	defer close(e.done)
	var backoff time.Duration
	for {
		c, r, err := e.connect()
		if err == nil {
			start := time.Now()
			err = e.serve(c, r)
			select {
			case <-e.stop:
				return
			default:
			}
			// A broker that drops the agent at once is retried with
			// backoff too; after a long connection the first retry is
			// quick.
			if time.Since(start) > time.Minute {
				backoff = 0
			}
			backoff = nextBackoff(backoff)
			e.state("lost", "MQTT broker connection lost; reconnecting with backoff (up to 1m)", err)
		} else {
			backoff = nextBackoff(backoff)
			e.mu.Lock()
			if !e.everUp {
				e.attempts++
			}
			e.mu.Unlock()
			e.state("down", fmt.Sprintf("MQTT broker unreachable; retrying with backoff (up to 1m), next in %s", backoff.Round(time.Second)), err)
		}
		select {
		case <-e.stop:
			return
		case <-time.After(backoff):
		}
	}
}

// connect dials the broker and completes the MQTT handshake.
func (e *external) connect() (net.Conn, *bufio.Reader, error) {
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	go func() {
		select {
		case <-e.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	var c net.Conn
	var err error
	if e.tls != nil {
		c, err = (&tls.Dialer{Config: e.tls}).DialContext(ctx, "tcp", e.addr)
	} else {
		c, err = (&net.Dialer{}).DialContext(ctx, "tcp", e.addr)
	}
	if err != nil {
		return nil, nil, err
	}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{
			ProtocolName: []byte("MQTT"), ClientIdentifier: "outpost-agent-" + e.node, Clean: true,
			Keepalive: uint16(keepAlive / time.Second),
			WillFlag:  true, WillTopic: StatusTopic(e.node), WillPayload: []byte("offline"), WillQos: 1, WillRetain: true,
		}}
	if e.user != "" {
		pk.Connect.UsernameFlag, pk.Connect.Username = true, []byte(e.user)
		pk.Connect.PasswordFlag, pk.Connect.Password = true, []byte(e.pass)
	}
	var b bytes.Buffer
	pk.ConnectEncode(&b)
	c.SetDeadline(time.Now().Add(connectTimeout))
	if _, err := c.Write(b.Bytes()); err != nil {
		c.Close()
		return nil, nil, err
	}
	r := bufio.NewReader(c)
	ack, err := readPacket(r)
	if err == nil && ack.FixedHeader.Type != packets.Connack {
		err = fmt.Errorf("broker answered CONNECT with packet type %d, not CONNACK", ack.FixedHeader.Type)
	}
	if err == nil && ack.ReasonCode != 0 {
		err = connackError(ack.ReasonCode)
	}
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	c.SetDeadline(time.Time{})
	return c, r, nil
}

// connackError says what an MQTT 3.1.1 CONNACK refusal means.
func connackError(code byte) error {
	switch code {
	case 1:
		return errors.New("broker refused the connection: it does not speak MQTT 3.1.1")
	case 2:
		return errors.New("broker refused the client id")
	case 3:
		return errors.New("broker refused the connection: server unavailable")
	case 4:
		return errors.New("broker refused the username or password: check mqtt.username and mqtt.password")
	case 5:
		return errors.New("broker refused the connection: not authorized (check mqtt.username and the broker's ACL)")
	}
	return fmt.Errorf("broker refused the connection with return code %d", code)
}

// serve runs one connection: it publishes online, subscribes, calls the
// OnConnect functions and then reads until the connection fails or is
// closed, pinging the broker every keepAlive.
func (e *external) serve(c net.Conn, r *bufio.Reader) error {
	ss := &session{c: c, out: make(chan []byte, maxQueued), quit: make(chan struct{}), done: make(chan struct{})}
	go ss.writeLoop()
	e.mu.Lock()
	e.conn, e.everUp = ss, true
	subs := make(map[string]Handler, len(e.subs))
	for f, h := range e.subs {
		subs[f] = h
	}
	fns := append([]func(){}, e.onConnect...)
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.conn = nil
		e.mu.Unlock()
		close(ss.quit)
		c.Close()
	}()
	select {
	case <-e.stop:
		return nil
	default:
	}
	e.state("up", "MQTT broker connected", nil)
	if err := e.publish(ss, StatusTopic(e.node), []byte("online"), true, 1, true); err != nil {
		return err
	}
	for f := range subs {
		if err := e.subscribe(ss, f); err != nil {
			return err
		}
	}
	// Republishing may be long; the reader must run meanwhile.
	go func() {
		for _, fn := range fns {
			fn()
		}
	}()
	pings := make(chan struct{})
	defer close(pings)
	go func() {
		t := time.NewTicker(keepAlive)
		defer t.Stop()
		for {
			select {
			case <-pings:
				return
			case <-t.C:
				e.write(ss, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}}, true)
			}
		}
	}()
	for {
		// The broker answers a ping within the keep-alive period, so
		// silence for half as long again means the link is gone.
		c.SetReadDeadline(time.Now().Add(keepAlive * 3 / 2))
		pk, err := readPacket(r)
		if err != nil {
			select {
			case <-e.stop:
				return nil
			default:
			}
			return err
		}
		switch pk.FixedHeader.Type {
		case packets.Publish:
			switch pk.FixedHeader.Qos {
			case 1:
				e.write(ss, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID}, true)
			case 2:
				e.write(ss, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: pk.PacketID}, true)
			}
			e.deliver(pk.TopicName, pk.Payload)
		case packets.Pubrel:
			e.write(ss, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubcomp}, PacketID: pk.PacketID}, true)
		case packets.Suback:
			for _, code := range pk.ReasonCodes {
				if code >= 0x80 {
					e.log.Warn("MQTT broker refused a subscription; desired values on it will not arrive: check the broker's ACL", "broker", e.url)
				}
			}
		}
	}
}

// deliver calls the handler of every subscription matching topic.
func (e *external) deliver(topic string, payload []byte) {
	e.mu.Lock()
	var hs []Handler
	for f, h := range e.subs {
		if match(f, topic) {
			hs = append(hs, h)
		}
	}
	e.mu.Unlock()
	for _, h := range hs {
		h(topic, payload)
	}
}

// match says whether an MQTT topic filter (with + and # wildcards)
// matches topic.
func match(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && !strings.HasPrefix(filter, "$") {
		return false
	}
	for {
		f, frest, fmore := strings.Cut(filter, "/")
		if f == "#" {
			return true
		}
		t, trest, tmore := strings.Cut(topic, "/")
		if f != "+" && f != t {
			return false
		}
		if !fmore || !tmore {
			// "a/#" matches "a" too.
			return fmore == tmore || (fmore && frest == "#")
		}
		filter, topic = frest, trest
	}
}

func (e *external) id() uint16 {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.nextID++
	if e.nextID == 0 {
		e.nextID = 1
	}
	return e.nextID
}

// publish sends a message; at QoS 1 the broker's PUBACK is not waited for.
func (e *external) publish(ss *session, topic string, payload []byte, retain bool, qos byte, wait bool) error {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Retain: retain}, TopicName: topic, Payload: payload}
	if qos > 0 {
		pk.PacketID = e.id()
	}
	return e.write(ss, pk, wait)
}

func (e *external) subscribe(ss *session, filter string) error {
	return e.write(ss, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: e.id(),
		Filters: packets.Subscriptions{{Filter: filter, Qos: 1}}}, true)
}

// write encodes pk for MQTT 3.1.1 and queues it on ss (see session.send).
func (e *external) write(ss *session, pk packets.Packet, wait bool) error {
	pk.ProtocolVersion = 4
	var b bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Publish:
		err = pk.PublishEncode(&b)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&b)
	case packets.Puback:
		err = pk.PubackEncode(&b)
	case packets.Pubrec:
		err = pk.PubrecEncode(&b)
	case packets.Pubcomp:
		err = pk.PubcompEncode(&b)
	case packets.Pingreq:
		err = pk.PingreqEncode(&b)
	case packets.Disconnect:
		err = pk.DisconnectEncode(&b)
	default:
		err = fmt.Errorf("mqtt: cannot send packet type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		return err
	}
	return ss.send(b.Bytes(), wait)
}

// readPacket reads one MQTT 3.1.1 packet of at most maxIncoming bytes.
func readPacket(r *bufio.Reader) (packets.Packet, error) {
	pk := packets.Packet{ProtocolVersion: 4}
	hb, err := r.ReadByte()
	if err != nil {
		return pk, err
	}
	n := 0
	for i := 0; ; i++ {
		b, err := r.ReadByte()
		if err != nil {
			return pk, err
		}
		n |= int(b&0x7f) << (7 * i)
		if b&0x80 == 0 {
			break
		}
		if i == 3 {
			return pk, errors.New("broker sent a malformed packet length")
		}
	}
	if n > maxIncoming {
		return pk, fmt.Errorf("broker sent a %d-byte packet, over the %d-byte limit", n, maxIncoming)
	}
	if err := pk.FixedHeader.Decode(hb); err != nil {
		return pk, fmt.Errorf("broker sent a malformed packet header: %w", err)
	}
	pk.FixedHeader.Remaining = n
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return pk, err
	}
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(buf)
	case packets.Publish:
		err = pk.PublishDecode(buf)
	case packets.Suback:
		err = pk.SubackDecode(buf)
	case packets.Pubrel:
		err = pk.PubrelDecode(buf)
	}
	if err != nil {
		return pk, fmt.Errorf("broker sent a malformed packet (type %d): %w", pk.FixedHeader.Type, err)
	}
	return pk, nil
}

// state logs a state change once: repeats of the same state and error
// are quiet.
func (e *external) state(state, msg string, err error) {
	key := state
	if err != nil {
		key += ": " + err.Error()
	}
	e.mu.Lock()
	same := e.lastState == key
	e.lastState = key
	e.mu.Unlock()
	if same {
		return
	}
	if err != nil {
		e.log.Warn(msg, "broker", e.url, "err", err)
	} else {
		e.log.Info(msg, "broker", e.url)
	}
}

func (e *external) current() *session {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.conn
}

func (e *external) Publish(topic string, payload []byte, retain bool) error {
	ss := e.current()
	if ss == nil {
		return ErrNotConnected
	}
	return e.publish(ss, topic, payload, retain, 0, false)
}

func (e *external) Subscribe(filter string, h Handler) error {
	e.mu.Lock()
	e.subs[filter] = h
	ss := e.conn
	e.mu.Unlock()
	if ss != nil {
		return e.subscribe(ss, filter)
	}
	return nil
}

func (e *external) OnConnect(fn func()) {
	e.mu.Lock()
	e.onConnect = append(e.onConnect, fn)
	ss := e.conn
	e.mu.Unlock()
	if ss != nil {
		go fn()
	}
}

func (e *external) Close() error {
	e.closed.Do(func() {
		close(e.stop)
		if ss := e.current(); ss != nil {
			// Queued behind what is pending; the queue's end closes the
			// connection, and the wait below bounds the flush.
			e.publish(ss, StatusTopic(e.node), []byte("offline"), true, 1, false)
			e.write(ss, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}}, false)
			if ss.send(nil, false) != nil {
				ss.c.Close()
			}
		}
		select {
		case <-e.done:
		case <-time.After(time.Second):
		}
	})
	return nil
}
