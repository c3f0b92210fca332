package pods_test

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"outpost.dev/wire"
)

// TestContainerLogs runs the same log checks on both ways a container's
// output reaches its log: a logger process per container (the shim's
// binary logger, this test binary in TestMain) and the agent copying the
// shim's FIFOs. The agent restarts while a container writes: nothing is
// lost or repeated, and the container keeps running (not restarted).
func TestContainerLogs(t *testing.T) {
	for _, inAgent := range []bool{false, true} {
		name := "process"
		if inAgent {
			name = "agent"
		}
		t.Run(name, func(t *testing.T) {
			e := start(t)
			e.cfg.LogInAgent = inAgent
			img := e.images[0].Ref
			e.run()

			// One line every 20 ms, its number also in a file the test reads.
			p := shared(wire.Pod{Containers: []wire.Container{{Name: "talk", Image: img,
				Command: sh("echo started; i=0; while true; do i=$((i+1)); echo line $i; echo $i > /shared/count; echo err $i >&2; sleep 0.02; done")}}})
			crash := wire.Pod{Containers: []wire.Container{{Name: "crash", Image: img,
				Command: sh("echo crashing $(cat /proc/sys/kernel/random/uuid); exit 1")}}}
			e.apply(&wire.Sync{Upserts: []wire.Object{podObj("uid-talk", "talker", "1", p), podObj("uid-crash", "crasher", "1", crash)}})
			first := e.waitStatus("uid-talk", time.Minute, "Running", running)
			e.waitFor(30*time.Second, "the talker's first lines", func() bool {
				return strings.Contains(e.log("default", "talker", "talk", false), "line 20\n")
			})

			count := func() int {
				b, _ := os.ReadFile(filepath.Join(e.cfg.StateDir, "pods", "uid-talk", "volumes", "shared", "count"))
				n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
				return n
			}
			// The agent goes away; the container writes on.
			e.stop()
			down := count()
			e.waitFor(30*time.Second, "the talker to write 50 lines while the agent is down", func() bool { return count() >= down+50 })
			e.run()
			target := count() + 20
			e.waitFor(30*time.Second, "lines after the restart in the log", func() bool {
				return strings.Contains(e.log("default", "talker", "talk", false), "line "+strconv.Itoa(target)+"\n")
			})
			s := e.waitStatus("uid-talk", 10*time.Second, "still Running", running)
			if c := s.Containers[0]; c.RestartCount != 0 || c.ContainerID != first.Containers[0].ContainerID {
				t.Errorf("the container was restarted across the agent's restart: %+v, was %+v", c, first.Containers[0])
			}
			l := e.log("default", "talker", "talk", false)
			// stdout and stderr are two pipes, copied each on its own (as
			// a kubelet's runtime does): each stream keeps its order, the
			// two interleave as they were read.
			lines := strings.Split(l, "\n")
			i := slices.IndexFunc(lines, func(s string) bool { return !strings.HasPrefix(s, "err ") })
			if i < 0 || lines[i] != "started" {
				t.Fatalf("first stdout line is not \"started\": %q", lines[:min(len(lines), 5)])
			}
			want, errs := 1, 1
			for _, line := range slices.Delete(lines, i, i+1) {
				switch {
				case strings.HasPrefix(line, "line "):
					if line != "line "+strconv.Itoa(want) {
						t.Fatalf("got %q, want line %d: output lost or repeated", line, want)
					}
					want++
				case strings.HasPrefix(line, "err "):
					if line != "err "+strconv.Itoa(errs) {
						t.Fatalf("got %q, want err %d: stderr lost or repeated", line, errs)
					}
					errs++
				case line == "":
				default:
					t.Fatalf("unexpected line %q", line)
				}
			}
			if want <= target {
				t.Errorf("the log ends at line %d, want at least %d", want-1, target)
			}

			e.waitStatus("uid-crash", time.Minute, "restarted", func(s wire.PodStatus) bool {
				return len(s.Containers) == 1 && s.Containers[0].RestartCount >= 1
			})
			e.waitFor(30*time.Second, "the previous attempt's log", func() bool {
				return strings.HasPrefix(e.log("default", "crasher", "crash", true), "crashing ")
			})
		})
	}
}
