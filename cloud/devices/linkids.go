package devices

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"outpost.dev/wire"
)

// Link ids. Each connection gives every Device object it syncs a small
// number (wire.Object.LinkID), and the agent's twin reports on that
// connection may name the Device by it, its values by index into the
// property list of that object, and leave out conditions that did not
// change since the last report with that id (see wire.TwinReport).
//
// An id names one Device UID at one generation (the property list the
// indexes refer to), and a number is never given to anything else on the
// connection. The object's Version is "generation.id", so the agent's hello
// says which ids it holds: the next connection (to this relay or another
// replica) keeps them, and sends nothing again for them, when the Device
// is still at that generation; other ids start above every held one. The
// agent uses ids only after the initial sync of its current connection,
// so its ids and the relay's agree.
const (
	// idHistory bounds how many ids of one Device (its generations on
	// this connection) stay resolvable: a report made before the agent
	// applied the newer object still resolves.
	idHistory = 8
)

// Errors of Expand; a report that fails is dropped for good (and logged).
var (
	ErrUnknownLinkID = errors.New("unknown link id on this connection")
	ErrBadIndex      = errors.New("property index out of range for the link id")
)

// linkEntry is what one link id names.
type linkEntry struct {
	uid, key string
	props    []string
	// conds are the conditions last reported with this id.
	conds []wire.Condition
}

type heldID struct {
	gen string
	id  uint32
}

// Adopt takes the link ids the agent holds from its hello (versions
// "generation.id" of Device objects). Call it before the first Objects.
func (n *NodeDevices) Adopt(held []wire.ObjectVersion) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, v := range held {
		if v.Kind != wire.KindDevice {
			continue
		}
		gen, id, ok := parseVersion(v.Version)
		if !ok || id == 0 {
			continue
		}
		n.held[v.UID] = heldID{gen, id}
		n.nextID = max(n.nextID, id)
	}
}

// linkID returns the id of uid at generation gen, making one (0 when the
// numbers ran out) and registering what it names. Called under n.mu.
func (n *NodeDevices) linkID(uid, gen string, o *wire.Object) uint32 {
	var id uint32
	if h, ok := n.held[uid]; ok && h.gen == gen && n.ids[h.id] == nil {
		id = h.id
	} else if n.nextID < wire.MaxLinkID {
		n.nextID++
		id = n.nextID
	}
	delete(n.held, uid)
	if id == 0 {
		return 0
	}
	props := make([]string, len(o.Device.Properties))
	for i, p := range o.Device.Properties {
		props[i] = p.Name
	}
	n.ids[id] = &linkEntry{uid: uid, key: o.Namespace + "/" + o.Name, props: props}
	hist := append(n.byUID[uid], id)
	for len(hist) > idHistory {
		delete(n.ids, hist[0])
		hist = hist[1:]
	}
	n.byUID[uid] = hist
	return id
}

// forget drops every id of uid (gone from the node). Called under n.mu.
func (n *NodeDevices) forget(uid string) {
	for _, id := range n.byUID[uid] {
		delete(n.ids, id)
	}
	delete(n.byUID, uid)
}

// Expand turns a report by link id into the report by name it stands for,
// in place: the Device's namespace/name, values by property name dated
// from arrived, and the conditions last reported with the id when it
// carries none. It returns the UID the id names, which the caller checks
// against the Device it writes. A report by name is returned unchanged.
func (n *NodeDevices) Expand(r *wire.TwinReport, arrived time.Time) (uid string, err error) {
	if r.ID == 0 {
		return "", nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	e := n.ids[r.ID]
	if e == nil {
		return "", fmt.Errorf("%w: %d", ErrUnknownLinkID, r.ID)
	}
	for _, v := range r.Short {
		if int(v.Index) >= len(e.props) {
			return "", fmt.Errorf("%w %d: index %d, %s lists %d properties", ErrBadIndex, r.ID, v.Index, e.key, len(e.props))
		}
	}
	now := arrived.UnixMilli()
	for _, v := range r.Short {
		at := now - int64(v.Age)
		if at <= 0 {
			at = 1
		}
		r.Values = append(r.Values, wire.TwinValue{Name: e.props[v.Index], Num: v.Num, At: at})
	}
	if len(r.Conditions) > 0 {
		e.conds = append([]wire.Condition(nil), r.Conditions...)
	} else {
		r.Conditions = append([]wire.Condition(nil), e.conds...)
	}
	r.Device, r.ID, r.Short = e.key, 0, nil
	return e.uid, nil
}

// objectVersion is the Version of a Device object: its generation, and
// its link id when it has one.
func objectVersion(gen string, id uint32) string {
	if id == 0 {
		return gen
	}
	return gen + "." + strconv.FormatUint(uint64(id), 10)
}

// parseVersion splits an objectVersion; ok is false for anything else.
func parseVersion(v string) (gen string, id uint32, ok bool) {
	gen, ids, dotted := strings.Cut(v, ".")
	if _, err := strconv.ParseUint(gen, 10, 63); err != nil {
		return "", 0, false
	}
	if !dotted {
		return gen, 0, true
	}
	n, err := strconv.ParseUint(ids, 10, 32)
	if err != nil || n == 0 || n > wire.MaxLinkID {
		return "", 0, false
	}
	return gen, uint32(n), true
}
