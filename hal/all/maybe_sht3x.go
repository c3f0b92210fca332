//go:build !outpost_no_sht3x

package all

import _ "outpost.dev/hal/sht3x"
