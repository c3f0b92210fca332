// Command outpost-agent is the Outpost edge agent: it joins a gateway to a
// Kubernetes cluster through an Outpost relay (package join) and keeps it
// connected (package daemon).
//
//	outpost-agent join --server https://HOST:PORT --token ID.SECRET
//	outpost-agent run
//	outpost-agent version
//
// Every failure is one line on stderr, starting "outpost-agent: " and saying what to do, and a
// non-zero exit status: init systems and people at a serial console both read one line.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	"outpost.dev/agent/config"
	"outpost.dev/agent/crilog"
	"outpost.dev/agent/daemon"
	"outpost.dev/agent/join"
	_ "outpost.dev/agent/mqtt/condregister" // embedded broker, KubeEdge topics unless tagged out
	"outpost.dev/agent/pods"
	_ "outpost.dev/hal/all" // every driver unless tagged out (outpost_no_<driver>)
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = "dev"

const usage = "usage: outpost-agent <command> [flags]\n\ncommands:\n  join      join this gateway to a cluster (once)\n" +
	"  run       run the agent\n  version   print the version\n\n\"outpost-agent <command> -h\" lists a command's flags.\n"

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// run runs a command: exit status 1 for a failure, or the error's own (2 for a mistake on the
// command line, daemon.Restart's to be started again by the launcher after an upgrade).
func run(args []string, stdout, stderr io.Writer) int {
	var coded interface{ ExitCode() int }
	if err := dispatch(args, stdout, stderr); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(stderr, "outpost-agent: %s\n", strings.Join(strings.Fields(err.Error()), " "))
		if errors.As(err, &coded) {
			return coded.ExitCode()
		}
		return 1
	}
	return 0
}

func dispatch(args []string, stdout, stderr io.Writer) error {
	switch {
	case len(args) == 0:
		return config.UsageError{Err: errors.New(`no command: use join, run or version (see "outpost-agent help")`)}
	case crilog.IsLoggerCall(args): // containerd's shim runs the agent as a container's logger
		a, err := crilog.ParseArgs(args)
		if err != nil {
			return config.UsageError{Err: fmt.Errorf("logger: %w", err)}
		}
		return crilog.Run(a.Path, a.MaxSize, a.MaxFiles)
	case pods.IsPauseCall(args):
		pods.RunPause()
		return nil
	}
	f := config.NewFlags(args[0])
	var r join.Request
	switch args[0] {
	case "join":
		r.Register(f.FlagSet)
	case "run":
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "outpost-agent %s (%s %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return nil
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		return config.UsageError{Err: fmt.Errorf(`unknown command %q: use join, run or version`, args[0])}
	}
	cfg, err := f.Load(args[1:], stdout)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if args[0] == "run" {
		return daemon.Run(ctx, cfg, daemon.Options{Version: version, Log: cfg.Logger(stderr)})
	}
	id, err := join.Enroll(ctx, cfg, r, cfg.Logger(stderr))
	if err == nil {
		fmt.Fprintf(stdout, "joined %s as node %s; start the agent with \"outpost-agent run\"\n", id.Server, id.NodeName)
	}
	return err
}
