package containerd

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
)

// currentCaps is what a privileged container (or one adding ALL) gets:
// allCaps less those outside the agent's own bounding set, as containerd's
// CRI plugin gives such a container all of its current capabilities. runc
// cannot grant a capability the runtime lacks (an agent in a container, or
// a unit with a CapabilityBoundingSet), and fails the container if asked.
var currentCaps = sync.OnceValue(func() []string {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return allCaps
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, 64<<10))
	return capsWithin(b)
})

// capsWithin returns the capabilities of allCaps (whose index is the
// capability's number) in the CapBnd line of a /proc/PID/status; all of
// them if the line is missing or unreadable.
func capsWithin(status []byte) []string {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "CapBnd:")
		if !ok {
			continue
		}
		bnd, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil {
			return allCaps
		}
		var out []string
		for i, c := range allCaps {
			if bnd&(1<<i) != 0 {
				out = append(out, c)
			}
		}
		return out
	}
	return allCaps
}
