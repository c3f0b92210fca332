package admin

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"syscall"

	"outpost.dev/cloud/upgrade"
)

const upgradeUsage = `usage: outpost-relay upgrade keygen --key FILE
       outpost-relay upgrade sign --key FILE --version V [--arch ARCH] [--url URL] BINARY`

// Upgrade runs the publisher's commands for agent upgrades: keygen makes
// a signing key (and prints the agents' upgradePublicKey), sign prints
// the artifact entry of an AgentUpgrade for a binary. Neither talks to
// the cluster: signing happens where the key is, never on the relay.
func Upgrade(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(upgradeUsage)
	}
	switch args[0] {
	case "keygen":
		return upgradeKeygen(args[1:], stdout, stderr)
	case "sign":
		return upgradeSign(args[1:], stdout, stderr)
	}
	return errors.New(upgradeUsage)
}

func upgradeKeygen(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("upgrade keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyFile := fs.String("key", "", "file to write the new ed25519 signing key to (PKCS #8 PEM, mode 0600); it must not exist")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *keyFile == "" || fs.NArg() > 0 {
		return errors.New(upgradeUsage)
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	pemKey, err := upgrade.MarshalKey(key)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(*keyFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("upgrade keygen: %w", err)
	}
	if _, err := f.Write(pemKey); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "upgradePublicKey: %s\n", upgrade.PublicKeyString(key))
	return nil
}

func upgradeSign(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("upgrade sign", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		keyFile = fs.String("key", "", "the ed25519 signing key (upgrade keygen)")
		version = fs.String("version", "", "the version the binary is (the AgentUpgrade's spec.version)")
		arch    = fs.String("arch", "arm64", "the GOARCH the binary is for: arm64, arm, riscv64 or amd64")
		url     = fs.String("url", "https://example.invalid/outpost-agent", "where the relay will fetch the binary from")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *keyFile == "" || *version == "" || fs.NArg() != 1 {
		return errors.New(upgradeUsage)
	}
	kb, err := os.ReadFile(*keyFile)
	if err != nil {
		return err
	}
	key, err := upgrade.ParseKey(kb)
	if err != nil {
		return err
	}
	bin, err := os.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	defer bin.Close()
	s, err := upgrade.SignArtifact(key, *version, bin)
	if err != nil {
		return fmt.Errorf("upgrade sign: %w", err)
	}
	fmt.Fprintf(stdout, "- arch: %s\n  url: %s\n  size: %d\n  sha256: %s\n  signature: %s\n", *arch, *url, s.Size, s.SHA256, s.Signature)
	return nil
}
