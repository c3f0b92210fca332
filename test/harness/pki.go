package harness

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"outpost.dev/cloud/pki/mint"
)

// PKI is the set of certificates and keys a control plane runs with, as
// PEM files in Dir. All certificates are ECDSA P-256 and signed by the
// cluster CA, which stays available (Issue) for the relay and the agents.
type PKI struct {
	// Dir holds every file below.
	Dir string

	// CACert and CAKey are the cluster CA: the API server trusts client
	// certificates it signed, and the controller manager signs CSRs with it.
	CACert, CAKey string
	// APIServerCert and APIServerKey are kube-apiserver's serving
	// certificate, valid for 127.0.0.1, localhost and the in-cluster names.
	APIServerCert, APIServerKey string
	// AdminCert and AdminKey authenticate as a member of system:masters.
	AdminCert, AdminKey string
	// ControllerManagerCert and ControllerManagerKey authenticate as
	// system:kube-controller-manager.
	ControllerManagerCert, ControllerManagerKey string
	// SchedulerCert and SchedulerKey authenticate as system:kube-scheduler.
	SchedulerCert, SchedulerKey string
	// KubeletClientCert and KubeletClientKey are what kube-apiserver
	// presents when it calls a kubelet (logs, exec, port-forward); whatever
	// answers for the kubelets, such as the relay, verifies them against
	// CACert.
	KubeletClientCert, KubeletClientKey string
	// FrontProxyCACert verifies FrontProxyClientCert, with which the API
	// server calls aggregated API servers; they trust the user named in its
	// X-Remote-User header. A CA of its own, so that no cluster client
	// certificate can claim to be the proxy.
	FrontProxyCACert                          string
	FrontProxyClientCert, FrontProxyClientKey string
	// ServiceAccountKey signs service-account tokens; ServiceAccountPub
	// verifies them.
	ServiceAccountKey, ServiceAccountPub string

	ca    *x509.Certificate
	caKey crypto.Signer
}

// CertSpec describes a certificate for PKI.Issue.
type CertSpec struct {
	// CommonName is the user name when the certificate authenticates a
	// client to the API server.
	CommonName string
	// Organizations are the groups when the certificate authenticates a
	// client to the API server.
	Organizations []string
	// DNSNames and IPs are the subject alternative names of a server.
	DNSNames []string
	IPs      []net.IP
	// Client and Server select the extended key usages.
	Client, Server bool
	// Validity defaults to one year.
	Validity time.Duration
}

// GeneratePKI creates a new cluster CA and every certificate and key a
// control plane needs, written into dir (created if missing; private keys
// are mode 0600).
func GeneratePKI(dir string) (*PKI, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	p := &PKI{Dir: dir}

	var err error
	if p.ca, p.caKey, p.CACert, p.CAKey, err = newCA(dir, "ca", "outpost-cluster-ca"); err != nil {
		return nil, err
	}
	frontCA, frontKey, frontCert, _, err := newCA(dir, "front-proxy-ca", "outpost-front-proxy-ca")
	if err != nil {
		return nil, err
	}
	p.FrontProxyCACert = frontCert
	if p.FrontProxyClientCert, p.FrontProxyClientKey, err = issue(dir, frontCA, frontKey, "front-proxy-client", CertSpec{
		CommonName: "front-proxy-client", Client: true,
	}); err != nil {
		return nil, err
	}

	certs := []struct {
		name      string
		spec      CertSpec
		cert, key *string
	}{
		{name: "apiserver", cert: &p.APIServerCert, key: &p.APIServerKey, spec: CertSpec{
			CommonName: "kube-apiserver",
			DNSNames:   []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
			IPs:        []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback, net.IPv4(10, 96, 0, 1)},
			Server:     true,
		}},
		{name: "admin", cert: &p.AdminCert, key: &p.AdminKey, spec: CertSpec{
			CommonName: "outpost-admin", Organizations: []string{"system:masters"}, Client: true,
		}},
		{name: "controller-manager", cert: &p.ControllerManagerCert, key: &p.ControllerManagerKey, spec: CertSpec{
			CommonName: "system:kube-controller-manager", Client: true,
		}},
		{name: "scheduler", cert: &p.SchedulerCert, key: &p.SchedulerKey, spec: CertSpec{
			CommonName: "system:kube-scheduler", Client: true,
		}},
		{name: "apiserver-kubelet-client", cert: &p.KubeletClientCert, key: &p.KubeletClientKey, spec: CertSpec{
			CommonName: "kube-apiserver-kubelet-client", Organizations: []string{"system:masters"}, Client: true,
		}},
	}
	for _, c := range certs {
		if *c.cert, *c.key, err = p.Issue(c.name, c.spec); err != nil {
			return nil, err
		}
	}

	saKey, err := mint.NewKey()
	if err != nil {
		return nil, fmt.Errorf("pki: generate service-account key: %w", err)
	}
	p.ServiceAccountKey = filepath.Join(dir, "sa.key")
	if err := writeKey(p.ServiceAccountKey, saKey); err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	p.ServiceAccountPub = filepath.Join(dir, "sa.pub")
	if err := os.WriteFile(p.ServiceAccountPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644); err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return p, nil
}

