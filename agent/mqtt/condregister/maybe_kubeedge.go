//go:build !outpost_no_kubeedge

package condregister

import _ "outpost.dev/agent/mqtt/kubeedge"
