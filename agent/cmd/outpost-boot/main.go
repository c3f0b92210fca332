// Command outpost-boot is the launcher the service manager runs instead of
// outpost-agent: it starts the agent of the current slot, with its own
// arguments and environment, and rolls back an upgrade that does not come
// up (package outpost.dev/agent/slots/boot).
//
//	outpost-boot run [agent flags]
//
// It takes no flags of its own: every argument is the agent's. The paths
// are fixed; the variables below are set at link time only by tests.
package main

import (
	"os"

	"outpost.dev/agent/slots"
	"outpost.dev/agent/slots/boot"
)

var (
	slotsDir = slots.DefaultDir
	packaged = slots.PackagedPath
)

func main() {
	os.Exit(boot.Run(boot.Config{Dir: slotsDir, Packaged: packaged, Args: os.Args[1:], Env: os.Environ()}))
}
