package streams

import (
	"bytes"
	"testing"
	"time"

	"outpost.dev/test/stack"
)

// TestExecOneOutputStream: an exec that asks for stdout alone, or stderr
// alone (the API allows either), runs and delivers that stream.
func TestExecOneOutputStream(t *testing.T) {
	stack.Need(t)
	ctx := stack.Context(t, 2*time.Minute)
	var out bytes.Buffer
	if err := execStreams(ctx, nil, &out, nil, "sh", "-c", "echo to-stdout; echo to-stderr >&2"); err != nil || out.String() != "to-stdout\n" {
		t.Errorf("stdout alone: %q, %v", out.String(), err)
	}
	var errOut bytes.Buffer
	if err := execStreams(ctx, nil, nil, &errOut, "sh", "-c", "echo to-stdout; echo to-stderr >&2"); err != nil || errOut.String() != "to-stderr\n" {
		t.Errorf("stderr alone: %q, %v", errOut.String(), err)
	}
}
