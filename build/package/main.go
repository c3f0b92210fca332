// Command package builds outpost-agent .deb packages, one per gateway
// architecture, without root (package agentdeb makes each), and their
// SHA256SUMS.
//
//	go run ./build/package [-out bin/packages] [-version v0.1.0] [-arch amd64,arm64]
//
// The same commit and SOURCE_DATE_EPOCH give the same bytes.
package main

import (
	"crypto/sha256"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"outpost.dev/build/cross"
	"outpost.dev/build/package/agentdeb"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "package: %s\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("package", flag.ContinueOnError)
	out := fs.String("out", "bin/packages", "output directory")
	version := fs.String("version", "", "version stamped into the agent (v0.1.0-dev+COMMIT); default: dev")
	arches := fs.String("arch", "", "comma-separated architectures (Debian names or linux-arm-v7 style); default: all")
	if err := fs.Parse(args); err != nil {
		return err
	}
	root, err := cross.ModuleRoot(".")
	if err != nil {
		return err
	}
	targets := cross.Targets
	if *arches != "" {
		targets = nil
		for _, a := range strings.Split(*arches, ",") {
			t, err := cross.Lookup(a)
			if err != nil {
				return err
			}
			targets = append(targets, t)
		}
	}
	stamp, err := agentdeb.SourceDate(root)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "outpost-package-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	var sums strings.Builder
	for _, t := range targets {
		p, err := agentdeb.Build(root, t, *version, tmp, stamp)
		if err != nil {
			return err
		}
		path := filepath.Join(*out, fmt.Sprintf("%s_%s_%s.deb", p.Name, p.Version, p.Architecture))
		if err := agentdeb.WriteFile(path, p); err != nil {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		fmt.Fprintf(&sums, "%x  %s\n", sha256.Sum256(b), filepath.Base(path))
		fmt.Printf("%-52s %6.2f MB\n", path, float64(len(b))/1e6)
	}
	return os.WriteFile(filepath.Join(*out, "SHA256SUMS"), []byte(sums.String()), 0o644)
}
