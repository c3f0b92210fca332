package pods

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"outpost.dev/agent/runtime/containerd"
	"outpost.dev/wire"
)

// probeState is the probes' view of one running container.
type probeState struct {
	started, ready bool
	next           [3]time.Time
	fails, succ    [3]int32
	// msg is the last failure of each probe ("Readiness probe failed:
	// …"), cleared by a success; status shows the readiness one.
	msg [3]string
}

// maxProbeOutput bounds what an exec probe's output is kept of, as a
// kubelet's exec prober does (10 KiB); messages carry a shorter prefix.
const maxProbeOutput = 10 << 10

// labelProbeKill holds why the agent stopped a container: a failed
// liveness or startup probe, a failed postStart hook, or a preStop hook
// that failed as it was stopped; its terminated state shows it as message.
const labelProbeKill = "dev.outpost.probe-kill"

const (
	startupProbe = iota
	livenessProbe
	readinessProbe
)

var probeNames = [3]string{"Startup", "Liveness", "Readiness"}

// probe runs the container's due probes and acts on them: a failed
// startup or liveness probe stops the container (the restart policy then
// applies), readiness sets Ready. It returns when a probe is next due.
func (w *worker) probe(ctx context.Context, rt *containerd.Runtime, o *wire.Object, c *wire.Container, x *rec) time.Time {
	ps := w.probes[x.c.ID]
	if ps == nil {
		ps = &probeState{started: c.StartupProbe == nil, ready: c.ReadinessProbe == nil}
		w.probes[x.c.ID] = ps
	}
	var next time.Time
	for kind, p := range [3]*wire.Probe{c.StartupProbe, c.LivenessProbe, c.ReadinessProbe} {
		if p == nil || (kind == startupProbe) == ps.started {
			continue
		}
		now := w.r.now()
		due := ps.next[kind]
		if due.IsZero() {
			due = x.startedAt.Add(time.Duration(p.InitialDelaySeconds) * time.Second)
		}
		if now.Before(due) {
			if next.IsZero() || due.Before(next) {
				next = due
			}
			continue
		}
		ok, msg := w.runProbe(ctx, rt, o, x, p)
		period := time.Duration(max(p.PeriodSeconds, 1)) * time.Second
		if p.PeriodSeconds == 0 {
			period = 10 * time.Second
		}
		ps.next[kind] = w.r.now().Add(period)
		if next.IsZero() || ps.next[kind].Before(next) {
			next = ps.next[kind]
		}
		if ok {
			ps.succ[kind]++
			ps.fails[kind] = 0
			ps.msg[kind] = ""
		} else {
			ps.fails[kind]++
			ps.succ[kind] = 0
			ps.msg[kind] = probeNames[kind] + " probe failed: " + msg
			w.r.log.Info("pods: probe failed", "pod", o.Namespace+"/"+o.Name, "container", c.Name, "probe", probeNames[kind], "msg", msg)
		}
		failThr := max(p.FailureThreshold, 1)
		if p.FailureThreshold == 0 {
			failThr = 3
		}
		succThr := max(p.SuccessThreshold, 1)
		switch kind {
		case startupProbe:
			if ok {
				ps.started = true
				return w.r.now() // run the other probes now
			}
		case readinessProbe:
			if ok && ps.succ[kind] >= succThr {
				ps.ready = true
			} else if !ok && ps.fails[kind] >= failThr {
				ps.ready = false
			}
			continue
		}
		if !ok && ps.fails[kind] >= failThr {
			w.r.log.Info("pods: container failed its "+probeNames[kind]+" probe; stopping it",
				"pod", o.Namespace+"/"+o.Name, "container", c.Name, "msg", msg)
			why := fmt.Sprintf("Container %s failed %s probe, will be restarted: %s", c.Name, strings.ToLower(probeNames[kind]), ps.msg[kind])
			if err := w.kill(ctx, rt, o, c, x, gracePeriod(o.Pod), why); err != nil {
				w.r.log.Warn("pods: stopping a container", "container", x.c.ID, "err", err)
			}
			return w.r.now()
		}
	}
	return next
}

