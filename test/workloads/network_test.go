package workloads

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"outpost.dev/test/harness"
	"outpost.dev/test/stack"
)

// TestPodNetwork: the controller-manager gives the edge Node a pod CIDR,
// the agent learns it from the relay and the pod gets an address in it
// (status.podIP and podIPs, hostIP kept); its hostPort answers on the
// node's address; its resolv.conf and hosts are the kubelet's for
// dnsPolicy None with dnsConfig, hostAliases and a subdomain.
func TestPodNetwork(t *testing.T) {
	need(t)
	t.Parallel()
	ctx := ctxFor(t, 4*time.Minute)
	const ns = "wl-net"
	newNamespace(t, ctx, ns)

	var cidr string
	stack.WaitFor(t, ctx, time.Minute, "the Node's spec.podCIDR", func() (bool, string) {
		n, err := st.CP.Client().CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		cidr = n.Spec.PodCIDR
		return cidr != "", "none yet"
	})
	_, ipn, err := net.ParseCIDR(cidr)
	if err != nil {
		t.Fatalf("spec.podCIDR %q: %v", cidr, err)
	}
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	st.Apply(t, ctx, pod(ns, "web", image1,
		`mkdir -p /www && echo hello-from-the-pod > /www/index.html && exec httpd -f -p 8080 -h /www`,
		`    ports:
    - {containerPort: 8080, hostPort: `+strconv.Itoa(port)+`}
`, `  hostname: web-0
  subdomain: svc1
  setHostnameAsFQDN: true
  dnsPolicy: None
  dnsConfig:
    nameservers: [192.0.2.53]
    searches: [example.test]
    options: [{name: ndots, value: "2"}, {name: edns0}]
  hostAliases:
  - {ip: 192.0.2.7, hostnames: [broker, broker.lan]}
`))
	p := waitRunning(t, ctx, ns, "web", 3*time.Minute)
	if pr := statusProblems(p); len(pr) > 0 {
		t.Errorf("status: %v", pr)
	}
	// A pod started before the agent learned the CIDR (the Node is new)
	// is attached once it has.
	stack.WaitFor(t, ctx, time.Minute, "status.podIP", func() (bool, string) {
		p, err = getPod(ctx, ns, "web")
		if err != nil {
			return false, err.Error()
		}
		return p.Status.PodIP != "", podState(p)
	})
	ip := net.ParseIP(p.Status.PodIP)
	if ip == nil || !ipn.Contains(ip) {
		t.Fatalf("status.podIP %q is not in the Node's pod CIDR %s", p.Status.PodIP, cidr)
	}
	if len(p.Status.PodIPs) != 1 || p.Status.PodIPs[0].IP != p.Status.PodIP || p.Status.HostIP == "" || p.Status.HostIP == p.Status.PodIP {
		t.Errorf("podIPs %v, hostIP %q", p.Status.PodIPs, p.Status.HostIP)
	}

	url := fmt.Sprintf("http://%s/", net.JoinHostPort(p.Status.HostIP, strconv.Itoa(port)))
	stack.WaitFor(t, ctx, 30*time.Second, "the hostPort answering on "+url, func() (bool, string) {
		c := http.Client{Timeout: 3 * time.Second}
		r, err := c.Get(url)
		if err != nil {
			return false, err.Error()
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(r.Body, 1024))
		return strings.Contains(string(b), "hello-from-the-pod"), string(b)
	})

	// The files as they are now (the hosts file is rewritten once the pod
	// has its address), read through containerd.
	id := strings.TrimPrefix(containerStatus(p).ContainerID, "containerd://")
	var out string
	for _, args := range [][]string{{"cat", "/etc/resolv.conf", "/etc/hosts"}, {"hostname"}} {
		o, err := ctrExec(ctx, id, args...)
		if err != nil {
			t.Fatalf("exec %v: %v", args, err)
		}
		out += o + "\n"
	}
	for _, want := range []string{
		"nameserver 192.0.2.53\nsearch example.test\noptions ndots:2 edns0\n",
		p.Status.PodIP + "\tweb-0.svc1." + ns + ".svc.cluster.local\tweb-0\n",
		"# Entries added by HostAliases.\n192.0.2.7\tbroker\tbroker.lan\n",
		"\nweb-0.svc1." + ns + ".svc.cluster.local\n", // setHostnameAsFQDN
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the pod's resolv.conf, hosts or hostname lack %q:\n%s", want, out)
		}
	}
}
