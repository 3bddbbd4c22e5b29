"""The conformance harness's small framework: a registry of ported tests (by their exact
upstream codename), a raw-JSON client for the cluster under test, watches, and the
per-test namespace.

Tests talk to the API server with plain JSON over the admin kubeconfig's TLS identity (the
official `kubernetes` Python client's configuration loader and its urllib3 pool), so a test
sees exactly what the server sent: status codes, `Status` bodies, headers, unknown fields.
"""

import json
import os
import queue
import random
import shutil
import string
import subprocess
import threading
import time
import urllib.parse

import urllib3

from kubernetes import config as kconfig

# codename -> function(f: Framework)
REGISTRY = {}


def conformance(codename, timeout=None):
    """Registers a ported test under its exact upstream codename. `timeout` (seconds) replaces
    the runner's default per-test limit for tests whose upstream waits are longer (CronJob
    schedules tick once a minute)."""
    def deco(fn):
        if codename in REGISTRY:
            raise RuntimeError(f"duplicate conformance test: {codename}")
        REGISTRY[codename] = fn
        fn.codename = codename
        fn.timeout = timeout
        return fn
    return deco


class TestFailure(AssertionError):
    pass


def expect(cond, msg="expectation failed"):
    if not cond:
        raise TestFailure(msg)


def expect_equal(actual, expected, what="value"):
    if actual != expected:
        raise TestFailure(f"{what}: expected {expected!r}, got {actual!r}")


class ApiError(Exception):
    """A non-2xx answer; `body` is the decoded Status when the server sent JSON."""

    def __init__(self, method, path, status, body, headers=None):
        self.method, self.path, self.status, self.body = method, path, status, body
        self.headers = headers or {}
        self.reason = body.get("reason") if isinstance(body, dict) else None
        msg = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"{method} {path}: {status} {self.reason or ''} {str(msg)[:300]}")


def expect_error(status, fn, *args, **kwargs):
    """Calls fn and expects it to fail with an ApiError of this status; returns the error."""
    try:
        got = fn(*args, **kwargs)
    except ApiError as e:
        if e.status != status:
            raise TestFailure(f"expected HTTP {status}, got {e}") from None
        return e
    raise TestFailure(f"expected HTTP {status}, the call succeeded: {str(got)[:200]}")


def rand_suffix(n=5):
    return "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(n))


