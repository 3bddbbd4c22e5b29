#!/usr/bin/env python3
"""Runs krust's ports of the upstream Kubernetes conformance tests (the v1.32 list in
conformance/conformance-tiers.tsv) against a cluster.

    python3 conformance/run.py --start-server [--krust-bin PATH] [--tier T1] [--focus REGEX]
                               [--report docs/conformance.md]
    python3 conformance/run.py --kubeconfig PATH ...      (or $KUBECONFIG)

Prints one line per test of the list, in its order: PASS / FAIL (with a short reason) /
NOT PORTED, then `N passed, M failed, K not ported`. Exits non-zero iff a ported test failed
that is not listed in known-failures.txt (a missing feature), or a listed one passed.
"""

import argparse
import collections
import importlib
import os
import pkgutil
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from conformance import framework  # noqa: E402
from conformance.framework import REGISTRY, Cluster, Framework  # noqa: E402

TSV = HERE / "conformance-tiers.tsv"
# Upstream sig-auth e2e tests outside the conformance list that exercise authorization
# (tier AUTH), ported the same way.
AUTH_TSV = HERE / "auth-tests.tsv"
AREAS = ["apimachinery", "apps", "auth", "cli", "instrumentation", "network", "node",
         "scheduling", "storage"]
TEST_TIMEOUT = 120  # seconds a single test may take before it is reported as failed
READY_TIMEOUT = 60


def load_tests():
    for area in AREAS:
        pkg = HERE / area
        if not pkg.is_dir():
            continue
        for mod in sorted(pkgutil.iter_modules([str(pkg)]), key=lambda m: m.name):
            importlib.import_module(f"conformance.{area}.{mod.name}")


