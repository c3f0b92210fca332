// Package kmod reads the modules of an unpacked Debian kernel without
// running depmod or modprobe: each .ko's .modinfo (name, depends, softdep
// pre:, aliases), the closure of what a list of modules needs in the order
// to load it, the modules.dep busybox's modprobe reads for that subset, and
// the names in modules.builtin. Decompress unpacks .ko.xz in place first.
package kmod

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// Module is one kernel module's modinfo.
type Module struct {
	Name, Path string // Path is relative to /lib/modules/VERSION
	Depends    []string
	SoftPre    []string // softdep pre: what must load first when present
	Aliases    []string
}

// Modules indexes the .ko files of one unpacked kernel.
type Modules struct {
	dir    string // /lib/modules/VERSION
	byName map[string]*Module
	alias  map[string]string
}

// Canon is a module name as the kernel compares them: dashes as
// underscores.
func Canon(name string) string { return strings.ReplaceAll(name, "-", "_") }

// Read reads every module's .modinfo section under dir
// (/lib/modules/VERSION of an unpacked kernel).
func Read(dir string) (*Modules, error) {
	ms := &Modules{dir: dir, byName: map[string]*Module{}, alias: map[string]string{}}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".ko") {
			return err
		}
		f, err := elf.Open(p)
		if err != nil {
			return fmt.Errorf("kernel module %s: %w", p, err)
		}
		defer f.Close()
		sec := f.Section(".modinfo")
		if sec == nil {
			return fmt.Errorf("kernel module %s has no .modinfo", p)
		}
		data, err := sec.Data()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		m := &Module{Path: rel, Name: Canon(strings.TrimSuffix(filepath.Base(p), ".ko"))}
		for _, kv := range bytes.Split(data, []byte{0}) {
			k, v, ok := strings.Cut(string(kv), "=")
			if !ok {
				continue
			}
			switch k {
			case "name":
				m.Name = Canon(v)
			case "depends":
				for _, d := range strings.Split(v, ",") {
					if d != "" {
						m.Depends = append(m.Depends, Canon(d))
					}
				}
			case "softdep":
				// "pre: a b post: c"; only what must load first matters here.
				pre := false
				for _, w := range strings.Fields(v) {
					switch w {
					case "pre:":
						pre = true
					case "post:":
						pre = false
					default:
						if pre {
							m.SoftPre = append(m.SoftPre, w)
						}
					}
				}
			case "alias":
				m.Aliases = append(m.Aliases, v)
			}
		}
		ms.byName[m.Name] = m
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, m := range ms.byName {
		for _, a := range m.Aliases {
			if _, ok := ms.alias[a]; !ok {
				ms.alias[a] = m.Name
			}
		}
	}
	return ms, nil
}

// Lookup finds a module by name or alias; built-in ones are not found,
// which is not an error for a soft dependency.
func (ms *Modules) Lookup(name string) *Module {
	if m := ms.byName[Canon(name)]; m != nil {
		return m
	}
	if n, ok := ms.alias[name]; ok {
		return ms.byName[n]
	}
	return nil
}

// Closure returns the wanted modules and everything they need, ordered so
// each comes after what it depends on (the order to insmod them in). A
// wanted name that is neither a module nor built in is an error.
func (ms *Modules) Closure(want []string, builtin map[string]bool) ([]*Module, error) {
	var order []*Module
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string, soft bool) error
	visit = func(name string, soft bool) error {
		m := ms.Lookup(name)
		if m == nil {
			if soft || builtin[Canon(name)] {
				return nil
			}
			return fmt.Errorf("kernel module %q is neither in %s nor built in", name, ms.dir)
		}
		switch state[m.Name] {
		case 1, 2:
			return nil
		}
		state[m.Name] = 1
		for _, d := range m.SoftPre {
			if err := visit(d, true); err != nil {
				return err
			}
		}
		for _, d := range m.Depends {
			if err := visit(d, false); err != nil {
				return err
			}
		}
		state[m.Name] = 2
		order = append(order, m)
		return nil
	}
	for _, w := range want {
		if err := visit(w, false); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// ModulesDep is modules.dep for the chosen modules, as depmod writes it:
// each module, then everything it depends on, nearest first.
func (ms *Modules) ModulesDep(chosen []*Module) string {
	var lines []string
	for _, m := range chosen {
		// modprobe loads a line's dependencies from the last to the
		// first, so each must come before what it depends on: the
		// reverse of a post-order walk (bridge: stp llc, not llc stp).
		var load []string
		seen := map[string]bool{}
		var walk func(*Module)
		walk = func(x *Module) {
			for _, d := range x.Depends {
				if dm := ms.Lookup(d); dm != nil && !seen[dm.Name] {
					seen[dm.Name] = true
					walk(dm)
					load = append(load, dm.Path)
				}
			}
		}
		walk(m)
		slices.Reverse(load)
		lines = append(lines, strings.TrimSpace(m.Path+": "+strings.Join(load, " ")))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n") + "\n"
}

// ReadBuiltin reads modules.builtin: the names of drivers compiled in.
func ReadBuiltin(data []byte) map[string]bool {
	out := map[string]bool{}
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out[Canon(strings.TrimSuffix(filepath.Base(l), ".ko"))] = true
		}
	}
	return out
}

// Decompress unpacks xz-compressed kernel modules (trixie's kernels ship
// .ko.xz) under dir in place, so their modinfo can be read here and
// busybox's insmod loads them without xz support. Two xz at a time.
func Decompress(dir string) error {
	var all []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case strings.HasSuffix(p, ".ko.xz"):
			all = append(all, p)
		case strings.HasSuffix(p, ".ko.zst") || strings.HasSuffix(p, ".ko.gz"):
			return fmt.Errorf("kernel module %s: only xz-compressed modules are handled", p)
		}
		return nil
	})
	if err != nil || len(all) == 0 {
		return err
	}
	errs := make(chan error, 2)
	for half := range 2 {
		go func() {
			part := all[len(all)*half/2 : len(all)*(half+1)/2]
			if len(part) == 0 {
				errs <- nil // xz with no files would read stdin
				return
			}
			out, err := exec.Command("xz", append([]string{"-d", "-q"}, part...)...).CombinedOutput()
			if err != nil {
				err = fmt.Errorf("xz -d (kernel modules): %v\n%s", err, out)
			}
			errs <- err
		}()
	}
	return errors.Join(<-errs, <-errs)
}
