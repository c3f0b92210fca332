package slots

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
	"time"
)

// Slot names where an agent binary lives: "a" or "b" under the slots
// directory, or Packaged, the binary the package or image installed.
type Slot string

const (
	A Slot = "a"
	B Slot = "b"
	// Packaged is /usr/bin/outpost-agent: what runs before any upgrade,
	// and what is left when nothing else can run.
	Packaged Slot = "packaged"
)

// Valid says s is one of A, B, Packaged.
func (s Slot) Valid() bool { return s == A || s == B || s == Packaged }

func (s Slot) index() int {
	if s == B {
		return 1
	}
	return 0
}

// Other is the other one of A and B: the slot an install writes into
// while s runs. Packaged's other is A.
func (s Slot) Other() Slot {
	if s == A {
		return B
	}
	return A
}

// Pointer is the content of the pointer file: which slot runs, whether it
// is on trial, and what each slot holds.
type Pointer struct {
	// Current is the slot the launcher starts.
	Current Slot
	// Previous is the slot that ran before Current: during a trial, the
	// known-good one a rollback returns to.
	Previous Slot
	// Trial: Current was switched to and has not yet been marked healthy.
	Trial bool
	// Deadline (Unix seconds) and Timeout (seconds) of the trial: past
	// Deadline, or Timeout after a launch, the trial has failed.
	Deadline int64
	Timeout  int64
	// Boots counts the launches of Current during the trial; LastExit says
	// how its last run ended ("exit status 1").
	Boots    int
	LastExit string
	// Versions and Digests ("sha256:HEX") of slots a and b; "" when empty.
	Versions [2]string
	Digests  [2]string
	// The last rollback: the slot left, its version, when and why. A
	// damaged pointer file replaced by its known-good copy leaves a
	// Reason without a slot.
	RolledBack        Slot
	RolledBackVersion string
	RolledBackAt      int64
	Reason            string
}

const (
	// formatVersion is the pointer file's first line: "outpost-slots 1".
	formatVersion = 1
	magic         = "outpost-slots"
	// MaxPointerSize bounds the pointer file; a valid one is far smaller.
	MaxPointerSize = 4096
	// maxText bounds a version, an exit description or a reason.
	maxText = 256
	// MaxBoots is how many launches a trial slot gets to become healthy.
	MaxBoots = 3
	// MaxTrial bounds a trial's length.
	MaxTrial = 7 * 24 * time.Hour
)

// errPointer is wrapped by every decoding error.
var errPointer = errors.New("pointer file")

// Version says what slot s holds ("" for none, or for Packaged).
func (p *Pointer) Version(s Slot) string {
	if s == Packaged {
		return ""
	}
	return p.Versions[s.index()]
}

// Validate checks what Decode and Encode require.
func (p *Pointer) Validate() error {
	if !p.Current.Valid() || !p.Previous.Valid() {
		return fmt.Errorf("%w: slot %q or %q is none of a, b, packaged", errPointer, p.Current, p.Previous)
	}
	if p.Trial {
		if p.Current == p.Previous {
			return fmt.Errorf("%w: trial of %s with itself as the slot to return to", errPointer, p.Current)
		}
		if p.Current == Packaged {
			return fmt.Errorf("%w: trial of the packaged agent", errPointer)
		}
		if p.Timeout <= 0 || p.Timeout > int64(MaxTrial/time.Second) || p.Deadline <= 0 || p.Boots < 0 || p.Boots > MaxBoots {
			return fmt.Errorf("%w: trial timeout %d, deadline %d, boots %d out of range", errPointer, p.Timeout, p.Deadline, p.Boots)
		}
	} else if p.Timeout != 0 || p.Deadline != 0 || p.Boots != 0 {
		return fmt.Errorf("%w: trial figures without a trial", errPointer)
	}
	for i, s := range []Slot{A, B} {
		if err := checkVersion(p.Versions[i]); err != nil {
			return fmt.Errorf("%w: slot %s: %v", errPointer, s, err)
		}
		if err := checkDigest(p.Digests[i], p.Versions[i] == ""); err != nil {
			return fmt.Errorf("%w: slot %s: %v", errPointer, s, err)
		}
	}
	if p.Current != Packaged && p.Version(p.Current) == "" {
		return fmt.Errorf("%w: current slot %s is empty", errPointer, p.Current)
	}
	if p.RolledBack != "" && !p.RolledBack.Valid() {
		return fmt.Errorf("%w: rolled back slot %q", errPointer, p.RolledBack)
	}
	if p.RolledBack == "" && p.RolledBackVersion != "" {
		return fmt.Errorf("%w: rolled back version without a slot", errPointer)
	}
	if err := checkVersion(p.RolledBackVersion); err != nil {
		return fmt.Errorf("%w: rolled back: %v", errPointer, err)
	}
	if p.RolledBackAt < 0 {
		return fmt.Errorf("%w: rollback time %d", errPointer, p.RolledBackAt)
	}
	for _, s := range []string{p.LastExit, p.Reason} {
		if err := checkText(s); err != nil {
			return fmt.Errorf("%w: %v", errPointer, err)
		}
	}
	return nil
}

