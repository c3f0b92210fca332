package main

import (
	"strings"
	"testing"
)

func TestUnknownBoardListsKnownOnes(t *testing.T) {
	err := run([]string{"-board", "rpi5"})
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	for _, want := range []string{`unknown board "rpi5"`, "make image BOARD=NAME", "  qemu-arm64 ", "  qemu-riscv64 ", "  rpi4 "} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if err := run(nil); err == nil || !strings.HasPrefix(err.Error(), "no board given") {
		t.Errorf("no board: %v", err)
	}
}

func TestInsecureRegistriesFlag(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"10.0.2.2:5000", true}, {"reg.local:443", true},
		{"10.0.2.2", false}, {"http://10.0.2.2:5000", false}, {"a b:1", false}, {"h:0", false}, {"h:99999", false}, {`h"x:1`, false},
	} {
		if got := validHostPort(tc.in); got != tc.ok {
			t.Errorf("validHostPort(%q) = %v, want %v", tc.in, got, tc.ok)
		}
	}
	err := run([]string{"-board", "qemu-arm64", "-insecure-registries", "http://x:1"})
	if err == nil || !strings.Contains(err.Error(), "is not HOST:PORT") {
		t.Errorf("a URL as a registry: %v", err)
	}
}

func TestCACertHashFlag(t *testing.T) {
	err := run([]string{"-board", "qemu-arm64", "-ca-cert-hash", "md5:abc"})
	if err == nil || !strings.Contains(err.Error(), "-ca-cert-hash") || !strings.Contains(err.Error(), "64 hex digits") {
		t.Errorf("a malformed pin: %v", err)
	}
}

func TestUpgradePublicKeyFlag(t *testing.T) {
	for _, k := range []string{"not base64!", "c2hvcnQ="} {
		err := run([]string{"-board", "qemu-arm64", "-upgrade-public-key", k})
		if err == nil || !strings.Contains(err.Error(), "-upgrade-public-key") || !strings.Contains(err.Error(), "ed25519") {
			t.Errorf("upgrade key %q: %v", k, err)
		}
	}
}
