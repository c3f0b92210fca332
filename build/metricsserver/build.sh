#!/bin/sh
# build.sh builds the pinned metrics-server from the Go module proxy into
# a cache directory keyed by version and module sums, and prints that
# directory. A finished build is reused: the directory holds a .complete
# marker.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
version=$(awk '($1 == "sigs.k8s.io/metrics-server" && $2 ~ /^v/) {print $2; exit} ($1 == "require" && $2 == "sigs.k8s.io/metrics-server") {print $3; exit}' "$here/go.mod")
[ -n "$version" ] || { echo "build.sh: cannot read the metrics-server version from $here/go.mod" >&2; exit 1; }
cache=${OUTPOST_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/outpost}
sum=$(cat "$here/go.mod" "$here/go.sum" "$0" | sha256sum | cut -c1-12)
out="$cache/metrics-server/$version-$sum"

if [ -f "$out/.complete" ]; then
	echo "$out"
	exit 0
fi
mkdir -p "$out"
cd "$here"
echo "build.sh: building metrics-server $version (first build takes minutes; cached in $out)" >&2
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X sigs.k8s.io/metrics-server/pkg/version.gitVersion=$version" \
	-o "$out/metrics-server.tmp" sigs.k8s.io/metrics-server/cmd/metrics-server
mv "$out/metrics-server.tmp" "$out/metrics-server"
touch "$out/.complete"
echo "$out"
