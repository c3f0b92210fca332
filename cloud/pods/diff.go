package pods

import (
	"cmp"
	"errors"
	"fmt"
	"slices"

	"outpost.dev/wire"
)

// Versions is what an agent holds: object → version.
type Versions map[wire.ObjectRef]string

// HeldVersions turns the object versions of a hello into Versions.
func HeldVersions(vs []wire.ObjectVersion) Versions {
	m := make(Versions, len(vs))
	for _, v := range vs {
		m[wire.ObjectRef{Kind: v.Kind, UID: v.UID}] = v.Version
	}
	return m
}

// Diff compares what the agent holds with what it should hold: upserts
// are the wanted objects it lacks or holds at another version, deletes the
// objects it holds that are not wanted. Both come out in a stable order
// (pods last, so their ConfigMaps and Secrets arrive first).
func Diff(held Versions, want []wire.Object) (upserts []wire.Object, deletes []wire.ObjectRef) {
	wanted := make(map[wire.ObjectRef]bool, len(want))
	for i := range want {
		o := &want[i]
		ref := wire.ObjectRef{Kind: o.Kind, UID: o.UID}
		wanted[ref] = true
		if v, ok := held[ref]; !ok || v != o.Version {
			upserts = append(upserts, *o)
		}
	}
	for ref := range held {
		if !wanted[ref] {
			deletes = append(deletes, ref)
		}
	}
	slices.SortFunc(upserts, func(a, b wire.Object) int {
		return cmp.Or(-cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name), cmp.Compare(a.UID, b.UID))
	})
	slices.SortFunc(deletes, func(a, b wire.ObjectRef) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.UID, b.UID))
	})
	return upserts, deletes
}

// Frame limits. syncMaxObjects mirrors the wire package's per-frame object
// limit; frameSlack covers the array headers growing as a frame fills.
const (
	syncMaxObjects = 1024
	frameSlack     = 64
)

// ErrObjectTooLarge is returned for an object that does not fit in one
// frame on its own.
var ErrObjectTooLarge = errors.New("object does not fit in one frame")

var emptySyncSize = func() int {
	b, err := wire.Encode(wire.TypeSync, 0, &wire.Sync{Initial: true, Complete: true})
	if err != nil {
		panic(err)
	}
	return len(b)
}()

// frameBudget is the room for objects in one frame.
var frameBudget = wire.MaxFrameSize - emptySyncSize - frameSlack

// ObjectSize is the number of bytes o adds to a sync frame. It fails with
// ErrObjectTooLarge when o cannot travel in a frame of its own, and with
// the validation error when o is not a valid object.
func ObjectSize(o *wire.Object) (int, error) {
	b, err := wire.Encode(wire.TypeSync, 0, &wire.Sync{Upserts: []wire.Object{*o}})
	if errors.Is(err, wire.ErrTooLarge) {
		return 0, fmt.Errorf("%s %s/%s: %w (limit %d bytes)", o.Kind, o.Namespace, o.Name, ErrObjectTooLarge, frameBudget)
	}
	if err != nil {
		return 0, err
	}
	n := len(b) - emptySyncSize + 2
	if n > frameBudget {
		return 0, fmt.Errorf("%s %s/%s: %d bytes encoded: %w (limit %d bytes)", o.Kind, o.Namespace, o.Name, n, ErrObjectTooLarge, frameBudget)
	}
	return n, nil
}

// Frames packs upserts and deletes into encoded TypeSync frames, each within
// wire.MaxFrameSize. An initial sync is always at least one frame, every
// frame has Initial set and the last also Complete; a delta with nothing in
// it is no frame at all. Deletes go first, then upserts in their order.
func Frames(upserts []wire.Object, deletes []wire.ObjectRef, initial bool) ([][]byte, error) {
	var (
		frames [][]byte
		cur    = wire.Sync{Initial: initial}
		used   int
	)
	flush := func(last bool) error {
		if len(cur.Upserts)+len(cur.Deletes) == 0 && !(last && initial) {
			return nil
		}
		cur.Complete = last && initial
		b, err := wire.Encode(wire.TypeSync, 0, &cur)
		if err != nil {
			return err
		}
		frames = append(frames, b)
		cur, used = wire.Sync{Initial: initial}, 0
		return nil
	}
	for _, d := range deletes {
		n := len(d.UID) + 8
		if len(cur.Upserts)+len(cur.Deletes) >= syncMaxObjects || used+n > frameBudget {
			if err := flush(false); err != nil {
				return nil, err
			}
		}
		cur.Deletes = append(cur.Deletes, d)
		used += n
	}
	for i := range upserts {
		n, err := ObjectSize(&upserts[i])
		if err != nil {
			return nil, err
		}
		if len(cur.Upserts)+len(cur.Deletes) >= syncMaxObjects || used+n > frameBudget {
			if err := flush(false); err != nil {
				return nil, err
			}
		}
		cur.Upserts = append(cur.Upserts, upserts[i])
		used += n
	}
	if err := flush(true); err != nil {
		return nil, err
	}
	return frames, nil
}