def read_list():
    rows = []
    for path in (TSV, AUTH_TSV):
        with open(path) as f:
            header = f.readline().rstrip("\n").split("\t")
            for line in f:
                if not line.strip():
                    continue
                rows.append(dict(zip(header, line.rstrip("\n").split("\t"))))
    return rows


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `krust server` on a free loopback port with a temporary data dir."""

    def __init__(self, binary, extra=()):
        self.data_dir = tempfile.mkdtemp(prefix="krust-conformance-")
        self.port = free_port()
        self.log_path = os.path.join(self.data_dir, "krust.log")
        log = open(self.log_path, "ab")
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"))
        self.proc = subprocess.Popen(
            [binary, "server", "--bind-address", "127.0.0.1", "--https-listen-port", str(self.port),
             "--data-dir", self.data_dir, "--disable-agent", *extra],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.kubeconfig = os.path.join(self.data_dir, "server", "cred", "admin.kubeconfig")
        self._wait_ready()

    def _wait_ready(self):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"krust server exited ({self.proc.returncode}); log:\n"
                                   + open(self.log_path, errors="replace").read()[-3000:])
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{self.port}/readyz", context=ctx,
                                            timeout=2) as r:
                    if r.status == 200 and os.path.exists(self.kubeconfig):
                        return
            except Exception:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("krust server not ready in time")
            time.sleep(0.1)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def sig_of(codename):
    m = re.match(r"\[(sig-[a-z-]+)\]", codename)
    return m.group(1) if m else "?"


def run_one(cluster, fn, codename):
    """Runs one test in its own namespace; returns None on success, else a reason."""
    base = re.sub(r"[^a-z0-9]+", "-", fn.__name__.lower()).strip("-")[:40] or "e2e"
    f = Framework(cluster, base)
    result = {}

    def body():
        try:
            f.setup()
            fn(f)
        except BaseException as e:  # noqa: BLE001 - reported as the test's failure
            result["err"] = e
            result["tb"] = traceback.format_exc()
        finally:
            f.teardown()

    t = threading.Thread(target=body, daemon=True)
    t.start()
    limit = getattr(fn, "timeout", None) or TEST_TIMEOUT
    t.join(limit)
    if t.is_alive():
        return f"timed out after {limit}s", None
    if "err" in result:
        e = result["err"]
        return (f"{type(e).__name__}: {e}".replace("\n", " ")[:400]), result["tb"]
    return None, None


def write_report(path, rows, results):
    counts = collections.defaultdict(lambda: collections.Counter())
    for row in rows:
        st = results[row["codename"]][0]
        counts[("sig", sig_of(row["codename"]))][st] += 1
        counts[("tier", row["tier"])][st] += 1
    lines = [
        "# Conformance",
        "",
        "Upstream Kubernetes conformance tests (the v1.32 list, `conformance/conformance-tiers.tsv`;",
        "tiers explained in `conformance/tiers.md`; tier AUTH: upstream sig-auth e2e tests outside",
        "that list which exercise authorization, `conformance/auth-tests.tsv`) ported to Python under",
        "their exact upstream names and run against a `krust server` by `conformance/run.py`. Generated by",
        "`python3 conformance/run.py " + " ".join(a for a in sys.argv[1:] if not a.startswith("/")) + "`; do not edit.",
        "",
    ]
    for kind in ("tier", "sig"):
        lines += [f"| {kind} | passed | failed | not ported | total |", "|---|---|---|---|---|"]
        for (k, name), c in sorted(counts.items()):
            if k != kind:
                continue
            lines.append(f"| {name} | {c['PASS']} | {c['FAIL']} | {c['NOT PORTED']} | {sum(c.values())} |")
        lines.append("")
    lines += ["| test | tier | status |", "|---|---|---|"]
    for row in rows:
        st, reason = results[row["codename"]]
        name = row["codename"].replace("|", "\\|")
        cell = st if st != "FAIL" else f"FAIL: {reason}".replace("|", "\\|")
        lines.append(f"| {name} | {row['tier']} | {cell} |")
    Path(path).write_text("\n".join(lines) + "\n")


KNOWN_FAILURES = Path(__file__).resolve().parent / "known-failures.txt"


def read_known_failures():
    """Ported tests that fail for a feature krust does not have yet, one codename per line,
    each after a `# why` comment. They still count as failed in the report; they do not fail
    the run. A listed test that passes fails the run, so the list cannot go stale."""
    if not KNOWN_FAILURES.exists():
        return set()
    return {l.strip() for l in KNOWN_FAILURES.read_text().splitlines() if l.strip() and not l.startswith("#")}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kubeconfig", help="kubeconfig of the cluster under test (default $KUBECONFIG)")
    ap.add_argument("--start-server", action="store_true", help="start a krust server for the run")
    ap.add_argument("--krust-bin", default=None, help="krust binary (default $KRUST_BIN or target/debug/krust)")
    ap.add_argument("--tier", action="append", help="only tests of this tier (repeatable)")
    ap.add_argument("--focus", help="only tests whose codename matches this regex")
    ap.add_argument("--report", help="write a markdown report here")
    ap.add_argument("--server-arg", action="append", default=[],
                    help="extra flag for the started krust server (repeatable), e.g. "
                         "--server-arg=--datastore-endpoint=http://127.0.0.1:2379; servers that "
                         "single tests start for themselves keep their defaults")
    ap.add_argument("-v", "--verbose", action="store_true", help="print tracebacks of failures")
    args = ap.parse_args()

    load_tests()
    rows = read_list()
    known = {r["codename"] for r in rows}
    stray = [c for c in REGISTRY if c not in known]
    if stray:
        sys.exit(f"ported tests with codenames not in the list: {stray}")
    if args.tier:
        rows = [r for r in rows if r["tier"] in args.tier]
    if args.focus:
        rx = re.compile(args.focus)
        rows = [r for r in rows if rx.search(r["codename"])]

    servers = []
    binary = args.krust_bin or os.environ.get("KRUST_BIN") or str(
        Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "debug" / "krust")
    if args.start_server:
        if not os.path.isabs(binary):
            binary = str(REPO / binary)
        server = Server(binary, args.server_arg)
        servers.append(server)
        kubeconfig = server.kubeconfig

        def start_extra(extra):
            s = Server(binary, extra)
            servers.append(s)
            return s
    else:
        kubeconfig = args.kubeconfig or os.environ.get("KUBECONFIG")
        if not kubeconfig:
            sys.exit("give --kubeconfig, set $KUBECONFIG, or use --start-server")
        start_extra = None

    results = {}
    started = time.monotonic()
    try:
        cluster = Cluster(kubeconfig, krust_bin=binary, start_server=start_extra)
        for row in rows:
            name = row["codename"]
            fn = REGISTRY.get(name)
            if fn is None:
                results[name] = ("NOT PORTED", None)
                print(f"NOT PORTED {name}", flush=True)
                continue
            t0 = time.monotonic()
            reason, tb = run_one(cluster, fn, name)
            dt = time.monotonic() - t0
            if reason is None:
                results[name] = ("PASS", None)
                print(f"PASS {name} ({dt:.1f}s)", flush=True)
            else:
                results[name] = ("FAIL", reason)
                print(f"FAIL {name} ({dt:.1f}s): {reason}", flush=True)
                if args.verbose and tb:
                    print(tb, flush=True)
    finally:
        for s in reversed(servers):
            s.stop()

    c = collections.Counter(st for st, _ in results.values())
    known = read_known_failures()
    unexpected = [n for n, (st, _) in results.items() if st == "FAIL" and n not in known]
    stale = [n for n, (st, _) in results.items() if st == "PASS" and n in known]
    for n in stale:
        print(f"PASSES BUT LISTED IN {KNOWN_FAILURES.name}: {n}", flush=True)
    print(f"{c['PASS']} passed, {c['FAIL']} failed ({c['NOT PORTED']} not ported; "
          f"{c['FAIL'] - len(unexpected)} of the failures are known, see conformance/{KNOWN_FAILURES.name}) "
          f"in {time.monotonic() - started:.0f}s")
    if args.report:
        write_report(args.report, rows, results)
    return 1 if unexpected or stale else 0


if __name__ == "__main__":
    sys.exit(main())
