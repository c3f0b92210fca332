package sizes

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
)

// Init is what one package's init work allocated as the Go runtime
// reports it with GODEBUG=inittrace=1.
type Init struct {
	Path          string
	Bytes, Allocs int64
	ClockMs       float64
}

// InitTrace runs exe with args and GODEBUG=inittrace=1 (package inits
// run before main, so any quick command does) and returns what each
// package's init allocated, most bytes first.
func InitTrace(ctx context.Context, exe string, args ...string) ([]Init, error) {
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s: %v\n%s", exe, strings.Join(args, " "), err, stderr.Bytes())
	}
	return parseInitTrace(stderr.Bytes())
}

// parseInitTrace reads lines such as
//
//	init net/http @1.2 ms, 0.070 ms clock, 4712 bytes, 49 allocs
func parseInitTrace(b []byte) ([]Init, error) {
	var out []Init
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 11 || f[0] != "init" || f[6] != "clock," || f[8] != "bytes," || f[10] != "allocs" {
			continue
		}
		ms, err1 := strconv.ParseFloat(f[4], 64)
		n, err2 := strconv.ParseInt(f[7], 10, 64)
		a, err3 := strconv.ParseInt(f[9], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			return nil, fmt.Errorf("inittrace: bad line %q", sc.Text())
		}
		out = append(out, Init{Path: f[1], ClockMs: ms, Bytes: n, Allocs: a})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("inittrace: no init lines")
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Bytes > out[j].Bytes })
	return out, sc.Err()
}

// InitMarkdown renders the top inits as a table, with the total.
func InitMarkdown(inits []Init, top int) string {
	var b strings.Builder
	var bytes, allocs int64
	var ms float64
	for _, in := range inits {
		bytes += in.Bytes
		allocs += in.Allocs
		ms += in.ClockMs
	}
	fmt.Fprintf(&b, "| package init | bytes allocated | allocations | clock ms |\n|---|--:|--:|--:|\n")
	for i, in := range inits {
		if i == top {
			break
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %.3f |\n", in.Path, in.Bytes, in.Allocs, in.ClockMs)
	}
	fmt.Fprintf(&b, "| all %d inits | %d | %d | %.2f |\n", len(inits), bytes, allocs, ms)
	return b.String()
}
