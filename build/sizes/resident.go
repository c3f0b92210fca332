package sizes

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// Resident is which bytes of a binary a running process has in memory:
// the pages of its sections that are present in the process's page
// tables (/proc/PID/pagemap), attributed to the symbols on them and so
// to packages. A page counts in full (4 KiB); its bytes are shared out
// among the symbols on it by how much of the page each covers. Bytes of
// a page no symbol names count for its section as "(unnamed)"; the line
// table (.gopclntab) is "(line table)", type descriptors and string
// constants are "(type descriptors)" and "(string data)" as in Report.
//
// Present is not accessed: on a page fault the kernel maps up to 16
// neighbouring pages already in the page cache as well ("fault-around").
// Referenced, per mapping, is what /proc/PID/smaps says was referenced
// since ClearRefs: the pages the process touched again in that time.
type Resident struct {
	PageSize int
	Sections []SectionPages // in address order
	Packages []PackagePages // most resident first
	Mappings []MappingPages // the binary's mappings and the one of .bss
}

// SectionPages is one ELF section's residency.
type SectionPages struct {
	Name           string
	Size, Resident int64 // bytes; Resident in whole pages, split at section edges
}

// PackagePages is one package's resident bytes, by section.
type PackagePages struct {
	Path      string
	Resident  int64
	BySection map[string]int64
}

// MappingPages is one mapping of the binary (or its zero-filled .bss)
// as /proc/PID/smaps counts it, in bytes.
type MappingPages struct {
	Start, End uint64
	Perms      string
	Rss        int64
	Referenced int64
	Anonymous  int64 // copied on write (written .data pages) or .bss
}

// Pseudo-packages of resident pages.
const (
	unnamed   = "(unnamed)"
	lineTable = "(line table)"
)

type span struct {
	lo, hi uint64 // ELF virtual addresses
	pkg    string
	sec    string
}

// ClearRefs clears the referenced bits of process pid's pages, so that
// the Referenced lines of its smaps count what it touches from now on.
func ClearRefs(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("1"), 0)
}

// ReadResident reads which pages of exe (an unstripped build: its symbol
// table names what is on each page) process pid has resident. It needs
// the right to trace pid (the same user will do): the present bits of
// /proc/PID/pagemap need no privilege, only its frame numbers would.
func ReadResident(pid int, exe string) (*Resident, error) {
	ef, err := elf.Open(exe)
	if err != nil {
		return nil, err
	}
	defer ef.Close()
	fi, err := os.Stat(exe)
	if err != nil {
		return nil, err
	}
	maps, err := readSmaps(pid)
	if err != nil {
		return nil, err
	}
	ps := os.Getpagesize()
	// The load bias: where the kernel put the file's first mapping
	// against where the program headers ask for it (0 unless PIE).
	var bias uint64
	var found bool
	var mine []smapsEntry
	for i, m := range maps {
		if !m.sameFile(fi) {
			continue
		}
		mine = append(mine, m)
		if !found {
			for _, p := range ef.Progs {
				if p.Type == elf.PT_LOAD && m.offset >= p.Off && m.offset < p.Off+p.Filesz {
					bias = m.start - (p.Vaddr + (m.offset - p.Off))
					found = true
					break
				}
			}
		}
		// The zero-filled rest of the data segment follows it unnamed.
		if i+1 < len(maps) && maps[i+1].path == "" && maps[i+1].start == m.end && m.perms[1] == 'w' {
			mine = append(mine, maps[i+1])
		}
	}
	if !found {
		return nil, fmt.Errorf("process %d does not map %s", pid, exe)
	}
	spans, secs, err := symbolSpans(ef)
	if err != nil {
		return nil, err
	}
	pm, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return nil, err
	}
	defer pm.Close()

	r := &Resident{PageSize: ps}
	byPkg := map[string]*PackagePages{}
	secRes := map[string]int64{}
	add := func(pkg, sec string, n int64) {
		p := byPkg[pkg]
		if p == nil {
			p = &PackagePages{Path: pkg, BySection: map[string]int64{}}
			byPkg[pkg] = p
		}
		p.Resident += n
		p.BySection[sec] += n
	}
	for _, m := range mine {
		r.Mappings = append(r.Mappings, MappingPages{Start: m.start, End: m.end, Perms: m.perms,
			Rss: m.kv["Rss"] << 10, Referenced: m.kv["Referenced"] << 10, Anonymous: m.kv["Anonymous"] << 10})
		present, err := presentPages(pm, m.start, m.end, ps)
		if err != nil {
			return nil, err
		}
		for _, va := range present {
			lo, hi := va-bias, va-bias+uint64(ps)
			// Sections on this page: their bytes on it, less what
			// symbols cover, is unnamed.
			for _, s := range secs {
				a, b := max(lo, s.lo), min(hi, s.hi)
				if a >= b {
					continue
				}
				secRes[s.sec] += int64(b - a)
				if s.sec == ".gopclntab" {
					add(lineTable, s.sec, int64(b-a))
					continue
				}
				covered := int64(0)
				i := sort.Search(len(spans), func(i int) bool { return spans[i].hi > a })
				for ; i < len(spans) && spans[i].lo < b; i++ {
					x, y := max(a, spans[i].lo), min(b, spans[i].hi)
					if x < y && spans[i].sec == s.sec {
						add(spans[i].pkg, s.sec, int64(y-x))
						covered += int64(y - x)
					}
				}
				if n := int64(b-a) - covered; n > 0 {
					add(unnamed, s.sec, n)
				}
			}
		}
	}
	for _, s := range secs {
		r.Sections = append(r.Sections, SectionPages{Name: s.sec, Size: int64(s.hi - s.lo), Resident: secRes[s.sec]})
	}
	for _, p := range byPkg {
		r.Packages = append(r.Packages, *p)
	}
	sort.Slice(r.Packages, func(i, j int) bool {
		if r.Packages[i].Resident != r.Packages[j].Resident {
			return r.Packages[i].Resident > r.Packages[j].Resident
		}
		return r.Packages[i].Path < r.Packages[j].Path
	})
	return r, nil
}

