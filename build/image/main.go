// Command image builds a flashable disk image for a gateway board without
// root, loop devices or mounts (package build/image/gateway does the
// work; this command reads its flags).
//
//	go run ./build/image -board rpi4 -relay https://relay:8443 -token abcdef.0123456789abcdef [-ca-cert-hash sha256:HEX] [-upgrade-public-key BASE64]
//
// The same commit, Debian packages and SOURCE_DATE_EPOCH give the same
// bytes.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"outpost.dev/agent/config"
	"outpost.dev/agent/join"
	"outpost.dev/boards/images"
	"outpost.dev/build/image/gateway"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "image: %s\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fset := flag.NewFlagSet("image", flag.ContinueOnError)
	boardName := fset.String("board", "", "board to build for: "+strings.Join(images.Names(), ", "))
	var c gateway.Config
	fset.StringVar(&c.Relay, "relay", "", "relay URL written to the first-boot config, https://HOST:PORT")
	fset.StringVar(&c.Token, "token", "", "bootstrap token the gateway joins with on first boot (outpost-relay token create)")
	fset.StringVar(&c.CACertHash, "ca-cert-hash", "", "pin the relay CA for the first-boot join: sha256:<hex>, as outpost-agent join --ca-cert-hash takes it (a leaked token then cannot point the gateway at another relay)")
	fset.StringVar(&c.UpgradePublicKey, "upgrade-public-key", "", "pin the key agent upgrades must be signed with: the base64 ed25519 public key outpost-relay upgrade keygen prints (without it the gateway takes no AgentUpgrade)")
	fset.StringVar(&c.Version, "version", "", "version stamped into the agent; default dev")
	fset.StringVar(&c.Out, "out", "bin/images", "output directory")
	cacheDefault, _ := os.UserCacheDir()
	fset.StringVar(&c.Cache, "cache", filepath.Join(cacheDefault, "outpost"), "cache for Debian package lists and packages")
	fset.StringVar(&c.Mirror, "mirror", "http://deb.debian.org/debian", "Debian mirror")
	fset.StringVar(&c.SecurityMirror, "security-mirror", "http://deb.debian.org/debian-security", "Debian security mirror; empty for none")
	fset.StringVar(&c.Suite, "suite", "", "Debian suite; default the board's (bookworm, trixie for riscv64)")
	freeMiB := fset.Int64("root-free", 512, "MiB left free in the root file system for images and state")
	regs := fset.String("insecure-registries", "", "comma-separated HOST:PORT registries the agent pulls from over plain HTTP (tests: 10.0.2.2:PORT)")
	if err := fset.Parse(args); err != nil {
		return err
	}
	var err error
	if c.Image, err = images.Lookup(*boardName); err != nil {
		return err
	}
	c.RootFree = *freeMiB << 20
	for _, r := range strings.Split(*regs, ",") {
		if r = strings.TrimSpace(r); r == "" {
			continue
		}
		if !validHostPort(r) {
			return fmt.Errorf("-insecure-registries: %q is not HOST:PORT", r)
		}
		c.Registries = append(c.Registries, r)
	}
	if c.CACertHash != "" {
		if c.CACertHash, err = join.ParsePin(c.CACertHash); err != nil {
			return fmt.Errorf("-ca-cert-hash: %w", err)
		}
	}
	if c.UpgradePublicKey = strings.TrimSpace(c.UpgradePublicKey); c.UpgradePublicKey != "" {
		if _, err := config.ParseUpgradeKey(c.UpgradePublicKey); err != nil {
			return fmt.Errorf("-upgrade-public-key: %w", err)
		}
	}
	if c.Relay == "" || c.Token == "" {
		fmt.Fprintln(os.Stderr, "image: warning: no RELAY or TOKEN given: the gateway will boot but cannot join until /etc/outpost/agent.yaml has server and /etc/outpost/join-token the token")
	}
	if c.Epoch, err = gateway.SourceDate(); err != nil {
		return err
	}
	if err := gateway.CheckTools(); err != nil {
		return err
	}
	return gateway.Build(c)
}

// validHostPort accepts HOST:PORT with a numeric port and a host of
// letters, digits, dots and dashes.
func validHostPort(s string) bool {
	h, p, ok := strings.Cut(s, ":")
	if !ok || h == "" || strings.Trim(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") != "" {
		return false
	}
	n, err := strconv.Atoi(p)
	return err == nil && n > 0 && n < 65536
}
