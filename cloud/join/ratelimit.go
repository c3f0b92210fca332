package join

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// Per-address limits of the join endpoints, which anyone may call. A join
// is two requests (CA, then CSR), so the burst lets a few gateways behind
// one address join at once; beyond it, one request a second.
const (
	DefaultPerIPRate  = 1.0
	DefaultPerIPBurst = 20
	// maxAddresses bounds the limiter's memory: past it, addresses whose
	// bucket has refilled are forgotten first, then any one.
	maxAddresses = 4096
)

// ipLimiter is a token bucket per client address, in a bounded map.
type ipLimiter struct {
	rate, burst float64
	max         int
	now         func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

func newIPLimiter(rate float64, burst int, max int, now func() time.Time) *ipLimiter {
	return &ipLimiter{rate: rate, burst: float64(burst), max: max, now: now, buckets: map[string]*bucket{}}
}

// allow takes a token from addr's bucket.
func (l *ipLimiter) allow(addr string) bool {
	now := l.now()
	l.mu.Lock()
	b, ok := l.buckets[addr]
	if !ok {
		if len(l.buckets) >= l.max {
			l.evict(now)
		}
		b = newBucket(l.rate, l.burst, now)
		l.buckets[addr] = b
	}
	l.mu.Unlock()
	return b.allow(now)
}

// evict makes room for one address; l.mu is held. Full buckets go first,
// as they hold nothing a new bucket would not; if none is full, one
// bucket (the map's first in its random order) goes.
func (l *ipLimiter) evict(now time.Time) {
	for a, b := range l.buckets {
		if b.full(now) {
			delete(l.buckets, a)
		}
	}
	for a := range l.buckets {
		if len(l.buckets) < l.max {
			return
		}
		delete(l.buckets, a)
	}
}

// clientIP is the address a request came from, without its port.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