// symbolSpans returns the sized symbols of ef's allocated sections as
// spans sorted by address (overlaps removed: the first symbol at an
// address keeps its bytes) and the sections themselves.
func symbolSpans(ef *elf.File) (spans, secs []span, err error) {
	for _, s := range ef.Sections {
		if s.Flags&elf.SHF_ALLOC != 0 && s.Flags&elf.SHF_TLS == 0 && s.Size > 0 && s.Addr != 0 {
			secs = append(secs, span{lo: s.Addr, hi: s.Addr + s.Size, sec: s.Name})
		}
	}
	sort.Slice(secs, func(i, j int) bool { return secs[i].lo < secs[j].lo })
	syms, err := ef.Symbols()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: build without -s -w", err)
	}
	secOf := func(a uint64) string {
		for _, s := range secs {
			if a >= s.lo && a < s.hi {
				return s.sec
			}
		}
		return ""
	}
	mark := map[string]uint64{}
	for _, s := range syms {
		switch s.Name {
		case "type:*", "go:string.*", "go:funcdesc":
			mark[s.Name] = s.Value
		}
	}
	if t, st, e := mark["type:*"], mark["go:string.*"], mark["go:funcdesc"]; t > 0 && t < st && st < e {
		spans = append(spans, span{lo: t, hi: st, pkg: typesPkg, sec: secOf(t)},
			span{lo: st, hi: e, pkg: stringsPkg, sec: secOf(st)})
	}
	for _, s := range syms {
		if s.Size == 0 || s.Section == elf.SHN_UNDEF || int(s.Section) >= len(ef.Sections) {
			continue
		}
		sec := ef.Sections[s.Section]
		if sec.Flags&elf.SHF_ALLOC == 0 || sec.Name == ".gopclntab" {
			continue
		}
		spans = append(spans, span{lo: s.Value, hi: s.Value + s.Size, pkg: PackageOf(s.Name), sec: sec.Name})
	}
	sort.SliceStable(spans, func(i, j int) bool { return spans[i].lo < spans[j].lo })
	// Trim overlaps so no byte counts twice.
	out := spans[:0]
	var end uint64
	for _, s := range spans {
		if s.lo < end {
			s.lo = end
		}
		if s.lo >= s.hi {
			continue
		}
		out = append(out, s)
		end = s.hi
	}
	return out, secs, nil
}

