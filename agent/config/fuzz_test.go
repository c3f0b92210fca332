package config

import "testing"

// FuzzParse feeds arbitrary documents to the config parser: it must never
// panic, and whatever it accepts must either validate or say why not.
func FuzzParse(f *testing.F) {
	f.Add([]byte("server: https://relay:8443\nmemoryLimit: 24MiB\nreserved: {cpu: 100m, memory: 64Mi}\n"))
	f.Add([]byte("maxPods: 10\nboard: rpi4\n"))
	f.Add([]byte("reserved: [1, 2]\n"))
	f.Add([]byte("&a [*a, *a]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg := Default()
		if err := cfg.parse(b); err != nil {
			if err.Error() == "" {
				t.Fatal("an error without a message")
			}
			return
		}
		if err := cfg.Validate(); err != nil && err.Error() == "" {
			t.Fatal("a validation error without a message")
		}
	})
}
