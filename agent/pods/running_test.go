package pods

import (
	"context"
	"testing"
	"time"

	"outpost.dev/test/wait"
)

func TestRunningCountsRunningWorkers(t *testing.T) {
	r := New(Config{})
	for uid, running := range map[string]bool{"a": true, "b": false, "c": true} {
		w := newWorker(r, uid)
		w.running.Store(running)
		r.workers[uid] = w
	}
	if n := r.Running(); n != 2 {
		t.Fatalf("Running() = %d, want 2", n)
	}
}

func TestResendMarksAndPokesEveryWorker(t *testing.T) {
	r := New(Config{})
	ws := []*worker{newWorker(r, "a"), newWorker(r, "b")}
	for _, w := range ws {
		w.begin(context.Background())
		w.busy = true // a step is running: a poke asks for another after it
		r.workers[w.uid] = w
	}
	r.Resend()
	for _, w := range ws {
		if !w.resend.Load() {
			t.Errorf("%s: not marked for a resend", w.uid)
		}
		w.smu.Lock()
		again := w.again
		w.smu.Unlock()
		if !again {
			t.Errorf("%s: not poked", w.uid)
		}
	}
}

// TestWorkerSteps: a worker steps only once begun and while Run lasts; a
// poke during a step asks for another, the timer's tick does not; after a
// step the worker holds a timer and no goroutine.
func TestWorkerSteps(t *testing.T) {
	r := New(Config{})
	w := newWorker(r, "a")
	w.poke()
	if w.busy {
		t.Fatal("a worker not begun stepped")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w.begin(ctx)
	w.busy = true
	w.tick()
	if w.again {
		t.Fatal("a tick during a step asked for another")
	}
	w.poke()
	if !w.again {
		t.Fatal("a poke during a step did not ask for another")
	}
	w.busy, w.again = false, false

	// No pod yet: the step does nothing and the timer waits an hour.
	w.poke()
	wait.For(t, 10*time.Second, "the step done and the timer set", func() bool {
		w.smu.Lock()
		defer w.smu.Unlock()
		return !w.busy && w.timer != nil
	})
	r.wgMu.Lock()
	r.stopped = true
	r.wgMu.Unlock()
	r.wg.Wait()
	w.poke()
	w.smu.Lock()
	busy := w.busy
	w.smu.Unlock()
	if busy {
		t.Fatal("a worker stepped after Run ended")
	}
}