def wait_for(cond, timeout=30.0, interval=0.2, what="condition"):
    """Polls cond() until it returns a truthy value (returned); fails after timeout."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = cond()
            if v:
                return v
        except ApiError as e:
            last_exc = e
        if time.monotonic() > deadline:
            raise TestFailure(f"timed out after {timeout}s waiting for {what}"
                              + (f" (last error: {last_exc})" if last_exc else ""))
        time.sleep(interval)


class Response:
    def __init__(self, status, headers, data):
        self.status, self.headers, self.data = status, headers, data

    def json(self):
        return json.loads(self.data) if self.data else None

    def header(self, name):
        for k, v in self.headers.items():
            if k.lower() == name.lower():
                return v
        return None


def path_for(resource, name=None, namespace=None, group="", version="v1", sub=None):
    """The REST path of a collection or object: /api/v1/... or /apis/G/V/..."""
    p = f"/api/{version}" if not group else f"/apis/{group}/{version}"
    if namespace:
        p += f"/namespaces/{namespace}"
    p += f"/{resource}"
    if name:
        p += f"/{name}"
    if sub:
        p += f"/{sub}"
    return p


class Cluster:
    """The cluster under test, reached through an admin kubeconfig."""

    def __init__(self, kubeconfig, krust_bin=None, start_server=None):
        self.kubeconfig = kubeconfig
        self.api_client = kconfig.new_client_from_config(config_file=kubeconfig)
        self.host = self.api_client.configuration.host.rstrip("/")
        self.pool = self.api_client.rest_client.pool_manager
        self.krust_bin = krust_bin
        # When the harness started the cluster itself: a function starting another server
        # with extra flags (for tests that need e.g. fast compaction); else None.
        self.start_server = start_server

    # -- raw HTTP --------------------------------------------------------------------
    def request(self, method, path, body=None, query=None, headers=None, content_type=None,
                timeout=30, preload=True):
        url = self.host + path
        if query:
            q = {k: v for k, v in query.items() if v is not None}
            for k, v in list(q.items()):
                if isinstance(v, bool):
                    q[k] = "true" if v else "false"
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode(q, doseq=True)
        hdrs = urllib3.HTTPHeaderDict({"Accept": "application/json"})
        if isinstance(headers, dict):
            hdrs.update(headers)
        elif headers:
            # (name, value) pairs: a name may repeat (Impersonate-Group), sent once per value
            for k, v in headers:
                hdrs.add(k, v)
        data = None
        if body is not None:
            if isinstance(body, (bytes, str)):
                data = body.encode() if isinstance(body, str) else body
            else:
                data = json.dumps(body).encode()
            hdrs["Content-Type"] = content_type or "application/json"
        r = self.pool.request(method, url, body=data, headers=hdrs, timeout=timeout,
                              preload_content=preload, retries=False)
        if not preload:
            return r
        return Response(r.status, dict(r.headers), r.data)

    def call(self, method, path, body=None, query=None, headers=None, content_type=None):
        r = self.request(method, path, body=body, query=query, headers=headers,
                         content_type=content_type)
        try:
            data = r.json()
        except ValueError:
            data = r.data.decode(errors="replace")
        if r.status >= 400:
            raise ApiError(method, path, r.status, data, r.headers)
        return data

    def get(self, path, **query):
        return self.call("GET", path, query=query)

    def list(self, path, **query):
        return self.call("GET", path, query=query)

    def create(self, path, body, **query):
        return self.call("POST", path, body=body, query=query)

    def retry_on_conflict(self, fn, attempts=5):
        """Runs `fn` again while it fails with 409 Conflict, as client-go's
        retry.RetryOnConflict: controllers may write the object in between."""
        for i in range(attempts):
            try:
                return fn()
            except ApiError as e:
                if e.status != 409 or i == attempts - 1:
                    raise
                time.sleep(0.01 * (2 ** i))

    def update(self, path, body, **query):
        return self.call("PUT", path, body=body, query=query)

    PATCH_TYPES = {
        "merge": "application/merge-patch+json",
        "json": "application/json-patch+json",
        "strategic": "application/strategic-merge-patch+json",
        "apply": "application/apply-patch+yaml",
    }

    def patch(self, path, body, ptype="merge", **query):
        return self.call("PATCH", path, body=body, query=query,
                         content_type=self.PATCH_TYPES[ptype])

    def delete(self, path, body=None, **query):
        return self.call("DELETE", path, body=body, query=query)

    def watch(self, path, **query):
        return Watch(self, path, query)

    # -- kubectl ---------------------------------------------------------------------
    def kubectl(self, *args, input=None, timeout=60, check=True):
        cmd = [kubectl_bin(), "--kubeconfig", self.kubeconfig, *args]
        p = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise TestFailure(f"kubectl {' '.join(args)} failed ({p.returncode}): {p.stderr.strip()[:400]}")
        return p


def kubectl_bin():
    pinned = "/usr/lib/google-cloud-sdk/bin/kubectl.1.32"
    return os.environ.get("KUBECTL") or (pinned if os.path.exists(pinned) else shutil.which("kubectl") or "kubectl")


class Watch:
    """A watch stream read by a background thread; events are (type, object) pairs."""

    def __init__(self, cluster, path, query):
        q = dict(query)
        q["watch"] = "true"
        q.setdefault("allowWatchBookmarks", None)
        self.q = queue.Queue()
        self.closed = False
        self.resp = cluster.request("GET", path, query=q, timeout=None, preload=False)
        if self.resp.status >= 400:
            data = self.resp.read()
            try:
                body = json.loads(data)
            except ValueError:
                body = data.decode(errors="replace")
            self.resp.release_conn()
            raise ApiError("GET(watch)", path, self.resp.status, body)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        buf = b""
        try:
            for chunk in self.resp.stream(4096, decode_content=True):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        ev = json.loads(line)
                        self.q.put((ev.get("type"), ev.get("object")))
        except Exception as e:  # connection closed by stop() or the server
            if not self.closed:
                self.q.put(("__error__", str(e)))
        self.q.put(("__closed__", None))

    def next(self, timeout=30.0):
        """The next event; fails when none comes within timeout."""
        try:
            ev = self.q.get(timeout=timeout)
        except queue.Empty:
            raise TestFailure(f"no watch event within {timeout}s") from None
        if ev[0] in ("__closed__", "__error__"):
            self.q.put(ev)  # stays closed
            raise TestFailure(f"watch closed: {ev[1]}")
        return ev

    def next_or_none(self, timeout):
        try:
            ev = self.q.get(timeout=timeout)
        except queue.Empty:
            return None
        if ev[0] in ("__closed__", "__error__"):
            self.q.put(ev)
            return None
        return ev

    def until(self, pred, timeout=30.0, what="watch event"):
        """Skips events until pred(type, obj) holds; returns that event."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TestFailure(f"timed out waiting for {what}")
            t, o = self.next(timeout=left)
            if t == "BOOKMARK":
                continue
            if pred(t, o):
                return t, o

    def stop(self):
        self.closed = True
        try:
            self.resp.shutdown() if hasattr(self.resp, "shutdown") else None
        except Exception:
            pass
        try:
            self.resp.release_conn()
        except Exception:
            pass
        try:
            self.resp.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()


