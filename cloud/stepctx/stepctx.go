// Package stepctx gives a session that workers run one step at a time a
// context per step, which the session's Stop cancels, so that a session
// between steps holds no context of its own: with thousands of idle
// sessions per relay, a context each would be most of their memory.
package stepctx

import (
	"context"
	"sync"
	"time"
)

// Steps makes the contexts of one session's steps. Its zero value is
// ready to use; steps of one session must not overlap.
type Steps struct {
	mu      sync.Mutex
	cancel  context.CancelFunc // the running step's, nil between steps
	stopped bool
}

// Begin returns the context of one step, a child of parent that ends
// after timeout (none if it is 0) or at Stop, and end, which the step
// calls when it is over. ok is false, with no context, once Stop was
// called.
func (s *Steps) Begin(parent context.Context, timeout time.Duration) (ctx context.Context, end func(), ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil, nil, false
	}
	var cancel context.CancelFunc
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(parent, timeout)
	} else {
		ctx, cancel = context.WithCancel(parent)
	}
	s.cancel = cancel
	return ctx, func() {
		s.mu.Lock()
		s.cancel = nil
		s.mu.Unlock()
		cancel()
	}, true
}

// Stop cancels the context of the step running, if one is, and makes
// every later Begin refuse.
func (s *Steps) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	if s.cancel != nil {
		s.cancel()
	}
}
