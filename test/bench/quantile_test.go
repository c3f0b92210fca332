package bench

import (
	"math"
	"testing"
)

func TestQuantile(t *testing.T) {
	inf := math.Inf(1)
	for _, c := range []struct {
		name    string
		q       float64
		buckets map[float64]float64
		want    float64
	}{
		{"empty", 0.99, map[float64]float64{}, 0},
		{"no requests", 0.99, map[float64]float64{0.1: 0, inf: 0}, 0},
		{"all in the first bucket", 0.99, map[float64]float64{0.1: 100, 0.2: 100, inf: 100}, 0.099},
		{"within the second", 0.99, map[float64]float64{0.1: 90, 0.2: 100, inf: 100}, 0.19},
		{"past the last bound", 0.99, map[float64]float64{0.1: 90, 0.2: 95, inf: 100}, 0.2},
		{"median", 0.5, map[float64]float64{0.1: 0, 0.5: 100, inf: 100}, 0.3},
	} {
		if got := quantile(c.q, c.buckets); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestP99LeavesOutLongRunning(t *testing.T) {
	m0 := map[string]float64{
		`apiserver_request_duration_seconds_bucket{le="0.1",verb="PUT"}`:  10,
		`apiserver_request_duration_seconds_bucket{le="1",verb="PUT"}`:    10,
		`apiserver_request_duration_seconds_bucket{le="+Inf",verb="PUT"}`: 10,
	}
	m1 := map[string]float64{
		`apiserver_request_duration_seconds_bucket{le="0.1",verb="PUT"}`:    110,
		`apiserver_request_duration_seconds_bucket{le="1",verb="PUT"}`:      110,
		`apiserver_request_duration_seconds_bucket{le="+Inf",verb="PUT"}`:   110,
		`apiserver_request_duration_seconds_bucket{le="0.1",verb="WATCH"}`:  0,
		`apiserver_request_duration_seconds_bucket{le="1",verb="WATCH"}`:    0,
		`apiserver_request_duration_seconds_bucket{le="+Inf",verb="WATCH"}`: 50,
		`apiserver_request_total{code="200",resource="leases",verb="PUT"}`:  7,
	}
	if s, n := p99(m0, m1); n != 100 || math.Abs(s-0.099) > 1e-9 {
		t.Fatalf("p99 %v over %v requests, want 0.099 over 100", s, n)
	}
	got := requests(map[string]float64{}, m1)
	if len(got) != 1 || got["PUT leases"] != 7 {
		t.Fatalf("requests: %v", got)
	}
}
