package relay

import (
	"strings"
	"testing"
	"time"
)

// One request at a time, and at most maxRotations an hour.
func TestRotationLimits(t *testing.T) {
	var r rotation
	now := time.Unix(1_800_000_000, 0)
	if why := r.begin(now); why != "" {
		t.Fatal(why)
	}
	if why := r.begin(now); !strings.Contains(why, "already being answered") {
		t.Fatalf("second request while one is outstanding: %q", why)
	}
	r.end()
	for i := 1; i < maxRotations; i++ {
		if why := r.begin(now.Add(time.Duration(i) * time.Minute)); why != "" {
			t.Fatal(why)
		}
		r.end()
	}
	if why := r.begin(now.Add(10 * time.Minute)); !strings.Contains(why, "try again later") {
		t.Fatalf("request over the hourly limit: %q", why)
	}
	if why := r.begin(now.Add(rotationWindow + time.Minute)); why != "" {
		t.Fatalf("request after the window: %q", why)
	}
}
