package nodes

// RenewLeaseByUID is how a session renews the Lease it took, for the tests
// against a real API server.
var RenewLeaseByUID = (*Writer).renewLease

// Quiesce keeps any more steps of s from running, and waits for the one
// running, leaving what s keeps as it is: for heap measurements. Stop
// s afterwards only if its disconnected write is wanted.
func Quiesce(s *Session) {
	s.stopped.Store(true)
	s.w.q.WaitIdle(s)
	if s.timer != nil {
		s.timer.Stop()
	}
}
