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
// Each open device is served by one goroutine that owns it (hal devices are
// not safe for concurrent use): it polls every property at its poll
// interval, or waits for edges on a [hal.Watcher] (gpio-in), and hands each
// reading to the [Publisher] when it changed (MQTT, full rate). Upstream
// reports go through the outbox, coalesced per device (key
// "device/<namespace>/<name>"), at most once per report interval and only
// when a value moved beyond its deadband or a condition changed. Access to
// one bus (I²C, SPI controller, 1-wire) is serialised across devices. The
// outbox keeps reports by name; the [Compactor] between the outbox and the
// link sends them by the Devices' link ids where the connection allows.
//
// A device that cannot be opened or read (unknown driver, no such bus,
// NACK, wrong chip id) is reported with conditions Connected=False and
// Error=True carrying the hal error message, and retried with exponential
// backoff; the other devices keep running.
package twins
