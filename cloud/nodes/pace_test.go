package nodes

import (
	"testing"
	"time"
)

// The renewal period grows by half for each period whose renewals
// started late, never past 3/4 of the Lease duration, holds while they
// start a little late, and shrinks back by LeaseDuration/16 for each
// period of on-time starts, never under 1/4.
func TestLeasePace(t *testing.T) {
	const ld = 40 * time.Second
	type round struct {
		late time.Duration // how late every renewal of the period starts
		want time.Duration // the period after it
	}
	for _, tc := range []struct {
		name   string
		rounds []round
	}{
		{"on time stays a quarter", []round{{0, 10 * time.Second}, {500 * time.Millisecond, 10 * time.Second}}},
		{"late grows by half up to three quarters", []round{
			{3 * time.Second, 15 * time.Second},
			{3 * time.Second, 22500 * time.Millisecond},
			{5 * time.Second, 30 * time.Second},
			{9 * time.Second, 30 * time.Second},
		}},
		{"a little late holds", []round{
			{3 * time.Second, 15 * time.Second},
			{2 * time.Second, 15 * time.Second},
			{600 * time.Millisecond, 15 * time.Second},
		}},
		{"on time again shrinks back to a quarter", []round{
			{3 * time.Second, 15 * time.Second},
			{3 * time.Second, 22500 * time.Millisecond},
			{0, 20 * time.Second},
			{0, 17500 * time.Millisecond},
			{0, 15 * time.Second},
			{0, 12500 * time.Millisecond},
			{0, 10 * time.Second},
			{0, 10 * time.Second},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newLeasePace(ld)
			if got := p.period(); got != ld/4 {
				t.Fatalf("starts at %v, want %v", got, ld/4)
			}
			now := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
			p.observe(now, now) // starts the first period
			for i, r := range tc.rounds {
				every := p.period()
				// Renewals through the period, each r.late late: the
				// period holds until it has passed.
				for at := time.Duration(0); at < every; at += every / 4 {
					if got := p.observe(now.Add(at), now.Add(at-r.late)); got != every {
						t.Fatalf("round %d: the period moved to %v within the period (at %v), want %v", i, got, at, every)
					}
				}
				now = now.Add(every)
				if got := p.observe(now, now.Add(-r.late)); got != r.want {
					t.Fatalf("round %d (renewals %v late): period %v, want %v", i, r.late, got, r.want)
				}
				if got := p.period(); got != r.want {
					t.Fatalf("round %d: period() %v, observe said %v", i, got, r.want)
				}
			}
		})
	}
}
