package hal

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
)

// Sentinel errors wrapped by *Error; test with errors.Is.
var (
	ErrUnknownDriver   = errors.New("unknown driver")
	ErrNoBus           = errors.New("no such bus")
	ErrNoPin           = errors.New("no such pin")
	ErrNACK            = errors.New("no answer from device (NACK): check wiring, power and address")
	ErrChipID          = errors.New("wrong chip id")
	ErrCRC             = errors.New("CRC mismatch")
	ErrBadConn         = errors.New("bad connection spec")
	ErrUnknownOption   = errors.New("unknown connection option")
	ErrReadOnly        = errors.New("read-only property")
	ErrUnknownProperty = errors.New("unknown property")
	ErrUnsupported     = errors.New("not supported by this bus or pin")
)

// Error is the error returned by drivers: which driver did what, where, and
// why.
type Error struct {
	Driver string // "bme280"
	Op     string // "open", "read", "write"
	Conn   Conn
	Err    error
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s %s on %s: %v", e.Driver, e.Op, e.Conn, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Wrap returns err as an *Error for driver, op and c, classifying bus errors
// from the kernel (EREMOTEIO, ENXIO, "remote I/O error") as ErrNACK. It
// returns nil for a nil err and leaves an *Error as it is.
func Wrap(driver, op string, c Conn, err error) error {
	if err == nil {
		return nil
	}
	var he *Error
	if errors.As(err, &he) {
		return err
	}
	return &Error{Driver: driver, Op: op, Conn: c, Err: Classify(err)}
}

// Classify maps a raw bus error to a sentinel where it can tell: an I²C
// address that nobody acknowledges is EREMOTEIO or ENXIO from Linux i2c-dev,
// which periph reports as text only.
func Classify(err error) error {
	if err == nil {
		return nil
	}
	for _, s := range []error{ErrNACK, ErrNoBus, ErrNoPin, ErrChipID, ErrCRC, ErrBadConn, ErrUnknownOption, ErrUnsupported} {
		if errors.Is(err, s) {
			return err
		}
	}
	if errors.Is(err, syscall.EREMOTEIO) || errors.Is(err, syscall.ENXIO) {
		return fmt.Errorf("%w (%w)", ErrNACK, err)
	}
	msg := err.Error()
	for _, k := range textKinds {
		if strings.Contains(msg, k.text) {
			return fmt.Errorf("%w (%w)", k.kind, err)
		}
	}
	return err
}

// textKinds classifies errors that periph drivers report as text only.
var textKinds = []struct {
	text string
	kind error
}{
	{"remote I/O error", ErrNACK},           // EREMOTEIO from i2c-dev
	{"no such device or address", ErrNACK},  // ENXIO from i2c-dev
	{"did not respond", ErrNACK},            // devices/v3/ds18b20: all-ones scratchpad
	{"incorrect scratchpad CRC", ErrCRC},    // devices/v3/ds18b20
	{"no such file or directory", ErrNoBus}, // /dev/i2c-N or /dev/spidevB.C missing
}
