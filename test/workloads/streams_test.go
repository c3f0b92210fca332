package workloads

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"outpost.dev/test/stack"
)

// kubectlRun runs kubectl with stdin and extra environment and returns
// its stdout, stderr and exit code.
func kubectlRun(ctx context.Context, stdin io.Reader, env []string, args ...string) (string, string, int, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(st.CP.BinDir, "kubectl"), append([]string{"--kubeconfig=" + st.CP.Kubeconfig}, args...)...)
	cmd.Stdin = stdin
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), errb.String(), ee.ExitCode(), nil
	}
	return out.String(), errb.String(), 0, err
}

// protocols are the two ways kubectl talks to the API server for exec.
var protocols = []struct {
	name string
	env  []string
}{
	{"websocket", []string{"KUBECTL_REMOTE_COMMAND_WEBSOCKETS=true"}},
	{"spdy", []string{"KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false"}},
}

// TestKubectlExec: kubectl exec through the relay and the agent's link
// into containerd: output on stdout and stderr, stdin to its end, the exit
// code, the container's own environment and working directory, output
// much larger than the tunnel window, and a terminal (-t).
func TestKubectlExec(t *testing.T) {
	need(t)
	t.Parallel()
	ctx := ctxFor(t, 4*time.Minute)
	const ns = "wl-exec"
	newNamespace(t, ctx, ns)
	st.Apply(t, ctx, pod(ns, "shell", image1, "exec sleep 3600", "    env: [{name: MARK, value: edge-exec}]\n    workingDir: /etc\n", ""))
	waitRunning(t, ctx, ns, "shell", 2*time.Minute)

	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			out, errOut, code, err := kubectlRun(ctx, nil, p.env, "-n", ns, "exec", "shell", "--", "sh", "-c", "echo out; echo err >&2; echo $MARK; pwd; exit 3")
			if err != nil || code != 3 || out != "out\nedge-exec\n/etc\n" || !strings.Contains(errOut, "err\n") {
				t.Errorf("exec: stdout %q stderr %q exit %d %v; want stdout %q, err on stderr, exit 3", out, errOut, code, err, "out\nedge-exec\n/etc\n")
			}

			in := "hello\nfrom stdin\n"
			out, errOut, code, err = kubectlRun(ctx, strings.NewReader(in), p.env, "-n", ns, "exec", "-i", "shell", "--", "cat")
			if err != nil || code != 0 || out != in {
				t.Errorf("exec -i cat: stdout %q stderr %q exit %d %v", out, errOut, code, err)
			}

			// Four times the tunnel window and then some: flow control
			// carries it whole.
			const big = 1 << 20
			out, errOut, code, err = kubectlRun(ctx, nil, p.env, "-n", ns, "exec", "shell", "--", "head", "-c", fmt.Sprint(big), "/dev/zero")
			if err != nil || code != 0 || len(out) != big || strings.Trim(out, "\x00") != "" {
				t.Errorf("exec head -c %d: %d bytes of stdout, stderr %q exit %d %v", big, len(out), errOut, code, err)
			}
		})
	}

	// A stalled exec (kubectl reads none of its endless output) holds only
	// its window: other execs on the same link go on meanwhile.
	stalled := exec.CommandContext(ctx, filepath.Join(st.CP.BinDir, "kubectl"), "--kubeconfig="+st.CP.Kubeconfig,
		"-n", ns, "exec", "shell", "--", "cat", "/dev/zero")
	if _, err := stalled.StdoutPipe(); err != nil { // never read
		t.Fatal(err)
	}
	if err := stalled.Start(); err != nil {
		t.Fatal(err)
	}
	stack.WaitFor(t, ctx, 30*time.Second, "the stalled exec running", func() (bool, string) {
		out, _, _, err := kubectlRun(ctx, nil, nil, "-n", ns, "exec", "shell", "--", "ps")
		return err == nil && strings.Contains(out, "cat /dev/zero"), out
	})
	for i := range 3 {
		out, errOut, code, err := kubectlRun(ctx, nil, nil, "-n", ns, "exec", "shell", "--", "echo", "beside the stalled one")
		if err != nil || code != 0 || out != "beside the stalled one\n" {
			t.Errorf("exec %d beside a stalled exec: %q %q exit %d %v", i, out, errOut, code, err)
		}
	}
	_ = stalled.Process.Kill()
	_ = stalled.Wait()
	stack.WaitFor(t, ctx, 30*time.Second, "the stalled exec's process killed after kubectl went away", func() (bool, string) {
		out, _, _, err := kubectlRun(ctx, nil, nil, "-n", ns, "exec", "shell", "--", "ps")
		return err == nil && !strings.Contains(out, "cat /dev/zero"), out
	})

	// kubectl goes away: the process it ran is killed, not left behind.
	_, stop := kubectlStream(t, ctx, "-n", ns, "exec", "shell", "--", "sh", "-c", "while true; do echo ticking-exec; sleep 0.2; done")
	stack.WaitFor(t, ctx, 30*time.Second, "the exec loop running", func() (bool, string) {
		out, _, _, err := kubectlRun(ctx, nil, nil, "-n", ns, "exec", "shell", "--", "ps")
		return err == nil && strings.Contains(out, "ticking-exec"), out
	})
	stop()
	stack.WaitFor(t, ctx, 30*time.Second, "the exec loop killed after kubectl went away", func() (bool, string) {
		out, _, _, err := kubectlRun(ctx, nil, nil, "-n", ns, "exec", "shell", "--", "ps")
		return err == nil && !strings.Contains(out, "ticking-exec"), out
	})

	// The same for a process that neither reads nor writes, when the
	// connection to the relay closes with kubectl's: so with kubectl's
	// SPDY, which the API server passes through. (kubectl's WebSocket is
	// translated by the API server, which keeps its SPDY connection to
	// the kubelet, and so the relay, open until the process writes.)
	idleCtx, stopIdle := context.WithCancel(ctx)
	idle := exec.CommandContext(idleCtx, filepath.Join(st.CP.BinDir, "kubectl"), "--kubeconfig="+st.CP.Kubeconfig,
		"-n", ns, "exec", "shell", "--", "sleep", "777")
	idle.Env = append(os.Environ(), "KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false")
	if err := idle.Start(); err != nil {
		t.Fatal(err)
	}
	stack.WaitFor(t, ctx, 30*time.Second, "the idle exec running", func() (bool, string) {
		out, _, _, err := kubectlRun(ctx, nil, nil, "-n", ns, "exec", "shell", "--", "ps")
		return err == nil && strings.Contains(out, "sleep 777"), out
	})
	stopIdle()
	_ = idle.Wait()
	stack.WaitFor(t, ctx, 30*time.Second, "the idle exec killed after kubectl went away", func() (bool, string) {
		out, _, _, err := kubectlRun(ctx, nil, nil, "-n", ns, "exec", "shell", "--", "ps")
		return err == nil && !strings.Contains(out, "sleep 777"), out
	})

	// attach -i to a container created without stdin: refused in words.
	_, errOut, code, err := kubectlRun(ctx, strings.NewReader("x\n"), nil, "-n", ns, "attach", "-i", "shell")
	if err != nil || code == 0 || !strings.Contains(errOut, "not created with stdin: true") {
		t.Errorf("attach -i: exit %d %v, stderr %q", code, err, errOut)
	}

	// A terminal: kubectl -t needs one on its side too (script gives it),
	// and its size reaches the container's (TunnelResize → ResizePty).
	cmd := exec.CommandContext(ctx, "script", "-qec", fmt.Sprintf("stty cols 123 rows 45; %s --kubeconfig=%s -n %s exec -it shell -- sh -c %s",
		filepath.Join(st.CP.BinDir, "kubectl"), st.CP.Kubeconfig, ns,
		`'for i in 1 2 3 4 5 6 7 8 9 10; do s=$(stty size); [ "$s" = "45 123" ] && break; sleep 0.5; done; echo "size $s"'`), "/dev/null")
	cmd.Stdin = strings.NewReader("")
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "size 45 123") {
		t.Errorf("exec -it stty size: %q, %v; want the terminal's 45 rows and 123 columns", out, err)
	}

	cmd = exec.CommandContext(ctx, "script", "-qec", fmt.Sprintf("%s --kubeconfig=%s -n %s exec -it shell -- sh -c 'tty; exit 5'",
		filepath.Join(st.CP.BinDir, "kubectl"), st.CP.Kubeconfig, ns), "/dev/null")
	cmd.Stdin = strings.NewReader("")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 5 || !strings.Contains(string(out), "/dev/pts/") {
		t.Errorf("exec -it tty: %q, %v; want a /dev/pts terminal and exit 5", out, err)
	}
}

