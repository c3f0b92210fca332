//go:build !outpost_no_ds18b20

package all

import _ "outpost.dev/hal/ds18b20"
