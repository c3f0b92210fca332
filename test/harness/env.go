package harness

import (
	"os"
	"testing"
	"time"
)

// EnvDuration is the duration in the environment variable name ("90s"), a
// test's or benchmark's knob, or def where it is unset; a value that is not
// a duration fails t.
func EnvDuration(t testing.TB, name string, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return d
}
