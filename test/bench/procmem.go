package bench

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Mem is a process's memory as the kernel accounts it, in KiB.
type Mem struct {
	RSS, PSS, PSSAnon, Anon int
}

// ReadMem reads /proc/PID/status and /proc/PID/smaps_rollup.
func ReadMem(pid int) (Mem, error) {
	var m Mem
	st, err := readKV(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return m, err
	}
	m.RSS = st["VmRSS"]
	m.Anon = st["RssAnon"]
	sm, err := readKV(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return m, err
	}
	m.PSS = sm["Pss"]
	m.PSSAnon = sm["Pss_Anon"]
	return m, nil
}

func readKV(path string) (map[string]int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	kv := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fs := strings.Fields(v)
		if len(fs) == 0 {
			continue
		}
		if n, err := strconv.Atoi(fs[0]); err == nil {
			kv[strings.TrimSpace(k)] = n
		}
	}
	return kv, sc.Err()
}
