//go:build !outpost_heapprofile

package metrics

import "net/http"

// heapProfile is nil in the default build: /debug/heap is not found.
var heapProfile func(http.ResponseWriter)
