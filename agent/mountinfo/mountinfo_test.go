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

func TestPropagation(t *testing.T) {
	const table = `22 1 0:21 / / rw shared:1 - ext4 /dev/root rw
30 22 0:4 / /srv rw master:3 - tmpfs tmpfs rw
31 30 0:5 / /srv/private rw - tmpfs tmpfs rw
32 22 0:6 / /both rw shared:7 master:2 - tmpfs tmpfs rw
33 22 0:7 / /srvX rw - tmpfs tmpfs rw
34 22 0:8 / /stacked rw shared:9 - tmpfs tmpfs rw
35 22 0:9 / /stacked rw - tmpfs tmpfs rw
short line
`
	for _, tc := range []struct {
		path          string
		mp            string
		shared, slave bool
	}{
		{"/", "/", true, false},
		{"/etc/hosts", "/", true, false},
		{"/srv", "/srv", false, true},
		{"/srv/data", "/srv", false, true},
		{"/srv/private/x", "/srv/private", false, false},
		{"/srvX/y", "/srvX", false, false},
		{"/both", "/both", true, true},
		{"/stacked/a", "/stacked", false, false}, // the top of a stack wins
	} {
		mp, shared, slave, err := propagation(strings.NewReader(table), tc.path)
		if err != nil || mp != tc.mp || shared != tc.shared || slave != tc.slave {
			t.Errorf("propagation(%q) = %q shared=%v slave=%v err=%v, want %q shared=%v slave=%v",
				tc.path, mp, shared, slave, err, tc.mp, tc.shared, tc.slave)
		}
	}
	if _, _, _, err := propagation(strings.NewReader("30 22 0:4 / /srv rw - tmpfs tmpfs rw\n"), "/etc"); err == nil {
		t.Error("a path no mount holds: no error")
	}
}