// checkVersion: a version is "" or up to 64 of [0-9A-Za-z.+_-].
func checkVersion(v string) error {
	if len(v) > 64 {
		return fmt.Errorf("version of %d bytes (at most 64)", len(v))
	}
	for _, c := range []byte(v) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '.' || c == '+' || c == '_' || c == '-') {
			return fmt.Errorf("version %q: only letters, digits and . + _ -", v)
		}
	}
	return nil
}

// CheckVersion says whether v can name what a slot holds: 1 to 64 of
// letters, digits and . + _ -.
func CheckVersion(v string) error {
	if v == "" {
		return errors.New("empty version")
	}
	return checkVersion(v)
}

// checkDigest: "sha256:" and 64 lowercase hex digits, or "" when empty.
func checkDigest(d string, empty bool) error {
	if empty {
		if d != "" {
			return errors.New("digest without a version")
		}
		return nil
	}
	h, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(h) != 64 {
		return fmt.Errorf("digest %.80q is not sha256:<64 hex digits>", d)
	}
	for _, c := range []byte(h) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fmt.Errorf("digest %.80q is not sha256:<64 lowercase hex digits>", d)
		}
	}
	return nil
}

// checkText: printable ASCII, at most maxText bytes.
func checkText(s string) error {
	if len(s) > maxText {
		return fmt.Errorf("text of %d bytes (at most %d)", len(s), maxText)
	}
	for _, c := range []byte(s) {
		if c < 0x20 || c > 0x7e {
			return fmt.Errorf("text %.40q has a byte that is not printable ASCII", s)
		}
	}
	return nil
}

// Text makes s fit a pointer's text field: printable ASCII, one line,
// at most maxText bytes.
func Text(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = ' '
		}
	}
	if len(b) > maxText {
		b = b[:maxText]
	}
	return string(b)
}

