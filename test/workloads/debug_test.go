package workloads

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"outpost.dev/test/stack"
)

// TestKubectlDebug: kubectl debug adds an ephemeral container to a pod of
// the edge node, in the target container's PID namespace, and attaches to
// it, with a terminal (-it) and without (-i); the pod's container runs on
// untouched. The debug shells read a line first, so their output comes
// after kubectl attached (an attach shows what a container writes from
// then on, as on a kubelet node); a command that does not wait is read
// from its log once it ended.
func TestKubectlDebug(t *testing.T) {
	need(t)
	t.Parallel()
	ctx := ctxFor(t, 5*time.Minute)
	const ns = "wl-debug"
	newNamespace(t, ctx, ns)
	st.Apply(t, ctx, pod(ns, "target", image1, "exec sleep 4242", "", ""))
	before := waitRunning(t, ctx, ns, "target", 2*time.Minute)
	appID := containerStatus(before).ContainerID

	kubectl := filepath.Join(st.CP.BinDir, "kubectl")
	cmd := exec.CommandContext(ctx, "script", "-qec", fmt.Sprintf("%s --kubeconfig=%s -n %s debug -it target --image=%s --target=app -- sh -c 'read x; ps; echo done'",
		kubectl, st.CP.Kubeconfig, ns, image1), "/dev/null")
	cmd.Stdin = strings.NewReader("go\n")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "sleep 4242") || !strings.Contains(string(out), "done") {
		t.Errorf("debug -it: %q, %v; want the target's sleep 4242 and done", out, err)
	}
	name := regexp.MustCompile(`debugger-[a-z0-9]+`).FindString(string(out))
	if name == "" {
		t.Fatalf("debug -it: no debug container name in %q", out)
	}
	stack.WaitFor(t, ctx, time.Minute, "status.ephemeralContainerStatuses shows "+name+" terminated", func() (bool, string) {
		got, errOut, code, err := kubectlRun(ctx, nil, nil, "-n", ns, "get", "pod", "target", "-o", "jsonpath={.status.ephemeralContainerStatuses}")
		return err == nil && code == 0 && strings.Contains(got, `"name":"`+name+`"`) && strings.Contains(got, `"terminated"`), got + errOut
	})

	got, errOut, code, err := kubectlRun(ctx, strings.NewReader("go\n"), nil, "-n", ns, "debug", "-i", "target", "--image="+image1, "--target=app", "--", "sh", "-c", "read x; ps")
	if err != nil || code != 0 || !strings.Contains(got, "sleep 4242") {
		t.Errorf("debug -i: exit %d %v, stdout %q, stderr %q; want the target's sleep 4242", code, err, got, errOut)
	}

	// A command that does not wait: kubectl finds it ended and reads its
	// log instead, as on a kubelet node.
	got, errOut, code, err = kubectlRun(ctx, nil, nil, "-n", ns, "debug", "-i", "target", "--image="+image1, "--target=app", "--", "ps")
	if err != nil || code != 0 || !strings.Contains(got, "sleep 4242") {
		t.Errorf("debug -i -- ps: exit %d %v, stdout %q, stderr %q; want the target's sleep 4242", code, err, got, errOut)
	}

	p, err := getPod(ctx, ns, "target")
	if err != nil {
		t.Fatal(err)
	}
	if c := containerStatus(p); c == nil || c.ContainerID != appID || c.RestartCount != 0 || c.State.Running == nil {
		t.Errorf("app after debugging: %+v; want %s running, never restarted", c, appID)
	}
	if n := len(p.Status.EphemeralContainerStatuses); n != 3 {
		t.Errorf("%d ephemeral container statuses, want 3: %+v", n, p.Status.EphemeralContainerStatuses)
	}
}
