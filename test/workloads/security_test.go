package workloads

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"outpost.dev/test/stack"
)

// TestRestrictedPod: a pod written as a restricted-profile Helm chart
// writes it (runAsNonRoot, no privilege escalation, every capability
// dropped, RuntimeDefault seccomp, read-only root, fsGroup, a safe sysctl)
// goes through the API server and the relay and runs on the edge node with
// each of those in force, as the container itself reports.
func TestRestrictedPod(t *testing.T) {
	need(t)
	t.Parallel()
	ctx := ctxFor(t, 3*time.Minute)
	const ns = "wl-restricted"
	newNamespace(t, ctx, ns)
	st.Apply(t, ctx, pod(ns, "restricted", image1,
		`grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/self/status; id; `+
			`if touch /x 2>/dev/null; then echo root=rw; else echo root=ro; fi; `+
			`touch /data/f && stat -c 'data %g' /data/f; cat /proc/sys/net/ipv4/ip_unprivileged_port_start; exec sleep 3600`,
		`    securityContext:
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities: {drop: [ALL]}
    volumeMounts:
    - {name: data, mountPath: /data}
`, `  securityContext:
    runAsNonRoot: true
    runAsUser: 1000
    runAsGroup: 1000
    fsGroup: 2000
    supplementalGroups: [3000]
    seccompProfile: {type: RuntimeDefault}
    sysctls:
    - {name: net.ipv4.ip_unprivileged_port_start, value: "1024"}
  volumes:
  - name: data
    emptyDir: {}
`))
	waitRunning(t, ctx, ns, "restricted", 2*time.Minute)
	var out string
	stack.WaitFor(t, ctx, 30*time.Second, "the container's report in kubectl logs", func() (bool, string) {
		o, err := st.CP.Kubectl(ctx, "-n", ns, "logs", "restricted")
		out = o
		return err == nil && strings.Contains(o, "root="), fmt.Sprint(o, err)
	})
	for _, want := range []string{"Seccomp:\t2", "NoNewPrivs:\t1", "CapEff:\t0000000000000000", "uid=1000 gid=1000", "2000", "3000",
		"root=ro", "data 2000", "1024"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl logs %q lacks %q", out, want)
		}
	}
}
