// Command fakeagent stands in for outpost-agent in the launcher's tests:
// built with -X main.mode=good it marks its slot healthy and exits 0, with
// bad it exits 1 at once, with hang it waits for a signal. Every run
// appends "SLOT MODE ARGS" to the file $FAKE_AGENT_LOG.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"outpost.dev/agent/slots"
)

var mode = "good"

func main() {
	f, err := os.OpenFile(os.Getenv("FAKE_AGENT_LOG"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		os.Exit(9)
	}
	fmt.Fprintf(f, "%s %s %s\n", os.Getenv(slots.EnvSlot), mode, strings.Join(os.Args[1:], " "))
	f.Close()
	switch mode {
	case "bad":
		os.Exit(1)
	case "hang":
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM)
		<-c
		os.Exit(3)
	}
	s, slot, ok, err := slots.FromEnv()
	if err != nil {
		os.Exit(8)
	}
	if ok {
		if err := s.MarkHealthy(slot); err != nil {
			os.Exit(7)
		}
	}
}
