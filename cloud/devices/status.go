package devices

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"outpost.dev/wire"
)

// summaryMax bounds status.summary, a printer column.
const summaryMax = 120

// NewStatus merges report r into d's current status: reported values are
// replaced one by one (a property the report leaves out keeps its last
// value and time; one the spec no longer lists is dropped when the spec
// lists any; a value read before the one there is left out), conditions keep their lastTransitionTime while their status
// holds.
func NewStatus(d *Device, r *wire.TwinReport, now time.Time) Status {
	props := map[string]Property{}
	for _, p := range d.Spec.Properties {
		props[p.Name] = p
	}
	st := Status{Reported: map[string]Reported{}}
	for k, v := range d.Status.Reported {
		if _, listed := props[k]; listed || len(props) == 0 {
			st.Reported[k] = v
		}
	}
	for _, v := range r.Values {
		p := props[v.Name]
		at := now
		if v.At > 0 {
			at = time.UnixMilli(v.At)
		}
		if cur, ok := st.Reported[v.Name]; ok && cur.At.After(at) {
			// A newer reading is written already (by another relay
			// replica the agent moved to, or a later report).
			continue
		}
		st.Reported[v.Name] = Reported{Value: value(p.Type, v.Num), Unit: p.Unit, At: metav1.NewTime(at.UTC())}
	}
	st.Conditions = append([]metav1.Condition(nil), d.Status.Conditions...)
	for _, c := range r.Conditions {
		reason := c.Reason
		if reason == "" {
			reason = c.Type
			if c.Status == "False" {
				reason = "No" + c.Type
			}
		}
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: c.Type, Status: metav1.ConditionStatus(c.Status), Reason: conditionReason(reason),
			Message: c.Message, ObservedGeneration: d.Generation, LastTransitionTime: metav1.NewTime(now),
		})
	}
	st.Summary = summary(st.Reported)
	return st
}

// conditionReason makes s a valid metav1.Condition reason (CamelCase
// identifier).
func conditionReason(s string) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s) && len(b) < 128; i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || len(b) > 0 && (c >= '0' && c <= '9' || c == '_') {
			b = append(b, c)
		}
	}
	if len(b) == 0 {
		return "Unknown"
	}
	return string(b)
}

// summary is "humidity=45.2%RH pressure=1013.1hPa temperature=21.53°C".
func summary(rep map[string]Reported) string {
	names := make([]string, 0, len(rep))
	for k := range rep {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, k := range names {
		v := rep[k]
		var s string
		switch x := v.Value.(type) {
		case float64:
			s = strconv.FormatFloat(x, 'f', -1, 64)
			if len(s) > 8 {
				s = strconv.FormatFloat(x, 'g', 6, 64)
			}
		default:
			s = fmt.Sprint(x)
		}
		item := k + "=" + s + v.Unit
		if b.Len() > 0 {
			item = " " + item
		}
		if b.Len()+len(item) > summaryMax {
			b.WriteString(" …")
			break
		}
		b.WriteString(item)
	}
	return b.String()
}

// toJSON renders st for a patch. Values keep their JSON types.
func (st Status) toJSON() map[string]any {
	rep := make(map[string]any, len(st.Reported))
	for k, v := range st.Reported {
		m := map[string]any{"value": v.Value, "at": v.At.UTC().Format(time.RFC3339Nano)}
		if v.Unit != "" {
			m["unit"] = v.Unit
		}
		rep[k] = m
	}
	conds := make([]any, 0, len(st.Conditions))
	for _, c := range st.Conditions {
		m := map[string]any{
			"type": c.Type, "status": string(c.Status), "reason": c.Reason, "message": c.Message,
			"lastTransitionTime": c.LastTransitionTime.UTC().Format(time.RFC3339),
		}
		if c.ObservedGeneration > 0 {
			m["observedGeneration"] = c.ObservedGeneration
		}
		conds = append(conds, m)
	}
	out := map[string]any{"reported": rep, "conditions": conds}
	if st.Summary != "" {
		out["summary"] = st.Summary
	}
	return out
}
