#!/bin/sh
# build.sh builds the pinned Kubernetes control plane (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl) from the Go module proxy
# into a cache directory keyed by version, and prints that directory.
# A finished build is reused: the directory holds a .complete marker.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
version=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$here/go.mod")
[ -n "$version" ] || { echo "build.sh: cannot read the Kubernetes version from $here/go.mod" >&2; exit 1; }
cache=${OUTPOST_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/outpost}
sum=$(cat "$here/go.mod" "$here/go.sum" "$here/etcd/main.go" "$0" | sha256sum | cut -c1-12)
out="$cache/controlplane/$version-$sum"

if [ -f "$out/.complete" ]; then
	echo "$out"
	exit 0
fi
mkdir -p "$out"
major=$(echo "$version" | sed 's/^v\([0-9]*\)\..*/\1/')
minor=$(echo "$version" | sed 's/^v[0-9]*\.\([0-9]*\)\..*/\1/')
vpkg=k8s.io/component-base/version
cvpkg=k8s.io/client-go/pkg/version
ldflags="-s -w"
for p in $vpkg $cvpkg; do
	ldflags="$ldflags -X $p.gitVersion=$version -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done
cd "$here"
for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
	if [ ! -x "$out/$cmd" ]; then
		echo "build.sh: building $cmd $version (first build takes minutes; cached in $out)" >&2
		CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
		mv "$out/$cmd.tmp" "$out/$cmd"
	fi
done
if [ ! -x "$out/etcd" ]; then
	echo "build.sh: building etcd" >&2
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/etcd.tmp" ./etcd
	mv "$out/etcd.tmp" "$out/etcd"
fi
touch "$out/.complete"
echo "$out"
