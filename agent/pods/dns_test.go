package pods

import (
	"os"
	"path/filepath"
	"testing"

	"outpost.dev/wire"
)

// TestPodDNS checks the pod's resolv.conf against the kubelet's rules for
// each dnsPolicy, with and without cluster DNS, and dnsConfig merged in.
func TestPodDNS(t *testing.T) {
	host := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(host, []byte("# node\nnameserver 192.0.2.53\nsearch lan example.org\noptions edns0 ndots:2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ptr := func(s string) *string { return &s }
	cfg := Config{ResolvConf: host, ClusterDNS: []string{"10.96.0.10"}}
	tests := []struct {
		name      string
		noCluster bool
		pod       wire.Pod
		want      string
	}{
		{"ClusterFirst", false, wire.Pod{},
			"nameserver 10.96.0.10\nsearch ns1.svc.cluster.local svc.cluster.local cluster.local lan example.org\noptions ndots:5\n"},
		{"ClusterFirst without cluster DNS falls back to Default", true, wire.Pod{},
			"nameserver 192.0.2.53\nsearch lan example.org\noptions edns0 ndots:2\n"},
		{"ClusterFirst on the host network is Default", false, wire.Pod{HostNetwork: true},
			"nameserver 192.0.2.53\nsearch lan example.org\noptions edns0 ndots:2\n"},
		{"ClusterFirstWithHostNet", false, wire.Pod{HostNetwork: true, DNSPolicy: "ClusterFirstWithHostNet"},
			"nameserver 10.96.0.10\nsearch ns1.svc.cluster.local svc.cluster.local cluster.local lan example.org\noptions ndots:5\n"},
		{"Default with dnsConfig merged", false, wire.Pod{DNSPolicy: "Default", DNSConfig: &wire.DNSConfig{
			Nameservers: []string{"192.0.2.53", "192.0.2.54"}, Searches: []string{"lan", "extra.test"},
			Options: []wire.DNSOption{{Name: "ndots", Value: ptr("3")}, {Name: "single-request"}}}},
			"nameserver 192.0.2.53\nnameserver 192.0.2.54\nsearch lan example.org extra.test\noptions edns0 ndots:3 single-request\n"},
		{"None takes dnsConfig alone", false, wire.Pod{DNSPolicy: "None", DNSConfig: &wire.DNSConfig{
			Nameservers: []string{"192.0.2.1"}, Searches: []string{"a.test"}, Options: []wire.DNSOption{{Name: "timeout", Value: ptr("1")}}}},
			"nameserver 192.0.2.1\nsearch a.test\noptions timeout:1\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cfg
			if tt.noCluster {
				c.ClusterDNS = nil
			}
			r := New(c)
			p := tt.pod
			rc, err := r.podDNS(&wire.Object{Namespace: "ns1", Name: "p", Pod: &p})
			if err != nil {
				t.Fatal(err)
			}
			if got := rc.String(); got != tt.want {
				t.Errorf("resolv.conf:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

// TestPodHostsFile checks the hosts file and hostname as the kubelet makes
// them: FQDN with a subdomain, hostAliases appended, setHostnameAsFQDN.
func TestPodHostsFile(t *testing.T) {
	r := New(Config{})
	o := &wire.Object{Namespace: "ns1", Name: "p", Pod: &wire.Pod{Hostname: "web-0", Subdomain: "web", SetHostnameAsFQDN: true,
		HostAliases: []wire.HostAlias{{IP: "192.0.2.7", Hostnames: []string{"broker", "broker.lan"}}}}}
	host, domain, err := r.podHostname(o)
	if err != nil {
		t.Fatal(err)
	}
	if host != "web-0.web.ns1.svc.cluster.local" || domain != "web.ns1.svc.cluster.local" {
		t.Errorf("hostname %q, domain %q", host, domain)
	}
	got := hostsFile(host, domain, []string{"10.244.1.5"}, o.Pod.HostAliases)
	want := "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" +
		"fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n" +
		"10.244.1.5\tweb-0.web.ns1.svc.cluster.local\tweb-0\n\n# Entries added by HostAliases.\n192.0.2.7\tbroker\tbroker.lan\n"
	if got != want {
		t.Errorf("hosts:\n%s\nwant:\n%s", got, want)
	}
	o.Pod.Subdomain = "a-very-long-subdomain-name-that-makes-the-fqdn-too-long"
	if _, _, err := r.podHostname(o); err == nil {
		t.Error("a FQDN hostname over 64 characters was accepted")
	}
}
