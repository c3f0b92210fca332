//go:build !outpost_no_mcp3008

package all

import _ "outpost.dev/hal/mcp3008"
