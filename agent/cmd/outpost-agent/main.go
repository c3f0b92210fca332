// Command outpost-agent is the Outpost edge agent: it joins a gateway to a
// Kubernetes cluster through an Outpost relay and keeps it connected.
//
//	outpost-agent join --server https://HOST:PORT --token ID.SECRET
//	outpost-agent run
//	outpost-agent version
//
// Every failure is one line on stderr, starting "outpost-agent: " and
// saying what to do, and a non-zero exit status: the agent is run by init
// systems and by people at a serial console, and both read one line.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"strings"
	"syscall"
	"time"

	"outpost.dev/agent/cni"
	"outpost.dev/agent/config"
	"outpost.dev/agent/desired"
	"outpost.dev/agent/join"
	"outpost.dev/agent/link"
	"outpost.dev/agent/logs"
	"outpost.dev/agent/metrics"
	"outpost.dev/agent/mqtt"
	_ "outpost.dev/agent/mqtt/condregister" // embedded broker, KubeEdge topics unless tagged out
	"outpost.dev/agent/nodeinfo"
	"outpost.dev/agent/nodestatus"
	"outpost.dev/agent/outbox"
	"outpost.dev/agent/pods"
	"outpost.dev/agent/store"
	"outpost.dev/agent/tunnels"
	"outpost.dev/agent/twins"
	resusage "outpost.dev/agent/usage"
	"outpost.dev/boards"
	_ "outpost.dev/hal/all" // every driver unless tagged out (outpost_no_<driver>)
	"outpost.dev/wire"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = "dev"

const usage = `usage: outpost-agent <command> [flags]

commands:
  join      join this gateway to a cluster (once)
  run       run the agent
  version   print the version

"outpost-agent <command> -h" lists a command's flags.
`

// usageError is a mistake on the command line; it exits 2, as flag does.
type usageError struct{ error }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	err := dispatch(args, stdout, stderr)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "outpost-agent: %s\n", oneLine(err.Error()))
		return 2
	default:
		fmt.Fprintf(stderr, "outpost-agent: %s\n", oneLine(err.Error()))
		return 1
	}
}

func dispatch(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{errors.New(`no command: use join, run or version (see "outpost-agent help")`)}
	}
	if isLoggerCall(args) {
		return cmdLogger(args)
	}
	if pods.IsPauseCall(args) {
		pods.RunPause()
		return nil
	}
	switch args[0] {
	case "join":
		return cmdJoin(args[1:], stdout, stderr)
	case "run":
		return cmdRun(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "outpost-agent %s (%s %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return nil
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return usageError{fmt.Errorf(`unknown command %q: use join, run or version`, args[0])}
}

// common are the flags join and run share; each is applied over the
// config file only when given, so the file's value stands otherwise.
type common struct {
	fs                                     *flag.FlagSet
	stdout                                 io.Writer
	configPath, server, stateDir, logLevel string
}

func newFlags(name string, stdout io.Writer) *common {
	c := &common{fs: flag.NewFlagSet(name, flag.ContinueOnError), stdout: stdout}
	// flag prints usage on every error; errors are one line from run, and
	// help is printed by parse.
	c.fs.SetOutput(io.Discard)
	c.fs.Usage = func() {}
	c.fs.StringVar(&c.configPath, "config", config.DefaultPath, "config file (need not exist)")
	c.fs.StringVar(&c.server, "server", "", "relay URL, https://HOST:PORT (default: server in the config file)")
	c.fs.StringVar(&c.stateDir, "state-dir", "", "state directory (default: stateDir in the config file, else "+config.DefaultStateDir+")")
	c.fs.StringVar(&c.logLevel, "log-level", "", "debug, info, warn or error (default: logLevel in the config file, else info)")
	return c
}

func (c *common) parse(args []string) error {
	if err := c.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(c.stdout, "usage: outpost-agent %s [flags]\n\nflags:\n", c.fs.Name())
			c.fs.SetOutput(c.stdout)
			c.fs.PrintDefaults()
			return err
		}
		return usageError{fmt.Errorf("%s: %v (see \"outpost-agent %s -h\")", c.fs.Name(), err, c.fs.Name())}
	}
	if c.fs.NArg() > 0 {
		return usageError{fmt.Errorf("%s: unexpected argument %q (flags take the form --name value)", c.fs.Name(), c.fs.Arg(0))}
	}
	return nil
}

// load reads the config file and applies the flags that were given.
func (c *common) load(apply func(name string, cfg *config.Config)) (config.Config, error) {
	explicit := false
	c.fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "config" })
	cfg, err := config.Load(c.configPath, explicit)
	if err != nil {
		return cfg, err
	}
	c.fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "server":
			cfg.Server = c.server
		case "state-dir":
			cfg.StateDir = c.stateDir
		case "log-level":
			cfg.LogLevel = c.logLevel
		default:
			if apply != nil {
				apply(f.Name, &cfg)
			}
		}
	})
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("%s: %w", c.fs.Name(), err)
	}
	return cfg, nil
}

