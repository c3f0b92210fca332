//go:build !linux

package nodeinfo

import "errors"

// The agent runs on Linux; elsewhere (a developer's laptop) storage is
// simply not reported.
func diskBytes(string) (int64, error) { return 0, errors.New("statfs: not supported on this OS") }
