package upgrade

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// DefaultCacheFiles bounds the artifacts a replica keeps on disk; the
// least recently used goes first.
const DefaultCacheFiles = 8

// artifacts fetches each artifact once per replica into dir (named by its
// SHA-256, so one version's binary for one architecture is one file) and
// serves reads from there. A fetch reads at most the size the spec names
// and must match its digest, or nothing is kept.
type artifacts struct {
	dir    string
	client *http.Client
	max    int

	mu       sync.Mutex
	fetching map[string]*fetch // by digest
}

type fetch struct {
	done chan struct{}
	err  error
}

// newArtifacts makes no directory: dir is made by the first fetch, so a
// replica on a read-only root without a cache mount starts and serves its
// agents, and only a rollout that needs an artifact fails, saying why.
func newArtifacts(dir string, client *http.Client, maxFiles int) (*artifacts, error) {
	if dir == "" {
		return nil, errors.New("upgrade: no artifact cache directory")
	}
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Minute}
	}
	if maxFiles <= 0 {
		maxFiles = DefaultCacheFiles
	}
	return &artifacts{dir: dir, client: client, max: maxFiles, fetching: map[string]*fetch{}}, nil
}

// open returns the cached artifact, fetching it first if needed. Callers
// close the file.
func (a *artifacts) open(ctx context.Context, url string, size int64, digest []byte) (*os.File, error) {
	name := hex.EncodeToString(digest)
	path := filepath.Join(a.dir, name)
	for {
		if f, err := os.Open(path); err == nil {
			// Named by its digest, checked when fetched; a spec whose
			// size differs cannot be the same artifact.
			if fi, err := f.Stat(); err != nil || fi.Size() != size {
				f.Close()
				return nil, fmt.Errorf("the artifact with sha256 %s is not %d bytes as the AgentUpgrade says", name, size)
			}
			now := time.Now()
			_ = os.Chtimes(path, now, now) // least recently used goes first
			return f, nil
		}
		a.mu.Lock()
		ft := a.fetching[name]
		if ft == nil {
			ft = &fetch{done: make(chan struct{})}
			a.fetching[name] = ft
			a.mu.Unlock()
			ft.err = a.fetch(ctx, url, size, digest, path)
			a.mu.Lock()
			delete(a.fetching, name)
			a.mu.Unlock()
			close(ft.done)
			if ft.err != nil {
				return nil, ft.err
			}
			continue
		}
		a.mu.Unlock()
		select {
		case <-ft.done:
			if ft.err != nil {
				return nil, ft.err
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (a *artifacts) fetch(ctx context.Context, url string, size int64, digest []byte, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("artifact %s: %w", url, err)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return fmt.Errorf("fetching the artifact: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetching the artifact %s: %s", url, resp.Status)
	}
	if err := os.MkdirAll(a.dir, 0o700); err != nil {
		return fmt.Errorf("the artifact cache: %w", err)
	}
	tmp, err := os.CreateTemp(a.dir, ".fetch-*")
	if err != nil {
		return fmt.Errorf("the artifact cache: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(resp.Body, size+1))
	if err != nil {
		return fmt.Errorf("fetching the artifact %s: %w", url, err)
	}
	if n != size {
		return fmt.Errorf("artifact %s is not %d bytes as the AgentUpgrade says (got %d, reading at most one byte more)", url, size, n)
	}
	if got := h.Sum(nil); !slices.Equal(got, digest) {
		return fmt.Errorf("artifact %s has sha256 %x, the AgentUpgrade says %x: not served", url, got, digest)
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	a.evict(path)
	return nil
}

// evict removes the least recently used artifacts beyond the bound,
// never keep.
func (a *artifacts) evict(keep string) {
	ents, err := os.ReadDir(a.dir)
	if err != nil {
		return
	}
	type file struct {
		path string
		at   time.Time
	}
	var files []file
	for _, e := range ents {
		if len(e.Name()) != 64 || !e.Type().IsRegular() {
			continue
		}
		if fi, err := e.Info(); err == nil {
			files = append(files, file{filepath.Join(a.dir, e.Name()), fi.ModTime()})
		}
	}
	if len(files) <= a.max {
		return
	}
	slices.SortFunc(files, func(x, y file) int { return x.at.Compare(y.at) })
	for _, f := range files[:len(files)-a.max] {
		if f.path != keep {
			_ = os.Remove(f.path)
		}
	}
}

var errPastEnd = errors.New("offset past the end of the artifact")
