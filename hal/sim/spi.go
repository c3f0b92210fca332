package sim

import (
	"errors"
	"fmt"
	"sync"

	"periph.io/x/conn/v3"
	"periph.io/x/conn/v3/physic"
	"periph.io/x/conn/v3/spi"
)

// SPIDevice is a simulated chip on one SPI chip select: one full-duplex
// transfer.
type SPIDevice interface {
	spiTx(w, r []byte) error
}

// SPIPort is a simulated SPI port with one chip; it implements
// spi.PortCloser. Like Linux spidev, it can be connected once; open a new
// port for the same chip with [Sim.SPI].
type SPIPort struct {
	name      string
	dev       SPIDevice
	mu        sync.Mutex
	connected bool
	closed    bool
}

// String implements spi.Port.
func (p *SPIPort) String() string { return p.name }

// LimitSpeed implements spi.PortCloser.
func (p *SPIPort) LimitSpeed(physic.Frequency) error { return nil }

// Close implements spi.PortCloser.
func (p *SPIPort) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	return nil
}

// Connect implements spi.Port.
func (p *SPIPort) Connect(f physic.Frequency, mode spi.Mode, bits int) (spi.Conn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.closed:
		return nil, fmt.Errorf("sim %s: port closed", p.name)
	case p.connected:
		return nil, fmt.Errorf("sim %s: Connect can only be called once", p.name)
	case bits != 8:
		return nil, fmt.Errorf("sim %s: %d bits per word not simulated", p.name, bits)
	}
	p.connected = true
	return &spiConn{p: p}, nil
}

type spiConn struct{ p *SPIPort }

func (c *spiConn) String() string      { return c.p.name }
func (c *spiConn) Duplex() conn.Duplex { return conn.Full }
func (c *spiConn) TxPackets([]spi.Packet) error {
	return errors.New("sim: TxPackets not simulated")
}

func (c *spiConn) Tx(w, r []byte) error {
	if len(r) != 0 && len(r) != len(w) {
		return fmt.Errorf("sim %s: read and write buffers differ in length", c.p.name)
	}
	c.p.mu.Lock()
	closed := c.p.closed
	c.p.mu.Unlock()
	if closed {
		return fmt.Errorf("sim %s: port closed", c.p.name)
	}
	return c.p.dev.spiTx(w, r)
}

// MCP3008 simulates a Microchip MCP3008 ADC (datasheet section 5): after a
// start bit the chip reads SGL/DIFF and D2–D0, samples, sends a null bit
// and then B9…B0, MSB first.
type MCP3008 struct {
	w    *World
	Vref float64
}

// NewMCP3008 returns an MCP3008 with a 3.3 V reference.
func NewMCP3008(w *World) *MCP3008 { return &MCP3008{w: w, Vref: 3.3} }

func (d *MCP3008) spiTx(w, r []byte) error {
	// Walk the bits as the chip does: find the start bit, take 4 control
	// bits, skip the sample clock, emit the null bit then 10 data bits.
	n := len(w) * 8
	bit := func(i int) byte { return w[i/8] >> (7 - i%8) & 1 }
	start := -1
	for i := range n {
		if bit(i) == 1 {
			start = i
			break
		}
	}
	for i := range r {
		r[i] = 0
	}
	if start < 0 || start+5 > n {
		return nil
	}
	ctl := bit(start+1)<<3 | bit(start+2)<<2 | bit(start+3)<<1 | bit(start+4)
	ch := int(ctl & 7)
	var v float64
	if ctl&8 != 0 {
		v = d.w.Voltage(ch)
	} else {
		// Differential pairs (table 5-2): IN+ is ch, IN- its neighbour.
		v = d.w.Voltage(ch) - d.w.Voltage(ch^1)
	}
	code := int(v / d.Vref * 1024)
	code = max(min(code, 1023), 0)
	out := start + 6 // the null bit
	for i := range 10 {
		j := out + 1 + i
		if j < n && len(r) > 0 && code>>(9-i)&1 == 1 {
			r[j/8] |= 1 << (7 - j%8)
		}
	}
	return nil
}

// Both SPI chips answer through spiTx.
var _ SPIDevice = (*BME280)(nil)
var _ SPIDevice = (*MCP3008)(nil)
