package containerd

import (
	"strings"
	"testing"
)

func TestMatchCredentials(t *testing.T) {
	creds := []Credential{
		{Registry: "https://index.docker.io/v1/", Username: "hub"},
		{Registry: "reg.local:5000", Username: "port"},
		{Registry: "reg.local", Username: "noport"},
		{Registry: "*.corp.example", Username: "glob"},
		{Registry: "http://reg.local:5000/v2/team", Username: "team"},
		{Registry: "::bad", Username: "bad"},
	}
	for _, tc := range []struct {
		image string
		want  string // usernames in order
	}{
		{"busybox:1", "hub"},
		{"docker.io/library/busybox", "hub"},
		{"reg.local:5000/team/app:1", "team,port"},
		{"reg.local:5000/other/app", "port"},
		{"reg.local/app", "noport"},
		{"reg.local:5001/app", ""},
		{"a.corp.example/app", "glob"},
		{"a.b.corp.example/app", ""},
		{"corp.example/app", ""},
	} {
		ref, err := parseRef(tc.image)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, c := range matchCredentials(creds, ref) {
			got = append(got, c.Username)
		}
		if strings.Join(got, ",") != tc.want {
			t.Errorf("%s: got %v, want %s", tc.image, got, tc.want)
		}
	}
}
