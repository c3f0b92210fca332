package nodes

// KeptLease is what a session keeps of the Lease it wrote, for the tests
// against a real API server.
var KeptLease = keptLease
