package slots

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

const (
	digestA = "sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	digestB = "sha256:" + "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
)

// samplePointers are valid pointers in the states a gateway goes through.
func samplePointers() []Pointer {
	return []Pointer{
		fresh(),
		{Current: Packaged, Previous: Packaged, Versions: [2]string{"v1.2.0", ""}, Digests: [2]string{digestA, ""}},
		{Current: A, Previous: Packaged, Trial: true, Deadline: 1_800_000_300, Timeout: 300, Boots: 2, LastExit: "exit status 1",
			Versions: [2]string{"v1.2.0", ""}, Digests: [2]string{digestA, ""}},
		{Current: A, Previous: B, Versions: [2]string{"v1.2.0", "v1.3.0-rc.1+g1234"}, Digests: [2]string{digestA, digestB},
			RolledBack: B, RolledBackVersion: "v1.3.0-rc.1+g1234", RolledBackAt: 1_800_000_000, Reason: "exited 3 times at start: exit status 1"},
		{Current: Packaged, Previous: Packaged, RolledBackAt: 1_800_000_000, Reason: "pointer file: checksum mismatch (damaged): back to packaged"},
	}
}

func TestPointerRoundTrip(t *testing.T) {
	for _, p := range samplePointers() {
		b, err := p.Encode()
		if err != nil {
			t.Fatalf("Encode(%+v): %v", p, err)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("Decode(%q): %v", b, err)
		}
		if got != p {
			t.Fatalf("Decode(Encode(p)) = %+v, want %+v", got, p)
		}
	}
}

func TestPointerRefused(t *testing.T) {
	good, err := samplePointers()[2].Encode()
	if err != nil {
		t.Fatal(err)
	}
	// resum recomputes the checksum, so the content itself is what is refused.
	resum := func(body string) []byte {
		i := strings.LastIndex(strings.TrimSuffix(body, "\n"), "\n")
		b := []byte(body[:i+1])
		var out bytes.Buffer
		out.Write(b)
		out.WriteString("crc " + hex8(b) + "\n")
		return out.Bytes()
	}
	body := string(good)
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "no checksum line"},
		{"one bit flipped", bytes.Replace(good, []byte("current a"), []byte("current b"), 1), "checksum mismatch"},
		{"truncated", good[:len(good)-5], "no checksum line"},
		{"newer format", resum(strings.Replace(body, "outpost-slots 1", "outpost-slots 2", 1)), "format \"2\""},
		{"unknown slot", resum(strings.Replace(body, "current a", "current ../../bin", 1)), "none of a, b, packaged"},
		{"trial of itself", resum(strings.Replace(body, "previous packaged", "previous a", 1)), "with itself"},
		{"too many boots", resum(strings.Replace(body, "trial 1 1800000300 300 2", "trial 1 1800000300 300 9", 1)), "trial line"},
		{"trial too long", resum(strings.Replace(body, "trial 1 1800000300 300 2", "trial 1 1800000300 9223372036 2", 1)), "out of range"},
		{"number with plus", resum(strings.Replace(body, "trial 1 1800000300 300 2", "trial 1 +1800000300 300 2", 1)), "number"},
		{"bad digest", resum(strings.Replace(body, digestA, "sha256:xyz", 1)), "is not sha256"},
		{"version with space", resum(strings.Replace(body, "v1.2.0 ", "v1 2.0 ", 1)), "fields"},
		{"control byte in exit", resum(strings.Replace(body, "exit status 1", "exit\tstatus 1", 1)), "printable"},
		{"extra line", resum(strings.Replace(body, "exit ", "exit \nexit ", 1)), "lines"},
		{"uppercase checksum", []byte(strings.Replace(body, "crc "+hex8(good[:len(good)-13]), "crc "+strings.ToUpper(hex8(good[:len(good)-13])), 1)), "checksum"},
		{"too large", append(bytes.Repeat([]byte("x"), MaxPointerSize), good...), "bytes (at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(tt.data)
			if err == nil {
				t.Fatalf("Decode accepted %q", tt.data)
			}
			if !errors.Is(err, errPointer) {
				t.Fatalf("error %v does not wrap errPointer", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q, want it to say %q", err, tt.want)
			}
		})
	}
}

func hex8(b []byte) string {
	var out bytes.Buffer
	const digits = "0123456789abcdef"
	sum := crcOf(b)
	for i := 7; i >= 0; i-- {
		out.WriteByte(digits[(sum>>(4*uint(i)))&0xf])
	}
	return out.String()
}

func FuzzDecode(f *testing.F) {
	for _, p := range samplePointers() {
		b, err := p.Encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("outpost-slots 1\ncrc 00000000\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Decode(data)
		if err != nil {
			return
		}
		// What decodes is valid and is exactly what Encode writes for it.
		if err := p.Validate(); err != nil {
			t.Fatalf("decoded an invalid pointer: %v", err)
		}
		b, err := p.Encode()
		if err != nil || !bytes.Equal(b, data) {
			t.Fatalf("Encode(Decode(%q)) = %q, %v", data, b, err)
		}
	})
}
