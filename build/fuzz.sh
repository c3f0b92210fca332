#!/bin/bash
# build/fuzz.sh FUZZTIME: run every fuzz target of the module for FUZZTIME
# each (make fuzz). A target fails the run when it finds a failing input
# (go test writes it under the package's testdata/fuzz/<target>/).
#
# One failure is not the target's: with a duration -fuzztime, Go's fuzzing
# coordinator before Go 1.27 can report "context deadline exceeded" as the
# time runs out, when a worker is still finishing its last input (a race
# in internal/fuzz, fixed in Go 1.27). That case writes no input and the
# target's output ends in that one line; it is reported as such and the
# run goes on. A hang or a crash writes its input, so it still fails.
set -euo pipefail
fuzztime=${1:-10s}
go=${GO:-go}
for pkg in $($go list ./...); do
	dir=$($go list -f '{{.Dir}}' "$pkg")
	for f in $($go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
		echo "fuzz $pkg $f ($fuzztime)"
		corpus="$dir/testdata/fuzz/$f"
		before=$(ls "$corpus" 2>/dev/null || true)
		out=$(mktemp)
		if CGO_ENABLED=1 $go test -run '^$' -fuzz "^$f\$" -fuzztime "$fuzztime" "$pkg" 2>&1 | tee "$out"; then
			rm -f "$out"
			continue
		fi
		after=$(ls "$corpus" 2>/dev/null || true)
		if [ "$before" = "$after" ] && ! grep -q 'Failing input written' "$out" &&
			[ "$(grep -A1 -- "^--- FAIL: $f " "$out" | tail -1)" = "    context deadline exceeded" ]; then
			echo "fuzz $pkg $f: no failing input; \"context deadline exceeded\" as the time ran out is the fuzzing coordinator's race (Go before 1.27), not the target's"
			rm -f "$out"
			continue
		fi
		rm -f "$out"
		exit 1
	done
done