NAMESPACE_READY_TIMEOUT = 5.0  # seconds setup waits for the default ServiceAccount and root CA


class Framework:
    """What one test gets: the cluster, and its own namespace (created before, deleted
    after). As upstream's framework, setup waits for the namespace's `default`
    ServiceAccount and `kube-root-ca.crt` ConfigMap (published by the controller-manager);
    without them (a server run with --disable-controller-manager) it goes on after
    NAMESPACE_READY_TIMEOUT, so API-only tests still run."""

    def __init__(self, cluster, base="e2e"):
        self.c = cluster
        self.ns = None
        self.cleanups = []
        self.base = base

    def setup(self):
        name = f"{self.base}-{rand_suffix()}"
        self.c.create("/api/v1/namespaces", {
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"e2e-framework": self.base, "e2e-run": "krust-conformance"}},
        })
        self.ns = name
        for path in (f"/api/v1/namespaces/{name}/serviceaccounts/default",
                     f"/api/v1/namespaces/{name}/configmaps/kube-root-ca.crt"):
            deadline = time.monotonic() + NAMESPACE_READY_TIMEOUT
            while time.monotonic() < deadline:
                try:
                    self.c.get(path)
                    break
                except ApiError:
                    time.sleep(0.1)

    def defer(self, fn, *args, **kwargs):
        self.cleanups.append((fn, args, kwargs))

    def teardown(self):
        for fn, args, kwargs in reversed(self.cleanups):
            try:
                fn(*args, **kwargs)
            except Exception:
                pass
        if self.ns:
            try:
                self.c.delete(f"/api/v1/namespaces/{self.ns}")
            except Exception:
                pass

    # shortcuts onto the cluster
    def __getattr__(self, name):
        return getattr(self.c, name)

    def path(self, resource, name=None, group="", version="v1", sub=None, namespace=True):
        ns = self.ns if namespace is True else namespace
        return path_for(resource, name, ns or None, group, version, sub)

    def delete_ignore(self, path):
        try:
            self.c.delete(path)
        except ApiError as e:
            if e.status != 404:
                raise

    def delete_ignore_grace(self, path):
        """Deletes with gracePeriodSeconds 0; a missing object is fine."""
        try:
            self.c.delete(path, {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0})
        except ApiError as e:
            if e.status != 404:
                raise


def _ready_schedulable(node):
    spec = node.get("spec") or {}
    if spec.get("unschedulable") or any(t.get("effect") in ("NoSchedule", "NoExecute") for t in spec.get("taints") or []):
        return False
    conds = {c["type"]: c["status"] for c in (node.get("status") or {}).get("conditions") or []}
    return conds.get("Ready") == "True"


def schedulable_node(f):
    """A node pods can be scheduled to, for tests that (as upstream says of them) only need a
    pod scheduled, not started. Upstream's framework takes the cluster's nodes for granted; a
    T2 run (`--disable-agent`) has none, so then a Node object is registered as a kubelet
    would register itself (Ready, with capacity) — the scheduler binds to it, nothing runs
    its pods. After the test the pods bound to it are deleted (grace 0, as its kubelet would
    confirm) and the Node with them. Returns the node's name."""
    for n in f.list("/api/v1/nodes")["items"]:
        if _ready_schedulable(n):
            return n["metadata"]["name"]
    name = "e2e-node-" + rand_suffix()
    f.create("/api/v1/nodes", {"apiVersion": "v1", "kind": "Node",
                               "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                                                                     "kubernetes.io/os": "linux"}}})

    def remove():
        for p in f.list(f.path("pods"), fieldSelector=f"spec.nodeName={name}")["items"]:
            f.delete_ignore_grace(f.path("pods", p["metadata"]["name"]))
        f.delete_ignore(f"/api/v1/nodes/{name}")
    f.defer(remove)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    res = {"cpu": "4", "memory": "8Gi", "pods": "110"}
    f.patch(f"/api/v1/nodes/{name}/status", {"status": {
        "capacity": res, "allocatable": res,
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "registered by the conformance harness", "lastHeartbeatTime": now,
                        "lastTransitionTime": now}],
        "addresses": [{"type": "Hostname", "address": name}],
        "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "",
                     "containerRuntimeVersion": "", "kubeletVersion": "v1.32.0", "kubeProxyVersion": "",
                     "operatingSystem": "linux", "architecture": "amd64"}}})
    return name
