package nodes

// KeptNode and KeptLease are what a session keeps of its writes, for the
// tests against a real API server.
var (
	KeptNode  = keptNode
	KeptLease = keptLease
)
