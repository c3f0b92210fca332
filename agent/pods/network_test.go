package pods_test

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"outpost.dev/agent/cni"
	"outpost.dev/test/harness"
	"outpost.dev/test/podnet"
	"outpost.dev/test/wait"
	"outpost.dev/wire"
)

// hostAddr is a non-loopback IPv4 address of this machine.
func hostAddr(t *testing.T) string {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifs {
		if i.Flags&net.FlagUp == 0 || i.Flags&net.FlagLoopback != 0 || strings.HasPrefix(i.Name, "veth") || strings.HasPrefix(i.Name, "op") {
			continue
		}
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLinkLocalUnicast() {
				return ipn.IP.String()
			}
		}
	}
	t.Fatal("this machine has no non-loopback IPv4 address for the egress and hostPort checks")
	return ""
}

func freePort(t *testing.T, ip string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// leaks counts what pods leave on the node: the bridge's veths, iptables
// lines of per-pod chains and rules naming the pod subnet, and
// host-local's lease files.
type leaks struct{ veths, rules, leases int }

func (e *env) leaks(t *testing.T, bridge, subnet, leaseDir string) leaks {
	t.Helper()
	var l leaks
	out, err := exec.Command("ip", "-o", "link", "show", "master", bridge).Output()
	if err == nil {
		l.veths = strings.Count(string(out), "\n")
	}
	save, err := exec.Command("iptables-save").Output()
	if err != nil {
		t.Fatalf("iptables-save: %v", err)
	}
	prefix := strings.TrimSuffix(subnet, "0/24")
	for _, line := range strings.Split(string(save), "\n") {
		if strings.Contains(line, "outpost: pod traffic leaving the pod CIDR") {
			continue // the node's masquerade rule, not a pod's
		}
		// Per-pod rules name the pod's address or the subnet (portmap's
		// DNAT and SETMARK rules do).
		if strings.Contains(line, prefix) {
			l.rules++
		}
	}
	ents, _ := os.ReadDir(filepath.Join(leaseDir, "outpost"))
	for _, en := range ents {
		if net.ParseIP(en.Name()) != nil {
			l.leases++
		}
	}
	return l
}

// TestPodNetwork runs pods on the agent's default CNI network (bridge,
// host-local, portmap) in a real containerd: each gets an address in the
// pod CIDR, reachable from another pod; it reaches a server on the host;
// its hostPort answers on the node; and create/delete cycles, a reconciler
// stopped in the middle of a pod's network set-up and a simulated reboot
// leave no veth, iptables rule or address lease behind.
func TestPodNetwork(t *testing.T) {
	harness.RequireCNI(t)
	harness.RequireContainerd(t)
	e := start(t)
	img := e.images[0].Ref

	var rb [2]byte
	_, _ = rand.Read(rb[:])
	bridge := "op" + hex.EncodeToString(rb[:]) // unique: tests run in parallel on one machine
	subnet := fmt.Sprintf("10.%d.%d.0/24", 200+int(rb[0])%50, rb[1])
	cniDir := filepath.Join(e.dir, "cni")
	var cidrKnown atomic.Bool // the pod CIDR arrives after the first pod started
	net0 := cni.New(cni.Config{ConfDir: filepath.Join(e.dir, "no-conflist"), StateDir: cniDir,
		PodCIDR: func() string {
			if cidrKnown.Load() {
				return subnet
			}
			return ""
		}, Bridge: bridge, Log: harnessLog(t)})
	e.cfg.Network = net0
	e.cfg.ClusterDNS = []string{"10.96.0.10"}
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", bridge).Run()
		// The node's masquerade rule stays while the agent runs; a test's
		// random subnet goes with the test.
		_ = exec.Command("iptables", "-w", "-t", "nat", "-D", "POSTROUTING", "-s", subnet, "!", "-d", subnet,
			"-m", "comment", "--comment", "outpost: pod traffic leaving the pod CIDR", "-j", "MASQUERADE").Run()
	})
	e.run()

	hostIP := hostAddr(t)
	var egressHits atomic.Int32
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		egressHits.Add(1)
		io.WriteString(w, "host says hi\n")
	})}
	ln, err := net.Listen("tcp", net.JoinHostPort(hostIP, "0"))
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	hostPort := freePort(t, hostIP)

	web := func(uid, name string) wire.Object {
		p := wire.Pod{Containers: []wire.Container{{Name: "web", Image: img,
			Command: []string{"sh", "-c", "mkdir -p /www && echo hello from $POD > /www/index.html && exec httpd -f -p 8080 -h /www"},
			Env:     []wire.EnvVar{{Name: "POD", From: &wire.EnvSource{Field: "metadata.name"}}},
			Ports:   []wire.ContainerPort{{ContainerPort: 8080, HostPort: int32(hostPort)}}}}}
		return podObj(uid, name, "1", p)
	}
	hasIP := func(s wire.PodStatus) bool { return running(s) && s.PodIP != "" }
	_, cidr, _ := net.ParseCIDR(subnet)
	get := func(url string) (string, error) {
		c := http.Client{Timeout: 5 * time.Second}
		r, err := c.Get(url)
		if err != nil {
			return "", err
		}
		defer r.Body.Close()
		b, err := io.ReadAll(io.LimitReader(r.Body, 4096))
		return string(b), err
	}

	var webIP string
	e.sub(t, "pod IP, pod to pod, egress to the host, hostPort", func(t *testing.T) {
		e.apply(&wire.Sync{Upserts: []wire.Object{web("uid-web", "web")}})
		// Without a pod CIDR the pod runs on loopback; it is attached
		// once the CIDR is known (the agent pokes its pods then).
		if s := e.waitStatus("uid-web", 90*time.Second, "Running", running); s.PodIP != "" {
			t.Fatalf("podIP %q without a pod network", s.PodIP)
		}
		cidrKnown.Store(true)
		e.recon.Resend()
		s := e.waitStatus("uid-web", 30*time.Second, "Running with a pod IP", hasIP)
		hosts, err := os.ReadFile(filepath.Join(e.cfg.StateDir, "pods", "uid-web", "hosts"))
		if err != nil || !strings.Contains(string(hosts), s.PodIP+"\tweb\n") {
			t.Errorf("hosts file after the pod was attached: %q, %v", hosts, err)
		}
		webIP = s.PodIP
		if ip := net.ParseIP(s.PodIP); ip == nil || !cidr.Contains(ip) {
			t.Fatalf("podIP %q is not in the pod CIDR %s", s.PodIP, subnet)
		}
		if len(s.PodIPs) != 1 || s.PodIPs[0] != s.PodIP || s.HostIP != "127.0.0.1" {
			t.Errorf("podIPs %v, hostIP %q: want [%s] and the node's", s.PodIPs, s.HostIP, s.PodIP)
		}
		client := wire.Pod{RestartPolicy: "Never", Containers: []wire.Container{{Name: "c", Image: img, Command: []string{"sh", "-c",
			fmt.Sprintf("get() { printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 $1 $2; }; "+
				"for i in 1 2 3 4 5 6 7 8 9 10; do get %s 8080 | grep hello && break; sleep 1; done && get %s %d && cat /etc/resolv.conf /etc/hosts",
				webIP, hostIP, ln.Addr().(*net.TCPAddr).Port)}}}}
		e.apply(&wire.Sync{Upserts: []wire.Object{podObj("uid-client", "client", "1", client)}})
		cs := e.waitStatus("uid-client", 90*time.Second, "Succeeded", func(s wire.PodStatus) bool { return s.Phase == "Succeeded" || s.Phase == "Failed" })
		logs := e.log("default", "client", "c", false)
		if cs.Phase != "Succeeded" {
			t.Fatalf("client pod %s: %q", cs.Phase, logs)
		}
		if !strings.Contains(logs, "hello from web") || !strings.Contains(logs, "host says hi") || egressHits.Load() == 0 {
			t.Errorf("client pod did not reach the web pod and the host: %q", logs)
		}
		for _, want := range []string{"nameserver 10.96.0.10", "search default.svc.cluster.local svc.cluster.local cluster.local", "options ndots:5", cs.PodIP + "\tclient"} {
			if !strings.Contains(logs, want) {
				t.Errorf("the client's resolv.conf or hosts lacks %q:\n%s", want, logs)
			}
		}
		save, _ := exec.Command("iptables-save", "-t", "nat").Output()
		if n := strings.Count(string(save), "-A POSTROUTING -s "+subnet+" ! -d "+subnet); n != 1 {
			t.Errorf("%d masquerade rules for the pod CIDR, want 1", n)
		}
		e.waitFor(30*time.Second, "the hostPort answering on the node", func() bool {
			body, err := get(fmt.Sprintf("http://%s:%d/", hostIP, hostPort))
			return err == nil && strings.Contains(body, "hello from web")
		})
		e.apply(&wire.Sync{Deletes: []wire.ObjectRef{{Kind: wire.KindPod, UID: "uid-client"}}})
		e.waitFor(60*time.Second, "client pod removed", func() bool {
			_, err := os.Stat(filepath.Join(e.cfg.StateDir, "pods", "uid-client"))
			return os.IsNotExist(err)
		})
	})

	e.sub(t, "ClusterFirstWithHostNet on the host network", func(t *testing.T) {
		p := wire.Pod{RestartPolicy: "Never", HostNetwork: true, DNSPolicy: "ClusterFirstWithHostNet",
			Containers: []wire.Container{{Name: "c", Image: img, Command: []string{"cat", "/etc/resolv.conf"}}}}
		e.apply(&wire.Sync{Upserts: []wire.Object{podObj("uid-hostdns", "hostdns", "1", p)}})
		s := e.waitStatus("uid-hostdns", 60*time.Second, "Succeeded", func(s wire.PodStatus) bool { return s.Phase == "Succeeded" || s.Phase == "Failed" })
		if logs := e.log("default", "hostdns", "c", false); s.Phase != "Succeeded" || !strings.Contains(logs, "nameserver 10.96.0.10\nsearch default.svc.cluster.local") {
			t.Errorf("%s, resolv.conf %q: want the cluster's resolver", s.Phase, logs)
		}
		if s.PodIP != "127.0.0.1" {
			t.Errorf("hostNetwork podIP %q, want the node's", s.PodIP)
		}
		e.apply(&wire.Sync{Deletes: []wire.ObjectRef{{Kind: wire.KindPod, UID: "uid-hostdns"}}})
		e.waitFor(60*time.Second, "host network pod removed", func() bool {
			_, err := os.Stat(filepath.Join(e.cfg.StateDir, "pods", "uid-hostdns"))
			return os.IsNotExist(err)
		})
	})

	// With the web pod running: one veth, one lease. The baseline for what
	// pods leave is taken with no pod at all.
	e.sub(t, "create and delete cycles leave nothing", func(t *testing.T) {
		e.apply(&wire.Sync{Deletes: []wire.ObjectRef{{Kind: wire.KindPod, UID: "uid-web"}}})
		e.waitFor(60*time.Second, "web pod removed", func() bool {
			_, err := os.Stat(filepath.Join(e.cfg.StateDir, "pods", "uid-web"))
			return os.IsNotExist(err)
		})
		base := e.leaks(t, bridge, subnet, net0.LeaseDir())
		if base.veths != 0 || base.leases != 0 || base.rules != 0 {
			t.Fatalf("after the first pods were deleted: %+v, want nothing", base)
		}
		for i := range 3 {
			uid := fmt.Sprintf("uid-cycle-%d", i)
			e.apply(&wire.Sync{Upserts: []wire.Object{web(uid, "cycle")}})
			s := e.waitStatus(uid, 90*time.Second, "Running with a pod IP", hasIP)
			if got := e.leaks(t, bridge, subnet, net0.LeaseDir()); got.veths != 1 || got.leases != 1 || got.rules == 0 {
				t.Errorf("cycle %d running (%s): %+v, want a veth, a lease and rules", i, s.PodIP, got)
			}
			e.apply(&wire.Sync{Deletes: []wire.ObjectRef{{Kind: wire.KindPod, UID: uid}}})
			e.waitFor(60*time.Second, "cycle pod removed", func() bool {
				_, err := os.Stat(filepath.Join(e.cfg.StateDir, "pods", uid))
				return os.IsNotExist(err)
			})
			if got := e.leaks(t, bridge, subnet, net0.LeaseDir()); got != base {
				t.Fatalf("cycle %d left %+v", i, got)
			}
		}
	})

	e.sub(t, "stopped during set-up, pod deleted meanwhile", func(t *testing.T) {
		base := e.leaks(t, bridge, subnet, net0.LeaseDir())
		e.apply(&wire.Sync{Upserts: []wire.Object{web("uid-half", "half")}})
		// Stop as soon as the pod's namespace exists: the CNI ADD is
		// under way or just done (its plugins are killed with the context).
		e.waitFor(60*time.Second, "namespace made", func() bool {
			_, err := os.Stat(filepath.Join(e.cfg.StateDir, "pods", "uid-half", "netns"))
			return err == nil
		})
		e.stop()
		e.apply(&wire.Sync{Deletes: []wire.ObjectRef{{Kind: wire.KindPod, UID: "uid-half"}}})
		e.run()
		e.waitFor(60*time.Second, "half-made pod torn down", func() bool {
			_, err := os.Stat(filepath.Join(e.cfg.StateDir, "pods", "uid-half"))
			return os.IsNotExist(err) && len(e.podContainers("uid-half")) == 0
		})
		e.waitFor(30*time.Second, "nothing left of it", func() bool { return e.leaks(t, bridge, subnet, net0.LeaseDir()) == base })
	})

	e.sub(t, "simulated reboot", func(t *testing.T) {
		base := e.leaks(t, bridge, subnet, net0.LeaseDir())
		// One pod with a hostPort (its stale attachment is DELed before
		// the new ADD), one without (DELed after it, in the background).
		sleeper := podObj("uid-boot2", "boot2", "1", wire.Pod{Containers: []wire.Container{{Name: "app", Image: img, Command: []string{"sleep", "3600"}}}})
		e.apply(&wire.Sync{Upserts: []wire.Object{web("uid-boot", "boot"), sleeper}})
		before := e.waitStatus("uid-boot", 90*time.Second, "Running with a pod IP", hasIP)
		before2 := e.waitStatus("uid-boot2", 90*time.Second, "Running with a pod IP", hasIP)
		e.stop()
		for id := range e.tasks() {
			_, _ = e.ctrd.Ctr(t.Context(), "-n", "outpost", "tasks", "kill", "-a", "-s", "SIGKILL", id)
			_, _ = e.ctrd.Ctr(t.Context(), "-n", "outpost", "tasks", "delete", "-f", id)
		}
		for _, uid := range []string{"uid-boot", "uid-boot2"} {
			ns := filepath.Join(e.cfg.StateDir, "pods", uid, "netns")
			if err := syscall.Unmount(ns, syscall.MNT_DETACH); err != nil {
				t.Fatalf("unmounting the pod's namespace: %v", err)
			}
		}
		e.waitFor(30*time.Second, "the namespaces' veths gone with them", func() bool {
			return e.leaks(t, bridge, subnet, net0.LeaseDir()).veths == base.veths
		})
		e.run()
		after := e.waitStatus("uid-boot", 90*time.Second, "Running again with a pod IP", func(s wire.PodStatus) bool {
			return hasIP(s) && s.Containers[0].RestartCount > before.Containers[0].RestartCount
		})
		after2 := e.waitStatus("uid-boot2", 90*time.Second, "Running again with a pod IP", func(s wire.PodStatus) bool {
			return hasIP(s) && s.Containers[0].RestartCount > before2.Containers[0].RestartCount
		})
		stale := filepath.Join(cniDir, "stale")
		e.waitFor(30*time.Second, "one veth and one lease per pod, no stale attachment left", func() bool {
			ents, _ := os.ReadDir(stale)
			got := e.leaks(t, bridge, subnet, net0.LeaseDir())
			return len(ents) == 0 && got.veths == base.veths+2 && got.leases == base.leases+2
		})
		t.Logf("pod IPs after the reboot: %s (was %s), %s (was %s)", after.PodIP, before.PodIP, after2.PodIP, before2.PodIP)
		// The pod without hostPorts was attached under its other ID while
		// the stale one waited; the other one's was DELed first.
		for _, want := range []string{"outpost-uid-boot-eth0", "outpost-uid-boot2_1-eth0"} {
			if _, err := os.Stat(filepath.Join(cniDir, "cache", "results", want)); err != nil {
				t.Errorf("cached attachment after the reboot: %v", err)
			}
		}
		// httpd may still be starting in the new container.
		e.waitFor(30*time.Second, "the hostPort answering after the reboot", func() bool {
			body, err := get(fmt.Sprintf("http://%s:%d/", hostIP, hostPort))
			return err == nil && strings.Contains(body, "hello from boot")
		})
		e.apply(&wire.Sync{Deletes: []wire.ObjectRef{{Kind: wire.KindPod, UID: "uid-boot"}, {Kind: wire.KindPod, UID: "uid-boot2"}}})
		e.waitFor(60*time.Second, "nothing left after the reboot and delete", func() bool {
			for _, uid := range []string{"uid-boot", "uid-boot2"} {
				if _, err := os.Stat(filepath.Join(e.cfg.StateDir, "pods", uid)); !os.IsNotExist(err) {
					return false
				}
			}
			return e.leaks(t, bridge, subnet, net0.LeaseDir()) == base
		})
	})
}

