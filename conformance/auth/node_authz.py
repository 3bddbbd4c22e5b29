"""Upstream's `[sig-auth] [Feature:NodeAuthorizer]` tests (test/e2e/auth/node_authz.go, v1.32):
a client impersonating the first node (`system:node:NAME` in `system:nodes`) is refused
secrets and configmaps its pods do not use (403, never 404), reaches a secret once a pod
bound to it uses one, and may neither create nor delete another Node. Not conformance tests:
listed in `auth-tests.tsv` (tier AUTH), run by scripts/test.sh with the conformance tiers."""

from conformance.framework import ApiError, TestFailure, conformance, expect, schedulable_node, wait_for

NODES_GROUP = "system:nodes"
NODE_NAME_PREFIX = "system:node:"
PREFIX = "[sig-auth] [Feature:NodeAuthorizer] "


class NodeClient:
    """The BeforeEach: the first node's name, and a client impersonating that node."""

    def __init__(self, f):
        nodes = f.list("/api/v1/nodes")["items"]
        # Upstream takes nodeList.Items[0]; a run without an agent has none, so the harness
        # registers one (conformance/README.md, "Nodes for T2").
        self.node = nodes[0]["metadata"]["name"] if nodes else schedulable_node(f)
        self.user = NODE_NAME_PREFIX + self.node
        self.f = f

    def call(self, method, path, body=None):
        return self.f.call(method, path, body, headers={"Impersonate-User": self.user, "Impersonate-Group": NODES_GROUP})


def expect_forbidden(fn, *args):
    try:
        fn(*args)
    except ApiError as e:
        expect(e.status == 403, f"expected Forbidden, got {e.status}: {e.body}")
        return
    raise TestFailure("expected Forbidden, the request succeeded")


@conformance(PREFIX + "Getting a non-existent secret should exit with the Forbidden error, not a NotFound error")
def nonexistent_secret(f):
    c = NodeClient(f)
    expect_forbidden(c.call, "GET", f.path("secrets", "foo"))


@conformance(PREFIX + "Getting an existing secret should exit with the Forbidden error")
def existing_secret(f):
    c = NodeClient(f)
    f.create(f.path("secrets"), {"metadata": {"namespace": f.ns, "name": "node-auth-secret"}, "stringData": {}})
    expect_forbidden(c.call, "GET", f.path("secrets", "node-auth-secret"))


@conformance(PREFIX + "Getting a non-existent configmap should exit with the Forbidden error, not a NotFound error")
def nonexistent_configmap(f):
    c = NodeClient(f)
    expect_forbidden(c.call, "GET", f.path("configmaps", "foo"))


@conformance(PREFIX + "Getting an existing configmap should exit with the Forbidden error")
def existing_configmap(f):
    c = NodeClient(f)
    f.create(f.path("configmaps"), {"metadata": {"namespace": f.ns, "name": "node-auth-configmap"}, "data": {"data": "content"}})
    expect_forbidden(c.call, "GET", f.path("configmaps", "node-auth-configmap"))


@conformance(PREFIX + "Getting a secret for a workload the node has access to should succeed")
def secret_of_a_workload(f):
    c = NodeClient(f)
    # (data "keep it secret", base64)
    f.create(f.path("secrets"), {"metadata": {"namespace": f.ns, "name": "node-auth-secret"}, "data": {"data": "a2VlcCBpdCBzZWNyZXQ="}})
    expect_forbidden(c.call, "GET", f.path("secrets", "node-auth-secret"))
    f.create(f.path("pods"), {"metadata": {"name": "pause"}, "spec": {
        "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}],
        "nodeName": c.node,
        "volumes": [{"name": "node-auth-secret", "secret": {"secretName": "node-auth-secret"}}]}})

    def readable():
        try:
            c.call("GET", f.path("secrets", "node-auth-secret"))
            return True
        except ApiError:
            return False
    # upstream: wait.Poll(framework.Poll (2 s), 1 minute)
    wait_for(readable, 60, 2, what="the node reading the secret of its pod")


@conformance(PREFIX + "A node shouldn't be able to create another node")
def create_another_node(f):
    c = NodeClient(f)
    try:
        expect_forbidden(c.call, "POST", "/api/v1/nodes", {"kind": "Node", "apiVersion": "v1", "metadata": {"name": "foo"}})
    finally:
        # Upstream deletes it in case the test failed and a node was created.
        f.delete_ignore("/api/v1/nodes/foo")


@conformance(PREFIX + "A node shouldn't be able to delete another node")
def delete_another_node(f):
    c = NodeClient(f)
    expect_forbidden(c.call, "DELETE", "/api/v1/nodes/foo")
