package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestCLI(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run([]string{"version"}, &out, &errb); err != nil || strings.TrimSpace(out.String()) != version {
		t.Fatalf("version: %q %v", out.String(), err)
	}
	for _, args := range [][]string{
		{}, {"frobnicate"}, {"token"}, {"token", "delete"},
		{"serve", "--log-level", "loud"},
		{"serve", "--tls-cert-file", "x.pem"},
		{"serve", "extra"},
		{"token", "create", "--kubeconfig", "/nonexistent/kubeconfig"},
		{"node"}, {"node", "delete", "gw-1"},
		{"node", "revoke"}, {"node", "revoke", "gw-1", "gw-2"}, {"node", "revoke", "GW_1"},
		{"node", "revoke", "--kubeconfig", "/nonexistent/kubeconfig", "gw-1"},
	} {
		if err := run(args, &out, &errb); err == nil {
			t.Errorf("%q: no error", args)
		} else if strings.Contains(oneLine(err.Error()), "\n") {
			t.Errorf("%q: multi-line error", args)
		}
	}
}
