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
	"strconv"

	"outpost.dev/agent/crilog"
)

func main() {
	a := os.Args[1:]
	var path string
	var size int64
	var files int
	if len(a)%2 != 0 {
		fmt.Fprintln(os.Stderr, "outpost-logger: options come in pairs: logger PATH [max-size BYTES] [max-files N]")
		os.Exit(2)
	}
	for i := 0; i < len(a); i += 2 {
		var err error
		switch a[i] {
		case "logger":
			path = a[i+1]
		case "max-size":
			size, err = strconv.ParseInt(a[i+1], 10, 64)
		case "max-files":
			files, err = strconv.Atoi(a[i+1])
		default:
			err = fmt.Errorf("unknown option")
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "outpost-logger: %s %q: %v\n", a[i], a[i+1], err)
			os.Exit(2)
		}
	}
	if err := crilog.Run(path, size, files); err != nil {
		fmt.Fprintln(os.Stderr, "outpost-logger:", err)
		os.Exit(1)
	}
}
