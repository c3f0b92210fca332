package seccomp

import (
	"encoding/json"
	"testing"
)

// FuzzParse feeds arbitrary bytes to the Localhost profile parser: nothing
// may panic, and what it accepts passes the checks again after a round trip.
func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte(`{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":5,"value":1,"valueTwo":2,"op":"SCMP_CMP_MASKED_EQ"}]}],"flags":["SECCOMP_FILTER_FLAG_LOG"]}`))
	b, err := json.Marshal(Default(nil))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data)
		if err != nil {
			return
		}
		again, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(again); err != nil {
			t.Fatalf("accepted %q, but not its re-encoding %q: %v", data, again, err)
		}
	})
}
