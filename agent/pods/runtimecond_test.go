package pods

import (
	"errors"
	"testing"

	"outpost.dev/wire"
)

// condOutbox records the runtime conditions queued.
type condOutbox struct{ conds []wire.Condition }

func (o *condOutbox) Append(key string, _ wire.Type, body wire.Body) (uint64, error) {
	if ns, ok := body.(*wire.NodeStatus); ok && key == "node/runtime" {
		o.conds = append(o.conds, ns.Conditions...)
	}
	return uint64(len(o.conds)), nil
}

// TestRuntimeConditionRepeatedWhileDown: the ContainerRuntimeReady=False
// condition is queued on every failed retry, not once, because a hello
// after a link drop rewrites the Node without it; True is queued once.
func TestRuntimeConditionRepeatedWhileDown(t *testing.T) {
	ob := &condOutbox{}
	r := New(Config{Outbox: ob, NodeInfo: func() (wire.NodeInfo, error) { return wire.NodeInfo{}, nil }})
	down := errors.New("connection refused")
	steps := []struct {
		up       bool
		wantBack bool
		want     []string // statuses queued by the step
	}{
		{up: true},
		{up: false, want: []string{"False"}},
		{up: false, want: []string{"False"}},
		{up: false, want: []string{"False"}},
		{up: true, wantBack: true, want: []string{"True"}},
		{up: true},
	}
	for i, s := range steps {
		n := len(ob.conds)
		var err error
		if !s.up {
			err = down
		}
		if back := r.setRuntimeUp(s.up, err); back != s.wantBack {
			t.Errorf("step %d: came back %v, want %v", i, back, s.wantBack)
		}
		var got []string
		for _, c := range ob.conds[n:] {
			if c.Type != "ContainerRuntimeReady" {
				t.Errorf("step %d: condition %s", i, c.Type)
			}
			if c.Status == "False" && c.Reason != "ContainerdUnreachable" {
				t.Errorf("step %d: reason %q", i, c.Reason)
			}
			got = append(got, c.Status)
		}
		if len(got) != len(s.want) || (len(got) > 0 && got[0] != s.want[0]) {
			t.Errorf("step %d: queued %v, want %v", i, got, s.want)
		}
	}
}
