package daemon

import (
	"context"
	"log/slog"

	"outpost.dev/agent/config"
	"outpost.dev/agent/desired"
	"outpost.dev/agent/mqtt"
	"outpost.dev/agent/outbox"
	"outpost.dev/agent/store"
	"outpost.dev/agent/twins"
	"outpost.dev/boards"
)

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
