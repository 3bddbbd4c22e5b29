# Shared by scripts/bench-store and scripts/bench-api (sourced, not run): building, free
# loopback ports, starting servers in a temporary folder, and cleaning all of it up on exit.
# shellcheck shell=bash

export PATH="$HOME/.cargo/bin:$PATH"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ETCD_BIN="${ETCD_BIN:-/usr/bin/etcd}"
PROFILE=release
PIDS=()
BENCH_TMP=""

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Stops every process this script started (by pid, TERM then KILL) and removes the temp dir.
bench_cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  PIDS=()
  if [ -n "$BENCH_TMP" ] && [ -d "$BENCH_TMP" ]; then rm -rf "$BENCH_TMP"; fi
}

# Parses the options common to both scripts; what is left goes to the driver (BENCH_ARGS).
bench_init() {
  BENCH_ARGS=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --debug) PROFILE=debug ;;
      --quick) QUICK=1 ;;
      -h|--help) sed -n '2,/^set /p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
      *) BENCH_ARGS+=("$1") ;;
    esac
    shift
  done
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
  # Data on a real disk, as a cluster's would be: not /tmp, which may be a tmpfs.
  local parent="${KRUST_BENCH_DIR:-/var/tmp}"
  mkdir -p "$parent"
  BENCH_TMP="$(mktemp -d "$parent/krust-bench.XXXXXX")"
  local fs
  fs="$(stat -f -c %T "$BENCH_TMP")"
  case "$fs" in tmpfs|ramfs) log "warning: $BENCH_TMP is on $fs: fsync costs nothing there" ;; esac
  log "data in $BENCH_TMP ($fs)"
}

# Builds krust and the drivers; sets BIN (the drivers' folder) and KRUST (the krust binary:
# $KRUST_BIN when set, which is then not built).
bench_build() {
  [ -x "$ETCD_BIN" ] || die "$ETCD_BIN is missing: run scripts/setup.sh (it installs Debian's etcd-server)"
  local target="${CARGO_TARGET_DIR:-$REPO/target}"
  local pkgs=(-p krust-bench) flags=()
  [ -n "${KRUST_BIN:-}" ] || pkgs+=(-p krust)
  [ "$PROFILE" = release ] && flags+=(--release)
  log "building (cargo build ${flags[*]} ${pkgs[*]})"
  (cd "$REPO" && cargo build -q "${flags[@]}" "${pkgs[@]}")
  BIN="$target/$PROFILE"
  KRUST="${KRUST_BIN:-$BIN/krust}"
  [ -x "$KRUST" ] || die "no krust binary at $KRUST"
}

# A free TCP port on 127.0.0.1 (the kernel's choice; released at once, used right after).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start NAME LOGFILE CMD...: runs CMD in the background, remembered for cleanup.
start() {
  local name="$1" logfile="$2"
  shift 2
  "$@" >"$logfile" 2>&1 </dev/null &
  PIDS+=("$!")
  log "started $name (pid $!)"
}

# run_driver CMD...: runs the benchmark driver in the background and waits for it, so that
# a SIGTERM/SIGINT to this script stops it (and everything else) at once.
run_driver() {
  "$@" &
  PIDS=("$!" "${PIDS[@]}")
  wait "$!"
}

# wait_for WHAT LOGFILE CMD...: polls CMD for up to 30 s.
wait_for() {
  local what="$1" logfile="$2"
  shift 2
  for _ in $(seq 1 300); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  tail -30 "$logfile" >&2
  die "$what did not become ready"
}

# Starts a one-member etcd on loopback; sets ETCD_URL.
start_etcd() {
  local client peer
  client="$(free_port)"
  peer="$(free_port)"
  ETCD_URL="http://127.0.0.1:$client"
  start etcd "$BENCH_TMP/etcd.log" "$ETCD_BIN" --name bench \
    --data-dir "$BENCH_TMP/etcd" \
    --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "bench=http://127.0.0.1:$peer" --initial-cluster-state new \
    --initial-cluster-token krust-bench
  wait_for etcd "$BENCH_TMP/etcd.log" sh -c "curl -sf --max-time 1 $ETCD_URL/health | grep -q true"
  log "etcd $("$ETCD_BIN" --version | head -1 | awk '{print $3}') at $ETCD_URL"
}
