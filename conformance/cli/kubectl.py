"""Kubectl client tests that only need the API server (kubectl.go): api-versions,
cluster-info, diff, run, server-side dry-run, version, proxy."""

import http.client
import json
import os
import re
import socket
import subprocess
import tempfile
import time

from conformance.framework import TestFailure, conformance, expect, expect_equal, kubectl_bin, rand_suffix

HTTPD = "registry.k8s.io/e2e-test-images/httpd:2.4.38-4"
HTTPD_NEW = "registry.k8s.io/e2e-test-images/httpd:2.4.39-4"


@conformance("[sig-cli] Kubectl client Kubectl api-versions should check if v1 is in available api versions [Conformance]")
def api_versions(f):
    out = f.kubectl("api-versions").stdout
    expect("v1" in out.split(), f"v1 not in kubectl api-versions: {out[:300]!r}")


@conformance("[sig-cli] Kubectl client Kubectl cluster-info should check if Kubernetes control plane services is included in cluster-info [Conformance]")
def cluster_info(f):
    out = f.kubectl("cluster-info").stdout
    out = re.sub(r"\x1b\[[0-9;]*m", "", out)
    expect("Kubernetes control plane" in out, f"cluster-info output: {out[:300]!r}")


def deployment(image):
    return json.dumps({"apiVersion": "apps/v1", "kind": "Deployment",
                       "metadata": {"name": "httpd-deployment", "labels": {"app": "httpd"}},
                       "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "httpd"}},
                                "template": {"metadata": {"labels": {"app": "httpd"}},
                                             "spec": {"containers": [{"name": "httpd", "image": image}]}}}})


@conformance("[sig-cli] Kubectl client Kubectl diff should check if kubectl diff finds a difference for Deployments [Conformance]")
def kubectl_diff(f):
    f.kubectl("-n", f.ns, "create", "-f", "-", input=deployment(HTTPD))
    p = f.kubectl("-n", f.ns, "diff", "-f", "-", input=deployment(HTTPD_NEW), check=False)
    expect_equal(p.returncode, 1, f"kubectl diff exit code (stderr {p.stderr.strip()[:300]!r})")
    expect(HTTPD_NEW in p.stdout, f"kubectl diff output lacks the new image: {p.stdout[:400]!r}")


@conformance("[sig-cli] Kubectl client Kubectl run pod should create a pod from an image when restart is Never [Conformance]")
def kubectl_run(f):
    f.kubectl("-n", f.ns, "run", "e2e-test-httpd-pod", "--restart=Never", "--pod-running-timeout=2m", f"--image={HTTPD}")
    pod = f.get(f.path("pods", "e2e-test-httpd-pod"))
    expect_equal(pod["spec"]["containers"][0]["image"], HTTPD, "image of the created pod")
    expect_equal(pod["spec"].get("restartPolicy"), "Never", "restartPolicy of the created pod")


@conformance("[sig-cli] Kubectl client Kubectl server-side dry-run should check if kubectl can dry-run update Pods [Conformance]")
def kubectl_dry_run(f):
    name = "e2e-test-httpd-pod"
    f.kubectl("-n", f.ns, "run", name, f"--image={HTTPD}", "--pod-running-timeout=2m", f"--labels=run={name}")
    patch = json.dumps({"spec": {"containers": [{"name": name, "image": "registry.k8s.io/e2e-test-images/busybox:1.36.1-1"}]}})
    f.kubectl("-n", f.ns, "patch", "pod", name, "-p", patch, "--dry-run=server")
    pod = f.get(f.path("pods", name))
    expect_equal(pod["spec"]["containers"][0]["image"], HTTPD, "image after a server-side dry-run patch")


@conformance("[sig-cli] Kubectl client Kubectl version should check is all data is printed [Conformance]")
def kubectl_version(f):
    out = f.kubectl("version").stdout
    for item in ("Client Version:", "Server Version:"):
        expect(item in out, f"kubectl version output lacks {item!r}: {out[:300]!r}")


def start_proxy(f, *args):
    cmd = [kubectl_bin(), "--kubeconfig", f.kubeconfig, "proxy", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    f.defer(lambda: (proc.kill(), proc.wait()))
    line = proc.stdout.readline()
    if not line.startswith("Starting to serve on "):
        raise TestFailure(f"kubectl proxy printed {line!r}: {proc.stderr.read()[:300] if proc.poll() is not None else ''}")
    return line[len("Starting to serve on "):].strip()


@conformance("[sig-cli] Kubectl client Proxy server should support proxy with --port 0 [Conformance]")
def proxy_port0(f):
    addr = start_proxy(f, "-p", "0", "--disable-filter")
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", "/api/")
    r = conn.getresponse()
    body = r.read()
    expect_equal(r.status, 200, f"status of /api/ through the proxy ({body[:200]!r})")


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


@conformance("[sig-cli] Kubectl client Proxy server should support --unix-socket=/path [Conformance]")
def proxy_unix_socket(f):
    d = tempfile.mkdtemp(prefix="kubectl-proxy-unix")
    path = os.path.join(d, "test")
    start_proxy(f, f"--unix-socket={path}")
    conn = UnixHTTPConnection(path)
    conn.request("GET", "/api/")
    r = conn.getresponse()
    body = r.read()
    expect_equal(r.status, 200, f"status of /api/ through the unix socket proxy ({body[:200]!r})")
    expect(body, "empty /api/ through the unix socket proxy")
