package stack

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Scrape reads a Prometheus text endpoint (the relay's https://ADDR/metrics
// or an agent's http://ADDR/metrics) into series → value, a series being
// the metric's name with its labels as written ("go_goroutines",
// `outpost_relay_frames_total{direction="in",type="tunnel-data"}`). At
// most 4 MiB are read.
func Scrape(ctx context.Context, url string) (map[string]float64, error) {
	b, err := Get(ctx, url, 4<<20)
	if err != nil {
		return nil, err
	}
	out, err := ParseMetrics(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	return out, nil
}

// Get fetches url's body on a connection of its own, within 30 s: an
// error unless the answer is 200 OK, or the body is longer than limit
// bytes. An https server's certificate is not verified: the servers the
// tests read (the relay, an agent's metrics endpoint) are on loopback.
func Get(ctx context.Context, url string, limit int64) ([]byte, error) {
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
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
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("GET %s: the body is longer than %d bytes", url, limit)
	}
	return b, nil
}

// ParseMetrics reads Prometheus text (a series and its value a line) into
// series → value, keeping only the series of the metrics named in names
// (every series when there are none). Lines longer than 1 MiB are refused;
// the caller bounds the reader.
func ParseMetrics(r io.Reader, names ...string) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if i < 0 {
			return nil, fmt.Errorf("bad line %q", l)
		}
		series := l[:i]
		if len(names) > 0 && !slices.Contains(names, metricName(series)) {
			continue
		}
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("bad line %q", l)
		}
		out[series] = v
	}
	return out, sc.Err()
}

func metricName(series string) string {
	if i := strings.IndexByte(series, '{'); i >= 0 {
		return series[:i]
	}
	return series
}

// Labels are the labels of a series as ParseMetrics keys it
// (`name{a="x",b="y"}` → a: x, b: y), with the text format's escapes
// (\\, \", \n) undone; ok is false when they are not well formed.
func Labels(series string) (labels map[string]string, ok bool) {
	labels = map[string]string{}
	i := strings.IndexByte(series, '{')
	if i < 0 {
		return labels, true
	}
	rest, found := strings.CutSuffix(series[i+1:], "}")
	if !found {
		return nil, false
	}
	for rest != "" {
		k, v, found := strings.Cut(rest, "=\"")
		if !found || k == "" || strings.ContainsAny(k, ",\"{}= ") {
			return nil, false
		}
		var b strings.Builder
		j := 0
		for ; j < len(v) && v[j] != '"'; j++ {
			if v[j] != '\\' {
				b.WriteByte(v[j])
				continue
			}
			if j++; j == len(v) {
				return nil, false
			}
			switch v[j] {
			case 'n':
				b.WriteByte('\n')
			case '\\', '"':
				b.WriteByte(v[j])
			default:
				return nil, false
			}
		}
		if j == len(v) {
			return nil, false // no closing quote
		}
		labels[k] = b.String()
		rest = v[j+1:]
		if rest != "" {
			if rest[0] != ',' {
				return nil, false
			}
			rest = rest[1:]
		}
	}
	return labels, true
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
