package daemon

import (
	"strings"
	"testing"
)

// The runtime's memory classes are all there, named as the Prometheus Go
// collector names them, and add up to what the runtime mapped.
func TestMemoryClasses(t *testing.T) {
	gs := memoryClasses()()
	byName := map[string]float64{}
	for _, g := range gs {
		if !strings.HasPrefix(g.Name, "go_memory_classes_") || !strings.HasSuffix(g.Name, "_bytes") || strings.ContainsAny(g.Name, "/:-") || g.Help == "" {
			t.Errorf("gauge %+v", g)
		}
		byName[g.Name] = g.Value
	}
	total := byName["go_memory_classes_total_bytes"]
	if total == 0 || byName["go_memory_classes_heap_objects_bytes"] == 0 || byName["go_memory_classes_heap_stacks_bytes"] == 0 {
		t.Fatalf("missing classes: %v", byName)
	}
	var sum float64
	for n, v := range byName {
		if n != "go_memory_classes_total_bytes" {
			sum += v
		}
	}
	if sum != total {
		t.Errorf("classes add up to %.0f, total %.0f: %v", sum, total, byName)
	}
}
