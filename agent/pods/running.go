package pods

// Running counts the pods whose last reported phase is Running, for the
// agent's metrics.
func (r *Reconciler) Running() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, w := range r.workers {
		if w.running.Load() {
			n++
		}
	}
	return n
}

// Resend makes every pod report its status again, changed or not. The
// agent calls it on each connect: while the node was offline, the node
// lifecycle controller set its pods' Ready condition to False, and only a
// report from the agent sets it back.
func (r *Reconciler) Resend() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.workers {
		w.resend.Store(true)
		w.poke()
	}
}
