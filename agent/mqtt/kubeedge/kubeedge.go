// Package kubeedge lets the agent also speak KubeEdge's device-twin MQTT
// topics, so apps written against KubeEdge's EventBus can move over
// unchanged. It registers the "kubeedge" dialect with
// outpost.dev/agent/mqtt when linked (enable it with mqtt.kubeEdge: true);
// build with the tag outpost_no_kubeedge to leave it out.
//
// KubeEdge names a device by its name alone, so <device> below is the
// Device's name; a name used in two namespaces on one node is ambiguous
// and refused.
//
//	$hw/events/device/<device>/twin/update/document  published on every change
//	$hw/events/device/<device>/twin/update           apps publish expected values
//	$hw/events/device/<device>/twin/update/result    the values after the update
//	$hw/events/device/<device>/twin/get              apps ask for the twin
//	$hw/events/device/<device>/twin/get/result       the twin
//	$hw/events/device/<device>/state/update          {"state":"online"|"offline"}
//
// Values travel as strings, as in KubeEdge ("21.5", "true").
package kubeedge

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"outpost.dev/agent/mqtt"
	"outpost.dev/agent/twins"
)

func init() {
	mqtt.RegisterDialect("kubeedge", func(b *mqtt.Bridge) mqtt.Dialect {
		return &dialect{b: b, last: map[twins.Ref]twins.State{}}
	})
}

const prefix = "$hw/events/device/"

type dialect struct {
	b    *mqtt.Bridge
	mu   sync.Mutex
	last map[twins.Ref]twins.State
}

type meta struct {
	Timestamp int64 `json:"timestamp,omitempty"`
}

type value struct {
	Value    *string `json:"value,omitempty"`
	Metadata *meta   `json:"metadata,omitempty"`
}

type twinProp struct {
	Expected *value `json:"expected,omitempty"`
	Actual   *value `json:"actual,omitempty"`
	Optional *bool  `json:"optional,omitempty"`
	Metadata *struct {
		Type string `json:"type"`
	} `json:"metadata,omitempty"`
}

type event struct {
	EventID   string               `json:"event_id"`
	Timestamp int64                `json:"timestamp"`
	Twin      map[string]*twinProp `json:"twin,omitempty"`
}

type docProp struct {
	Last    *twinProp `json:"last"`
	Current *twinProp `json:"current"`
}

type document struct {
	EventID   string              `json:"event_id"`
	Timestamp int64               `json:"timestamp"`
	Twin      map[string]*docProp `json:"twin"`
}

func (d *dialect) Start() error {
	if err := d.b.Subscribe(prefix+"+/twin/update", d.update); err != nil {
		return err
	}
	return d.b.Subscribe(prefix+"+/twin/get", d.get)
}

func actual(r twins.Reading) *twinProp {
	s := string(mqtt.PlainValue(r))
	typ := "float"
	switch r.Type {
	case "bool":
		typ = "boolean"
	case "int":
		typ = "int"
	}
	p := &twinProp{Actual: &value{Value: &s, Metadata: &meta{Timestamp: r.At.UnixMilli()}}}
	p.Metadata = &struct {
		Type string `json:"type"`
	}{typ}
	return p
}

func (d *dialect) Publish(s twins.State) {
	d.mu.Lock()
	prev, had := d.last[s.Ref]
	d.last[s.Ref] = s
	d.mu.Unlock()
	if !had || prev.Connected != s.Connected {
		st := "offline"
		if s.Connected {
			st = "online"
		}
		d.pub(prefix+s.Name+"/state/update", map[string]any{"event_id": "", "timestamp": time.Now().UnixMilli(), "state": st})
	}
	if len(s.Changed) == 0 {
		return
	}
	doc := document{Timestamp: time.Now().UnixMilli(), Twin: map[string]*docProp{}}
	for _, r := range s.Values {
		if !contains(s.Changed, r.Name) {
			continue
		}
		dp := &docProp{Current: actual(r)}
		for _, p := range prev.Values {
			if p.Name == r.Name {
				dp.Last = actual(p)
			}
		}
		doc.Twin[r.Name] = dp
	}
	d.pub(prefix+s.Name+"/twin/update/document", doc)
}

func (d *dialect) Remove(ref twins.Ref) {
	d.mu.Lock()
	delete(d.last, ref)
	d.mu.Unlock()
	d.pub(prefix+ref.Name+"/state/update", map[string]any{"event_id": "", "timestamp": time.Now().UnixMilli(), "state": "offline"})
}

func (d *dialect) pub(topic string, v any) {
	b, _ := json.Marshal(v)
	d.b.PublishRaw(topic, b, false)
}

func deviceOf(topic, suffix string) string {
	return strings.TrimSuffix(strings.TrimPrefix(topic, prefix), suffix)
}

func (d *dialect) lookup(topic, name string) (twins.Ref, bool) {
	ref, ok := d.b.Lookup(name)
	if !ok {
		d.b.Reject(topic, nil, fmt.Errorf("no single device named %q on this node", name))
	}
	return ref, ok
}

// update takes expected values: {"event_id":…,"twin":{"on":{"expected":{"value":"true"}}}}.
func (d *dialect) update(topic string, payload []byte) {
	name := deviceOf(topic, "/twin/update")
	ref, ok := d.lookup(topic, name)
	if !ok {
		return
	}
	var ev event
	if err := json.Unmarshal(payload, &ev); err != nil {
		d.b.Reject(topic, &ref, fmt.Errorf("twin update is not JSON: %v", err))
		return
	}
	res := event{EventID: ev.EventID, Timestamp: time.Now().UnixMilli(), Twin: map[string]*twinProp{}}
	for prop, tp := range ev.Twin {
		if tp == nil || tp.Expected == nil || tp.Expected.Value == nil {
			d.b.Reject(topic, &ref, fmt.Errorf("twin %s: only expected values can be set; Outpost reads actual values from the device itself", prop))
			continue
		}
		x, err := parse(*tp.Expected.Value)
		if err != nil {
			d.b.Reject(topic, &ref, fmt.Errorf("twin %s: %w", prop, err))
			continue
		}
		if d.b.Write(topic, ref, prop, x) == nil {
			res.Twin[prop] = &twinProp{Expected: tp.Expected}
		}
	}
	d.mu.Lock()
	s := d.last[ref]
	d.mu.Unlock()
	for _, r := range s.Values {
		if tp := res.Twin[r.Name]; tp != nil {
			tp.Actual = actual(r).Actual
		}
	}
	d.pub(prefix+name+"/twin/update/result", res)
}

func (d *dialect) get(topic string, payload []byte) {
	name := deviceOf(topic, "/twin/get")
	ref, ok := d.lookup(topic, name)
	if !ok {
		return
	}
	var ev event
	_ = json.Unmarshal(payload, &ev) // the event id is all that is used
	d.mu.Lock()
	s := d.last[ref]
	d.mu.Unlock()
	res := event{EventID: ev.EventID, Timestamp: time.Now().UnixMilli(), Twin: map[string]*twinProp{}}
	for _, r := range s.Values {
		res.Twin[r.Name] = actual(r)
	}
	d.pub(prefix+name+"/twin/get/result", res)
}

// parse reads a KubeEdge twin value: a string holding a number or a
// boolean.
func parse(s string) (any, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "on":
		return true, nil
	case "false", "off":
		return false, nil
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil {
		return nil, errors.New("expected value " + strconv.Quote(s) + " is not a number or true/false")
	}
	return f, nil
}

func contains(s []string, x string) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}
