// Command outpost-demo runs Outpost on one machine (package demo says
// what it starts), prints how to reach all of it and runs until
// interrupted; then it stops everything it started. `make demo` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"outpost.dev/test/demo"
)

func main() {
	bin := flag.String("bin", "", "directory holding outpost-agent and outpost-relay (built if empty)")
	dir := flag.String("dir", "", "directory for state and logs (a new one under /tmp if empty)")
	node := flag.String("node", "demo-edge", "name of the demo's edge node")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := demo.Run(ctx, *bin, *dir, *node); err != nil {
		fmt.Fprintf(os.Stderr, "outpost-demo: %v\n", err)
		os.Exit(1)
	}
}
