#!/usr/bin/env bash
# Runs the API test suite (the ported T1 conformance tests) against krust server on each
# datastore: embedded SQLite (in scripts/test.sh already), a single real etcd, and a
# three-member etcd cluster that loses a member partway through. Everything on loopback.
#
#   scripts/test-backends.sh            both etcd topologies
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
KRUST_BIN="${KRUST_BIN:-$REPO/target/debug/krust}"
ETCD="${ETCD:-/usr/bin/etcd}"
if [ ! -x "$ETCD" ]; then
  echo "SKIPPED: $ETCD is missing (scripts/setup.sh installs etcd-server)"; exit 0
fi
WORK="$(mktemp -d /tmp/krust-backends.XXXXXX)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_cluster N: starts N etcd members; sets CLIENT_URLS (comma-separated) and MEMBER_PIDS.
start_cluster() {
  local n=$1 cluster="" i
  local -a names clients peers
  for i in $(seq 1 "$n"); do
    names[$i]="m$i"; clients[$i]="http://127.0.0.1:$(free_port)"; peers[$i]="http://127.0.0.1:$(free_port)"
    cluster+="${cluster:+,}m$i=${peers[$i]}"
  done
  CLIENT_URLS=""; MEMBER_PIDS=()
  for i in $(seq 1 "$n"); do
    "$ETCD" --name "${names[$i]}" --data-dir "$WORK/etcd-$n-$i" \
      --listen-client-urls "${clients[$i]}" --advertise-client-urls "${clients[$i]}" \
      --listen-peer-urls "${peers[$i]}" --initial-advertise-peer-urls "${peers[$i]}" \
      --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token "t$n" \
      >"$WORK/etcd-$n-$i.log" 2>&1 &
    PIDS+=($!); MEMBER_PIDS+=($!)
    CLIENT_URLS+="${CLIENT_URLS:+,}${clients[$i]}"
  done
  for _ in $(seq 1 100); do
    if ETCDCTL_API=3 etcdctl --endpoints="$CLIENT_URLS" endpoint health >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "etcd cluster of $n did not become healthy"; tail -20 "$WORK"/etcd-$n-*.log; return 1
}

status=0
echo "==> conformance T1 on a single etcd"
start_cluster 1
python3 conformance/run.py --start-server --krust-bin "$KRUST_BIN" --tier T1 \
  --server-arg="--datastore-endpoint=$CLIENT_URLS" || status=$?

echo "==> conformance T1 on a three-member etcd cluster, one member killed after 20 s"
start_cluster 3
( sleep 20; echo "==> killing etcd member m1 (pid ${MEMBER_PIDS[0]})"; kill -9 "${MEMBER_PIDS[0]}" ) &
PIDS+=($!)
python3 conformance/run.py --start-server --krust-bin "$KRUST_BIN" --tier T1 \
  --server-arg="--datastore-endpoint=$CLIENT_URLS" || status=$?
exit "$status"