// Encode writes the pointer file's content: one field a line, in a fixed
// order, ending with the CRC-32C of what precedes it.
//
//	outpost-slots 1
//	current b
//	previous a
//	trial 1 DEADLINE TIMEOUT BOOTS     (trial 0 0 0 0 when none)
//	exit TEXT
//	slot a VERSION DIGEST              (slot a - - when empty)
//	slot b VERSION DIGEST
//	rollback SLOT VERSION AT REASON    (rollback - - 0 when none)
//	crc HEX
func (p *Pointer) Encode() ([]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %d\ncurrent %s\nprevious %s\n", magic, formatVersion, p.Current, p.Previous)
	fmt.Fprintf(&b, "trial %d %d %d %d\n", btoi(p.Trial), p.Deadline, p.Timeout, p.Boots)
	fmt.Fprintf(&b, "exit %s\n", p.LastExit)
	for i, s := range []Slot{A, B} {
		fmt.Fprintf(&b, "slot %s %s %s\n", s, dash(p.Versions[i]), dash(p.Digests[i]))
	}
	fmt.Fprintf(&b, "rollback %s %s %d %s\n", dash(string(p.RolledBack)), dash(p.RolledBackVersion), p.RolledBackAt, p.Reason)
	fmt.Fprintf(&b, "crc %08x\n", crcOf(b.Bytes()))
	return b.Bytes(), nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crcOf(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func undash(s string) string {
	if s == "-" {
		return ""
	}
	return s
}

// Decode parses and validates a pointer file. Anything else than what
// Encode writes (another format version, a field out of order or out of
// range, a wrong checksum, more than MaxPointerSize bytes) is an error.
func Decode(data []byte) (Pointer, error) {
	var p Pointer
	if len(data) > MaxPointerSize {
		return p, fmt.Errorf("%w: %d bytes (at most %d)", errPointer, len(data), MaxPointerSize)
	}
	body, crcLine, ok := cutLastLine(data)
	if !ok {
		return p, fmt.Errorf("%w: no checksum line", errPointer)
	}
	sum, ok := strings.CutPrefix(crcLine, "crc ")
	if !ok || len(sum) != 8 {
		return p, fmt.Errorf("%w: no checksum line", errPointer)
	}
	want, err := strconv.ParseUint(sum, 16, 32)
	if err != nil || fmt.Sprintf("%08x", want) != sum {
		return p, fmt.Errorf("%w: checksum %.20q", errPointer, sum)
	}
	if crcOf(body) != uint32(want) {
		return p, fmt.Errorf("%w: checksum mismatch (damaged)", errPointer)
	}
	lines := strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")
	if len(lines) != 8 || !strings.HasSuffix(string(body), "\n") {
		return p, fmt.Errorf("%w: %d lines, want 9", errPointer, len(lines)+1)
	}
	// field returns line i's words after its name, exactly n of them, the
	// last holding the rest of the line when rest is set.
	field := func(i int, name string, n int, rest bool) ([]string, error) {
		v, ok := strings.CutPrefix(lines[i], name+" ")
		if !ok {
			if rest && lines[i] == name {
				return make([]string, n), nil
			}
			return nil, fmt.Errorf("%w: line %d is not %q", errPointer, i+1, name)
		}
		var f []string
		if rest {
			f = strings.SplitN(v, " ", n)
			for len(f) < n {
				f = append(f, "")
			}
		} else {
			f = strings.Split(v, " ")
		}
		if len(f) != n {
			return nil, fmt.Errorf("%w: line %d (%s) has %d fields, want %d", errPointer, i+1, name, len(f), n)
		}
		return f, nil
	}
	num := func(s string) (int64, error) {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || strconv.FormatInt(n, 10) != s {
			return 0, fmt.Errorf("%w: number %.24q", errPointer, s)
		}
		return n, nil
	}
	f, err := field(0, magic, 1, false)
	if err != nil {
		return p, err
	}
	if f[0] != strconv.Itoa(formatVersion) {
		return p, fmt.Errorf("%w: format %.10q, this launcher reads %d", errPointer, f[0], formatVersion)
	}
	if f, err = field(1, "current", 1, false); err != nil {
		return p, err
	}
	p.Current = Slot(f[0])
	if f, err = field(2, "previous", 1, false); err != nil {
		return p, err
	}
	p.Previous = Slot(f[0])
	if f, err = field(3, "trial", 4, false); err != nil {
		return p, err
	}
	var n [4]int64
	for i := range n {
		if n[i], err = num(f[i]); err != nil {
			return p, err
		}
	}
	if n[0] != 0 && n[0] != 1 || n[3] > MaxBoots {
		return p, fmt.Errorf("%w: trial line %q", errPointer, lines[3])
	}
	p.Trial, p.Deadline, p.Timeout, p.Boots = n[0] == 1, n[1], n[2], int(n[3])
	if f, err = field(4, "exit", 1, true); err != nil {
		return p, err
	}
	p.LastExit = f[0]
	for i, s := range []Slot{A, B} {
		if f, err = field(5+i, "slot", 3, false); err != nil {
			return p, err
		}
		if f[0] != string(s) {
			return p, fmt.Errorf("%w: line %d is slot %.4q, want %s", errPointer, 6+i, f[0], s)
		}
		p.Versions[i], p.Digests[i] = undash(f[1]), undash(f[2])
	}
	if f, err = field(7, "rollback", 4, true); err != nil {
		return p, err
	}
	p.RolledBack, p.RolledBackVersion, p.Reason = Slot(undash(f[0])), undash(f[1]), f[3]
	if p.RolledBackAt, err = num(f[2]); err != nil {
		return p, err
	}
	if err := p.Validate(); err != nil {
		return Pointer{}, err
	}
	// What decodes must encode to the same bytes: one spelling per state.
	if again, _ := p.Encode(); !bytes.Equal(again, data) {
		return Pointer{}, fmt.Errorf("%w: not in its one written form", errPointer)
	}
	return p, nil
}

// cutLastLine splits data before its last line (which must end in "\n").
func cutLastLine(data []byte) (body []byte, last string, ok bool) {
	if len(data) == 0 || data[len(data)-1] != '\n' {
		return nil, "", false
	}
	i := bytes.LastIndexByte(data[:len(data)-1], '\n')
	if i < 0 {
		return nil, "", false
	}
	return data[:i+1], string(data[i+1 : len(data)-1]), true
}
