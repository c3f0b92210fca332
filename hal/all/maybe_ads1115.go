//go:build !outpost_no_ads1115

package all

import _ "outpost.dev/hal/ads1115"
