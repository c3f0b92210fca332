package watchmux

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"mime"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/scheme"
)

// The media types a watch may answer with. Protobuf is asked for first;
// the API server answers JSON for a resource with no protobuf encoding.
const (
	mediaProtobuf = "application/vnd.kubernetes.protobuf"
	mediaJSON     = "application/json"
	acceptHeader  = mediaProtobuf + ", " + mediaJSON
)

// DefaultMaxEventSize bounds one watch event as sent (the API server
// stores objects of at most about 1.5 MiB).
const DefaultMaxEventSize = 4 << 20

// codec decodes the events of one media type with client-go's scheme.
type codec struct {
	proto  bool
	events runtime.Decoder // metav1.WatchEvent frames
	object runtime.Decoder // the object in an event
}

var (
	protoCodec = newCodec(mediaProtobuf, true)
	jsonCodec  = newCodec(mediaJSON, false)
)

func newCodec(mediaType string, proto bool) *codec {
	info, ok := runtime.SerializerInfoForMediaType(scheme.Codecs.SupportedMediaTypes(), mediaType)
	if !ok || info.StreamSerializer == nil {
		panic("watchmux: client-go's scheme has no stream serializer for " + mediaType)
	}
	return &codec{proto: proto, events: info.StreamSerializer.Serializer, object: scheme.Codecs.UniversalDeserializer()}
}

// codecFor picks the codec for a response's Content-Type.
func codecFor(contentType string) (*codec, error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return nil, fmt.Errorf("watch answered with Content-Type %q: %w", contentType, err)
	}
	switch {
	case mt == mediaProtobuf && params["stream"] == "watch":
		return protoCodec, nil
	case mt == mediaJSON:
		return jsonCodec, nil
	}
	return nil, fmt.Errorf("watch answered with Content-Type %q, neither %s;stream=watch nor %s", contentType, mediaProtobuf, mediaJSON)
}

// decode turns one framed event into a watch.Event.
func (c *codec) decode(frame []byte) (watch.Event, error) {
	var we metav1.WatchEvent
	if _, _, err := c.events.Decode(frame, nil, &we); err != nil {
		return watch.Event{}, fmt.Errorf("watch event: %w", err)
	}
	switch t := watch.EventType(we.Type); t {
	case watch.Added, watch.Modified, watch.Deleted, watch.Bookmark, watch.Error:
		obj, err := runtime.Decode(c.object, we.Object.Raw)
		if err != nil {
			return watch.Event{}, fmt.Errorf("watch event %s: object: %w", t, err)
		}
		return watch.Event{Type: t, Object: obj}, nil
	default:
		return watch.Event{}, fmt.Errorf("watch event of unknown type %q", we.Type)
	}
}

var errEventTooLarge = errors.New("watch event larger than the limit")

// splitter cuts a watch body into event frames: a 4-byte big-endian
// length before each protobuf event, a newline after each JSON one. It
// holds at most one partial event (max bytes), and nothing between
// events.
type splitter struct {
	proto bool
	max   int
	buf   []byte
}

// feed takes the next piece of the body and calls emit with each event it
// completes; the slice is valid only during the call. A frame over the
// limit or an error from emit stops it.
func (s *splitter) feed(p []byte, emit func([]byte) error) error {
	data := p
	if len(s.buf) > 0 {
		s.buf = append(s.buf, p...)
		data = s.buf
	}
	for {
		n, skip, err := s.next(data)
		if err != nil {
			return err
		}
		if n < 0 {
			break
		}
		if n > 0 {
			if err := emit(data[skip : skip+n]); err != nil {
				return err
			}
		}
		data = data[skip+n:]
		if !s.proto && len(data) > 0 {
			data = data[1:] // the newline
		}
	}
	// Keep the partial event; drop a large buffer between events.
	if len(data) == 0 {
		if cap(s.buf) > 4096 {
			s.buf = nil
		} else {
			s.buf = s.buf[:0]
		}
		return nil
	}
	if len(s.buf) > 0 {
		s.buf = append(s.buf[:0], data...) // overlapping: copy moves left
	} else {
		s.buf = append(make([]byte, 0, len(data)), data...)
	}
	return nil
}

// next finds the first frame in data: its length and offset, or n<0 when
// data holds no whole frame yet. For JSON n excludes the newline.
func (s *splitter) next(data []byte) (n, skip int, err error) {
	if s.proto {
		if len(data) < 4 {
			return -1, 0, nil
		}
		l := binary.BigEndian.Uint32(data)
		if uint64(l) > uint64(s.max) {
			return 0, 0, fmt.Errorf("%w: %d bytes, at most %d", errEventTooLarge, l, s.max)
		}
		if len(data)-4 < int(l) {
			return -1, 0, nil
		}
		return int(l), 4, nil
	}
	i := bytes.IndexByte(data, '\n')
	if i < 0 {
		if len(data) > s.max {
			return 0, 0, fmt.Errorf("%w: over %d bytes without a newline", errEventTooLarge, s.max)
		}
		return -1, 0, nil
	}
	if i > s.max {
		return 0, 0, fmt.Errorf("%w: %d bytes, at most %d", errEventTooLarge, i, s.max)
	}
	return i, 0, nil
}

// pending reports whether a partial event is held.
func (s *splitter) pending() bool { return len(s.buf) > 0 }
