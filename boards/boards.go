package boards

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"slices"
	"strings"
	"sync"

	"outpost.dev/hal"
	"outpost.dev/hal/linux"
	"outpost.dev/hal/sim"
)

// Target is a Go build target: GOARCH, and GOARM for 32-bit ARM.
type Target struct {
	GOARCH string
	GOARM  string
}

func (t Target) String() string {
	if t.GOARM != "" {
		return t.GOARCH + "/v" + t.GOARM
	}
	return t.GOARCH
}

// Board is one supported gateway.
type Board struct {
	Name  string // registry name: "rpi4"
	Title string // "Raspberry Pi 4 Model B"
	// Models are prefixes of /proc/device-tree/model that identify it.
	Models []string
	// Targets lists the Go targets it runs, the preferred one first. Empty
	// means any (the simulator).
	Targets []Target
	// Layout returns the map of bus and pin names to kernel devices; nil
	// for sim. It is a function so that boards the agent does not run on
	// cost no memory: their tables are built only when asked for.
	Layout func() *linux.Layout
}

// Open returns the board's buses: kernel devices opened on first use, or a
// fresh simulator for sim.
func (b *Board) Open() hal.Buses {
	if b.Layout == nil {
		return sim.New(nil)
	}
	return linux.New(*b.Layout())
}

// BusNames lists the I²C, SPI and 1-wire bus names, sorted.
func (b *Board) BusNames() []string {
	if b.Layout == nil {
		return []string{"I2C1", "SPI0.0", "SPI0.1", "W1"}
	}
	l := b.Layout()
	var n []string
	n = slices.AppendSeq(n, maps.Keys(l.I2C))
	n = slices.AppendSeq(n, maps.Keys(l.SPI))
	n = slices.AppendSeq(n, maps.Keys(l.OneWire))
	slices.Sort(n)
	return n
}

// PinNames lists the GPIO pin names, sorted.
func (b *Board) PinNames() []string {
	if b.Layout == nil {
		n := make([]string, sim.NumPins)
		for i := range n {
			n[i] = fmt.Sprintf("GPIO%d", i)
		}
		slices.Sort(n)
		return n
	}
	return slices.Sorted(maps.Keys(b.Layout().GPIO))
}

var (
	mu     sync.Mutex
	boards = map[string]*Board{}
)

// Register adds a board; it panics on a duplicate name.
func Register(b *Board) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := boards[b.Name]; dup || b.Name == "" {
		panic("boards: bad or duplicate board name " + b.Name)
	}
	boards[b.Name] = b
}

// Names returns the registered board names, sorted.
func Names() []string {
	mu.Lock()
	defer mu.Unlock()
	return slices.Sorted(maps.Keys(boards))
}

// ErrUnknownBoard is wrapped by the errors of Lookup and Detect.
var ErrUnknownBoard = errors.New("unknown board")

// ErrNoDeviceTree is wrapped, with ErrUnknownBoard, by Detect's error for
// a machine without a device-tree model: a PC or a VM, which runs the
// simulator unless told otherwise.
var ErrNoDeviceTree = errors.New("no device-tree model")

// Lookup returns the board registered as name, or an error listing the
// known ones.
func Lookup(name string) (*Board, error) {
	mu.Lock()
	b, ok := boards[name]
	mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w %q (known: %s)", ErrUnknownBoard, name, strings.Join(Names(), ", "))
	}
	return b, nil
}

// ModelPaths are where Detect looks for the device-tree model, relative to
// the root of the file system it is given.
var ModelPaths = []string{"proc/device-tree/model", "sys/firmware/devicetree/base/model"}

// Detect recognises the board from the device-tree model under root (an
// fs.FS of "/" on a gateway, a fake tree in tests). An unrecognised or
// missing model is an error wrapping ErrUnknownBoard that says what was
// read and what to do (a missing or blank one wraps ErrNoDeviceTree too);
// the agent logs it and falls back to its configured board.
func Detect(root fs.FS) (*Board, error) {
	var model []byte
	var err error
	for _, p := range ModelPaths {
		if model, err = readModel(root, p); err == nil {
			break
		}
	}
	m := string(bytes.TrimSpace(bytes.TrimRight(model, "\x00")))
	if err == nil && m == "" {
		err = errors.New("the model is blank")
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w (%v): not a device-tree board; set the board by name (%s)", ErrUnknownBoard, ErrNoDeviceTree, err, strings.Join(Names(), ", "))
	}
	mu.Lock()
	defer mu.Unlock()
	for _, name := range slices.Sorted(maps.Keys(boards)) {
		for _, prefix := range boards[name].Models {
			if strings.HasPrefix(m, prefix) {
				return boards[name], nil
			}
		}
	}
	return nil, fmt.Errorf("%w: device-tree model %q is not one Outpost knows; set the board by name (%s) if its pins match one", ErrUnknownBoard, m, strings.Join(slices.Sorted(maps.Keys(boards)), ", "))
}

// maxModel bounds the device-tree model read: real ones are a line.
const maxModel = 256

// readModel reads the model file at p under root, at most maxModel bytes.
func readModel(root fs.FS, p string) ([]byte, error) {
	f, err := root.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxModel))
}
