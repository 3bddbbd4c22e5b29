#!/usr/bin/env bash
# Prepares this machine to build, run and test krust. Idempotent: installs only what is
# missing, then builds the krust binary (dev profile, the one the tests use) and links it
# at /usr/local/bin/krust.
#
#   scripts/setup.sh           install + build
#   scripts/setup.sh --start   ... then start `krust server` in the background
#                              (logs in $KRUST_DATA_DIR/server/logs/krust.log)
#
# Needs root for apt-get and /usr/local/bin (CI runs as root on fresh Debian 12).
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"  # rustup installs cargo here; a non-login shell may lack it

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA_DIR="${KRUST_DATA_DIR:-/var/lib/krust}"
START=0
for arg in "$@"; do
  case "$arg" in
    --start) START=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

log() { printf '==> %s\n' "$*"; }

# Debian packages krust uses now or in the next steps (container runtime, CNI, registry).
APT_PACKAGES=(
  protobuf-compiler libprotobuf-dev libseccomp-dev pkg-config busybox-static containernetworking-plugins
  iptables nftables docker-registry skopeo umoci etcd-server etcd-client netcat-openbsd
  sqlite3 curl ca-certificates python3 apache2-utils runc iproute2
)

install_apt_packages() {
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  # kubectl: any will do (the machine image may carry one); Debian's is kubernetes-client.
  command -v kubectl >/dev/null || missing+=(kubernetes-client)
  if [ "${#missing[@]}" -eq 0 ]; then
    log "apt packages: all present"
    return
  fi
  log "apt packages: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Services from these packages (etcd, docker-registry) are not wanted running by default.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_python_packages() {
  if python3 -c 'import kubernetes, pytest' 2>/dev/null; then
    log "python packages: all present"
    return
  fi
  log "python packages: installing kubernetes pytest"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore kubernetes pytest
}

build_krust() {
  log "building krust (cargo build -p krust)"
  (cd "$REPO" && cargo build -p krust)
  ln -sf "$REPO/target/debug/krust" /usr/local/bin/krust
  log "krust installed: $(command -v krust) -> $REPO/target/debug/krust"
}

start_server() {
  local logdir="$DATA_DIR/server/logs"
  mkdir -p "$logdir"
  if pgrep -x krust >/dev/null; then
    log "krust is already running (pid $(pgrep -x krust | tr '\n' ' '))"
    return
  fi
  log "starting krust server (logs: $logdir/krust.log)"
  nohup krust server --data-dir "$DATA_DIR" >>"$logdir/krust.log" 2>&1 &
  for _ in $(seq 1 100); do
    if curl -sk --max-time 1 https://127.0.0.1:6443/readyz 2>/dev/null | grep -q ok; then
      grep "ready in" "$logdir/krust.log" | tail -1
      echo "export KUBECONFIG=$DATA_DIR/server/cred/admin.kubeconfig"
      return
    fi
    sleep 0.2
  done
  echo "krust server did not become ready; see $logdir/krust.log" >&2
  tail -20 "$logdir/krust.log" >&2
  exit 1
}

install_apt_packages
install_python_packages
build_krust
if [ "$START" -eq 1 ]; then start_server; fi
