// Package boot is outpost-boot, the launcher the service manager runs
// instead of the agent: it reads the slots' pointer (package slots),
// decides which agent binary runs, and runs it with the launcher's own
// arguments and environment.
//
// Outside a trial (every start of a gateway that never upgraded, and of
// one whose last upgrade is healthy) the launcher replaces itself with
// the agent (execve of a fixed path: slot a's or b's outpost-agent, or
// /usr/bin/outpost-agent), so it costs nothing while the agent runs and
// the service manager supervises the agent as before.
//
// During a trial it counts the launch in the pointer and stays as the
// agent's parent: it forwards signals, and when the trial's deadline
// passes without the agent marking itself healthy it rolls back (the
// pointer first), stops the agent (SIGTERM, then SIGKILL after Grace) and
// replaces itself with the previous slot's agent. When the agent exits
// during the trial the launcher records how (the pointer's last exit) and
// exits non-zero, so the service manager starts it again; the launch
// after the MaxBoots-th without the agent becoming healthy rolls back
// with "exited 3 times at start: exit status 1". A trial that ends
// healthy leaves the launcher as the parent until the agent exits; the
// next start execs again.
//
// Why the hybrid rather than a launcher that always stays (or one that
// always execs): the deadline needs a process that does not depend on
// the new binary working, since an agent that hangs never exits to be
// counted; but a resident Go parent costs about 2.9 MiB PSS, 0.9 MiB of
// it anonymous (BenchmarkLauncherMemory, docs/benchmarks.md), a fifth of
// the idle agent's own. The hybrid pays it only from an upgrade to the
// next exit of the agent, and never on a gateway that does not upgrade.
// An exec-only boot counter would cost nothing, but could not roll back
// an agent that starts and then never becomes healthy.
//
// Nothing here runs a shell or a command from the pointer: the binaries
// are the fixed paths of package slots, checked (regular file, no
// symlink, the recorded sha256) before every launch; a slot that fails
// the check is left for the previous one, else the packaged agent.
package boot

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"outpost.dev/agent/slots"
)

// Config is what the launcher runs with.
type Config struct {
	// Dir is the slots directory; Packaged the packaged agent.
	Dir, Packaged string
	// Args are the agent's arguments (argv[1:]); Env its environment.
	Args, Env []string
	// Log receives the launcher's own lines.
	Log io.Writer
	// Grace is how long an agent whose trial failed gets between SIGTERM
	// and SIGKILL.
	Grace time.Duration

	// For tests: the clock, process start and exec, and signals.
	Now     func() time.Time
	After   func(time.Duration) <-chan time.Time
	Start   func(path string, argv, env []string) (Child, error)
	Exec    func(path string, argv, env []string) error
	Signals <-chan os.Signal
}

// Child is a started agent.
type Child interface {
	Signal(os.Signal) error
	// Done receives how it ended ("exit status 1") and its exit code
	// (128+N for signal N).
	Done() <-chan Exit
}

// Exit is how a child ended.
type Exit struct {
	Desc string
	Code int
}

// Run runs the agent and returns the launcher's exit status; on success
// outside a trial it does not return (the process is the agent).
func Run(c Config) int {
	c.defaults()
	if _, err := os.Lstat(c.Dir); errors.Is(err, os.ErrNotExist) {
		// Never upgraded: the packaged agent, and nothing written.
		return c.exec(c.Packaged, slots.Packaged)
	}
	s, err := slots.Open(c.Dir)
	if err != nil {
		c.logf("%v: starting the packaged agent", err)
		return c.exec(c.Packaged, slots.Packaged)
	}
	s.Packaged, s.Now = c.Packaged, c.Now
	for {
		pl, err := Decide(s)
		if err != nil {
			c.logf("%v: starting the packaged agent", err)
			return c.exec(c.Packaged, slots.Packaged)
		}
		if pl.Note != "" {
			c.logf("%s", pl.Note)
		}
		if !pl.Trial {
			return c.exec(s.Path(pl.Slot), pl.Slot)
		}
		code, again := c.supervise(s, pl)
		if !again {
			return code
		}
	}
}

