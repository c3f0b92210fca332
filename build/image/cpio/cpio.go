// Package cpio writes the "newc" cpio format the Linux kernel unpacks as an
// initramfs. Every entry is owned by root with one fixed time and inodes
// numbered in the order entries are added, so the same entries give the
// same bytes.
package cpio

import (
	"fmt"
	"io"
)

// Writer writes a newc archive to an io.Writer. The first write error is
// kept and returned by Close.
type Writer struct {
	w     io.Writer
	ino   uint32
	mtime int64
	n     int64
	err   error
}

// NewWriter returns a Writer whose entries all carry mtime (Unix seconds).
func NewWriter(w io.Writer, mtime int64) *Writer {
	return &Writer{w: w, mtime: mtime}
}

const (
	modeDir     = 0o040000
	modeFile    = 0o100000
	modeSymlink = 0o120000
	modeChar    = 0o020000
)

func (c *Writer) write(b []byte) {
	if c.err != nil {
		return
	}
	var n int
	n, c.err = c.w.Write(b)
	c.n += int64(n)
}

func (c *Writer) pad() {
	if r := c.n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

// entry writes one header and its data; major, minor are a device's.
func (c *Writer) entry(name string, mode uint32, data []byte, major, minor uint32) {
	c.ino++
	nlink := uint32(1)
	if mode&0o170000 == modeDir {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		c.ino, mode, 0, 0, nlink, uint32(c.mtime), len(data), 0, 0, major, minor, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write([]byte(name + "\x00"))
	c.pad()
	c.write(data)
	c.pad()
}

// Dir, File, Symlink and CharDev add entries; names have no leading slash.
func (c *Writer) Dir(name string, perm uint32) { c.entry(name, modeDir|perm, nil, 0, 0) }
func (c *Writer) File(name string, perm uint32, data []byte) {
	c.entry(name, modeFile|perm, data, 0, 0)
}
func (c *Writer) Symlink(name, target string) {
	c.entry(name, modeSymlink|0o777, []byte(target), 0, 0)
}
func (c *Writer) CharDev(name string, perm, major, minor uint32) {
	c.entry(name, modeChar|perm, nil, major, minor)
}

// Close writes the trailer and returns the first error met.
func (c *Writer) Close() error {
	c.ino = 0
	c.entry("TRAILER!!!", 0, nil, 0, 0)
	return c.err
}
