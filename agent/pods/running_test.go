package pods

import "testing"

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
		r.workers[w.uid] = w
	}
	r.Resend()
	for _, w := range ws {
		if !w.resend.Load() {
			t.Errorf("%s: not marked for a resend", w.uid)
		}
		select {
		case <-w.pokeC:
		default:
			t.Errorf("%s: not poked", w.uid)
		}
	}
}
