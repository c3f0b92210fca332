package wire

import "testing"

func BenchmarkEncodeHello(b *testing.B) {
	h := sampleHello()
	var n int
	for b.Loop() {
		buf, err := Encode(TypeHello, 0, h)
		if err != nil {
			b.Fatal(err)
		}
		n = len(buf)
	}
	b.ReportMetric(float64(n), "bytes/frame")
}

func BenchmarkDecodeHello(b *testing.B) {
	buf, _ := Encode(TypeHello, 0, sampleHello())
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		f, err := Decode(buf)
		if err != nil {
			b.Fatal(err)
		}
		var h Hello
		if err := f.DecodeBody(&h); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(buf)), "bytes/frame")
}

func BenchmarkEncodeHeartbeat(b *testing.B) {
	var n int
	for b.Loop() {
		buf, err := Encode(TypeHeartbeat, 0, nil)
		if err != nil {
			b.Fatal(err)
		}
		n = len(buf)
	}
	b.ReportMetric(float64(n), "bytes/frame")
}

func BenchmarkDecodeHeartbeat(b *testing.B) {
	buf, _ := Encode(TypeHeartbeat, 0, nil)
	for b.Loop() {
		f, err := Decode(buf)
		if err != nil {
			b.Fatal(err)
		}
		if err := f.DecodeBody(&Heartbeat{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(buf)), "bytes/frame")
}
