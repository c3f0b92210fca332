package stack

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Scrape reads a Prometheus text endpoint (the relay's https://ADDR/metrics
// or an agent's http://ADDR/metrics) into series → value, a series being
// the metric's name with its labels as written ("go_goroutines",
// `outpost_relay_frames_total{direction="in",type="tunnel-data"}`). The
// relay's serving certificate is not verified: it is on loopback. At most
// 4 MiB are read.
func Scrape(ctx context.Context, url string) (map[string]float64, error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 4<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if i < 0 {
			return nil, fmt.Errorf("GET %s: bad line %q", url, l)
		}
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("GET %s: bad line %q", url, l)
		}
		out[l[:i]] = v
	}
	return out, sc.Err()
}

// Sum adds the values of the series of metric name whose labels contain
// every one of labels (`type="tunnel-data"`).
func Sum(m map[string]float64, name string, labels ...string) float64 {
	var s float64
	for k, v := range m {
		rest, ok := strings.CutPrefix(k, name)
		if !ok || (rest != "" && rest[0] != '{') {
			continue
		}
		all := true
		for _, l := range labels {
			all = all && strings.Contains(rest, l)
		}
		if all {
			s += v
		}
	}
	return s
}