// TestPodNetworkCycles runs 100 pod create/delete cycles on the default
// CNI network in a real containerd, ten pods at a time, each publishing a
// hostPort (portmap's per-pod chains): while a round runs there is a
// veth, a namespace, a lease and a cached result per pod and its DNAT
// chain; after each round's delete, and at the end, nothing is left of
// any pod (test/podnet says what it looks at), nor of a pod whose
// attachment libcni never cached (the agent killed at the end of an ADD).
func TestPodNetworkCycles(t *testing.T) {
	harness.RequireCNI(t)
	harness.RequireContainerd(t)
	e := start(t)
	img := e.images[0].Ref
	var rb [2]byte
	_, _ = rand.Read(rb[:])
	bridge := "op" + hex.EncodeToString(rb[:])
	subnet := fmt.Sprintf("10.%d.%d.0/24", 200+int(rb[0])%50, rb[1])
	e.cfg.Network = cni.New(cni.Config{ConfDir: filepath.Join(e.dir, "no-conflist"), StateDir: filepath.Join(e.dir, "state", "cni"),
		PodCIDR: func() string { return subnet }, Bridge: bridge, Log: harnessLog(t)})
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", bridge).Run()
		_ = exec.Command("iptables", "-w", "-t", "nat", "-D", "POSTROUTING", "-s", subnet, "!", "-d", subnet,
			"-m", "comment", "--comment", "outpost: pod traffic leaving the pod CIDR", "-j", "MASQUERADE").Run()
	})
	e.run()
	node := podnet.Node{StateDir: e.cfg.StateDir, Bridge: bridge, CIDR: subnet}

	const rounds, perRound = 10, 10
	var ports [perRound]int
	for i := range ports {
		ports[i] = freePort(t, "0.0.0.0")
	}
	var uids []string
	check := func(what string, ok func(podnet.Left) bool) podnet.Left {
		t.Helper()
		var l podnet.Left
		var err error
		wait.State(t, t.Context(), 30*time.Second, what, func() (bool, string) {
			l, err = podnet.Check(node, uids)
			return err == nil && ok(l), fmt.Sprintf("%v\n%v", err, l)
		})
		return l
	}
	hasIP := func(s wire.PodStatus) bool { return running(s) && s.PodIP != "" }
	began := time.Now()
	for r := range rounds {
		var sy wire.Sync
		var del wire.Sync
		var round []string
		for i := range perRound {
			uid := fmt.Sprintf("uid-cyc-%d-%d", r, i)
			round = append(round, uid)
			p := wire.Pod{TerminationGracePeriodSeconds: 1, Containers: []wire.Container{{Name: "app", Image: img,
				Command: []string{"sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"},
				Ports:   []wire.ContainerPort{{ContainerPort: 8080, HostPort: int32(ports[i])}}}}}
			sy.Upserts = append(sy.Upserts, podObj(uid, fmt.Sprintf("cyc-%d", i), "1", p))
			del.Deletes = append(del.Deletes, wire.ObjectRef{Kind: wire.KindPod, UID: uid})
		}
		uids = append(uids, round...)
		e.apply(&sy)
		for _, uid := range round {
			e.waitStatus(uid, 2*time.Minute, "Running with a pod IP", hasIP)
		}
		l := check(fmt.Sprintf("round %d: each pod's veth, namespace, lease and cached result", r), func(l podnet.Left) bool { return l.Pods(perRound) })
		for _, uid := range round {
			chain := podnet.ChainName("DN-", uid)
			if !strings.Contains(strings.Join(l.Rules, "\n"), chain) {
				t.Fatalf("round %d: no hostPort chain %s for %s among the pods' rules:\n%s", r, chain, uid, strings.Join(l.Rules, "\n"))
			}
		}
		e.apply(&del)
		e.waitFor(2*time.Minute, fmt.Sprintf("round %d's pods removed", r), func() bool {
			for _, uid := range round {
				if _, err := os.Stat(filepath.Join(e.cfg.StateDir, "pods", uid)); !os.IsNotExist(err) {
					return false
				}
			}
			return true
		})
		check(fmt.Sprintf("round %d: nothing left", r), podnet.Left.Empty)
	}
	took := time.Since(began)
	check("nothing left after the cycles", podnet.Left.Empty)

	// The agent killed after the plugins ran but before libcni cached the
	// result: the pod's lease, veth and hostPort chain are there, no
	// cached result names them (only the agent's record that the ADD
	// began), and the pod is deleted before the agent is back. Its
	// teardown still removes all of it.
	uid := "uid-uncached"
	uids = append(uids, uid)
	p := wire.Pod{TerminationGracePeriodSeconds: 1, Containers: []wire.Container{{Name: "app", Image: img,
		Command: []string{"sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"},
		Ports:   []wire.ContainerPort{{ContainerPort: 8080, HostPort: int32(ports[0])}}}}}
	e.apply(&wire.Sync{Upserts: []wire.Object{podObj(uid, "uncached", "1", p)}})
	e.waitStatus(uid, 2*time.Minute, "Running with a pod IP", hasIP)
	e.stop()
	cached, _ := filepath.Glob(filepath.Join(e.cfg.StateDir, "cni", "cache", "results", "*"+uid+"*"))
	if len(cached) == 0 {
		t.Fatal("no cached CNI result for the pod: is libcni's cache elsewhere?")
	}
	for _, f := range cached {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(e.cfg.StateDir, "cni", "adding", uid), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if l, err := podnet.Check(node, uids); err != nil || !strings.Contains(strings.Join(l.Rules, "\n"), podnet.ChainName("DN-", uid)) {
		t.Fatalf("before the restart: no hostPort chain for the pod (%v):\n%v", err, l)
	}
	e.apply(&wire.Sync{Deletes: []wire.ObjectRef{{Kind: wire.KindPod, UID: uid}}})
	e.run()
	e.waitFor(2*time.Minute, "the uncached pod removed", func() bool {
		_, err := os.Stat(filepath.Join(e.cfg.StateDir, "pods", uid))
		return os.IsNotExist(err)
	})
	l := check("nothing left of a pod whose result was never cached", podnet.Left.Empty)
	if l.Masq != 1 {
		t.Errorf("%d masquerade rules for the pod CIDR while the agent runs, want 1", l.Masq)
	}
	if n := len(e.containers()); n != 0 {
		t.Errorf("%d containers left in containerd", n)
	}
	t.Logf("%d create/delete cycles (%d rounds of %d pods) in %v", rounds*perRound, rounds, perRound, took.Round(100*time.Millisecond))
}
