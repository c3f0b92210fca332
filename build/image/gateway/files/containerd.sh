#!/bin/sh
# Run by init, restarted when it exits.
exec /usr/bin/containerd --config /etc/containerd/config.toml >>/var/log/containerd.log 2>&1
