package mountinfo

import (
	"reflect"
	"strings"
	"testing"
)

func TestUnder(t *testing.T) {
	const table = `22 1 0:21 / / rw - ext4 /dev/root rw
30 22 0:4 / /var/lib/outpost/pods/a/vol rw - tmpfs tmpfs rw
31 30 0:5 / /var/lib/outpost/pods/a/vol/sub rw - tmpfs tmpfs rw
32 22 0:6 / /var/lib/outpost/pods/with\040space rw - tmpfs tmpfs rw
33 22 0:7 / /var/lib/outpost/podsX rw - tmpfs tmpfs rw
short line
`
	for _, tc := range []struct {
		dir  string
		want []string
	}{
		{"/var/lib/outpost/pods", []string{"/var/lib/outpost/pods/with space", "/var/lib/outpost/pods/a/vol/sub", "/var/lib/outpost/pods/a/vol"}},
		{"/var/lib/outpost/pods/a/vol", []string{"/var/lib/outpost/pods/a/vol/sub", "/var/lib/outpost/pods/a/vol"}},
		{"/nowhere", nil},
	} {
		if got := under(strings.NewReader(table), tc.dir); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("under(%q) = %q, want %q", tc.dir, got, tc.want)
		}
	}
}
