// Package sizes attributes the agent binary's bytes to the Go packages
// they come from, reading the symbol table of an unstripped build (the
// shipped agent is stripped, so the same source is linked once more with
// its symbols kept). make size-report writes the result to
// docs/agent-size.md; the test here says when that file is stale.
//
// Each function and data symbol in a section the file holds (.text,
// .rodata, .noptrdata, .data) counts for the package that defines it;
// itabs (go:itab.*pkg.T,iface) and the few type symbols named on their
// own count for the type's package. Zero-filled memory (.bss) takes no file bytes
// and is left out. The line table (.gopclntab, about a third of the file)
// has no per-package symbols: it is spread over the packages in
// proportion to their code, which is how it grows (it holds one entry
// per function and per instruction range). The linker names no package
// for type descriptors and string constants either (they are runs in
// .rodata): they are listed as a whole, as "(type descriptors)" and
// "(string data)"; the few other symbols of no package as "(linker)".
//
// ReadResident attributes the pages a running process has resident the
// same way, and InitTrace reads what each package init allocated.
package sizes

import (
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"outpost.dev/build/cross"
)

// Package is what one Go package adds to the binary.
type Package struct {
	Path string
	Code int64 // .text
	Data int64 // .rodata, .noptrdata, .data, type descriptors included
	// Lines is its estimated share of .gopclntab.
	Lines int64
}

// Total is the package's bytes in the file.
func (p Package) Total() int64 { return p.Code + p.Data + p.Lines }

// Report is a binary's bytes by package, largest first.
type Report struct {
	Target   string
	FileSize int64 // the stripped binary
	Packages []Package
}

// Pseudo-packages for bytes no one package owns.
const (
	linker     = "(linker)"
	typesPkg   = "(type descriptors)" // runtime type information of every package
	stringsPkg = "(string data)"      // string constants of every package
)

// Analyze reads an unstripped ELF binary.
func Analyze(r io.ReaderAt) ([]Package, error) {
	f, err := elf.NewFile(r)
	if err != nil {
		return nil, err
	}
	syms, err := f.Symbols()
	if err != nil {
		return nil, fmt.Errorf("%w: build without -s -w", err)
	}
	var pclntab int64
	if s := f.Section(".gopclntab"); s != nil {
		pclntab = int64(s.Size)
	}
	by := map[string]*Package{}
	var code int64
	// The linker lays type descriptors and then string data out as runs
	// it marks with zero-size symbols only; they are counted as a whole.
	mark := map[string]uint64{}
	for _, s := range syms {
		switch s.Name {
		case "type:*", "go:string.*", "go:funcdesc":
			mark[s.Name] = s.Value
		}
	}
	if t, s, e := mark["type:*"], mark["go:string.*"], mark["go:funcdesc"]; t > 0 && t < s && s < e {
		by[typesPkg] = &Package{Path: typesPkg, Data: int64(s - t)}
		by[stringsPkg] = &Package{Path: stringsPkg, Data: int64(e - s)}
	}
	for _, s := range syms {
		if s.Size == 0 || int(s.Section) >= len(f.Sections) || s.Section == elf.SHN_UNDEF {
			continue
		}
		sec := f.Sections[s.Section]
		if sec.Type == elf.SHT_NOBITS || sec.Name == ".gopclntab" {
			continue
		}
		pkg := PackageOf(s.Name)
		p := by[pkg]
		if p == nil {
			p = &Package{Path: pkg}
			by[pkg] = p
		}
		if sec.Flags&elf.SHF_EXECINSTR != 0 {
			p.Code += int64(s.Size)
			code += int64(s.Size)
		} else {
			p.Data += int64(s.Size)
		}
	}
	out := make([]Package, 0, len(by))
	for _, p := range by {
		if code > 0 {
			p.Lines = p.Code * pclntab / code
		}
		out = append(out, *p)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Total() != out[j].Total() {
			return out[i].Total() > out[j].Total()
		}
		return out[i].Path < out[j].Path
	})
	return out, nil
}

// PackageOf returns the import path of the package a linker symbol
// belongs to, or "(linker)".
func PackageOf(sym string) string {
	s := sym
	for _, p := range []string{"type:.eq.", "type:.hash.", "type:", "go:itab.", "go:string.", "go:info."} {
		if strings.HasPrefix(s, p) {
			s = s[len(p):]
			break
		}
	}
	s = strings.TrimLeft(s, "*[]0123456789")
	// Generic instantiations name their type arguments in brackets.
	if i := strings.IndexAny(s, "[(,"); i >= 0 {
		s = s[:i]
	}
	slash := strings.LastIndexByte(s, '/')
	dot := strings.IndexByte(s[slash+1:], '.')
	if dot <= 0 || strings.HasPrefix(s, "go:") || strings.HasPrefix(s, "$") || strings.ContainsAny(s[:slash+1+dot], " {}") {
		return linker
	}
	pkg := strings.ReplaceAll(s[:slash+1+dot], "%2e", ".")
	if pkg == "go" || pkg == "type" {
		return linker
	}
	return pkg
}

