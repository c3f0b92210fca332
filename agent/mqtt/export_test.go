package mqtt

// FailedAttempts is how many times c, a connection to an external broker,
// failed to make its first connection.
func FailedAttempts(c Conn) int {
	e := c.(*external)
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.attempts
}

// Match is the topic filter matching of the external broker connection.
var Match = match
