package streams

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"outpost.dev/test/stack"
)

// TestStatsSummaryFsAndNetwork: the relay's /stats/summary carries what
// the agent reads besides CPU and memory: the pod's network counters from
// its own namespace (a download from the pod shows in its transmitted
// bytes), its container's log files and the node's file system.
func TestStatsSummaryFsAndNetwork(t *testing.T) {
	stack.Need(t)
	ctx := stack.Context(t, 3*time.Minute)
	tr, err := restTransport()
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	type fs struct {
		CapacityBytes, AvailableBytes, UsedBytes uint64
		Inodes                                   *uint64
	}
	type summary struct {
		Node struct {
			Fs *fs
		}
		Pods []struct {
			PodRef  struct{ Name, Namespace string }
			Network *struct {
				Name             string
				RxBytes, TxBytes uint64
			}
			Containers []struct {
				Name string
				Logs *fs
			}
		}
	}
	read := func() (summary, error) {
		var s summary
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+relay.KubeletAddr+"/stats/summary", nil)
		req.Host = node // the relay's shared kubelet listener tells nodes apart by name
		resp, err := c.Do(req)
		if err != nil {
			return s, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil || resp.StatusCode != http.StatusOK {
			return s, fmt.Errorf("%s %s %v", resp.Status, b, err)
		}
		return s, json.Unmarshal(b, &s)
	}
	before, err := read()
	if err != nil {
		t.Fatal(err)
	}
	if n, err := get(ctx, net.JoinHostPort(podIP, "8080"), "/big"); err != nil || n != bigSize {
		t.Fatalf("GET /big from the pod: %d bytes, %v", n, err)
	}
	after, err := read()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []summary{before, after} {
		if f := s.Node.Fs; f == nil || f.CapacityBytes == 0 || f.AvailableBytes > f.CapacityBytes || f.UsedBytes > f.CapacityBytes || f.Inodes == nil {
			t.Fatalf("node fs: %+v", f)
		}
		if len(s.Pods) != 1 || s.Pods[0].PodRef.Name != pod || s.Pods[0].Network == nil || s.Pods[0].Network.Name != "eth0" ||
			len(s.Pods[0].Containers) != 1 || s.Pods[0].Containers[0].Logs == nil || s.Pods[0].Containers[0].Logs.CapacityBytes == 0 {
			t.Fatalf("pods: %+v", s.Pods)
		}
	}
	b, a := before.Pods[0].Network, after.Pods[0].Network
	if a.TxBytes < b.TxBytes+bigSize || a.RxBytes <= b.RxBytes {
		t.Errorf("pod network: rx %d → %d, tx %d → %d; want %d more bytes sent by the pod, and its request received", b.RxBytes, a.RxBytes, b.TxBytes, a.TxBytes, bigSize)
	}
}
