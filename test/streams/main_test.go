// Package streams soaks and measures exec and port-forward through the
// relay: the real relay and agent binaries, real containerd + runc, and
// client-go's SPDY executors (what kubectl and the API server use) driving
// the relay's kubelet endpoint in-process, as the API server would.
//
// TestSoak runs 1,000 exec sessions and 1,000 port-forwarded connections
// and checks that neither side keeps goroutines, file descriptors, shims
// or exec processes. The benchmarks (make bench-streams) compare the relay
// path with a direct one into the pod.
package streams

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"

	"outpost.dev/test/stack"
)

const (
	node = "streams-edge"
	ns   = "default"
	// pod serves /www on :8080 with busybox httpd: index.html ("ok\n")
	// and big (bigSize zero bytes).
	pod     = "streams"
	bigSize = 32 << 20
)

var (
	st    *stack.Stack
	relay *stack.Relay
	agent *stack.Agent
	// containerID is the pod's container in containerd; podIP its address.
	containerID, podIP string
)

func TestMain(m *testing.M) {
	os.Exit(stack.RunMain(m, stack.MainOptions{
		Name: "streams",
		Stack: stack.Options{
			// OUTPOST_STREAMS_DIR keeps everything (logs, containerd) there.
			Dir:        os.Getenv("OUTPOST_STREAMS_DIR"),
			Containerd: true,
		},
		Ready: func(ctx context.Context, s *stack.Stack, r *stack.Relay) (err error) {
			st, relay = s, r
			if agent, err = st.Join(ctx, relay, node); err != nil {
				return err
			}
			if err := agent.Start(); err != nil {
				return fmt.Errorf("start the agent: %w", err)
			}
			if err := st.WaitNodeReady(ctx, node, true, 2*time.Minute); err != nil {
				return err
			}
			return startPod(ctx)
		},
	}))
}

// startPod runs the pod every test and benchmark uses and waits until it
// serves.
func startPod(ctx context.Context) error {
	grace := int64(1)
	script := fmt.Sprintf("mkdir -p /www && echo ok > /www/index.html && head -c %d /dev/zero > /www/big && httpd -p 8080 -h /www && exec sleep 36000", bigSize)
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	// Until the default ServiceAccount exists, pods are refused.
	for {
		_, err := st.CP.Client().CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: pod, Namespace: ns},
			Spec: corev1.PodSpec{
				NodeSelector:                  map[string]string{"kubernetes.io/hostname": node},
				TerminationGracePeriodSeconds: &grace,
				Containers:                    []corev1.Container{{Name: "app", Image: st.Images[0].Ref, Command: []string{"sh", "-c", script}}},
			},
		}, metav1.CreateOptions{})
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("create pod %s/%s: %w", ns, pod, err)
		case <-time.After(250 * time.Millisecond):
		}
	}
	for {
		p, err := st.CP.Client().CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
		if err == nil && p.Status.PodIP != "" && len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].Ready {
			containerID = strings.TrimPrefix(p.Status.ContainerStatuses[0].ContainerID, "containerd://")
			podIP = p.Status.PodIP
			break
		}
		last := fmt.Sprint(err)
		if err == nil {
			last = fmt.Sprintf("%+v", p.Status)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pod %s/%s not Ready with an IP within 3m (last: %s)", ns, pod, last)
		case <-time.After(250 * time.Millisecond):
		}
	}
	// httpd starts once the big file is written.
	for {
		out, err := exec(ctx, nil, "wget", "-q", "-O-", "http://127.0.0.1:8080/index.html")
		if err == nil && out == "ok\n" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pod %s/%s: httpd not answering within 3m: %q %v", ns, pod, out, err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// kubeletConfig reaches the relay's kubelet endpoint as the API server
// does: with the API server's kubelet client certificate (the relay checks
// it against the cluster CA, then asks the API server whether its user may
// exec). The relay's serving certificate is not verified: it is on
// loopback.
func kubeletConfig() *rest.Config {
	return &rest.Config{
		Host: "https://" + relay.KubeletAddr,
		TLSClientConfig: rest.TLSClientConfig{
			Insecure: true, CertFile: st.CP.PKI.KubeletClientCert, KeyFile: st.CP.PKI.KubeletClientKey,
		},
	}
}

// exec runs argv in the pod's container through the relay (SPDY, as the
// API server speaks to kubelets), with stdin if not nil, and returns its
// stdout. A non-zero exit or any stderr is an error.
func exec(ctx context.Context, stdin io.Reader, argv ...string) (string, error) {
	var out bytes.Buffer
	err := execStream(ctx, stdin, &out, argv...)
	return out.String(), err
}

// execStream is exec with stdout going to out as it comes.
func execStream(ctx context.Context, stdin io.Reader, out io.Writer, argv ...string) error {
	var errb bytes.Buffer
	err := execStreams(ctx, stdin, out, &errb, argv...)
	if err == nil && errb.Len() > 0 {
		err = errors.New("stderr: " + errb.String())
	}
	return err
}

// execStreams runs argv with the streams given (nil: not asked for).
func execStreams(ctx context.Context, stdin io.Reader, out, errOut io.Writer, argv ...string) error {
	q := url.Values{"command": argv}
	if out != nil {
		q.Set("output", "1")
	}
	if errOut != nil {
		q.Set("error", "1")
	}
	if stdin != nil {
		q.Set("input", "1")
	}
	u, err := url.Parse(fmt.Sprintf("https://%s/exec/%s/%s/app?%s", relay.KubeletAddr, ns, pod, q.Encode()))
	if err != nil {
		return err
	}
	e, err := remotecommand.NewSPDYExecutor(kubeletConfig(), http.MethodPost, u)
	if err != nil {
		return err
	}
	return e.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: stdin, Stdout: out, Stderr: errOut})
}

