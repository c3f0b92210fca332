package join

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time      { return c.t }
func (c *fakeClock) add(d time.Duration) { c.t = c.t.Add(d) }

func TestIPLimiterBucket(t *testing.T) {
	clk := &fakeClock{t: now}
	l := newIPLimiter(1, 3, 16, clk.now)
	for i := range 3 {
		if !l.allow("192.0.2.1") {
			t.Fatalf("request %d within the burst refused", i+1)
		}
	}
	if l.allow("192.0.2.1") {
		t.Fatal("request past the burst allowed")
	}
	if !l.allow("192.0.2.2") {
		t.Fatal("another address shares the first one's bucket")
	}
	clk.add(999 * time.Millisecond)
	if l.allow("192.0.2.1") {
		t.Fatal("allowed before a token was earned")
	}
	clk.add(time.Millisecond)
	if !l.allow("192.0.2.1") {
		t.Fatal("refused after a second earned a token")
	}
	clk.add(time.Hour) // refills to the burst, no more
	for i := range 3 {
		if !l.allow("192.0.2.1") {
			t.Fatalf("request %d after an idle hour refused", i+1)
		}
	}
	if l.allow("192.0.2.1") {
		t.Fatal("an idle hour earned more than the burst")
	}
}

// The map of addresses stays bounded: refilled buckets go first, and a
// flood of new addresses cannot grow it.
func TestIPLimiterBounded(t *testing.T) {
	clk := &fakeClock{t: now}
	l := newIPLimiter(1, 2, 8, clk.now)
	l.allow("busy")
	l.allow("busy") // empty now
	for i := range 100 {
		l.allow(fmt.Sprintf("198.51.100.%d", i))
		if len(l.buckets) > 8 {
			t.Fatalf("%d addresses held, bound is 8", len(l.buckets))
		}
	}
	// Refilled buckets are dropped before one that still holds a debt.
	l = newIPLimiter(1, 2, 3, clk.now)
	l.allow("debtor")
	l.allow("debtor")
	l.allow("idle-1")
	l.allow("idle-2")
	clk.add(1500 * time.Millisecond) // idle-* refilled; debtor has 1.5 of 2
	l.allow("newcomer")
	if _, ok := l.buckets["debtor"]; !ok {
		t.Error("the bucket in debt was evicted before refilled ones")
	}
	if len(l.buckets) > 3 {
		t.Errorf("%d addresses held, bound is 3", len(l.buckets))
	}
}

func TestJoinRateLimited(t *testing.T) {
	f := newFixture(t)
	f.h.limit = newIPLimiter(1, 2, 16, (&fakeClock{t: now}).now) // time stands still
	for i := range 2 {
		if status, _ := f.join(t, "zzzzzz.0123456789abcdef", nil); status != http.StatusUnauthorized {
			t.Fatalf("request %d: status %d, want 401", i+1, status)
		}
	}
	status, b := f.join(t, goodToken, nil)
	if got := reason(t, b); status != http.StatusTooManyRequests || got != "too many join requests from this address; try again in a few seconds" {
		t.Fatalf("past the burst: %d %q", status, got)
	}
}

// The cache answers node lookups without the API server once synced;
// token ids are read from the API server within a shared budget, and past
// it the answer is "too many", never a false "not found".
func TestCacheLookups(t *testing.T) {
	tok := tokenSecret("abcdef", "0123456789abcdef", nil)
	client := fake.NewClientset(tok, edgeNode("gw-1", true))
	c := NewCache(client)
	ctx := t.Context()
	c.Run(ctx)
	syncCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), c.Synced) {
		t.Fatal("cache not synced within 30 s")
	}
	client.ClearActions()
	n, err := c.Nodes().Get(ctx, "gw-1", metav1.GetOptions{})
	if err != nil || len(n.Status.Conditions) != 1 || n.Status.Conditions[0].Status != corev1.ConditionTrue {
		t.Fatalf("node %v, %v", n, err)
	}
	if a := client.Actions(); len(a) != 0 {
		t.Fatalf("cached lookups reached the API server: %v", a)
	}
	if _, err := c.Secrets().Get(ctx, TokenPrefix+"abcdef", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	tooMany := 0
	for i := range tokenBurst + 5 {
		_, err := c.Secrets().Get(ctx, TokenPrefix+fmt.Sprintf("zz%04d", i), metav1.GetOptions{})
		if apierrors.IsTooManyRequests(err) {
			tooMany++
		}
	}
	if got := len(client.Actions()); got > tokenBurst+1 {
		t.Fatalf("%d token reads cost %d API reads, budget %d", tokenBurst+6, got, tokenBurst)
	}
	if tooMany == 0 {
		t.Fatal("reads past the budget were not refused as too many")
	}
}
