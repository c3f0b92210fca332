// Package pins registers the plain GPIO drivers with hal:
//
//   - gpio-in: one input pin; property "level" (bool). Options: pull
//     (up, down, float; default: leave as is), edge (both, rising, falling,
//     none; default both). Implements hal.Watcher through WaitForEdge.
//   - gpio-out: one latched output; property "on" (bool, rw), read back
//     from the pin. Options: activeLow, initial (true/false, default false).
//   - pwm: one PWM output; properties "duty" (%, rw) and "frequency" (Hz,
//     rw). Option: frequency (default 1000). Only pins whose periph driver
//     implements PWM work; others fail at open with hal.ErrUnsupported.
package pins
