// Package twins keeps the gateway's sensors and actuators in step with the
// Devices the relay assigned to this node: data flow 3 of the architecture.
//
// The [Loop] is level-triggered. Desired devices come from the agent store
// (read again on every change signal of the desired-state applier and
// periodically); actual devices are the hal devices it holds open. New ones
// are opened on the board's buses, removed or rewired ones are closed, and
// a device whose Device changed only in its desired values keeps running
// and gets the new values written.
//
// A device has no goroutine of its own. Its work (open, with backoff
// after a failure; apply changed desired values; serve a Write; read when
// its poll is due; report) is a step, run on the goroutine of its bus
// (I²C bus, SPI controller, 1-wire bus; each GPIO pin is a bus of its
// own) when the step is due: a timer set for the next poll or retry
// (the runtime's timer heap is the schedule), new desired values, a
// Write from MQTT, or the device's removal. A bus's goroutine exists only
// while steps on it are ready; it runs them one after another, in the
// order they became ready, so access to one bus is serialised across its
// devices and no two steps of one device overlap (hal devices are not
// safe for concurrent use). A gateway with a hundred polled devices
// therefore has goroutines only for the buses with a step running, and
// none between polls. A device that waits for edges ([hal.Watcher],
// gpio-in) keeps one goroutine for that blocking Wait: the device is lent
// to it between steps, for at most 250 ms at a time (which bounds how long
// a Write or a stop waits), and an edge makes the next step read it.
//
// Buses run in parallel: a slow device (a long conversion, a bus that
// stretches its clock) delays only the devices on its own bus, each of
// which waits for the slow read in progress and then has its turn; a
// poll that comes due meanwhile is taken late, not repeated. Devices on
// other buses keep their intervals.
//
// Each reading is handed to the [Publisher] when it changed (MQTT, full
// rate). Upstream reports go through the outbox, coalesced per device
// (key "device/<namespace>/<name>"), at most once per report interval and
// only when a value moved beyond its deadband or a condition changed; a
// value held back by the interval is reported once it has passed. The
// outbox keeps reports by name; the [Compactor] between the outbox and
// the link sends them by the Devices' link ids where the connection
// allows.
//
// A device that cannot be opened or read (unknown driver, no such bus,
// NACK, wrong chip id) is reported with conditions Connected=False and
// Error=True carrying the hal error message, and retried with exponential
// backoff; the other devices keep running.
package twins
