package pods

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"outpost.dev/wire"
)

// DNS settings of the pods' resolv.conf, as a kubelet writes it.
const (
	// DefaultResolvConf is the node's resolver file, the base of dnsPolicy
	// Default (the kubelet's --resolv-conf).
	DefaultResolvConf = "/etc/resolv.conf"
	// DefaultClusterDomain is the kubelet's usual --cluster-domain.
	DefaultClusterDomain = "cluster.local"

	maxResolvConf  = 64 << 10
	maxSearches    = 32   // the kubelet's MaxDNSSearchPaths
	maxSearchChars = 2048 // the kubelet's MaxDNSSearchListChars
	maxNameservers = 3    // what glibc reads
	maxHostnameLen = 64   // the kubelet refuses a longer FQDN hostname
)

// resolvConf is what a pod's /etc/resolv.conf says.
type resolvConf struct {
	nameservers, searches, options []string
}

// readResolvConf parses the nameserver, search/domain and options lines
// of a resolver file, bounded; a missing file is an empty one.
func readResolvConf(path string) (resolvConf, error) {
	var rc resolvConf
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return rc, nil
	}
	if err != nil {
		return rc, err
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, maxResolvConf))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		line, _, _ = strings.Cut(line, ";")
		fs := strings.Fields(line)
		if len(fs) == 0 {
			continue
		}
		switch fs[0] {
		case "nameserver":
			if len(fs) > 1 {
				rc.nameservers = append(rc.nameservers, fs[1])
			}
		case "domain", "search":
			rc.searches = fs[1:] // the last one wins, as in the resolver
		case "options":
			rc.options = append(rc.options, fs[1:]...)
		}
	}
	return rc, sc.Err()
}

// podDNS is pod's resolv.conf as the kubelet's getPodDNS makes it: the
// policy picks the cluster's DNS (ClusterFirst; for a hostNetwork pod
// only with ClusterFirstWithHostNet), the node's (Default, or
// ClusterFirst with no cluster DNS known) or nothing (None); dnsConfig is
// then appended, duplicates dropped, options merged by name.
func (r *Reconciler) podDNS(o *wire.Object) (resolvConf, error) {
	pod := o.Pod
	policy := pod.DNSPolicy
	if policy == "" {
		policy = "ClusterFirst"
	}
	cluster := policy == "ClusterFirstWithHostNet" || (policy == "ClusterFirst" && !pod.HostNetwork)
	if cluster && len(r.cfg.ClusterDNS) == 0 {
		cluster = false // the kubelet's fallback (MissingClusterDNS)
	}
	var rc resolvConf
	if policy != "None" {
		host, err := readResolvConf(r.cfg.ResolvConf)
		if err != nil {
			return rc, fmt.Errorf("reading the node's resolver file %s: %w", r.cfg.ResolvConf, err)
		}
		rc = host
		if cluster {
			d := r.cfg.ClusterDomain
			rc.nameservers = slices.Clone(r.cfg.ClusterDNS)
			rc.searches = append([]string{o.Namespace + ".svc." + d, "svc." + d, d}, host.searches...)
			rc.options = []string{"ndots:5"}
		}
	}
	if c := pod.DNSConfig; c != nil {
		rc.nameservers = uniq(append(rc.nameservers, c.Nameservers...))
		rc.searches = uniq(append(rc.searches, c.Searches...))
		for _, op := range c.Options {
			v := op.Name
			if op.Value != nil && *op.Value != "" {
				v += ":" + *op.Value
			}
			i := slices.IndexFunc(rc.options, func(s string) bool { n, _, _ := strings.Cut(s, ":"); return n == op.Name })
			if i >= 0 {
				rc.options[i] = v
			} else {
				rc.options = append(rc.options, v)
			}
		}
	}
	rc.searches = uniq(rc.searches)
	if len(rc.searches) > maxSearches {
		rc.searches = rc.searches[:maxSearches]
	}
	for len(rc.searches) > 0 && len(strings.Join(rc.searches, " ")) > maxSearchChars {
		rc.searches = rc.searches[:len(rc.searches)-1]
	}
	if len(rc.nameservers) > maxNameservers {
		rc.nameservers = rc.nameservers[:maxNameservers]
	}
	return rc, nil
}

func (rc resolvConf) String() string {
	var b strings.Builder
	for _, ns := range rc.nameservers {
		fmt.Fprintf(&b, "nameserver %s\n", ns)
	}
	if len(rc.searches) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(rc.searches, " "))
	}
	if len(rc.options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(rc.options, " "))
	}
	return b.String()
}

func uniq(xs []string) []string {
	var out []string
	for _, x := range xs {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

// podHostname is the pod's hostname and its domain
// (subdomain.namespace.svc.<cluster domain>, empty without a subdomain);
// with setHostnameAsFQDN the hostname is the FQDN, as the kubelet's
// GeneratePodHostNameAndDomain makes them.
func (r *Reconciler) podHostname(o *wire.Object) (host, domain string, err error) {
	host = o.Name
	if o.Pod.Hostname != "" {
		host = o.Pod.Hostname
	}
	if len(host) > 63 {
		host = strings.TrimRight(host[:63], "-.") // the kubelet's truncation
	}
	if o.Pod.Subdomain != "" {
		domain = o.Pod.Subdomain + "." + o.Namespace + ".svc." + r.cfg.ClusterDomain
	}
	if o.Pod.SetHostnameAsFQDN && domain != "" {
		fqdn := host + "." + domain
		if len(fqdn) > maxHostnameLen {
			return "", "", fmt.Errorf("the pod's FQDN %s is %d characters, longer than the %d a hostname may have: shorten hostname or subdomain, or unset setHostnameAsFQDN", fqdn, len(fqdn), maxHostnameLen)
		}
		host = fqdn
	}
	return host, domain, nil
}

// hostsFile is a pod's /etc/hosts as the kubelet manages it: localhost,
// the pod's addresses with its FQDN and short name, then its hostAliases.
func hostsFile(host, domain string, ips []string, aliases []wire.HostAlias) string {
	var b strings.Builder
	b.WriteString("# Kubernetes-managed hosts file.\n")
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	b.WriteString("fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n")
	short, _, _ := strings.Cut(host, ".")
	if len(ips) == 0 {
		ips = []string{"127.0.1.1"} // no pod network: the name still resolves
	}
	for _, ip := range ips {
		if domain != "" {
			fmt.Fprintf(&b, "%s\t%s.%s\t%s\n", ip, short, domain, short)
		} else {
			fmt.Fprintf(&b, "%s\t%s\n", ip, host)
		}
	}
	if len(aliases) > 0 {
		b.WriteString("\n# Entries added by HostAliases.\n")
		for _, a := range aliases {
			fmt.Fprintf(&b, "%s\t%s\n", a.IP, strings.Join(a.Hostnames, "\t"))
		}
	}
	return b.String()
}
