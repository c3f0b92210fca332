package relay

import (
	"github.com/prometheus/client_golang/prometheus"

	"outpost.dev/wire"
)

// metrics are the relay's own Prometheus collectors. The join and nodes
// packages register theirs (join attempts, API write failures) in the same
// registry.
type metrics struct {
	connected prometheus.Gauge
	frames    *prometheus.CounterVec
	bytes     *prometheus.CounterVec
	errors    *prometheus.CounterVec
	panics    prometheus.Counter
	streams   prometheus.Gauge
	tunnels   prometheus.Gauge
	rotations prometheus.Counter
	// handshakesRefused counts connections answered 503 by the
	// admission limit (Config.MaxHandshakes).
	handshakesRefused prometheus.Counter
	// twinsDropped counts twin reports acked without a write, by reason
	// (one of the dropReason constants, so the label set stays bounded).
	twinsDropped *prometheus.CounterVec
	// reportsWaited counts durable reports that found their queue full
	// and waited off the loop, the connection's reading paused, by type.
	reportsWaited *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outpost_relay_connected_agents",
			Help: "Agents connected to this relay replica (after a successful hello).",
		}),
		frames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_relay_frames_total",
			Help: "Protocol frames, by direction (in, out) and type.",
		}, []string{"direction", "type"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_relay_frame_bytes_total",
			Help: "Protocol frame bytes, by direction (in, out) and type.",
		}, []string{"direction", "type"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outpost_relay_errors_total",
			Help: "Error frames, by direction (out: sent to an agent, in: from an agent) and code.",
		}, []string{"direction", "code"}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_relay_connection_panics_total",
			Help: "Connections closed because their handler panicked (a bug).",
		}),
		tunnels: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outpost_relay_tunnels",
			Help: "kubectl exec, attach and port-forward connections open through this relay replica.",
		}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outpost_relay_log_streams",
			Help: "kubectl logs streams open through this relay replica.",
		}),
		rotations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_relay_node_cert_rotations_total",
			Help: "Node certificates issued on a live link (cert-request answered).",
		}),
		handshakesRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outpost_relay_handshakes_refused_total",
			Help: "Agent connections answered 503 with Retry-After because too many handshakes were in progress.",
		}),
	}
	m.twinsDropped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outpost_relay_twin_reports_dropped_total",
		Help: "Twin reports acked to their agent without a Device write, by reason (no-device-api, unknown-link-id, bad-name, no-such-device).",
	}, []string{"reason"})
	m.reportsWaited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outpost_relay_reports_waited_total",
		Help: "Durable reports from agents that found their queue full (or the Device watch not listed yet) and waited on a goroutine of their own, the agent's link paused meanwhile, by frame type.",
	}, []string{"type"})
	for _, c := range []prometheus.Collector{m.connected, m.frames, m.bytes, m.errors, m.panics, m.streams, m.tunnels, m.rotations, m.handshakesRefused, m.twinsDropped, m.reportsWaited} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// typeLabel bounds the label values to the known types.
func typeLabel(t wire.Type) string {
	if !t.Known() {
		return "unknown"
	}
	return t.String()
}

var codeNames = map[wire.ErrorCode]string{
	wire.CodeMalformed:   "malformed",
	wire.CodeTooLarge:    "too_large",
	wire.CodeVersion:     "version",
	wire.CodeForbidden:   "forbidden",
	wire.CodeUnknownType: "unknown_type",
	wire.CodeProtocol:    "protocol",
	wire.CodeInternal:    "internal",
	wire.CodeInvalid:     "invalid",
}

func codeLabel(c wire.ErrorCode) string {
	if n, ok := codeNames[c]; ok {
		return n
	}
	return "other"
}

func (m *metrics) frame(dir string, t wire.Type, n int) {
	l := typeLabel(t)
	m.frames.WithLabelValues(dir, l).Inc()
	m.bytes.WithLabelValues(dir, l).Add(float64(n))
}