// Plan is what a launch does: run Slot, on trial for Remaining or not.
type Plan struct {
	Slot      slots.Slot
	Trial     bool
	Remaining time.Duration
	// Note says what changed (a rollback, a damaged pointer or slot).
	Note string
}

// Decide reads the pointer and makes the launch's changes to it: a
// damaged pointer replaced by its known-good copy, a slot whose binary
// fails its check left, a trial past its deadline or its launches rolled
// back, or else the launch counted.
func Decide(s *slots.Slots) (Plan, error) {
	var pl Plan
	err := s.UpdateLoaded(func(p *slots.Pointer, damaged error) error {
		pl = decide(s, p, damaged, s.Now())
		return nil
	})
	return pl, err
}

func decide(s *slots.Slots, p *slots.Pointer, damaged error, now time.Time) Plan {
	var notes []string
	if damaged != nil {
		notes = append(notes, p.Reason)
	}
	rollback := func(why string) {
		notes = append(notes, fmt.Sprintf("rolled back from slot %s (%s) to %s: %s", p.Current, p.Version(p.Current), p.Previous, why))
		p.Rollback(why, now)
	}
	if p.Current != slots.Packaged {
		if err := s.CheckBinary(*p, p.Current); err != nil {
			if p.Trial {
				rollback(err.Error())
			} else {
				fb := p.Previous
				if fb == p.Current || s.CheckBinary(*p, fb) != nil {
					fb = slots.Packaged
				}
				notes = append(notes, fmt.Sprintf("leaving slot %s for %s: %v", p.Current, fb, err))
				p.Leave(fb, err.Error(), now)
			}
		}
	}
	var pl Plan
	if p.Trial {
		timeout := time.Duration(p.Timeout) * time.Second
		// Remaining time by the wall clock, but never more than the whole
		// trial: a board without a real-time clock starts in the past.
		left := min(time.Unix(p.Deadline, 0).Sub(now), timeout)
		switch {
		case left <= 0:
			rollback(fmt.Sprintf("not Ready within %s", timeout))
		case p.Boots >= slots.MaxBoots:
			last := p.LastExit
			if last == "" {
				last = "no exit recorded"
			}
			rollback(fmt.Sprintf("exited %d times at start: %s", p.Boots, last))
		default:
			p.Boots++
			pl = Plan{Slot: p.Current, Trial: true, Remaining: left}
		}
	}
	if !p.Trial {
		// After a rollback, the slot returned to must pass its check too.
		if p.Current != slots.Packaged {
			if err := s.CheckBinary(*p, p.Current); err != nil {
				notes = append(notes, fmt.Sprintf("leaving slot %s for the packaged agent: %v", p.Current, err))
				p.Leave(slots.Packaged, err.Error(), now)
			}
		}
		pl = Plan{Slot: p.Current}
	}
	pl.Note = strings.Join(notes, "; ")
	return pl
}

