//go:build !outpost_no_broker

package condregister

import _ "outpost.dev/agent/mqtt/broker"