// Issue signs a new certificate with the cluster CA and writes it to
// Dir/name.crt with its key in Dir/name.key, returning both paths. Use it
// for the relay's serving certificate or a node's client certificate.
func (p *PKI) Issue(name string, spec CertSpec) (certFile, keyFile string, err error) {
	if p.ca == nil || p.caKey == nil {
		return "", "", errors.New("pki: Issue needs a PKI made by GeneratePKI (the CA key is kept in memory)")
	}
	if !spec.Client && !spec.Server {
		return "", "", fmt.Errorf("pki: certificate %q is neither Client nor Server", name)
	}
	return issue(p.Dir, p.ca, p.caKey, name, spec)
}

// issue signs a certificate for spec with ca and writes it and its new key
// to dir/name.crt and dir/name.key.
func issue(dir string, ca *x509.Certificate, caKey crypto.Signer, name string, spec CertSpec) (certFile, keyFile string, err error) {
	key, err := mint.NewKey()
	if err != nil {
		return "", "", fmt.Errorf("pki: generate key for %s: %w", name, err)
	}
	validity := spec.Validity
	if validity == 0 {
		validity = 365 * 24 * time.Hour
	}
	hosts := slices.Clone(spec.DNSNames)
	for _, ip := range spec.IPs {
		hosts = append(hosts, ip.String())
	}
	now := time.Now()
	cert, err := mint.Issue(mint.Spec{
		CommonName: spec.CommonName, Organizations: spec.Organizations, Hosts: hosts,
		Client: spec.Client, Server: spec.Server,
		// Tolerate lagging clocks, such as a fresh QEMU guest's.
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(validity),
	}, key.Public(), ca, caKey)
	if err != nil {
		return "", "", fmt.Errorf("pki: certificate %s: %w", name, err)
	}
	return write(dir, name, cert, key)
}

// newCA creates a self-signed CA and writes it to dir/name.crt and
// dir/name.key.
func newCA(dir, name, commonName string) (_ *x509.Certificate, _ crypto.Signer, certFile, keyFile string, err error) {
	key, err := mint.NewKey()
	if err != nil {
		return nil, nil, "", "", fmt.Errorf("pki: generate %s key: %w", name, err)
	}
	now := time.Now()
	cert, err := mint.Issue(mint.Spec{
		CommonName: commonName, Organizations: []string{"Outpost test harness"}, CA: true,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
	}, key.Public(), nil, key)
	if err != nil {
		return nil, nil, "", "", fmt.Errorf("pki: %s: %w", name, err)
	}
	if certFile, keyFile, err = write(dir, name, cert, key); err != nil {
		return nil, nil, "", "", err
	}
	return cert, key, certFile, keyFile, nil
}

// write stores a certificate and its key as dir/name.crt and dir/name.key
// (the key readable by its owner only).
func write(dir, name string, cert *x509.Certificate, key *ecdsa.PrivateKey) (certFile, keyFile string, err error) {
	certFile = filepath.Join(dir, name+".crt")
	keyFile = filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, mint.CertPEM(cert), 0o644); err != nil {
		return "", "", fmt.Errorf("pki: %w", err)
	}
	if err := writeKey(keyFile, key); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// writeKey stores a private key as PKCS#8 PEM, readable by its owner only.
func writeKey(path string, key *ecdsa.PrivateKey) error {
	b, err := mint.KeyPEM(key)
	if err != nil {
		return fmt.Errorf("pki: %s: %w", path, err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	return nil
}
