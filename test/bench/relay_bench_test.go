package bench

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"outpost.dev/cloud/identity"
	"outpost.dev/cloud/pki"
	"outpost.dev/cloud/relay"
	"outpost.dev/cloud/relay/relaytest"
	"outpost.dev/test/peer"
	"outpost.dev/test/stack"
	"outpost.dev/test/wait"
	"outpost.dev/wire"
)

// The agents run in a child process (this test binary again), so the
// figure is the relay's memory alone.
const helperEnv = "OUTPOST_BENCH_AGENT_HELPER"

func TestMain(m *testing.M) {
	// client-go's throttling notices would break the benchmark output.
	klog.SetOutput(io.Discard)
	klog.LogToStderr(false)
	if os.Getenv(helperEnv) != "" {
		if err := runAgents(); err != nil {
			fmt.Fprintln(os.Stderr, "agents:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// BenchmarkRelayMemory connects OUTPOST_BENCH_AGENTS (default 1,000)
// protocol-level agents to one in-process relay backed by a real API
// server, and reports the relay process's memory per connected agent:
// Go heap and stacks, and resident memory.
func BenchmarkRelayMemory(b *testing.B) {
	n := 1000
	if v := os.Getenv("OUTPOST_BENCH_AGENTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	ctx := context.Background()
	ip := stack.StartInProcess(b, ctx, 200, 400)
	cp, client, ca := ip.CP, ip.Client, ip.CA
	srv, hs := relaytest.Serve(b, ip.RelayConfig(slog.New(slog.DiscardHandler)))

	keyDER, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		b.Fatal(err)
	}
	caFile := filepath.Join(b.TempDir(), "ca.pem")
	os.WriteFile(caFile, append(append([]byte{}, ca.CertPEM...), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...), 0o600)

	for b.Loop() {
		before := measure()
		exe, _ := os.Executable()
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"=1", "OUTPOST_BENCH_N="+strconv.Itoa(n),
			"OUTPOST_BENCH_RELAY="+strings.TrimPrefix(hs.URL, "https://"), "OUTPOST_BENCH_CA="+caFile, "OUTPOST_BENCH_KUBECONFIG="+cp.Kubeconfig)
		stdin, _ := cmd.StdinPipe()
		stdout, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		start := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "ready") {
			b.Fatalf("agents: %q %v", line, err)
		}
		connected := time.Since(start)
		// Wait until every node has been written and the relay is quiet.
		wait.State(b, ctx, 5*time.Minute, "every node and its lease written", func() (bool, string) {
			nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
			if err != nil {
				return false, err.Error()
			}
			leases, err := client.CoordinationV1().Leases(corev1.NamespaceNodeLease).List(ctx, metav1.ListOptions{})
			if err != nil {
				return false, err.Error()
			}
			return len(nodes.Items) >= n && len(leases.Items) >= n && srv.Connected() == n,
				fmt.Sprintf("%d connected, %d nodes, %d leases", srv.Connected(), len(nodes.Items), len(leases.Items))
		})
		after := measure()
		if p := os.Getenv("OUTPOST_BENCH_HEAPPROFILE"); p != "" {
			if f, err := os.Create(p); err == nil {
				pprof.WriteHeapProfile(f)
				f.Close()
			}
		}
		per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(n) / 1024 }
		b.ReportMetric(per(after.heap, before.heap), "heap-KiB/agent")
		b.ReportMetric(per(after.stack, before.stack), "stack-KiB/agent")
		b.ReportMetric(per(after.heap+after.stack, before.heap+before.stack), "go-KiB/agent")
		b.ReportMetric(per(after.rss, before.rss), "RSS-KiB/agent")
		b.ReportMetric(float64(runtime.NumGoroutine()-before.goroutines)/float64(n), "goroutines/agent")
		b.Logf("%d agents connected in %v; relay heap %d→%d KiB, stacks %d→%d KiB, RSS %d→%d KiB",
			n, connected.Round(time.Millisecond), before.heap>>10, after.heap>>10, before.stack>>10, after.stack>>10, before.rss>>10, after.rss>>10)
		stdin.Close()
		cmd.Wait()
	}
}

type mem struct {
	heap, stack, rss uint64
	goroutines       int
}

func measure() mem {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m := mem{heap: ms.HeapInuse, stack: ms.StackInuse, goroutines: runtime.NumGoroutine()}
	if pm, err := ReadMem(os.Getpid()); err == nil {
		m.rss = uint64(pm.RSS) << 10
	}
	return m
}

// runAgents is the child: it connects N agents, each with its own
// certificate, says hello, prints "ready" and heartbeats until stdin closes.
func runAgents() error {
	n, _ := strconv.Atoi(os.Getenv("OUTPOST_BENCH_N"))
	addr := os.Getenv("OUTPOST_BENCH_RELAY")
	raw, err := os.ReadFile(os.Getenv("OUTPOST_BENCH_CA"))
	if err != nil {
		return err
	}
	certBlock, rest := pem.Decode(raw)
	ca, err := pki.Parse(pem.EncodeToMemory(certBlock), rest)
	if err != nil {
		return err
	}
	kc, err := clientcmd.BuildConfigFromFlags("", os.Getenv("OUTPOST_BENCH_KUBECONFIG"))
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(kc)
	if err != nil {
		return err
	}
	ids := identity.New(client, relay.DefaultNamespace)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Each agent heartbeats from its hello-ack on: connecting 1,000 on a
	// loaded machine can take longer than the relay waits for a silent
	// connection (three heartbeat intervals).
	keep := func(c *websocket.Conn) {
		go peer.Heartbeat(ctx, c, relay.DefaultHeartbeatInterval)
		go func() {
			for {
				if _, _, err := c.Read(ctx); err != nil {
					return
				}
			}
		}()
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := connectAgent(ctx, addr, ca, ids, fmt.Sprintf("bench-%05d", i))
			if err != nil {
				errs <- err
				return
			}
			keep(c)
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return err
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	return nil
}

// connectAgent connects node name with a certificate signed by ca and
// recorded in ids, as a join would, and says hello.
func connectAgent(ctx context.Context, addr string, ca *pki.CA, ids *identity.Registry, name string) (*websocket.Conn, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	cert, err := ca.SignNode(key.Public(), name, time.Hour)
	if err != nil {
		return nil, err
	}
	if err := ids.Issue(ctx, name, identity.Serial(cert), "", true); err != nil {
		return nil, err
	}
	tc := &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1",
		Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key}}}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	c, _, err := websocket.Dial(ctx, "wss://"+addr+wire.PathConnect, &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	h := &wire.Hello{MinVersion: wire.ProtocolMin, MaxVersion: wire.ProtocolMax, AgentVersion: "v0.0.0-bench",
		Node: wire.NodeInfo{Arch: "arm64", OS: "linux", Board: "sim", Hostname: name,
			Capacity:    wire.Resources{CPUMillis: 4000, MemoryBytes: 4 << 30, Pods: 110},
			Allocatable: wire.Resources{CPUMillis: 3900, MemoryBytes: 4<<30 - 64<<20, Pods: 110}}}
	b, _ := wire.Encode(wire.TypeHello, 0, h)
	if err := c.Write(ctx, websocket.MessageBinary, b); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	_, msg, err := c.Read(rctx)
	if err != nil {
		return nil, fmt.Errorf("%s: hello-ack: %w", name, err)
	}
	if f, err := wire.Decode(msg); err != nil || f.Type != wire.TypeHelloAck {
		return nil, fmt.Errorf("%s: want hello-ack, got %v %v", name, f.Type, err)
	}
	return c, nil
}
