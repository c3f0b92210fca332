//go:build outpost_heapprofile

package metrics

import (
	"net/http"
	"runtime"
	"runtime/pprof"
)

// heapProfile, in a build with the tag outpost_heapprofile only, serves
// GET /debug/heap: the live heap by allocation site after a collection, in
// pprof's format (`go tool pprof -sample_index=inuse_space`). It measures
// where the agent's heap goes (make bench-heap); the default build links
// no profiler.
var heapProfile = func(w http.ResponseWriter) {
	runtime.GC()
	w.Header().Set("Content-Type", "application/octet-stream")
	_ = pprof.Lookup("heap").WriteTo(w, 0)
}
