// Command outpost-relay is the cloud end of Outpost: it serves edge agents
// over WebSocket, joins new nodes, and writes their Nodes and Leases
// (package server), and runs the administrator's commands (package admin).
// Without arguments it lists its subcommands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"outpost.dev/cloud/admin"
	"outpost.dev/cloud/server"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `usage:
  outpost-relay serve [flags]         run the relay
  outpost-relay token create [flags]  create a bootstrap token and print it (id.secret)
  outpost-relay node revoke NAME      revoke every certificate of an edge node; re-joining it needs a token made with --node NAME
  outpost-relay node allow NAME...    let the relay act as these edge nodes (an administrator's kubeconfig)
  outpost-relay upgrade keygen|sign   make an agent upgrade signing key; sign an agent binary (docs/upgrades.md)
  outpost-relay version               print the version
Run a subcommand with -h for its flags.`

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "outpost-relay: "+oneLine(err.Error()))
		}
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return errors.New("no subcommand given")
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], stderr)
	case "token":
		if len(args) < 2 || args[1] != "create" {
			return errors.New(`usage: outpost-relay token create [--kubeconfig FILE] [--ttl 24h] [--description TEXT] [--node NAME] [--uses N]`)
		}
		return admin.TokenCreate(args[2:], stdout, stderr)
	case "node":
		return admin.Node(args[1:], stdout, stderr)
	case "upgrade":
		return admin.Upgrade(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
		return nil
	default:
		fmt.Fprintln(stderr, usage)
		return fmt.Errorf("unknown subcommand %q", args[0])
	}
}

// serve runs the relay (package server) until SIGINT or SIGTERM.
func serve(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o server.Options
	o.Register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve: unexpected arguments %q", fs.Args())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return server.Run(ctx, o, version, stderr)
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
