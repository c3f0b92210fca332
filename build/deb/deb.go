// Package deb writes Debian binary packages (.deb) directly: an ar archive
// of debian-binary, control.tar.gz and data.tar.gz, every file owned by
// root, every time stamp the same. It needs neither root, fakeroot nor
// dpkg-deb, and the same inputs give the same bytes, the way gokrazy writes
// its images.
package deb

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/md5"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
	"time"
)

// File is one regular file the package installs.
type File struct {
	// Path is absolute: /usr/bin/outpost-agent.
	Path string
	Mode fs.FileMode // permission bits
	Data []byte
	// Conffile marks a file under /etc that dpkg keeps when the admin
	// changed it.
	Conffile bool
}

// Package is a binary package's control fields, files and maintainer
// scripts.
type Package struct {
	Name, Version, Architecture, Maintainer string
	Section, Priority, Homepage             string
	Depends, Recommends                     string
	// Description is the synopsis line, then the long text; the long text
	// is indented and blank lines become " ." as policy asks.
	Description string
	Files       []File
	// Scripts maps postinst, prerm, postrm, preinst to their text.
	Scripts map[string]string
	// Time stamps every member and file (SOURCE_DATE_EPOCH).
	Time time.Time
}

// Control returns the control file's text.
func (p *Package) Control() string {
	var b strings.Builder
	field := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&b, "%s: %s\n", k, v)
		}
	}
	field("Package", p.Name)
	field("Version", p.Version)
	field("Architecture", p.Architecture)
	field("Maintainer", p.Maintainer)
	field("Installed-Size", fmt.Sprint(p.installedSize()))
	field("Depends", p.Depends)
	field("Recommends", p.Recommends)
	field("Section", p.Section)
	field("Priority", p.Priority)
	field("Homepage", p.Homepage)
	synopsis, long, _ := strings.Cut(strings.TrimSpace(p.Description), "\n")
	b.WriteString("Description: " + synopsis + "\n")
	for _, l := range strings.Split(long, "\n") {
		switch l = strings.TrimRight(l, " "); {
		case long == "":
		case l == "":
			b.WriteString(" .\n")
		default:
			b.WriteString(" " + strings.TrimLeft(l, " ") + "\n")
		}
	}
	return b.String()
}

// installedSize is in KiB, each file rounded up, plus one per directory,
// as dpkg-gencontrol estimates it.
func (p *Package) installedSize() int64 {
	var n int64
	for _, f := range p.Files {
		n += (int64(len(f.Data)) + 1023) / 1024
	}
	return n + int64(len(dirs(p.Files)))
}

func (p *Package) check() error {
	if p.Name == "" || p.Version == "" || p.Architecture == "" || p.Maintainer == "" || p.Description == "" {
		return fmt.Errorf("deb: package needs Name, Version, Architecture, Maintainer and Description")
	}
	if c := p.Version[0]; c < '0' || c > '9' {
		return fmt.Errorf("deb: version %q must start with a digit (make %q into %q)", p.Version, p.Version, DebianVersion(p.Version))
	}
	seen := map[string]bool{}
	for _, f := range p.Files {
		if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path || f.Path == "/" {
			return fmt.Errorf("deb: file path %q must be absolute and clean", f.Path)
		}
		if seen[f.Path] {
			return fmt.Errorf("deb: %s listed twice", f.Path)
		}
		seen[f.Path] = true
		if f.Conffile && !strings.HasPrefix(f.Path, "/etc/") {
			return fmt.Errorf("deb: conffile %s must be under /etc", f.Path)
		}
	}
	for name := range p.Scripts {
		switch name {
		case "preinst", "postinst", "prerm", "postrm":
		default:
			return fmt.Errorf("deb: unknown maintainer script %q", name)
		}
	}
	return nil
}

// DebianVersion turns a Go-style version (v0.1.0-dev+abc) into a Debian
// one (0.1.0~dev+abc): no leading v, and a pre-release sorts before the
// release.
func DebianVersion(v string) string {
	v = strings.TrimPrefix(v, "v")
	if v == "" || v[0] < '0' || v[0] > '9' {
		v = "0~" + v
	}
	return strings.ReplaceAll(v, "-", "~")
}

// Write writes the .deb to w.
func (p *Package) Write(w io.Writer) error {
	if err := p.check(); err != nil {
		return err
	}
	control, err := p.controlTar()
	if err != nil {
		return err
	}
	data, err := p.dataTar()
	if err != nil {
		return err
	}
	var b bytes.Buffer
	b.WriteString("!<arch>\n")
	for _, m := range []struct {
		name string
		data []byte
	}{{"debian-binary", []byte("2.0\n")}, {"control.tar.gz", control}, {"data.tar.gz", data}} {
		fmt.Fprintf(&b, "%-16s%-12d%-6d%-6d%-8o%-10d`\n", m.name, p.Time.Unix(), 0, 0, 0o100644, len(m.data))
		b.Write(m.data)
		if len(m.data)%2 == 1 {
			b.WriteByte('\n')
		}
	}
	_, err = w.Write(b.Bytes())
	return err
}

func (p *Package) controlTar() ([]byte, error) {
	files := []File{{Path: "/control", Mode: 0o644, Data: []byte(p.Control())}}
	var sums, conf strings.Builder
	for _, f := range sorted(p.Files) {
		fmt.Fprintf(&sums, "%x  %s\n", md5.Sum(f.Data), f.Path[1:])
		if f.Conffile {
			conf.WriteString(f.Path + "\n")
		}
	}
	files = append(files, File{Path: "/md5sums", Mode: 0o644, Data: []byte(sums.String())})
	if conf.Len() > 0 {
		files = append(files, File{Path: "/conffiles", Mode: 0o644, Data: []byte(conf.String())})
	}
	for name, text := range p.Scripts {
		files = append(files, File{Path: "/" + name, Mode: 0o755, Data: []byte(text)})
	}
	return p.tarGz(files, false)
}

func (p *Package) dataTar() ([]byte, error) { return p.tarGz(p.Files, true) }

// tarGz writes files, sorted, as "./path" entries owned by root, with their
// parent directories when withDirs.
func (p *Package) tarGz(files []File, withDirs bool) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(zw)
	hdr := func(name string, typ byte, mode fs.FileMode, size int64) *tar.Header {
		return &tar.Header{Typeflag: typ, Name: name, Mode: int64(mode.Perm()), Size: size,
			Uname: "root", Gname: "root", ModTime: p.Time, Format: tar.FormatGNU}
	}
	if err := tw.WriteHeader(hdr("./", tar.TypeDir, 0o755, 0)); err != nil {
		return nil, err
	}
	var entries []string
	byPath := map[string]File{}
	for _, f := range files {
		entries = append(entries, f.Path)
		byPath[f.Path] = f
	}
	if withDirs {
		entries = append(entries, dirs(files)...)
	}
	sort.Strings(entries)
	for _, e := range entries {
		f, isFile := byPath[e]
		if !isFile {
			if err := tw.WriteHeader(hdr("."+e+"/", tar.TypeDir, 0o755, 0)); err != nil {
				return nil, err
			}
			continue
		}
		if err := tw.WriteHeader(hdr("."+e, tar.TypeReg, f.Mode, int64(len(f.Data)))); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// dirs lists every parent directory of files, without "/".
func dirs(files []File) []string {
	set := map[string]bool{}
	for _, f := range files {
		for d := path.Dir(f.Path); d != "/"; d = path.Dir(d) {
			set[d] = true
		}
	}
	var out []string
	for d := range set {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

func sorted(files []File) []File {
	out := append([]File(nil), files...)
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}
