package watchmux

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/scheme"
)

func framed(t testing.TB, typ watch.EventType, obj runtime.Object) []byte {
	var raw bytes.Buffer
	if err := protobuf.NewSerializer(scheme.Scheme, scheme.Scheme).Encode(obj, &raw); err != nil {
		t.Fatal(err)
	}
	we := &metav1.WatchEvent{Type: string(typ), Object: runtime.RawExtension{Raw: raw.Bytes()}}
	b, err := we.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...)
}

func pod(name string) *corev1.Pod {
	return &corev1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}, ObjectMeta: metav1.ObjectMeta{Name: name, ResourceVersion: "7"}}
}

// collect feeds body to a splitter in pieces of size step and decodes
// every event.
func collect(s *splitter, c *codec, body []byte, step int) ([]watch.Event, error) {
	var out []watch.Event
	for len(body) > 0 {
		n := min(step, len(body))
		err := s.feed(body[:n], func(frame []byte) error {
			ev, err := c.decode(frame)
			if err != nil {
				return err
			}
			out = append(out, ev)
			return nil
		})
		if err != nil {
			return out, err
		}
		body = body[n:]
	}
	return out, nil
}

func TestSplitAndDecode(t *testing.T) {
	two := append(framed(t, watch.Added, pod("a")), framed(t, watch.Deleted, pod("b"))...)
	jsonTwo := []byte(`{"type":"ADDED","object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"}}}` + "\n\n" +
		`{"type":"DELETED","object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"b"}}}` + "\n")
	tooLong := binary.BigEndian.AppendUint32(nil, 1<<30)
	for _, tc := range []struct {
		name    string
		codec   *codec
		body    []byte
		max     int
		want    []string // type/name
		wantErr error
		pending bool
	}{
		{"protobuf", protoCodec, two, 1 << 20, []string{"ADDED/a", "DELETED/b"}, nil, false},
		{"protobuf, half an event", protoCodec, two[:len(two)-3], 1 << 20, []string{"ADDED/a"}, nil, true},
		{"json", jsonCodec, jsonTwo, 1 << 20, []string{"ADDED/a", "DELETED/b"}, nil, false},
		{"protobuf length over the limit", protoCodec, tooLong, 1 << 20, nil, errEventTooLarge, false},
		{"protobuf event over the limit", protoCodec, two, 20, nil, errEventTooLarge, false},
		{"json line over the limit", jsonCodec, bytes.Repeat([]byte{' '}, 100), 50, nil, errEventTooLarge, false},
		{"not an event", protoCodec, []byte{0, 0, 0, 2, 0xff, 0xff}, 1 << 20, nil, nil, false},
		{"unknown type", jsonCodec, []byte(`{"type":"EXPLODED","object":{}}` + "\n"), 1 << 20, nil, nil, false},
	} {
		for _, step := range []int{1, 7, 1 << 20} {
			s := &splitter{proto: tc.codec.proto, max: tc.max}
			evs, err := collect(s, tc.codec, tc.body, step)
			var got []string
			for _, ev := range evs {
				got = append(got, string(ev.Type)+"/"+ev.Object.(*corev1.Pod).Name)
			}
			switch {
			case tc.want == nil && err == nil:
				t.Errorf("%s (step %d): no error, events %v", tc.name, step, got)
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Errorf("%s (step %d): error %v, want %v", tc.name, step, err, tc.wantErr)
			case tc.want != nil && err != nil:
				t.Errorf("%s (step %d): %v", tc.name, step, err)
			case tc.want != nil && (len(got) != len(tc.want) || s.pending() != tc.pending):
				t.Errorf("%s (step %d): events %v pending %v, want %v pending %v", tc.name, step, got, s.pending(), tc.want, tc.pending)
			}
			for i := range min(len(got), len(tc.want)) {
				if got[i] != tc.want[i] {
					t.Errorf("%s (step %d): event %d is %s, want %s", tc.name, step, i, got[i], tc.want[i])
				}
			}
		}
	}
}

// FuzzDecoder feeds arbitrary watch bodies, cut at arbitrary points, to
// both framings, and as the body of an error answer: no panic, no event
// over the limit held, always an error for an error answer.
func FuzzDecoder(f *testing.F) {
	f.Add(framed(f, watch.Added, pod("a")), uint8(3), true)
	f.Add([]byte(`{"type":"ADDED","object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"}}}`+"\n"), uint8(5), false)
	f.Add([]byte(`{"type":"ERROR","object":{"apiVersion":"v1","kind":"Status","code":410}}`+"\n"), uint8(200), false)
	f.Add([]byte{0, 0, 0, 1, 0}, uint8(1), true)
	f.Fuzz(func(t *testing.T, body []byte, step uint8, proto bool) {
		c := jsonCodec
		if proto {
			c = protoCodec
		}
		if statusError(500, body[:min(len(body), maxErrorBody)]) == nil {
			t.Fatal("an error answer decoded to no error")
		}
		const max = 4096
		s := &splitter{proto: proto, max: max}
		for len(body) > 0 {
			n := min(int(step)+1, len(body))
			err := s.feed(body[:n], func(frame []byte) error {
				if len(frame) > max {
					t.Fatalf("a %d-byte frame passed the %d limit", len(frame), max)
				}
				_, err := c.decode(frame)
				return err
			})
			if err != nil {
				return
			}
			if len(s.buf) > max+4 {
				t.Fatalf("%d bytes held, limit %d", len(s.buf), max)
			}
			body = body[n:]
		}
	})
}
