package nodes

import (
	"sync"
	"time"
)

// leasePace is how often a Writer's sessions renew their Leases. It
// starts at a quarter of the Lease duration, as often as a kubelet
// renews. Renewals that start later than due mean the Writer's workers
// were all busy: the API server takes the writes more slowly than they
// come, and a longer queue would only make every Lease older. So when the
// latest renewal in one period started more than lateAfter late, the
// period grows by half, up to three quarters of the Lease duration (a
// third of a kubelet's Lease writes a second, at the longest); when every
// renewal of a period started on time again
// (within onTime), it shrinks back by a sixteenth of the Lease duration
// per period, down to the quarter. A renewal then still comes within the
// Lease duration (--lease-duration, 40 s by default), so within the node
// lifecycle controller's grace period whenever that is at least as long
// (kube-controller-manager --node-monitor-grace-period, whose default is).
// A cluster with a shorter grace period needs a Lease duration no longer
// than it, or at the slowest pace its Nodes go NotReady between renewals.
//
// The decision is made once per period, because a new period reaches
// the arrival rate of renewals only after one period: each session takes
// it at its next renewal.
type leasePace struct {
	min, max          time.Duration
	lateAfter, onTime time.Duration
	step              time.Duration

	mu    sync.Mutex
	every time.Duration
	since time.Time     // start of the period being observed
	worst time.Duration // the latest start seen since then
}

func newLeasePace(leaseDuration time.Duration) *leasePace {
	return &leasePace{
		min: leaseDuration / 4, max: leaseDuration * 3 / 4,
		lateAfter: leaseDuration / 16, onTime: leaseDuration / 80,
		step:  leaseDuration / 16,
		every: leaseDuration / 4,
	}
}

// period is how long after a renewal the next one is due.
func (p *leasePace) period() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.every
}

// observe records that a renewal due at due started at now, and returns
// the period to renew at from now on.
func (p *leasePace) observe(now, due time.Time) time.Duration {
	late := max(now.Sub(due), 0)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.since.IsZero() {
		p.since = now
	}
	p.worst = max(p.worst, late)
	if now.Sub(p.since) < p.every {
		return p.every
	}
	switch {
	case p.worst > p.lateAfter:
		p.every = min(p.every*3/2, p.max)
	case p.worst <= p.onTime:
		p.every = max(p.every-p.step, p.min)
	}
	p.since, p.worst = now, 0
	return p.every
}
