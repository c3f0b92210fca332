package wait_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"outpost.dev/test/wait"
)

func TestUntil(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		n := 0
		if err := wait.Until(context.Background(), time.Minute, func() (bool, string) { n++; return n == 5, "" }); err != nil {
			t.Fatal(err)
		}
		// 1+2+4+8 ms of polls before the fifth call.
		if d := time.Since(start); d != 15*time.Millisecond {
			t.Errorf("held on the fifth poll after %v, want 15ms", d)
		}

		start = time.Now()
		err := wait.Until(context.Background(), 10*time.Second, func() (bool, string) { return false, "3 of 4 ready" })
		var we *wait.Error
		if !errors.As(err, &we) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "3 of 4 ready") {
			t.Fatalf("err %v, want a deadline error with the last state", err)
		}
		if d := time.Since(start); d != 10*time.Second {
			t.Errorf("gave up after %v, want 10s", d)
		}

		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := wait.Until(ctx, time.Minute, func() (bool, string) { return false, "" }); !errors.Is(err, context.Canceled) {
			t.Errorf("canceled: %v", err)
		}
	})
}
