// Command relayimage builds the relay's container image without Docker
// (package ociimage): one static outpost-relay per architecture on an
// empty base, as an OCI image index in an OCI image layout, and pushes it
// when given a reference.
//
//	go run ./build/relayimage [-out bin/outpost-relay-image] [-version v0.1.0] [-arch amd64,arm64] [-push REGISTRY/outpost-relay:TAG [-insecure]]
//
// The same commit and SOURCE_DATE_EPOCH give the same digests.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"outpost.dev/build/cross"
	"outpost.dev/build/package/agentdeb"
	"outpost.dev/build/relayimage/ociimage"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "relayimage: %s\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("relayimage", flag.ContinueOnError)
	out := fs.String("out", "bin/outpost-relay-image", "OCI image layout directory to write (replaced)")
	version := fs.String("version", "dev", "version stamped into the relay and the image's label and tag")
	arches := fs.String("arch", strings.Join(ociimage.Arches, ","), "comma-separated architectures (amd64, arm64)")
	push := fs.String("push", "", "also push the image index to this reference (REGISTRY/REPOSITORY:TAG); credentials from docker login")
	insecure := fs.Bool("insecure", false, "with -push: the registry speaks plain HTTP")
	if err := fs.Parse(args); err != nil {
		return err
	}
	root, err := cross.ModuleRoot(".")
	if err != nil {
		return err
	}
	created, err := agentdeb.SourceDate(root)
	if err != nil {
		return err
	}
	ctx := context.Background()
	idx, err := ociimage.Build(ctx, ociimage.Options{ModuleRoot: root, Version: *version, Created: created, Arches: strings.Split(*arches, ",")})
	if err != nil {
		return err
	}
	if err := ociimage.WriteLayout(*out, idx, ociimage.Tag(*version)); err != nil {
		return err
	}
	d, err := idx.Digest()
	if err != nil {
		return err
	}
	sizes, err := ociimage.Sizes(idx)
	if err != nil {
		return err
	}
	for _, s := range sizes {
		fmt.Printf("linux/%-6s %6.2f MB compressed\n", s.Arch, float64(s.Compressed)/1e6)
	}
	fmt.Printf("wrote %s (index %s)\n", *out, d)
	if *push != "" {
		ref, err := ociimage.Push(ctx, idx, *push, *insecure)
		if err != nil {
			return err
		}
		fmt.Println("pushed " + ref)
	}
	return nil
}
