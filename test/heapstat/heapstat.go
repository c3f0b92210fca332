// Package heapstat reads the Go heap for the memory benchmarks: what
// live objects hold once the garbage is collected, so that the bytes a
// structure keeps are the difference of two readings.
package heapstat

import "runtime"

// Live is the heap's live bytes: runtime.MemStats.HeapAlloc after two
// collections (the second frees what finalizers of the first let go).
func Live() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// LiveWithStacks is Live plus the goroutine stacks in use, for what
// holds goroutines too.
func LiveWithStacks() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc + ms.StackInuse
}
