package wire

import (
	"testing"

	"github.com/fxamacker/cbor/v2"
)

func TestNodeStatusLinkStats(t *testing.T) {
	in := &NodeStatus{Node: sampleHello().Node, Link: &LinkStats{
		At: 1_800_000_000, OutboxReports: 3, OutboxBytes: 1200, OutboxMaxBytes: 8 << 20, OutboxDropped: 2, LastSync: 1_799_999_990,
	}}
	b, err := Encode(TypeNodeStatus, 7, in)
	if err != nil {
		t.Fatal(err)
	}
	f, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	var out NodeStatus
	if err := f.DecodeBody(&out); err != nil {
		t.Fatal(err)
	}
	if out.Link == nil || *out.Link != *in.Link {
		t.Fatalf("link stats %+v, want %+v", out.Link, in.Link)
	}

	// A relay built before the field decodes the same bytes.
	var old struct {
		Node       NodeInfo    `cbor:"1,keyasint"`
		Conditions []Condition `cbor:"2,keyasint,omitempty"`
	}
	if err := decMode.Unmarshal(f.Body, &old); err != nil || old.Node.Board != in.Node.Board {
		t.Fatalf("old shape: %v %+v", err, old)
	}
	// And an agent built before it sends no key 3.
	raw, err := cbor.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	var again NodeStatus
	if err := decMode.Unmarshal(raw, &again); err != nil || again.Link != nil {
		t.Fatalf("without link stats: %v %+v", err, again.Link)
	}
}

func TestLinkStatsValidate(t *testing.T) {
	for _, tt := range []struct {
		name string
		l    LinkStats
		ok   bool
	}{
		{"fine", LinkStats{At: 1, LastSync: 1}, true},
		{"never synced", LinkStats{At: 1}, true},
		{"no time", LinkStats{OutboxReports: 1}, false},
		{"negative sync", LinkStats{At: 1, LastSync: -1}, false},
	} {
		st := NodeStatus{Node: sampleHello().Node, Link: &tt.l}
		if err := st.Validate(); (err == nil) != tt.ok {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
}
