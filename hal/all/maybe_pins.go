//go:build !outpost_no_pins

package all

import _ "outpost.dev/hal/pins"
