// Package repo checks the repository as text: every file a document or a
// comment points at exists, and nothing points outside the repository
// (notes kept beside it, an issue tracker's numbers).
package repo

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// root is the repository's top directory, two levels above this package.
var root = func() string {
	wd, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}()

var (
	// mdLink is a Markdown link's target: [text](target).
	mdLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	// repoPath is a path into one of the top-level folders, as prose and
	// comments write them ("agent/pods/volumes.go", "docs/benchmarks.md").
	repoPath = regexp.MustCompile(`(^|[\s(\x60'"])((?:agent|cloud|wire|hal|boards|build|test|docs)/[A-Za-z0-9_./-]*)`)
	// outside matches references a reader of the repository cannot
	// follow: notes that are not part of it and issue numbers.
	outside = regexp.MustCompile(`\b(?:STYLE|PEERS|ARCHITECTURE)\.md\b|(?i:\bissues? #?[0-9]+)`)
	// goIdent is a package path followed by one of its identifiers
	// ("agent/crilog.Run").
	goIdent = regexp.MustCompile(`^(.*)\.[A-Z][A-Za-z0-9_]*$`)
	// images are repository names in the test registry
	// (test/harness/registry.go), which look like paths but are not.
	images = map[string]bool{"test/busybox": true, "test/other": true}
)

// texts yields every Markdown file whole and every Go file's comments,
// with the line each starts on.
func texts(t *testing.T, visit func(file string, line int, text string)) {
	t.Helper()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			if strings.HasPrefix(d.Name(), ".") && p != root || d.Name() == "testdata" || rel == "bin" {
				return filepath.SkipDir
			}
			return nil
		}
		switch {
		case strings.HasSuffix(p, ".md"):
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			for i, l := range strings.Split(string(b), "\n") {
				visit(rel, i+1, l)
			}
		case strings.HasSuffix(p, ".go"):
			fset := token.NewFileSet()
			f, err := parser.ParseFile(fset, p, nil, parser.ParseComments)
			if err != nil {
				return err
			}
			for _, g := range f.Comments {
				for _, c := range g.List {
					line := fset.Position(c.Slash).Line
					for i, l := range strings.Split(c.Text, "\n") {
						visit(rel, line+i, l)
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func exists(p string) bool {
	_, err := os.Stat(filepath.Join(root, p))
	return err == nil
}

// TestReferencesResolve: every relative Markdown link and every path into
// the repository named in a document or a comment exists.
func TestReferencesResolve(t *testing.T) {
	n := 0
	texts(t, func(file string, line int, text string) {
		if strings.HasSuffix(file, ".md") {
			for _, m := range mdLink.FindAllStringSubmatch(text, -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "#") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				target, _, _ = strings.Cut(target, "#")
				n++
				if !exists(filepath.Join(filepath.Dir(file), target)) {
					t.Errorf("%s:%d: link to %s, which does not exist", file, line, m[1])
				}
			}
		}
		for _, m := range repoPath.FindAllStringSubmatch(text, -1) {
			p := strings.TrimRight(m[2], ".,:;/-")
			n++
			if exists(p) || images[p] {
				continue
			}
			if g := goIdent.FindStringSubmatch(p); g != nil && exists(g[1]) {
				continue // a package and one of its identifiers
			}
			t.Errorf("%s:%d: names %s, which does not exist in the repository", file, line, p)
		}
	})
	if n < 20 {
		t.Fatalf("checked only %d references: the scan is broken", n)
	}
}

// TestNoOutsideReferences: the repository stands alone.
func TestNoOutsideReferences(t *testing.T) {
	texts(t, func(file string, line int, text string) {
		if m := outside.FindString(text); m != "" {
			t.Errorf("%s:%d: %q points outside the repository; say what is meant in place", file, line, m)
		}
	})
}

// optionalTag is a build tag that leaves a feature out.
var optionalTag = regexp.MustCompile(`\b[a-z0-9]+_no_[a-z0-9_]+\b`)

// TestOneTagPrefix: every optional feature is left out with a tag of the
// one prefix, outpost_no_, so a gateway build names them all one way.
func TestOneTagPrefix(t *testing.T) {
	n := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") {
			if err == nil && d.IsDir() && strings.HasPrefix(d.Name(), ".") && p != root {
				return filepath.SkipDir
			}
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, l := range strings.Split(string(b), "\n") {
			if !strings.HasPrefix(l, "//go:build") {
				continue
			}
			for _, tag := range optionalTag.FindAllString(l, -1) {
				n++
				if !strings.HasPrefix(tag, "outpost_no_") {
					t.Errorf("%s: build tag %s: optional features use the prefix outpost_no_", p, tag)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("found no optional-feature build tags: the scan is broken")
	}
}