// Build links the agent for t into dir twice, as make cross does and with
// its symbols kept, and reports where the bytes of the first come from.
func Build(ctx context.Context, root string, t cross.Target, dir string) (Report, error) {
	o := cross.Options{ModuleRoot: root, Version: "v0.0.0-size"}
	stripped := filepath.Join(dir, "outpost-agent-"+t.Name())
	if err := cross.Build(ctx, t, stripped, o); err != nil {
		return Report{}, err
	}
	fi, err := os.Stat(stripped)
	if err != nil {
		return Report{}, err
	}
	o.Symbols = true
	syms := stripped + "-symbols"
	if err := cross.Build(ctx, t, syms, o); err != nil {
		return Report{}, err
	}
	f, err := os.Open(syms)
	if err != nil {
		return Report{}, err
	}
	defer f.Close()
	pkgs, err := Analyze(f)
	if err != nil {
		return Report{}, fmt.Errorf("%s: %w", syms, err)
	}
	return Report{Target: t.Name(), FileSize: fi.Size(), Packages: pkgs}, nil
}

// Listed is the smallest package the report names on a line of its own.
const Listed = 8 << 10

// Markdown renders the report as docs/agent-size.md.
func (r Report) Markdown() []byte {
	var b bytes.Buffer
	var sum int64
	for _, p := range r.Packages {
		sum += p.Total()
	}
	fmt.Fprintf(&b, `# Agent size by package

Generated by `+"`make size-report`"+` (build/sizes) from the %s agent built as
`+"`make cross`"+` builds it, then once more with its symbol table; do not edit.
`+"`make size`"+` fails when this file no longer matches a fresh build (a
listed package's size moved by more than %d%% and %d KiB, or a package
of %d KiB or more is missing): run `+"`make size-report`"+` and commit it.

The stripped binary is %s (%d bytes); the rows below account for %s
of it (the rest is ELF headers, alignment and data no symbol names).
"lines" is the package's estimated share of the function line table
(.gopclntab), spread over packages in proportion to their code. Type
descriptors and string constants are laid out by the linker with no
package named, so they are one row each. Why each package is linked at
all: [agent/deps.txt](../agent/deps.txt).

| package | total KiB | code | data | lines | share |
|---|--:|--:|--:|--:|--:|
`, r.Target, Tolerance, ToleranceBytes>>10, Listed>>10, cross.MB(r.FileSize), r.FileSize, cross.MB(sum))
	var restN int
	var rest int64
	for _, p := range r.Packages {
		if p.Total() < Listed {
			restN++
			rest += p.Total()
			continue
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %.1f%% |\n", p.Path, p.Total()>>10, p.Code>>10, p.Data>>10, p.Lines>>10,
			100*float64(p.Total())/float64(r.FileSize))
	}
	fmt.Fprintf(&b, "| %d smaller packages | %d | | | | %.1f%% |\n", restN, rest>>10, 100*float64(rest)/float64(r.FileSize))
	return b.Bytes()
}

// Tolerances of the staleness check: a package's size may drift this much
// (both the percentage and the bytes) before the report is stale.
const (
	Tolerance      = 15
	ToleranceBytes = 32 << 10
)

// row is one package line of a rendered report.
var row = regexp.MustCompile(`(?m)^\| ([^|]+?) \| ([0-9]+) \|`)

// Stale compares a rendered report with a fresh one and returns what no
// longer matches, one line each; none means the report is current.
func Stale(doc []byte, fresh Report) []string {
	old := map[string]int64{}
	for _, m := range row.FindAllSubmatch(doc, -1) {
		if bytes.HasSuffix(m[1], []byte(" smaller packages")) {
			continue
		}
		kib, _ := strconv.ParseInt(string(m[2]), 10, 64)
		old[string(m[1])] = kib << 10
	}
	var out []string
	if len(old) == 0 {
		return []string{"the report lists no packages"}
	}
	now := map[string]int64{}
	for _, p := range fresh.Packages {
		now[p.Path] = p.Total()
	}
	seen := map[string]bool{}
	check := func(pkg string) {
		if seen[pkg] {
			return
		}
		seen[pkg] = true
		was, had := old[pkg]
		is := now[pkg]
		if !had && is < Listed {
			return
		}
		d := is - was
		if d < 0 {
			d = -d
		}
		if d > ToleranceBytes && d*100 > Tolerance*max(was, is) {
			out = append(out, fmt.Sprintf("%s: %d KiB in the report, %d KiB now", pkg, was>>10, is>>10))
		}
	}
	for pkg := range old {
		check(pkg)
	}
	for _, p := range fresh.Packages {
		check(p.Path)
	}
	sort.Strings(out)
	return out
}
