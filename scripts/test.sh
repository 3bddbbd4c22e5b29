#!/usr/bin/env bash
# Runs every test of krust: the Rust workspace (unit tests, and the integration tests under
# */tests/ that start real `krust server` processes), then the Python client tests under
# krust/tests/python (the official `kubernetes` client against a `krust server` they start),
# then the ported upstream conformance tests of tier T1 (conformance/run.py).
# Dev profile throughout, the one `scripts/setup.sh` builds.
#
#   scripts/test.sh            everything
#   scripts/test.sh -- ARGS    extra arguments for `cargo test` (e.g. a test name filter)
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"  # rustup installs cargo here; a non-login shell may lack it

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
CARGO_ARGS=()
if [ "${1:-}" = "--" ]; then shift; CARGO_ARGS=("$@"); fi

# --no-fail-fast: one failing crate must not hide the results of the others.
status=0
echo "==> cargo test --workspace --no-fail-fast"
cargo test --workspace --no-fail-fast "${CARGO_ARGS[@]}" || status=$?

# The Python tests start `krust server` from $KRUST_BIN, by default the dev build of this
# tree: `cargo build` is a no-op after the cargo tests, and keeps a stale binary out.
if [ -z "${KRUST_BIN:-}" ]; then
  echo "==> cargo build -p krust"
  cargo build -p krust || status=$?
  export KRUST_BIN="${CARGO_TARGET_DIR:-$REPO/target}/debug/krust"
fi
echo "==> python3 -m pytest -q krust/tests/python"
python3 -m pytest -q krust/tests/python || status=$?
# Upstream's conformance tests of tiers T1 (API server alone) and T2 (controllers), ported under their
# exact names (conformance/README.md); regenerates docs/conformance.md.
echo "==> python3 conformance/run.py --start-server --tier T1 --tier T2 --tier AUTH --report docs/conformance.md"
python3 conformance/run.py --start-server --krust-bin "$KRUST_BIN" --tier T1 --tier T2 --tier AUTH --report docs/conformance.md || status=$?
# The same API suite on real etcd: one member, then three with one killed mid-run.
echo "==> scripts/test-backends.sh"
KRUST_BIN="$KRUST_BIN" scripts/test-backends.sh || status=$?
exit "$status"
