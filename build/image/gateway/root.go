package gateway

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"text/template"

	"outpost.dev/build/image/rootfs"
)

// files are the image's own scripts and configuration, text/templates.
//
//go:embed files
var files embed.FS

func render(name string, data any) ([]byte, error) {
	text, err := files.ReadFile("files/" + name)
	if err != nil {
		return nil, err
	}
	t, err := template.New(name).Delims("{{", "}}").Parse(string(text))
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	err = t.Execute(&buf, data)
	return buf.Bytes(), err
}

// layout writes busybox's links and the image's own files into root.
func (o *builder) layout(root string) error {
	bb := filepath.Join(root, "bin/busybox")
	data, err := os.ReadFile(bb)
	if err != nil {
		return fmt.Errorf("busybox-static did not unpack /bin/busybox: %w", err)
	}
	applets, err := rootfs.BusyboxApplets(data)
	if err != nil {
		return err
	}
	for _, d := range []string{"proc", "sys", "dev", "run", "tmp", "sbin", "usr/sbin", "var/lib/outpost", "var/lib/containerd", "var/log", "etc/outpost", "etc/init.d", "etc/containerd", "root"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	os.Chmod(filepath.Join(root, "var/lib/outpost"), 0o700)
	os.Chmod(filepath.Join(root, "tmp"), 0o1777)
	for _, a := range append(applets, "init") {
		dir := "bin"
		if a == "init" {
			dir = "sbin"
		}
		link := filepath.Join(root, dir, a)
		if _, err := os.Lstat(link); err == nil {
			continue // a real binary (runc, containerd) wins
		}
		if err := os.Symlink("/bin/busybox", link); err != nil {
			return err
		}
	}
	type file struct {
		path string
		mode fs.FileMode
		data []byte
	}
	var out []file
	for _, f := range []struct {
		src, dst string
		mode     fs.FileMode
	}{
		{"rcS", "etc/init.d/rcS", 0o755}, {"inittab", "etc/inittab", 0o644},
		{"agent.sh", "etc/outpost/agent.sh", 0o755}, {"containerd.sh", "etc/outpost/containerd.sh", 0o755},
		{"udhcpc.script", "etc/outpost/udhcpc.script", 0o755}, {"containerd.toml", "etc/containerd/config.toml", 0o644},
		{"memreport.sh", "etc/outpost/memreport.sh", 0o755},
	} {
		b, err := render(f.src, map[string]any{"Epoch": o.Epoch.Unix()})
		if err != nil {
			return err
		}
		out = append(out, file{f.dst, f.mode, b})
	}
	out = append(out,
		file{"etc/outpost/agent.yaml", 0o644, []byte(o.agentConfig())},
		file{"etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\n")},
		file{"etc/group", 0o644, []byte("root:x:0:\ntty:x:5:\n")},
		file{"etc/hosts", 0o644, []byte("127.0.0.1\tlocalhost\n::1\tlocalhost\n")},
		file{"etc/os-release", 0o644, []byte(fmt.Sprintf("NAME=Outpost\nID=outpost\nID_LIKE=debian\nPRETTY_NAME=\"Outpost %s (Debian %s packages)\"\nVERSION_ID=%q\n", versionOr(o.Version), o.Suite, versionOr(o.Version)))},
	)
	if o.Token != "" {
		out = append(out, file{"etc/outpost/join-token", 0o600, []byte(o.Token + "\n")})
	}
	if o.CACertHash != "" {
		out = append(out, file{"etc/outpost/ca-cert-hash", 0o644, []byte(o.CACertHash + "\n")})
	}
	for _, f := range out {
		p := filepath.Join(root, f.path)
		if err := os.WriteFile(p, f.data, f.mode); err != nil {
			return err
		}
		if err := os.Chmod(p, f.mode); err != nil {
			return err
		}
	}
	os.Remove(filepath.Join(root, "etc/resolv.conf"))
	return os.Symlink("/run/resolv.conf", filepath.Join(root, "etc/resolv.conf"))
}

// agentConfig is the first-boot /etc/outpost/agent.yaml: the relay, the
// agent's board, the key agent upgrades must be signed with and the
// registries reached over plain HTTP.
func (o *builder) agentConfig() string {
	cfg := "# First-boot configuration written by make image; see /etc/outpost/agent.yaml's fields in agent/README.md.\n"
	if o.Relay != "" {
		cfg += "server: " + o.Relay + "\n"
	} else {
		cfg += "# No relay URL was given to make image: set server here.\n#server: https://relay.example.com:8443\n"
	}
	cfg += "board: " + o.Image.Board + "\n"
	if o.UpgradePublicKey != "" {
		cfg += "upgradePublicKey: " + o.UpgradePublicKey + "\n"
	}
	if len(o.Registries) > 0 {
		cfg += "containerd:\n  registries:\n"
		for _, r := range o.Registries {
			cfg += fmt.Sprintf("    %q: {plainHTTP: true}\n", r)
		}
	}
	return cfg
}

func copyFile(src, dst string, mode fs.FileMode) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, data, mode)
}
