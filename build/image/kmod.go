package main

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// module is one kernel module's modinfo.
type module struct {
	name, path string // path relative to /lib/modules/VERSION
	depends    []string
	softPre    []string
	aliases    []string
}

// modules indexes the .ko files of one unpacked kernel.
type modules struct {
	dir    string // /lib/modules/VERSION
	byName map[string]*module
	alias  map[string]string
}

func canon(name string) string { return strings.ReplaceAll(name, "-", "_") }

// readModules reads every module's .modinfo section under dir.
func readModules(dir string) (*modules, error) {
	ms := &modules{dir: dir, byName: map[string]*module{}, alias: map[string]string{}}
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
		m := &module{path: rel, name: canon(strings.TrimSuffix(filepath.Base(p), ".ko"))}
		for _, kv := range bytes.Split(data, []byte{0}) {
			k, v, ok := strings.Cut(string(kv), "=")
			if !ok {
				continue
			}
			switch k {
			case "name":
				m.name = canon(v)
			case "depends":
				for _, d := range strings.Split(v, ",") {
					if d != "" {
						m.depends = append(m.depends, canon(d))
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
							m.softPre = append(m.softPre, w)
						}
					}
				}
			case "alias":
				m.aliases = append(m.aliases, v)
			}
		}
		ms.byName[m.name] = m
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, m := range ms.byName {
		for _, a := range m.aliases {
			if _, ok := ms.alias[a]; !ok {
				ms.alias[a] = m.name
			}
		}
	}
	return ms, nil
}

// lookup finds a module by name or alias; built-in ones are not found,
// which is not an error for a soft dependency.
func (ms *modules) lookup(name string) *module {
	if m := ms.byName[canon(name)]; m != nil {
		return m
	}
	if n, ok := ms.alias[name]; ok {
		return ms.byName[n]
	}
	return nil
}

// closure returns the wanted modules and everything they need, ordered so
// each comes after what it depends on (the order to insmod them in). A
// wanted name that is neither a module nor built in is an error.
func (ms *modules) closure(want []string, builtin map[string]bool) ([]*module, error) {
	var order []*module
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string, soft bool) error
	visit = func(name string, soft bool) error {
		m := ms.lookup(name)
		if m == nil {
			if soft || builtin[canon(name)] {
				return nil
			}
			return fmt.Errorf("kernel module %q is neither in %s nor built in", name, ms.dir)
		}
		switch state[m.name] {
		case 1, 2:
			return nil
		}
		state[m.name] = 1
		for _, d := range m.softPre {
			if err := visit(d, true); err != nil {
				return err
			}
		}
		for _, d := range m.depends {
			if err := visit(d, false); err != nil {
				return err
			}
		}
		state[m.name] = 2
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

// modulesDep is modules.dep for the chosen modules, as depmod writes it:
// each module, then everything it depends on, nearest first.
func (ms *modules) modulesDep(chosen []*module) string {
	var lines []string
	for _, m := range chosen {
		// modprobe loads a line's dependencies from the last to the
		// first, so each must come before what it depends on: the
		// reverse of a post-order walk (bridge: stp llc, not llc stp).
		var load []string
		seen := map[string]bool{}
		var walk func(*module)
		walk = func(x *module) {
			for _, d := range x.depends {
				if dm := ms.lookup(d); dm != nil && !seen[dm.name] {
					seen[dm.name] = true
					walk(dm)
					load = append(load, dm.path)
				}
			}
		}
		walk(m)
		slices.Reverse(load)
		lines = append(lines, strings.TrimSpace(m.path+": "+strings.Join(load, " ")))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n") + "\n"
}

// readBuiltin reads modules.builtin: the names of drivers compiled in.
func readBuiltin(data []byte) map[string]bool {
	out := map[string]bool{}
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out[canon(strings.TrimSuffix(filepath.Base(l), ".ko"))] = true
		}
	}
	return out
}
