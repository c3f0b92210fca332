// Command outpost-logger is containerd's binary logger for Outpost's
// containers, as a binary of its own: it writes a container's stdout and
// stderr (fds 3 and 4 from the shim) in the CRI log format with size-based
// rotation. "outpost-agent logger" does the same; this one links nothing
// but agent/crilog, so each container's logger costs 0.7 MB PSS instead of
// 1.8 MB (docs/containerd.md). The agent uses it when it is installed next
// to the agent binary.
//
//	outpost-logger logger PATH [max-size BYTES] [max-files N]
//
// The options come as key/value pairs in any order (containerd passes the
// query of binary:///…/outpost-logger?logger=PATH&max-size=N unordered).
package main

import (
	"fmt"
	"os"

	"outpost.dev/agent/crilog"
)

func main() {
	a, err := crilog.ParseArgs(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "outpost-logger:", err)
		os.Exit(2)
	}
	if err := crilog.Run(a.Path, a.MaxSize, a.MaxFiles); err != nil {
		fmt.Fprintln(os.Stderr, "outpost-logger:", err)
		os.Exit(1)
	}
}