// forward starts a port-forward session through the relay to the pod's
// port 8080 on a free loopback port, and returns that port and a stop
// func that ends the session and waits for it.
func forward(ctx context.Context) (int, func() error, error) {
	rt, up, err := spdy.RoundTripperFor(kubeletConfig())
	if err != nil {
		return 0, nil, err
	}
	u, err := url.Parse(fmt.Sprintf("https://%s/portForward/%s/%s", relay.KubeletAddr, ns, pod))
	if err != nil {
		return 0, nil, err
	}
	d := spdy.NewDialer(up, &http.Client{Transport: rt}, http.MethodPost, u)
	stopCh, ready := make(chan struct{}), make(chan struct{})
	var errb bytes.Buffer
	pf, err := portforward.NewOnAddresses(d, []string{"127.0.0.1"}, []string{"0:8080"}, stopCh, ready, io.Discard, &errb)
	if err != nil {
		return 0, nil, err
	}
	done := make(chan error, 1)
	go func() { done <- pf.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-done:
		return 0, nil, fmt.Errorf("port-forward: %v (%s)", err, errb.String())
	case <-ctx.Done():
		close(stopCh)
		<-done
		return 0, nil, ctx.Err()
	}
	ports, err := pf.GetPorts()
	if err != nil || len(ports) != 1 {
		close(stopCh)
		<-done
		return 0, nil, fmt.Errorf("port-forward ports %v: %v", ports, err)
	}
	stop := func() error {
		close(stopCh)
		if err := <-done; err != nil {
			return err
		}
		if errb.Len() > 0 {
			return errors.New("port-forward: " + errb.String())
		}
		return nil
	}
	return int(ports[0].Local), stop, nil
}

// get fetches path from httpd at addr on a new connection and returns the
// body's length, checking index.html's content.
func get(ctx context.Context, addr, path string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return 0, err
	}
	req.Close = true
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	if path == "/index.html" {
		b, err := io.ReadAll(io.LimitReader(resp.Body, 64))
		if err != nil || string(b) != "ok\n" {
			return 0, fmt.Errorf("GET %s: %q, %v", path, b, err)
		}
		return int64(len(b)), nil
	}
	return io.Copy(io.Discard, resp.Body)
}

// localAddr is 127.0.0.1:port.
func localAddr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// restTransport is an HTTP transport with kubeletConfig's credentials.
func restTransport() (http.RoundTripper, error) { return rest.TransportFor(kubeletConfig()) }
