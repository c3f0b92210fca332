package wire

import (
	"strings"
	"testing"
)

// TestNetworkFieldsValidate: values that land in a pod's resolv.conf and
// hosts files, hostPorts and pod CIDRs are checked before use.
func TestNetworkFieldsValidate(t *testing.T) {
	base := func() Pod {
		return Pod{RestartPolicy: "Always", Containers: []Container{{Name: "c", Image: "i"}}}
	}
	v := "2"
	ok := base()
	ok.DNSPolicy, ok.DNSConfig = "None", &DNSConfig{Nameservers: []string{"192.0.2.1"}, Searches: []string{"a.test"}, Options: []DNSOption{{Name: "ndots", Value: &v}}}
	ok.HostAliases = []HostAlias{{IP: "192.0.2.7", Hostnames: []string{"broker"}}}
	ok.Containers[0].Ports = []ContainerPort{{ContainerPort: 80, HostPort: 8080, Protocol: "UDP"}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid pod: %v", err)
	}
	bad := map[string]func(p *Pod){
		"dnsPolicy":           func(p *Pod) { p.DNSPolicy = "Cluster" },
		"None without config": func(p *Pod) { p.DNSPolicy = "None" },
		"nameserver":          func(p *Pod) { p.DNSConfig = &DNSConfig{Nameservers: []string{"ns.example"}} },
		"search newline":      func(p *Pod) { p.DNSConfig = &DNSConfig{Searches: []string{"a\nnameserver 6.6.6.6"}} },
		"option space":        func(p *Pod) { p.DNSConfig = &DNSConfig{Options: []DNSOption{{Name: "a b"}}} },
		"alias ip":            func(p *Pod) { p.HostAliases = []HostAlias{{IP: "x"}} },
		"alias tab":           func(p *Pod) { p.HostAliases = []HostAlias{{IP: "192.0.2.1", Hostnames: []string{"a\tb"}}} },
		"hostPort":            func(p *Pod) { p.Containers[0].Ports = []ContainerPort{{ContainerPort: 80, HostPort: 70000}} },
		"protocol": func(p *Pod) {
			p.Containers[0].Ports = []ContainerPort{{ContainerPort: 80, HostPort: 80, Protocol: "ICMP"}}
		},
		"subdomain": func(p *Pod) { p.Subdomain = "Not_A_Label" },
	}
	for name, mod := range bad {
		p := base()
		mod(&p)
		if err := p.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	ack := HelloAck{Version: 1, NodeName: "n", HeartbeatSeconds: 10, PodCIDRs: []string{"10.244.0.0/24"}}
	if err := ack.Validate(); err != nil {
		t.Errorf("hello-ack with a pod CIDR: %v", err)
	}
	ack.PodCIDRs = []string{"10.244.0.0"}
	if err := ack.Validate(); err == nil || !strings.Contains(err.Error(), "podCIDR") {
		t.Errorf("hello-ack with a bad pod CIDR: %v", err)
	}
}
