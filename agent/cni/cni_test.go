package cni

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

// TestNetworkChoice: a user's conflist wins (the first by name); without
// one and without a pod CIDR there is no network; an oversized or broken
// file is refused with its name.
func TestNetworkChoice(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "net.d")
	n := New(Config{ConfDir: conf, StateDir: filepath.Join(dir, "state")})
	if _, err := n.list(); !errors.Is(err, ErrNoNetwork) {
		t.Fatalf("no conflist, no CIDR: %v, want ErrNoNetwork", err)
	}
	if err := os.MkdirAll(conf, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(conf, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("20-b.conflist", `{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"}]}`)
	write("10-a.conf", `{"cniVersion":"1.0.0","name":"a","type":"ptp"}`)
	l, err := n.list()
	if err != nil || l.Name != "a" || len(l.Plugins) != 1 || l.Plugins[0].Network.Type != "ptp" {
		t.Fatalf("list: %+v, %v; want the first by name (a, ptp)", l, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "state", "net.d")); !os.IsNotExist(err) {
		t.Errorf("a default conflist was written beside the user's: %v", err)
	}
	write("05-broken.conflist", `{"name":`)
	if _, err := n.list(); err == nil || !strings.Contains(err.Error(), "05-broken.conflist") {
		t.Errorf("broken conflist: %v", err)
	}
	write("05-broken.conflist", strings.Repeat(" ", maxConfSize+1))
	if _, err := n.list(); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("oversized conflist: %v", err)
	}
}

// TestDefaultConf: the default conflist puts host-local's leases under
// the agent's state directory and has portmap for hostPorts.
func TestDefaultConf(t *testing.T) {
	n := New(Config{StateDir: "/var/lib/outpost/cni", Bridge: "br-test"})
	b, err := n.defaultConf("10.244.3.0/24")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"subnet": "10.244.3.0/24"`, `"dataDir": "/var/lib/outpost/cni/networks"`, `"bridge": "br-test"`, `"type": "portmap"`, `"portMappings": true`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("default conflist lacks %s:\n%s", want, b)
		}
	}
	if _, err := n.defaultConf("10.244.3.0"); err == nil {
		t.Error("a CIDR without a mask was accepted")
	}
}

// TestMissingPlugins: an ADD whose plugin binary is nowhere says what to
// install.
func TestMissingPlugins(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "net.d")
	if err := os.MkdirAll(conf, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(conf, "10-x.conflist"), []byte(`{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"bridge"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	n := New(Config{ConfDir: conf, BinDirs: []string{filepath.Join(dir, "bin")}, StateDir: filepath.Join(dir, "state")})
	_, err := n.Attach(t.Context(), "pod-1", filepath.Join(dir, "netns"), nil, true)
	if err == nil || !strings.Contains(err.Error(), "containernetworking-plugins") {
		t.Fatalf("Attach without plugins: %v", err)
	}
	if ips := n.IPs("pod-1"); ips != nil {
		t.Errorf("IPs after a failed ADD: %v", ips)
	}
}

// TestDefaultNetworkWithoutPlugins: with a pod CIDR but without the
// default network's plugins, pods get no network (loopback only) and the
// error names what is missing, instead of every pod failing its ADD.
func TestDefaultNetworkWithoutPlugins(t *testing.T) {
	dir := t.TempDir()
	n := New(Config{ConfDir: filepath.Join(dir, "net.d"), BinDirs: []string{filepath.Join(dir, "bin")}, StateDir: filepath.Join(dir, "state"),
		PodCIDR: func() string { return "10.244.3.0/24" }})
	_, err := n.list()
	if !errors.Is(err, ErrNoNetwork) || !strings.Contains(err.Error(), "bridge, host-local, portmap") || !strings.Contains(err.Error(), "containernetworking-plugins") {
		t.Fatalf("list without plugins: %v, want ErrNoNetwork naming the missing plugins", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "state", "net.d")); !os.IsNotExist(err) {
		t.Errorf("a default conflist was written for plugins that are not there: %v", err)
	}
}

// TestWithoutPortmap: a pod without hostPorts is attached with the list
// minus portmap (and cached so); the rest of the list is kept as it was.
func TestWithoutPortmap(t *testing.T) {
	n := New(Config{StateDir: t.TempDir(), Bridge: "br-test"})
	b, err := n.defaultConf("10.244.3.0/24")
	if err != nil {
		t.Fatal(err)
	}
	l, err := libcni.NetworkConfFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	w, err := withoutPortmap(l)
	if err != nil {
		t.Fatal(err)
	}
	if len(w.Plugins) != 1 || w.Plugins[0].Network.Type != "bridge" || w.Name != l.Name || w.CNIVersion != l.CNIVersion {
		t.Fatalf("without portmap: %s %s %d plugins", w.Name, w.CNIVersion, len(w.Plugins))
	}
	if !strings.Contains(string(w.Bytes), `"dataDir"`) || strings.Contains(string(w.Bytes), "portmap") {
		t.Errorf("cached configuration: %s", w.Bytes)
	}
	only, _ := libcni.NetworkConfFromBytes([]byte(`{"cniVersion":"1.0.0","name":"p","plugins":[{"type":"portmap"}]}`))
	if got, err := withoutPortmap(only); err != nil || got != only {
		t.Errorf("a list of portmap alone: %v, %v; want it unchanged", got, err)
	}
}

// TestAttachmentIDs: a pod's two CNI container IDs map back to its UID,
// the UID first (what a pod never rebooted is attached with); an ID
// that cannot name a record file is refused.
func TestAttachmentIDs(t *testing.T) {
	for _, uid := range []string{"d77abe3d-da7a-4ec2-a801-3d22172a398b", "uid-boot", "a"} {
		ids := AttachmentIDs(uid)
		if len(ids) != 2 || ids[0] != uid || ids[0] == ids[1] {
			t.Fatalf("AttachmentIDs(%q) = %q", uid, ids)
		}
		for _, id := range ids {
			if podOf(id) != uid || !namesFile(id) {
				t.Errorf("%q: pod %q, names a file %v", id, podOf(id), namesFile(id))
			}
		}
	}
	for _, id := range []string{"", ".", "..", "a/b", "a\x00", strings.Repeat("a", 256)} {
		if namesFile(id) {
			t.Errorf("namesFile(%q) = true", id)
		}
	}
}
