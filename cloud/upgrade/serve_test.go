package upgrade

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"outpost.dev/wire"
)

// sink is an Agent that keeps what it was sent.
type sink struct {
	mu     sync.Mutex
	chunks []wire.UpgradeChunk
}

func (s *sink) Send(t wire.Type, b wire.Body) bool {
	if err := b.Validate(); err != nil {
		panic(err) // the relay never sends an invalid frame
	}
	if c, ok := b.(*wire.UpgradeChunk); ok {
		s.mu.Lock()
		s.chunks = append(s.chunks, *c)
		s.mu.Unlock()
	}
	return true
}

func (s *sink) take() []wire.UpgradeChunk {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.chunks
	s.chunks = nil
	return c
}

// TestChunkServingRefusesHostileRequests: offsets past the end, versions
// never offered on the connection, windows past the end (clipped), and
// chunks never over the bound.
func TestChunkServingRefusesHostileRequests(t *testing.T) {
	data := make([]byte, 3*wire.MaxUpgradeChunk+100)
	for i := range data {
		data[i] = byte(i)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(data) }))
	defer srv.Close()
	art, err := newArtifacts(t.TempDir(), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	c := &Controller{art: art, log: slog.New(slog.DiscardHandler)}
	sum := sha256.Sum256(data)
	offer := &wire.UpgradeOffer{Name: "u", Version: "2.0.0", Size: int64(len(data)), SHA256: sum[:], Signature: make([]byte, 64), TrialSeconds: 60}
	a := &sink{}
	s := &Session{c: c, node: "gw", agent: a, ctx: context.Background(), offered: map[string]*served{"u": {offer: offer, url: srv.URL}}}

	for _, q := range []struct {
		name string
		req  wire.UpgradeChunkRequest
		want string // error, or "" for data
		n    int    // bytes expected
	}{
		{"whole window", wire.UpgradeChunkRequest{Version: "2.0.0", Offset: 0, Length: wire.MaxUpgradeWindow}, "", len(data)},
		{"from the middle", wire.UpgradeChunkRequest{Version: "2.0.0", Offset: 1000, Length: 50}, "", 50},
		{"the last byte", wire.UpgradeChunkRequest{Version: "2.0.0", Offset: int64(len(data)) - 1, Length: 10}, "", 1},
		{"past the end", wire.UpgradeChunkRequest{Version: "2.0.0", Offset: int64(len(data)), Length: 10}, "past the end", 0},
		{"far past the end", wire.UpgradeChunkRequest{Version: "2.0.0", Offset: wire.MaxUpgradeSize - 1, Length: 10}, "past the end", 0},
		{"never offered", wire.UpgradeChunkRequest{Version: "9.9.9", Offset: 0, Length: 10}, "offered", 0},
	} {
		s.handle(&q.req)
		got := a.take()
		if q.want != "" {
			if len(got) != 1 || !strings.Contains(got[0].Error, q.want) {
				t.Errorf("%s: %+v, want one error about %q", q.name, got, q.want)
			}
			continue
		}
		n, off := 0, q.req.Offset
		for _, ch := range got {
			if ch.Error != "" || ch.Offset != off || len(ch.Data) > wire.MaxUpgradeChunk || string(ch.Data) != string(data[off:off+int64(len(ch.Data))]) {
				t.Fatalf("%s: bad chunk at %d (%d bytes, error %q)", q.name, ch.Offset, len(ch.Data), ch.Error)
			}
			n += len(ch.Data)
			off += int64(len(ch.Data))
		}
		if n != q.n {
			t.Errorf("%s: %d bytes, want %d", q.name, n, q.n)
		}
	}

	// One window at a time: a second request while one waits is refused.
	s.requests = make(chan wire.UpgradeChunkRequest, 1)
	r := &wire.UpgradeChunkRequest{Version: "2.0.0", Offset: 0, Length: 1}
	if err := s.ChunkRequest(r); err != nil {
		t.Fatal(err)
	}
	if err := s.ChunkRequest(r); err != ErrBusy {
		t.Fatalf("second request: %v, want ErrBusy", err)
	}
}