// presentPages returns the virtual addresses of the pages in [start, end)
// that are present in memory (pagemap bit 63).
func presentPages(pm io.ReaderAt, start, end uint64, ps int) ([]uint64, error) {
	n := int((end - start) / uint64(ps))
	buf := make([]byte, 8*n)
	if _, err := pm.ReadAt(buf, int64(start/uint64(ps))*8); err != nil {
		return nil, fmt.Errorf("pagemap: %w", err)
	}
	var out []uint64
	for i := 0; i < n; i++ {
		if binary.LittleEndian.Uint64(buf[8*i:])&(1<<63) != 0 {
			out = append(out, start+uint64(i*ps))
		}
	}
	return out, nil
}

type smapsEntry struct {
	start, end, offset uint64
	perms, path        string
	dev                string
	inode              uint64
	kv                 map[string]int64 // kB
}

func (m smapsEntry) sameFile(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && m.inode != 0 && m.inode == st.Ino
}

// readSmaps parses /proc/PID/smaps.
func readSmaps(pid int) ([]smapsEntry, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return nil, err
	}
	return parseSmaps(b)
}

func parseSmaps(b []byte) ([]smapsEntry, error) {
	var out []smapsEntry
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if strings.HasSuffix(f[0], ":") {
			if len(out) == 0 || len(f) < 2 {
				continue
			}
			if v, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				out[len(out)-1].kv[strings.TrimSuffix(f[0], ":")] = v
			}
			continue
		}
		// 00400000-00c3a000 r-xp 00000000 08:01 1234   /path
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok || len(f) < 5 {
			return nil, fmt.Errorf("smaps: bad line %q", line)
		}
		var e smapsEntry
		var err1, err2, err3, err4 error
		e.start, err1 = strconv.ParseUint(lo, 16, 64)
		e.end, err2 = strconv.ParseUint(hi, 16, 64)
		e.offset, err3 = strconv.ParseUint(f[2], 16, 64)
		e.inode, err4 = strconv.ParseUint(f[4], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil || e.end < e.start || len(f[1]) != 4 {
			return nil, fmt.Errorf("smaps: bad line %q", line)
		}
		e.perms, e.dev = f[1], f[3]
		if len(f) > 5 {
			e.path = strings.Join(f[5:], " ")
		}
		e.kv = map[string]int64{}
		out = append(out, e)
	}
	return out, sc.Err()
}

// Total is the resident bytes of the binary's sections.
func (r *Resident) Total() int64 {
	var n int64
	for _, s := range r.Sections {
		n += s.Resident
	}
	return n
}

// Of returns package path's resident bytes.
func (r *Resident) Of(path string) int64 {
	for _, p := range r.Packages {
		if p.Path == path {
			return p.Resident
		}
	}
	return 0
}

// Markdown renders the mappings, the sections and the top packages as
// tables, in KiB.
func (r *Resident) Markdown(top int) string {
	var b strings.Builder
	b.WriteString("| mapping | size | Rss | Referenced since clear | anonymous |\n|---|--:|--:|--:|--:|\n")
	for _, m := range r.Mappings {
		fmt.Fprintf(&b, "| %s %x | %d | %d | %d | %d |\n", m.Perms, m.Start, (m.End-m.Start)>>10, m.Rss>>10, m.Referenced>>10, m.Anonymous>>10)
	}
	b.WriteString("\n| section | size KiB | resident KiB | resident share |\n|---|--:|--:|--:|\n")
	for _, s := range r.Sections {
		fmt.Fprintf(&b, "| %s | %d | %d | %.0f%% |\n", s.Name, s.Size>>10, s.Resident>>10, 100*float64(s.Resident)/float64(max(s.Size, 1)))
	}
	fmt.Fprintf(&b, "| total | | %d | |\n", r.Total()>>10)
	b.WriteString("\n| package | resident KiB | .text | .rodata | .gopclntab | data, bss | other |\n|---|--:|--:|--:|--:|--:|--:|\n")
	var restN int
	var rest int64
	for i, p := range r.Packages {
		if i >= top {
			restN++
			rest += p.Resident
			continue
		}
		var data int64
		for _, s := range []string{".data", ".noptrdata", ".bss", ".noptrbss"} {
			data += p.BySection[s]
		}
		t, ro, pc := p.BySection[".text"], p.BySection[".rodata"], p.BySection[".gopclntab"]
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %d | %d |\n", p.Path, p.Resident>>10, t>>10, ro>>10, pc>>10, data>>10, (p.Resident-t-ro-pc-data)>>10)
	}
	if restN > 0 {
		fmt.Fprintf(&b, "| %d other packages | %d | | | | | |\n", restN, rest>>10)
	}
	return b.String()
}
