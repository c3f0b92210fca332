package containerd

import (
	"slices"
	"testing"
)

func TestCapsWithin(t *testing.T) {
	// A bounding set without CAP_SYS_RESOURCE (24), as in a container.
	got := capsWithin([]byte("Name:\tagent\nCapInh:\t0000000000000000\nCapBnd:\t000001fffeffffff\nCapAmb:\t0000000000000000\n"))
	if slices.Contains(got, "CAP_SYS_RESOURCE") || len(got) != len(allCaps)-1 || !slices.Contains(got, "CAP_AUDIT_READ") {
		t.Errorf("capsWithin(no SYS_RESOURCE) = %v", got)
	}
	if got := capsWithin([]byte("CapBnd:\t0000000000000401\n")); !slices.Equal(got, []string{"CAP_CHOWN", "CAP_NET_BIND_SERVICE"}) {
		t.Errorf("capsWithin(0x401) = %v", got)
	}
	for _, status := range []string{"", "CapBnd:\tzz\n"} {
		if got := capsWithin([]byte(status)); !slices.Equal(got, allCaps) {
			t.Errorf("capsWithin(%q) = %v, want all", status, got)
		}
	}
	// The capability numbers allCaps' order stands for.
	for i, c := range map[int]string{0: "CAP_CHOWN", 21: "CAP_SYS_ADMIN", 24: "CAP_SYS_RESOURCE", 37: "CAP_AUDIT_READ"} {
		if allCaps[i] != c {
			t.Errorf("allCaps[%d] = %s, want %s", i, allCaps[i], c)
		}
	}
}
