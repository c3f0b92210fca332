package harness

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"slices"
	"testing"
)

func TestGeneratePKI(t *testing.T) {
	p, err := GeneratePKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(readCert(t, p.CACert))

	serving := readCert(t, p.APIServerCert)
	for _, name := range []string{"127.0.0.1", "localhost", "kubernetes.default.svc", "10.96.0.1"} {
		if _, err := serving.Verify(x509.VerifyOptions{DNSName: name, Roots: roots}); err != nil {
			t.Errorf("apiserver certificate for %s: %v", name, err)
		}
	}
	for _, c := range []struct {
		cert, key, cn, org string
	}{
		{p.AdminCert, p.AdminKey, "outpost-admin", "system:masters"},
		{p.ControllerManagerCert, p.ControllerManagerKey, "system:kube-controller-manager", ""},
		{p.SchedulerCert, p.SchedulerKey, "system:kube-scheduler", ""},
		{p.KubeletClientCert, p.KubeletClientKey, "kube-apiserver-kubelet-client", "system:masters"},
	} {
		cert := readCert(t, c.cert)
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("%s: %v", c.cn, err)
		}
		if cert.Subject.CommonName != c.cn || (c.org != "" && !slices.Contains(cert.Subject.Organization, c.org)) {
			t.Errorf("%s: subject %s, want CN=%s O=%s", c.cert, cert.Subject, c.cn, c.org)
		}
		if _, err := tls.LoadX509KeyPair(c.cert, c.key); err != nil {
			t.Errorf("%s: key pair: %v", c.cn, err)
		}
		if st, err := os.Stat(c.key); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: key mode %v, %v; want 0600", c.key, st.Mode(), err)
		}
	}
	front := x509.NewCertPool()
	front.AddCert(readCert(t, p.FrontProxyCACert))
	if _, err := readCert(t, p.FrontProxyClientCert).Verify(x509.VerifyOptions{Roots: front, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("front-proxy client: %v", err)
	}
	if _, err := readCert(t, p.FrontProxyClientCert).Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("the front-proxy client certificate verifies against the cluster CA; it must not")
	}
	b, err := os.ReadFile(p.ServiceAccountPub)
	if err != nil {
		t.Fatal(err)
	}
	if blk, _ := pem.Decode(b); blk == nil || blk.Type != "PUBLIC KEY" {
		t.Errorf("%s is not a PEM public key", p.ServiceAccountPub)
	}
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM block", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}