// runProbe runs one probe once.
func (w *worker) runProbe(ctx context.Context, rt *containerd.Runtime, o *wire.Object, x *rec, p *wire.Probe) (bool, string) {
	timeout := time.Duration(max(p.TimeoutSeconds, 1)) * time.Second
	ctx, cancel := context.WithTimeout(ctx, timeout+time.Second)
	defer cancel()
	host, ns, err := w.dialTarget(o.Pod)
	if err != nil {
		return false, err.Error()
	}
	switch {
	case len(p.Exec) > 0:
		code, out, err := rt.ExecOutput(ctx, x.c.ID, p.Exec, timeout, maxProbeOutput)
		if errors.Is(err, context.DeadlineExceeded) {
			return false, fmt.Sprintf("command %q timed out after %s", strings.Join(p.Exec, " "), timeout)
		}
		if err != nil {
			return false, err.Error()
		}
		if text := clip(string(out), 500); text != "" {
			return code == 0, text
		}
		return code == 0, fmt.Sprintf("command %q exited with %d and no output", strings.Join(p.Exec, " "), code)
	case p.TCPPort != 0:
		c, err := dialIn(ctx, ns, "tcp", net.JoinHostPort(host, strconv.Itoa(int(p.TCPPort))), timeout)
		if err != nil {
			return false, err.Error()
		}
		c.Close()
		return true, ""
	case p.HTTPGet != nil:
		resp, err := httpGet(ctx, ns, host, p.HTTPGet, timeout, "kube-probe/outpost", false)
		if err != nil {
			return false, err.Error()
		}
		return resp.StatusCode >= 200 && resp.StatusCode < 400, "HTTP " + resp.Status
	}
	return false, "probe without a handler"
}

// dialTarget is where probes and hooks connect to the pod: the node's
// address with hostNetwork, else 127.0.0.1 inside the pod's network
// namespace (ns, its path), as the pod has no address of its own.
func (w *worker) dialTarget(p *wire.Pod) (host, ns string, err error) {
	host = "127.0.0.1"
	if p.HostNetwork {
		if ip := w.r.getHostIP(); ip != "" {
			host = ip
		}
		return host, "", nil
	}
	dir, err := w.podDir()
	if err != nil {
		return "", "", err
	}
	return host, filepath.Join(dir, "netns"), nil
}

// httpGet makes g's request (g.Host, else host; in network namespace ns
// unless empty) without following redirects or verifying certificates, as
// a kubelet's probes and hooks do, and returns the response with its body
// closed. fallback retries an HTTPS request over HTTP when the server
// answered in plain HTTP, as a kubelet's lifecycle hooks do.
func httpGet(ctx context.Context, ns, host string, g *wire.HTTPGet, timeout time.Duration, agent string, fallback bool) (*http.Response, error) {
	if g.Host != "" {
		host = g.Host
	}
	scheme := "http"
	if g.HTTPS {
		scheme = "https"
	}
	path := g.Path
	if path == "" || path[0] != '/' {
		path = "/" + path
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialIn(ctx, ns, network, addr, timeout)
		},
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, // as a kubelet's probes
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+net.JoinHostPort(host, strconv.Itoa(int(g.Port)))+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", agent)
	for _, h := range g.Headers {
		if http.CanonicalHeaderKey(h[0]) == "Host" {
			req.Host = h[1]
			continue
		}
		req.Header.Add(h[0], h[1])
	}
	resp, err := cl.Do(req)
	if err != nil && fallback && g.HTTPS && strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
		req = req.Clone(ctx)
		req.URL.Scheme = "http"
		req.Header.Del("Authorization")
		resp, err = cl.Do(req)
	}
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	return resp, nil
}

// probeNotes is what status adds to the Ready condition's message: the
// last readiness failure of each container not ready, bounded.
func (w *worker) probeNotes(recs map[string][]*rec, notReady []string) string {
	var b strings.Builder
	for _, name := range notReady {
		x := latest(recs, name)
		if x == nil {
			continue
		}
		if ps := w.probes[x.c.ID]; ps != nil && ps.msg[readinessProbe] != "" {
			b.WriteString("; " + name + ": " + clip(ps.msg[readinessProbe], 300))
		}
	}
	return clip(b.String(), 700)
}

// clip makes probe output fit a status message: valid UTF-8, trimmed, at
// most n bytes, cut at a character boundary.
func clip(s string, n int) string {
	s = strings.TrimSpace(strings.ToValidUTF8(s, "\uFFFD"))
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
