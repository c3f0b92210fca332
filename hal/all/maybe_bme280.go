//go:build !outpost_no_bme280

package all

import _ "outpost.dev/hal/bme280"
