#!/usr/bin/env bash
# Runs every test of krust: the Rust workspace (unit tests, and the integration tests under
# */tests/ that start real `krust server` processes), then the Python conformance tests, if
# any exist. Dev profile throughout, the one `scripts/setup.sh` builds.
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

# Python tests drive a running cluster with the official client; they find their server
# through conformance/conftest.py (which starts one) or $KUBECONFIG.
shopt -s nullglob
py_tests=(conformance/test_*.py conformance/*_test.py tests/*.py)
if [ "${#py_tests[@]}" -gt 0 ]; then
  echo "==> python3 -m pytest ${py_tests[*]}"
  python3 -m pytest -q "${py_tests[@]}" || status=$?
else
  echo "==> no python tests yet (conformance/test_*.py)"
fi
exit "$status"