// TestKubectlPortForward: kubectl port-forward to two ports of a pod at
// once, HTTP through each (busybox httpd on the pod's own loopback), and
// several connections in parallel.
func TestKubectlPortForward(t *testing.T) {
	need(t)
	t.Parallel()
	ctx := ctxFor(t, 4*time.Minute)
	const ns = "wl-portfwd"
	newNamespace(t, ctx, ns)
	script := `mkdir -p /www1 /www2 && echo one > /www1/index.html && echo two > /www2/index.html &&
httpd -p 127.0.0.1:8080 -h /www1 && httpd -p 127.0.0.1:8081 -h /www2 && exec sleep 3600`
	st.Apply(t, ctx, pod(ns, "web", image1, script, "", ""))
	waitRunning(t, ctx, ns, "web", 2*time.Minute)

	local, stop := portForward(t, ctx, ns, "web", "8080", "8081")
	get := func(port string) (string, error) {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, "http://127.0.0.1:"+port+"/", nil)
		req.Close = true // a new forwarded connection each time
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	var wg sync.WaitGroup
	for i := range 6 {
		port, want := local["8080"], "one\n"
		if i%2 == 1 {
			port, want = local["8081"], "two\n"
		}
		wg.Go(func() {
			if got, err := get(port); err != nil || got != want {
				t.Errorf("GET through port-forward %s: %q, %v; want %q", port, got, err, want)
			}
		})
	}
	wg.Wait()

	// A port nothing listens on: the connection fails and kubectl says
	// why (kubectl may stop forwarding after such an error).
	stop()
	bad, stopBad := portForward(t, ctx, ns, "web", "9999")
	if got, err := get(bad["9999"]); err == nil {
		t.Errorf("GET through a forward to a closed port: %q, want a failure", got)
	}
	stack.WaitFor(t, ctx, 30*time.Second, "kubectl port-forward saying why port 9999 failed", func() (bool, string) {
		logs, _ := os.ReadFile(bad["stderr"])
		return strings.Contains(string(logs), "connection refused"), string(logs)
	})
	stopBad()
}

