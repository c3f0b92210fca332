package images_test

import (
	"slices"
	"testing"

	"outpost.dev/boards"
	"outpost.dev/boards/images"
	"outpost.dev/build/cross"
)

// TestAgentBoards: the board each image writes into the first-boot config
// must be one the agent registers, or outpost-agent run exits at start,
// and that board must run on the image's architecture.
func TestAgentBoards(t *testing.T) {
	names := images.Names()
	if len(names) == 0 {
		t.Fatal("no images")
	}
	for _, name := range names {
		img, err := images.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		if img.Name != name {
			t.Errorf("image %s is named %q", name, img.Name)
		}
		b, err := boards.Lookup(img.Board)
		if err != nil {
			t.Errorf("image %s writes board: %q, which the agent does not know: %v", name, img.Board, err)
			continue
		}
		tg, err := cross.Lookup(img.Arch)
		if err != nil {
			t.Errorf("image %s: %v", name, err)
			continue
		}
		// An empty Targets (the simulator) runs anywhere.
		if want := (boards.Target{GOARCH: tg.GOARCH, GOARM: tg.GOARM}); len(b.Targets) > 0 && !slices.Contains(b.Targets, want) {
			t.Errorf("image %s is %s (Go %s), which its agent board %s does not run on: %v", name, img.Arch, want, b.Name, b.Targets)
		}
	}
}
