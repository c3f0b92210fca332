// Package bench holds benchmarks that need the real pieces running: the
// relay's memory per connected agent and the agent's resident memory. Run
// them with the make bench-* targets; they print figures, they assert none.
package bench
