package wire

import "testing"

// FuzzDecode feeds arbitrary bytes to the frame and body decoders. Nothing
// may panic, and whatever decodes and validates must re-encode.
func FuzzDecode(f *testing.F) {
	for _, c := range []struct {
		t Type
		b Body
	}{
		{TypeHello, sampleHello()},
		{TypeHelloAck, &HelloAck{Version: 1, NodeName: "n", HeartbeatSeconds: 10}},
		{TypeHeartbeat, nil},
		{TypeError, &Error{Code: CodeMalformed, Reason: "x"}},
		{TypeNodeStatus, &NodeStatus{Node: sampleHello().Node}},
		{TypeSync, sampleSync()},
		{TypePodStatus, samplePodStatus()},
		{TypeTwinReport, sampleTwin()},
		{TypeStreamOpen, &StreamOpen{ID: 1, Namespace: "ns", Pod: "p", Follow: true, TailLines: 10}},
		{TypeStreamData, &StreamData{ID: 1, Data: []byte("hello\n")}},
	} {
		b, err := Encode(c.t, 7, c.b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0xa2, 0x01, 0x01, 0x04, 0x5a, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := Decode(data)
		if err != nil {
			return
		}
		bodies := []Body{&Hello{}, &HelloAck{}, &Heartbeat{}, &Error{}, &NodeStatus{}, &Ack{}, &Sync{}, &PodStatus{}, &StreamOpen{}, &StreamData{}, &StreamAck{}, &TwinReport{}}
		for _, b := range bodies {
			if fr.DecodeBody(b) == nil {
				if _, err := Encode(fr.Type, fr.Seq, b); err != nil {
					t.Fatalf("valid %T does not re-encode: %v", b, err)
				}
			}
		}
	})
}
