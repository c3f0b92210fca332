package pods_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"outpost.dev/agent/runtime/containerd"
	"outpost.dev/test/harness"
	"outpost.dev/wire"
)

// TestPrivateRegistryOOMAndProbes covers what a kubelet does beyond the
// basics: pulls with a pod's imagePullSecrets from a registry whose HTTPS
// certificate comes from a private CA, OOMKilled, and exec probes whose
// output shows in the status.
func TestPrivateRegistryOOMAndProbes(t *testing.T) {
	e := start(t)
	ctx := t.Context()
	// HTTPS with a private CA and a login, the CA configured.
	priv, err := harness.StartRegistryWith(ctx, harness.RegistryOptions{Username: "edge", Password: "pull-pw", TLSDir: filepath.Join(e.dir, "priv-tls")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { priv.Stop() })
	// HTTPS with a private CA that is not configured.
	untrusted, err := harness.StartRegistryWith(ctx, harness.RegistryOptions{TLSDir: filepath.Join(e.dir, "untrusted-tls")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { untrusted.Stop() })
	for _, r := range []*harness.Registry{priv, untrusted} {
		if _, err := r.BuildBusyboxImage(ctx, "team/busybox", "1"); err != nil {
			t.Fatal(err)
		}
	}
	e.cfg.Runtime.Registries = map[string]containerd.Registry{e.reg.Host: {PlainHTTP: true}, priv.Host: {CA: priv.CACert}}
	e.run()
	img := e.images[0].Ref

	waiting := func(uid, reason string, want ...string) {
		e.t.Helper()
		s := e.waitStatus(uid, 60*time.Second, reason, func(s wire.PodStatus) bool {
			return len(s.Containers) == 1 && s.Containers[0].State.Reason == reason
		})
		e.t.Logf("%s: %s", reason, s.Containers[0].State.Message)
		for _, w := range want {
			if !strings.Contains(s.Containers[0].State.Message, w) {
				e.t.Errorf("%s message %q does not contain %q", reason, s.Containers[0].State.Message, w)
			}
		}
		if strings.Contains(s.Containers[0].State.Message, "pull-pw") {
			e.t.Errorf("message shows the password: %q", s.Containers[0].State.Message)
		}
	}

	e.sub(t, "pull secret", func(t *testing.T) {
		ref := priv.Ref("team/busybox:1")
		// No pull secret: the registry says no, and status says why.
		e.apply(&wire.Sync{Upserts: []wire.Object{podObj("uid-nosec", "nosec", "1", sleeper(ref))}})
		waiting("uid-nosec", "ErrImagePull", "unauthorized", "no credentials match")
		// A pull secret that is not there yet is named.
		p := sleeper(ref)
		p.ImagePullSecrets = []string{"regcred"}
		e.apply(&wire.Sync{Upserts: []wire.Object{podObj("uid-sec", "sec", "1", p)}})
		waiting("uid-sec", "ErrImagePull", `imagePullSecret "regcred" not found`)
		// The secret arrives (as the relay sends it): the pod runs.
		sec := wire.Object{Kind: wire.KindSecret, UID: "sec-reg", Namespace: "default", Name: "regcred", Version: "1",
			Secret: &wire.Secret{Type: "kubernetes.io/dockerconfigjson",
				Data:      map[string][]byte{".dockerconfigjson": []byte(`{"auths":{}}`)},
				PullAuths: []wire.PullAuth{{Registry: "https://" + priv.Host + "/v1/", Username: "edge", Password: "pull-pw"}}}}
		e.apply(&wire.Sync{Upserts: []wire.Object{sec}})
		s := e.waitStatus("uid-sec", 90*time.Second, "Running", running)
		if !strings.HasPrefix(s.Containers[0].ImageID, priv.Host+"/team/busybox@sha256:") {
			t.Errorf("imageID %q", s.Containers[0].ImageID)
		}
		e.apply(&wire.Sync{Deletes: []wire.ObjectRef{{Kind: wire.KindPod, UID: "uid-nosec"}, {Kind: wire.KindPod, UID: "uid-sec"}}})
	})

	e.sub(t, "registry CA not configured", func(t *testing.T) {
		e.apply(&wire.Sync{Upserts: []wire.Object{podObj("uid-ca", "ca", "1", sleeper(untrusted.Ref("team/busybox:1")))}})
		waiting("uid-ca", "ErrImagePull", "certificate signed by unknown authority", "containerd.registries")
		e.apply(&wire.Sync{Deletes: []wire.ObjectRef{{Kind: wire.KindPod, UID: "uid-ca"}}})
	})

	e.sub(t, "OOMKilled", func(t *testing.T) {
		p := wire.Pod{RestartPolicy: "Never", Containers: []wire.Container{{Name: "hog", Image: img, MemoryBytes: 16 << 20,
			Command: []string{"sh", "-c", "x=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa; while true; do x=$x$x; done"}}}}
		e.apply(&wire.Sync{Upserts: []wire.Object{podObj("uid-oom", "oom", "1", p)}})
		s := e.waitStatus("uid-oom", 60*time.Second, "terminated", func(s wire.PodStatus) bool {
			return s.Containers[0].State.Kind == wire.StateTerminated
		})
		if st := s.Containers[0].State; st.Reason != "OOMKilled" || st.ExitCode != 137 || s.Phase != "Failed" {
			t.Errorf("phase %s, state %+v; want Failed, OOMKilled, 137", s.Phase, st)
		}
		// A new reconciler reads it back from what Reap recorded.
		n := len(e.rec.history("uid-oom"))
		e.run()
		e.waitFor(30*time.Second, "a status from the new reconciler", func() bool { return len(e.rec.history("uid-oom")) > n })
		s, _ = e.rec.latest("uid-oom")
		if st := s.Containers[0].State; st.Reason != "OOMKilled" {
			t.Errorf("after a restart: state %+v", st)
		}
		e.apply(&wire.Sync{Deletes: []wire.ObjectRef{{Kind: wire.KindPod, UID: "uid-oom"}}})
	})

	e.sub(t, "exec probe output", func(t *testing.T) {
		p := sleeper(img)
		c := &p.Containers[0]
		c.ReadinessProbe = &wire.Probe{Exec: []string{"sh", "-c", "echo not ready: no /tmp/ready; exit 1"}, PeriodSeconds: 1, FailureThreshold: 1}
		c.LivenessProbe = &wire.Probe{Exec: []string{"sh", "-c", "test ! -e /tmp/sick || { echo sick since $(cat /tmp/sick); exit 1; }"},
			PeriodSeconds: 1, FailureThreshold: 1}
		e.apply(&wire.Sync{Upserts: []wire.Object{podObj("uid-probe", "probe", "1", p)}})
		e.waitStatus("uid-probe", 60*time.Second, "not ready with the probe's output", func(s wire.PodStatus) bool {
			for _, cd := range s.Conditions {
				if cd.Type == "Ready" && cd.Status == "False" && strings.Contains(cd.Message, "app: Readiness probe failed: not ready: no /tmp/ready") {
					return s.Containers[0].State.Kind == wire.StateRunning
				}
			}
			return false
		})
		s, _ := e.rec.latest("uid-probe")
		id := strings.TrimPrefix(s.Containers[0].ContainerID, "containerd://")
		if _, _, err := e.rt.ExecOutput(ctx, id, []string{"sh", "-c", "echo tuesday > /tmp/sick"}, 5*time.Second, 100); err != nil {
			t.Fatal(err)
		}
		s = e.waitStatus("uid-probe", 60*time.Second, "restarted after the liveness probe failed", func(s wire.PodStatus) bool {
			return s.Containers[0].RestartCount >= 1 && s.Containers[0].LastState.Kind == wire.StateTerminated
		})
		if m := s.Containers[0].LastState.Message; !strings.Contains(m, "Container app failed liveness probe, will be restarted: Liveness probe failed: sick since tuesday") {
			t.Errorf("lastState message %q", m)
		}
		e.apply(&wire.Sync{Deletes: []wire.ObjectRef{{Kind: wire.KindPod, UID: "uid-probe"}}})
	})
}