func newLogger(w io.Writer, level string) *slog.Logger {
	i, _ := config.ParseLogLevel(level) // validated by load
	lv := []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError}[i]
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lv}))
}

func cmdJoin(args []string, stdout, stderr io.Writer) error {
	c := newFlags("join", stdout)
	var token, nodeName, caFile, caHash string
	var force bool
	c.fs.StringVar(&token, "token", "", `bootstrap token ID.SECRET (create one with "outpost-relay token create")`)
	c.fs.StringVar(&nodeName, "node-name", "", "node name (default: nodeName in the config file, else the lowercased hostname)")
	c.fs.StringVar(&caFile, "ca-file", "", "PEM file with the relay's CA; without it the CA is fetched and checked with the token")
	c.fs.StringVar(&caHash, "ca-cert-hash", "", "pin the relay CA: sha256:<hex of its SubjectPublicKeyInfo>, as kubeadm prints it")
	c.fs.BoolVar(&force, "force", false, "replace an existing identity")
	if err := c.parse(args); err != nil {
		return err
	}
	cfg, err := c.load(func(name string, cfg *config.Config) {
		if name == "node-name" {
			cfg.NodeName = nodeName
		}
	})
	if err != nil {
		return err
	}
	if cfg.Server == "" {
		return usageError{fmt.Errorf("join: no relay URL: pass --server https://HOST:PORT or set server in %s", c.configPath)}
	}
	if token == "" {
		return usageError{errors.New(`join: no token: pass --token ID.SECRET (create one with "outpost-relay token create")`)}
	}
	if cfg.NodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("join: cannot read the hostname (%v): pass --node-name", err)
		}
		cfg.NodeName = strings.ToLower(h)
	}
	if err := config.CheckNodeName(cfg.NodeName); err != nil {
		return fmt.Errorf("join: %w", err)
	}
	var caPEM []byte
	if caFile != "" {
		if caPEM, err = readSmall(caFile); err != nil {
			return fmt.Errorf("join: --ca-file: %w", err)
		}
	}
	var pins []string
	if caHash != "" {
		pins = strings.Split(caHash, ",")
	}
	log := newLogger(stderr, cfg.LogLevel)

	st, err := store.Open(cfg.StateDir)
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	defer st.Close()
	if old, err := st.LoadIdentity(); err == nil && !force {
		return fmt.Errorf("join: already joined as %s to %s: pass --force to replace this identity", old.NodeName, old.Server)
	} else if err != nil && !errors.Is(err, store.ErrNotJoined) {
		return fmt.Errorf("join: %w", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	id, err := join.Join(ctx, join.Options{
		Server: cfg.Server, Token: token, NodeName: cfg.NodeName,
		CAPEM: caPEM, CACertHashes: pins, Log: log,
	})
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	if err := st.SaveIdentity(id); err != nil {
		return fmt.Errorf("join: saving identity in %s: %w", cfg.StateDir, err)
	}
	fmt.Fprintf(stdout, "joined %s as node %s; start the agent with \"outpost-agent run\"\n", id.Server, id.NodeName)
	return nil
}

func cmdRun(args []string, stdout, stderr io.Writer) error {
	c := newFlags("run", stdout)
	var board string
	c.fs.StringVar(&board, "board", "", "board name (default: board in the config file, else detected from /proc/device-tree/model, else sim)")
	if err := c.parse(args); err != nil {
		return err
	}
	cfg, err := c.load(func(name string, cfg *config.Config) {
		if name == "board" {
			cfg.Board = board
		}
	})
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.LogLevel)
	// GOMEMLIMIT in the environment wins, as the Go runtime documents.
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(cfg.MemoryLimit)
	}
	// The agent's live heap is well under a megabyte when idle; Go's
	// default (GOGC=100, a 4 MB minimum goal) would let garbage from
	// periodic work pile up to several times that before collecting. A
	// collection of so small a heap costs well under a millisecond.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	if cfg.Board == "" {
		cfg.Board = "sim"
		root := os.DirFS("/")
		if b, err := boards.Detect(root); err == nil {
			cfg.Board = b.Name
		} else if !errors.Is(err, boards.ErrNoDeviceTree) {
			log.Warn("board not recognised; devices run on the simulator until board is set in the config", "err", err)
		}
	}
	brd, err := boards.Lookup(cfg.Board)
	if err != nil {
		return fmt.Errorf("board: %w: set board in the config or pass --board", err)
	}

	st, err := store.Open(cfg.StateDir)
	if err != nil {
		return err
	}
	defer st.Close()
	id, err := st.LoadIdentity()
	if errors.Is(err, store.ErrNotJoined) {
		return fmt.Errorf(`not joined: run "outpost-agent join --server URL --token TOKEN" first (state dir %s)`, cfg.StateDir)
	}
	if err != nil {
		return err
	}
	server := cfg.Server
	if server == "" {
		server = id.Server
	}
	if server == "" {
		return fmt.Errorf("no relay URL: set server in %s or pass --server", c.configPath)
	}

	readNode := func() (wire.NodeInfo, error) {
		return nodeinfo.Read(nodeinfo.Options{
			Board: cfg.Board, StateDir: cfg.StateDir, MaxPods: cfg.MaxPods,
			ReservedCPUMillis: cfg.ReservedCPUMillis, ReservedMemory: cfg.ReservedMemory,
		})
	}
	// Read once now: a machine the agent cannot describe fails at start,
	// not quietly on every connect.
	if _, err := readNode(); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log.Info("starting", "version", version, "node", id.NodeName, "board", cfg.Board,
		"server", server, "state_dir", cfg.StateDir, "memory_limit", debug.SetMemoryLimit(-1))
	ob, err := outbox.Open(st.Bolt(), outbox.Limits{MaxBytes: int(cfg.OutboxMaxBytes)})
	if err != nil {
		return err
	}
	applier := desired.New(st, log)
	podCIDR, err := newPodCIDR(cfg, st, log)
	if err != nil {
		return err
	}
	var sender *outbox.Sender
	var logsrv *logs.Server             // kubectl logs; set before the link runs
	var tunsrv *tunnels.Server          // kubectl exec, port-forward; set before the link runs
	var statsrv *resusage.Server        // kubectl top; set before the link runs
	var podRec *pods.Reconciler         // set before the link runs
	connected := make(chan struct{}, 1) // wakes the node status reporter on each connect
	lk := link.New(link.Config{
		Server: server, NodeName: id.NodeName,
		CertPEM: id.CertPEM, KeyPEM: id.KeyPEM, CAPEM: id.CAPEM,
		NextCertPEM: id.NextCertPEM, NextKeyPEM: id.NextKeyPEM,
		Rotation:     &link.Rotation{At: cfg.CertRotateAt, Save: st.SaveNext, Connected: st.PromoteNext},
		AgentVersion: version, NodeInfo: readNode, Log: log,
		Objects: st.ObjectVersions,
		OnConnect: func(ack wire.HelloAck) {
			podCIDR.learn(ack.PodCIDRs)
			sender.Connected()
			podRec.Resend() // Ready set False by the cloud while offline
			select {
			case connected <- struct{}{}:
			default:
			}
		},
		OnDisconnect: func(error) { logsrv.Disconnected(); tunsrv.Disconnected() },
		Handler: func(f wire.Frame) {
			switch {
			case f.Type == wire.TypeAck:
				sender.Acked(f.Ack)
			case f.Type == wire.TypeNodeConfig:
				var nc wire.NodeConfig
				if err := f.DecodeBody(&nc); err != nil {
					log.Warn("node-config from relay refused", "err", err)
					return
				}
				podCIDR.learn(nc.PodCIDRs)
			case logsrv.Handle(f):
			case tunsrv.Handle(f):
			case statsrv.Handle(f):
			case applier.Handle(f):
			default:
				log.Debug("frame from relay ignored", "type", f.Type)
			}
		},
	})
	sender = outbox.NewSender(ob, lk, log)
	go sender.Run(ctx)
	linkStats := func() *wire.LinkStats {
		s := ob.Stats()
		ls := &wire.LinkStats{At: time.Now().Unix(), OutboxReports: uint64(s.Entries), OutboxBytes: uint64(s.Bytes),
			OutboxMaxBytes: uint64(cfg.OutboxMaxBytes), OutboxDropped: s.Dropped}
		if t := lk.LastContact(); !t.IsZero() {
			ls.LastSync = t.Unix()
		}
		return ls
	}
	go nodestatus.Run(ctx, nodestatus.Config{Outbox: ob, Read: readNode, Stats: linkStats, Connected: connected, Log: log})

	stopTwins, err := startTwins(ctx, cfg, id.NodeName, brd, st, applier, ob, log)
	if err != nil {
		return err
	}
	defer stopTwins()
	var waitPods func()
	podRec, waitPods = startPods(ctx, cfg, id.NodeName, st, applier, ob, readNode, podCIDR.get, log)
	defer waitPods()
	if cfg.MetricsListen != "" {
		src := metrics.Source{
			Connected: lk.Connected, LastContact: lk.LastContact, PodsRunning: podRec.Running,
			Outbox: func() (int, int, uint64) {
				s := ob.Stats()
				return s.Entries, s.Bytes, s.Dropped
			},
			OutboxMaxBytes: cfg.OutboxMaxBytes,
			Goroutines:     runtime.NumGoroutine,
			Allocs:         heapAllocs,
		}
		if addr, err := metrics.Serve(ctx, cfg.MetricsListen, metrics.Handler(src), log); err != nil {
			// Metrics are not worth a gateway that does not run.
			log.Error("metrics endpoint off for this run; set metrics.listen to a free HOST:PORT, or \"\" to turn it off", "err", err)
		} else {
			log.Info("metrics endpoint", "url", "http://"+addr.String()+"/metrics")
		}
	}
	logsrv = logs.New(logs.Config{Paths: podRec, Send: lk.Send, Log: log.With("component", "logs")})
	defer logsrv.Wait()
	defer logsrv.Disconnected()
	tunsrv = tunnels.New(tunnels.Config{Pods: podRec, Send: lk.Send, Log: log.With("component", "tunnels")})
	defer tunsrv.Wait()
	defer tunsrv.Disconnected()
	statsrv = resusage.New(resusage.Config{Reader: &resusage.Reader{Root: "/sys/fs/cgroup", Proc: "/proc"},
		Containers: podRec.StatsContainers, NodeFs: cfg.StateDir, Interface: cni.IfName, Send: lk.Send, Log: log.With("component", "usage")})
	defer statsrv.Wait()
	if err := lk.Run(ctx); err != nil {
		return err
	}
	log.Info("stopped", "node", id.NodeName)
	return nil
}

