package main

import (
	"io"
	"io/fs"
	"strings"
)

// detectBoard names the board from the device tree, which every ARM and
// RISC-V board has and a PC or VM does not; those get the simulator.
// Mapping the model string to a board definition is boards/' job.
func detectBoard(root fs.FS) string {
	f, err := root.Open("proc/device-tree/model")
	if err != nil {
		return "sim"
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, 256))
	model := strings.TrimSpace(strings.TrimRight(string(b), "\x00"))
	if model == "" {
		return "sim"
	}
	if len(model) > 64 {
		model = strings.TrimSpace(strings.ToValidUTF8(model[:64], ""))
	}
	return model
}
