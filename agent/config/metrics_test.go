package config

import (
	"strings"
	"testing"
)

func TestMetricsListen(t *testing.T) {
	for _, tt := range []struct {
		name, yaml, want, err string
	}{
		{"default", "", DefaultMetricsListen, ""},
		{"set", "metrics:\n  listen: 127.0.0.1:9100\n", "127.0.0.1:9100", ""},
		{"off", "metrics:\n  listen: \"\"\n", "", ""},
		{"block without listen keeps the default", "metrics: {}\n", DefaultMetricsListen, ""},
		{"not host:port", "metrics:\n  listen: 9100\n", "", "metrics.listen"},
		{"unknown key", "metrics:\n  port: 9100\n", "", "port"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Default()
			err := cfg.parse([]byte(tt.yaml))
			if err == nil {
				err = cfg.Validate()
			}
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one naming %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.MetricsListen != tt.want {
				t.Fatalf("MetricsListen %q, want %q", cfg.MetricsListen, tt.want)
			}
		})
	}
}