// startTwins starts the device twins loop on the board's buses and, unless
// turned off, the MQTT side (embedded broker or external broker). The
// returned func waits for the loop to close its devices and disconnects.
func startTwins(ctx context.Context, cfg config.Config, node string, board *boards.Board,
	st *store.Store, applier *desired.Applier, ob *outbox.Outbox, log *slog.Logger) (stop func(), err error) {
	tcfg := twins.Config{
		Source: st, Changes: applier.Changes(), Buses: board.Open(), Outbox: ob,
		Log: log.With("component", "twins"), MaxDevices: cfg.MaxDevices,
	}
	var conn mqtt.Conn
	var bridge *mqtt.Bridge
	if m := cfg.MQTT; m.Enabled {
		mlog := log.With("component", "mqtt")
		conn, err = mqtt.Open(mqtt.Config{
			Node: node, Listen: m.Listen, Username: m.Username, Password: m.Password,
			CertFile: m.CertFile, KeyFile: m.KeyFile, URL: m.URL, CAFile: m.CAFile,
			MaxClients: m.MaxClients, Log: mlog,
		})
		if err != nil {
			// The cluster link and the twins matter more than local MQTT:
			// say so once and run without it.
			log.Error("MQTT is off for this run; devices are still served and reported to the cluster", "err", err)
		}
	}
	if conn != nil {
		m, mlog := cfg.MQTT, log.With("component", "mqtt")
		var dialects []string
		if m.KubeEdge {
			dialects = append(dialects, "kubeedge")
		}
		bridge, err = mqtt.NewBridge(conn, mqtt.BridgeConfig{
			Node: node, Writes: mqtt.Policy(m.DesiredWrites), Dialects: dialects, Log: mlog,
		})
		if err != nil {
			conn.Close()
			return nil, err
		}
		tcfg.Publisher = bridge
	}
	loop := twins.New(tcfg)
	if bridge != nil {
		if err := bridge.Start(ctx, loop); err != nil {
			conn.Close()
			return nil, err
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		loop.Run(ctx)
	}()
	return func() {
		<-done
		if conn != nil {
			conn.Close()
		}
	}, nil
}

// gcPercent is the agent's GOGC unless the environment sets one.
const gcPercent = 25

func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	const limit = 1 << 20
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err == nil && len(b) > limit {
		return nil, fmt.Errorf("%s is over 1 MiB: is it a PEM file?", path)
	}
	return b, err
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// heapAllocs reads the heap bytes and objects allocated since start.
func heapAllocs() (bytes, objects uint64) {
	s := []rtmetrics.Sample{{Name: "/gc/heap/allocs:bytes"}, {Name: "/gc/heap/allocs:objects"}}
	rtmetrics.Read(s)
	if s[0].Value.Kind() == rtmetrics.KindUint64 {
		bytes = s[0].Value.Uint64()
	}
	if s[1].Value.Kind() == rtmetrics.KindUint64 {
		objects = s[1].Value.Uint64()
	}
	return bytes, objects
}
