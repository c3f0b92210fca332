// Package wait is the tests' one way to wait for something to happen:
// poll a condition until it holds, and fail after a deadline naming what
// was awaited and the condition's last word. Unit tests and real-component
// tests use it alike; proving that something does not happen is never a
// wait (use a fake clock, testing/synctest, or wait for the event that
// would have come before it).
package wait

import (
	"context"
	"testing"
	"time"
)

// Poll intervals: quick at first, for unit tests whose condition holds
// within milliseconds, then gentle on the API server and the machine.
const (
	firstPoll = time.Millisecond
	maxPoll   = 250 * time.Millisecond
)

// For polls cond until it holds; after timeout it fails t naming what.
func For(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	State(t, context.Background(), timeout, what, func() (bool, string) { return cond(), "" })
}

// State polls cond until it holds; after timeout, or when ctx ends, it
// fails t naming what it waited for and cond's last word (the state it
// saw, for the failure message).
func State(t testing.TB, ctx context.Context, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	if err := Until(ctx, timeout, func() (bool, string) { return cond() }); err != nil {
		t.Fatalf("waiting %v for %s: %v", timeout, what, err)
	}
}

// Until polls cond until it holds and returns nil, or returns an error
// with cond's last word after timeout or once ctx ends. It is for callers
// that are not a test (a benchmark's setup, a helper returning an error).
func Until(ctx context.Context, timeout time.Duration, cond func() (bool, string)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	poll := firstPoll
	timer := time.NewTimer(poll)
	defer timer.Stop()
	for {
		ok, last := cond()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			if last == "" {
				return ctx.Err()
			}
			return &Error{Last: last, Err: ctx.Err()}
		case <-timer.C:
		}
		poll = min(2*poll, maxPoll)
		timer.Reset(poll)
	}
}

// Error is a wait that ended before its condition held.
type Error struct {
	Last string // the condition's last word
	Err  error  // the context's error: deadline exceeded or canceled
}

func (e *Error) Error() string { return e.Err.Error() + "; last state: " + e.Last }

func (e *Error) Unwrap() error { return e.Err }