// supervise runs a trial's agent as a child. again says the trial was
// rolled back and the loop should launch what is current now.
func (c *Config) supervise(s *slots.Slots, pl Plan) (code int, again bool) {
	c.logf("slot %s on trial: launch, %s left to become healthy", pl.Slot, pl.Remaining.Round(time.Second))
	if c.Signals == nil {
		// Only now: until the exec outside a trial, a signal must have its
		// default effect on the launcher.
		sigs := make(chan os.Signal, 4)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2)
		defer signal.Stop(sigs)
		c.Signals = sigs
	}
	path := s.Path(pl.Slot)
	ch, err := c.Start(path, append([]string{path}, c.Args...), env(c.Env, s.Dir(), pl.Slot))
	if err != nil {
		c.record(s, pl.Slot, "start: "+err.Error())
		c.logf("start %s: %v", path, err)
		return 1, false
	}
	deadline := c.After(pl.Remaining)
	var kill <-chan time.Time
	stopping, failed := false, false
	for {
		select {
		case sig := <-c.Signals:
			if sig == syscall.SIGTERM || sig == syscall.SIGINT || sig == syscall.SIGQUIT {
				stopping = true
			}
			_ = ch.Signal(sig)
		case <-deadline:
			deadline = nil
			if stopping {
				continue
			}
			err := s.Update(func(p *slots.Pointer) error {
				if p.Trial && p.Current == pl.Slot {
					failed = true
					p.Rollback(fmt.Sprintf("not Ready within %s", time.Duration(p.Timeout)*time.Second), c.Now())
				}
				return nil
			})
			if err != nil {
				c.logf("trial deadline passed, but the rollback was not written (the next launch retries): %v", err)
				failed = true
			}
			if failed {
				c.logf("slot %s not healthy by its deadline: stopping it", pl.Slot)
				_ = ch.Signal(syscall.SIGTERM)
				kill = c.After(c.Grace)
			}
		case <-kill:
			kill = nil
			_ = ch.Signal(syscall.SIGKILL)
		case e := <-ch.Done():
			switch {
			case stopping: // the service is being stopped: not a restart
				return e.Code, false
			case failed:
				return 0, true
			}
			if c.record(s, pl.Slot, e.Desc) {
				c.logf("slot %s on trial %s", pl.Slot, e.Desc)
				// Non-zero, and not the status that stops a restart.
				if e.Code == 0 || e.Code == 2 {
					return 1, false
				}
			}
			return e.Code, false
		}
	}
}

// record stores how the trial's agent ended; false when slot is no
// longer on trial (it became healthy).
func (c *Config) record(s *slots.Slots, slot slots.Slot, desc string) bool {
	trial := false
	err := s.Update(func(p *slots.Pointer) error {
		if p.Trial && p.Current == slot {
			trial = true
			p.LastExit = slots.Text(desc)
		}
		return nil
	})
	if err != nil {
		c.logf("recording the agent's exit: %v", err)
	}
	return trial
}

// exec replaces the launcher with slot's agent at path.
func (c *Config) exec(path string, slot slots.Slot) int {
	err := c.Exec(path, append([]string{path}, c.Args...), env(c.Env, c.Dir, slot))
	c.logf("exec %s: %v", path, err)
	return 1
}

// env is the agent's environment: the launcher's, with the slots
// directory and the running slot (package slots' EnvDir, EnvSlot).
func env(base []string, dir string, slot slots.Slot) []string {
	out := make([]string, 0, len(base)+2)
	for _, kv := range base {
		if !strings.HasPrefix(kv, slots.EnvDir+"=") && !strings.HasPrefix(kv, slots.EnvSlot+"=") {
			out = append(out, kv)
		}
	}
	return append(out, slots.EnvDir+"="+dir, slots.EnvSlot+"="+string(slot))
}

func (c *Config) logf(format string, a ...any) {
	fmt.Fprintf(c.Log, "outpost-boot: "+format+"\n", a...)
}

func (c *Config) defaults() {
	if c.Log == nil {
		c.Log = os.Stderr
	}
	if c.Grace == 0 {
		c.Grace = 30 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.After == nil {
		c.After = time.After
	}
	if c.Exec == nil {
		c.Exec = syscall.Exec
	}
	if c.Start == nil {
		c.Start = startProcess
	}
}

// process is a real child.
type process struct {
	p    *os.Process
	done chan Exit
}

func startProcess(path string, argv, env []string) (Child, error) {
	p, err := os.StartProcess(path, argv, &os.ProcAttr{Env: env, Files: []*os.File{os.Stdin, os.Stdout, os.Stderr}})
	if err != nil {
		return nil, err
	}
	c := &process{p: p, done: make(chan Exit, 1)}
	go func() {
		st, err := p.Wait()
		if err != nil {
			c.done <- Exit{Desc: err.Error(), Code: 1}
			return
		}
		code := st.ExitCode()
		if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
		c.done <- Exit{Desc: st.String(), Code: code}
	}()
	return c, nil
}

func (c *process) Signal(s os.Signal) error { return c.p.Signal(s) }
func (c *process) Done() <-chan Exit        { return c.done }