// portForward runs kubectl port-forward to ports of pod ns/name on free
// local ports and returns the local port of each; "stderr" names a file
// holding kubectl's stderr. stop ends it.
func portForward(t *testing.T, ctx context.Context, ns, name string, ports ...string) (map[string]string, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	args := []string{"--kubeconfig=" + st.CP.Kubeconfig, "-n", ns, "port-forward", "pod/" + name}
	for _, p := range ports {
		args = append(args, "0:"+p)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(st.CP.BinDir, "kubectl"), args...)
	errPath := filepath.Join(t.TempDir(), "stderr")
	errFile, err := os.Create(errPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = errFile
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stop := func() {
		cancel()
		_ = cmd.Wait()
		errFile.Close()
	}
	t.Cleanup(stop)
	re := regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)`)
	local := map[string]string{"stderr": errPath}
	found := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				local[m[2]] = m[1]
				if len(local) == len(ports)+1 {
					close(found)
				}
			}
		}
	}()
	select {
	case <-found:
	case <-time.After(time.Minute):
		stop()
		logs, _ := os.ReadFile(errPath)
		t.Fatalf("kubectl port-forward did not say where it listens: %s", logs)
	}
	return local, stop
}

// TestKubectlCp: kubectl cp into the container and back (tar over exec
// with stdin), byte for byte.
func TestKubectlCp(t *testing.T) {
	need(t)
	t.Parallel()
	ctx := ctxFor(t, 4*time.Minute)
	const ns = "wl-cp"
	newNamespace(t, ctx, ns)
	st.Apply(t, ctx, pod(ns, "box", image1, "mkdir -p /data && exec sleep 3600", "", ""))
	waitRunning(t, ctx, ns, "box", 2*time.Minute)

	dir := t.TempDir()
	want := make([]byte, 300<<10)
	_, _ = rand.Read(want)
	src := filepath.Join(dir, "in.bin")
	if err := os.WriteFile(src, want, 0o644); err != nil {
		t.Fatal(err)
	}
	st.Kubectl(t, ctx, "cp", src, ns+"/box:/data/in.bin")
	back := filepath.Join(dir, "back.bin")
	st.Kubectl(t, ctx, "cp", ns+"/box:/data/in.bin", back)
	got, err := os.ReadFile(back)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("kubectl cp round trip: %d bytes back, want the %d sent", len(got), len(want))
	}
	out := st.Kubectl(t, ctx, "-n", ns, "exec", "box", "--", "wc", "-c", "/data/in.bin")
	if f := strings.Fields(out); len(f) == 0 || f[0] != fmt.Sprint(len(want)) {
		t.Errorf("wc -c in the container: %q", out)
	}
}

// TestKubectlAttach: kubectl attach through the relay to a container's own
// process: its input (stdin, closed at the end with stdinOnce) and what it
// writes from then on, stdout and stderr, until it exits; and without -i,
// the output of a running container.
func TestKubectlAttach(t *testing.T) {
	need(t)
	t.Parallel()
	ctx := ctxFor(t, 4*time.Minute)
	const ns = "wl-attach"
	newNamespace(t, ctx, ns)
	never := "  restartPolicy: Never\n"
	st.Apply(t, ctx, pod(ns, "reader", image1, "echo ready; while read l; do echo got:$l; echo err:$l >&2; done; echo bye",
		"    stdin: true\n    stdinOnce: true\n", never)+"---\n"+
		pod(ns, "ticker", image1, "sleep 10; for i in 1 2 3; do echo tick $i; sleep 1; done", "", never))
	waitRunning(t, ctx, ns, "reader", 2*time.Minute)
	logsOf(t, ctx, ns, "reader", "ready")
	out, errOut, code, err := kubectlRun(ctx, strings.NewReader("hello\nworld\n"), nil, "-n", ns, "attach", "-i", "reader")
	if err != nil || code != 0 {
		t.Fatalf("attach -i: exit %d %v, stderr %q", code, err, errOut)
	}
	for _, want := range []string{"got:hello\n", "got:world\n", "bye\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("attach -i: stdout %q lacks %q", out, want)
		}
	}
	if strings.Contains(out, "err:") || !strings.Contains(errOut, "err:world") {
		t.Errorf("attach -i: stderr %q and stdout %q not kept apart", errOut, out)
	}
	if strings.Contains(out, "ready") {
		t.Errorf("attach -i: stdout %q has output from before the attach", out)
	}
	stack.WaitFor(t, ctx, time.Minute, "the reader Succeeded once its stdin closed", func() (bool, string) {
		p, err := getPod(ctx, ns, "reader")
		if err != nil {
			return false, err.Error()
		}
		return p.Status.Phase == "Succeeded", string(p.Status.Phase)
	})

	waitRunning(t, ctx, ns, "ticker", 2*time.Minute)
	out, errOut, code, err = kubectlRun(ctx, nil, nil, "-n", ns, "attach", "ticker")
	if err != nil || code != 0 || !strings.Contains(out, "tick 3\n") {
		t.Errorf("attach: exit %d %v, stdout %q, stderr %q", code, err, out, errOut)
	}
}
