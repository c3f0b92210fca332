package cpio

import (
	"bytes"
	"strconv"
	"testing"
)

// TestLayout reads the newc archive back field by field.
func TestLayout(t *testing.T) {
	var buf bytes.Buffer
	c := NewWriter(&buf, 1700000000)
	c.Dir("dev", 0o755)
	c.CharDev("dev/console", 0o600, 5, 1)
	c.File("init", 0o755, []byte("#!/bin/sh\n"))
	c.Symlink("bin/sh", "busybox")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	type entry struct {
		name         string
		mode         uint64
		data         string
		major, minor uint64
	}
	var got []entry
	b := buf.Bytes()
	for off := 0; off < len(b); {
		h := string(b[off : off+110])
		if h[:6] != "070701" {
			t.Fatalf("bad magic at %d: %q", off, h[:6])
		}
		field := func(i int) uint64 { v, _ := strconv.ParseUint(h[6+8*i:14+8*i], 16, 32); return v }
		if field(5) != 1700000000 || field(2) != 0 || field(3) != 0 {
			t.Errorf("entry at %d: mtime %d uid %d gid %d", off, field(5), field(2), field(3))
		}
		nameLen, size := int(field(11)), int(field(6))
		name := string(b[off+110 : off+110+nameLen-1])
		off += (110 + nameLen + 3) &^ 3
		got = append(got, entry{name, field(1), string(b[off : off+size]), field(9), field(10)})
		off += (size + 3) &^ 3
		if name == "TRAILER!!!" {
			if off != len(b) {
				t.Errorf("%d bytes after the trailer", len(b)-off)
			}
			break
		}
	}
	want := []entry{
		{"dev", 0o40755, "", 0, 0}, {"dev/console", 0o20600, "", 5, 1}, {"init", 0o100755, "#!/bin/sh\n", 0, 0},
		{"bin/sh", 0o120777, "busybox", 0, 0}, {"TRAILER!!!", 0, "", 0, 0},
	}
	if len(got) != len(want) {
		t.Fatalf("entries %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}
