package sim

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/physic"
)

// Pin is a simulated GPIO pin; it implements gpio.PinIO. An output latches
// the last level written and reads it back; an input reads the level last
// given to Drive (or its pull), and Drive raises the edges it asked for.
type Pin struct {
	name string
	num  int

	mu     sync.Mutex
	output bool
	latch  gpio.Level // output level
	ext    gpio.Level // level driven from outside, for inputs
	driven bool       // whether anything drives the pin from outside
	pull   gpio.Pull
	edge   gpio.Edge
	duty   gpio.Duty
	freq   physic.Frequency
	edges  chan struct{}
}

// NewPin returns a floating input pin.
func NewPin(name string, num int) *Pin {
	return &Pin{name: name, num: num, pull: gpio.Float, edges: make(chan struct{}, 1)}
}

// Drive sets the level an outside circuit puts on the pin (a button, a
// sensor's alert line). An input configured for a matching edge wakes
// WaitForEdge.
func (p *Pin) Drive(l gpio.Level) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.level()
	p.ext, p.driven = l, true
	if p.output || old == l {
		return
	}
	if p.edge == gpio.BothEdges || (p.edge == gpio.RisingEdge && l) || (p.edge == gpio.FallingEdge && !l) {
		select {
		case p.edges <- struct{}{}:
		default: // one pending edge is enough, as in the kernel
		}
	}
}

// IsOutput says whether the pin is configured as an output.
func (p *Pin) IsOutput() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.output
}

// PWMState returns the last PWM duty and frequency set (zero when none).
func (p *Pin) PWMState() (gpio.Duty, physic.Frequency) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.duty, p.freq
}

// String implements conn.Resource.
func (p *Pin) String() string { return p.name }

// Halt implements conn.Resource.
func (p *Pin) Halt() error { return nil }

// Name implements pin.Pin.
func (p *Pin) Name() string { return p.name }

// Number implements pin.Pin.
func (p *Pin) Number() int { return p.num }

// Function implements pin.Pin.
func (p *Pin) Function() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.output && p.freq != 0:
		return "PWM"
	case p.output:
		return "Out/" + p.latch.String()
	default:
		return "In/" + p.level().String()
	}
}

// In implements gpio.PinIn.
func (p *Pin) In(pull gpio.Pull, edge gpio.Edge) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pull != gpio.PullNoChange {
		p.pull = pull
	}
	p.output, p.edge, p.duty, p.freq = false, edge, 0, 0
	select {
	case <-p.edges:
	default:
	}
	return nil
}

// level is the level the pin reads: the latch of an output, else what
// drives it from outside, else its pull (an undriven floating pin reads low).
func (p *Pin) level() gpio.Level {
	switch {
	case p.output:
		return p.latch
	case p.driven:
		return p.ext
	}
	return p.pull == gpio.PullUp
}

// Read implements gpio.PinIn.
func (p *Pin) Read() gpio.Level {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.level()
}

// WaitForEdge implements gpio.PinIn; a negative timeout waits forever.
func (p *Pin) WaitForEdge(timeout time.Duration) bool {
	p.mu.Lock()
	ch, edge := p.edges, p.edge
	p.mu.Unlock()
	if edge == gpio.NoEdge {
		return false
	}
	if timeout < 0 {
		<-ch
		return true
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return false
	}
}

// Pull implements gpio.PinIn.
func (p *Pin) Pull() gpio.Pull {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pull
}

// DefaultPull implements gpio.PinIn.
func (p *Pin) DefaultPull() gpio.Pull { return gpio.Float }

// Out implements gpio.PinOut; the level latches until the next Out.
func (p *Pin) Out(l gpio.Level) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.output, p.latch, p.edge, p.duty, p.freq = true, l, gpio.NoEdge, 0, 0
	return nil
}

// PWM implements gpio.PinOut.
func (p *Pin) PWM(duty gpio.Duty, f physic.Frequency) error {
	if duty < 0 || duty > gpio.DutyMax {
		return fmt.Errorf("sim %s: duty %v out of range", p.name, duty)
	}
	if f <= 0 {
		return errors.New("sim " + p.name + ": PWM needs a frequency")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.output, p.edge, p.duty, p.freq = true, gpio.NoEdge, duty, f
	p.latch = duty > gpio.DutyMax/2
	return nil
}
