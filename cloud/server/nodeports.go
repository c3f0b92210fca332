package server

import (
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
)

// nodePorts hands out the kubelet API listeners each edge node gets of
// its own (--kubelet-node-ports), on the --kubelet-listen host.
type nodePorts struct {
	host      string
	low, high int
	tls       *tls.Config

	mu   sync.Mutex
	next int
}

func newNodePorts(listen, ports string, cfg *tls.Config) (*nodePorts, error) {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("--kubelet-listen %q: %w", listen, err)
	}
	lo, hi, ok := strings.Cut(ports, "-")
	low, err1 := strconv.Atoi(lo)
	high, err2 := strconv.Atoi(hi)
	if !ok || err1 != nil || err2 != nil || low < 1 || high > 65535 || low > high {
		return nil, fmt.Errorf("--kubelet-node-ports %q: want LOW-HIGH, two ports from 1 to 65535, e.g. 20000-20999", ports)
	}
	return &nodePorts{host: host, low: low, high: high, tls: cfg, next: low}, nil
}

// listen opens a TLS listener on the next free port of the range.
func (np *nodePorts) listen() (net.Listener, error) {
	np.mu.Lock()
	defer np.mu.Unlock()
	n := np.high - np.low + 1
	for range n {
		p := np.next
		np.next++
		if np.next > np.high {
			np.next = np.low
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(np.host, strconv.Itoa(p)))
		if err == nil {
			return tls.NewListener(ln, np.tls), nil
		}
	}
	return nil, fmt.Errorf("no free port in --kubelet-node-ports %d-%d: widen the range (one port per connected edge node)", np.low, np.high)
}
