"""The official Python `kubernetes` client against a real `krust server`.

One server is started for this module (from `$KRUST_BIN`, else `target/debug/krust` of this
repository, built by `cargo build -p krust` / `cargo test`), with the same flags as the Rust
test harness: loopback, a free port, its own temporary data dir; without the controllers. Each test works in its own
namespace, so tests do not see each other's objects.

    python3 -m pytest -q krust/tests/python
"""

import base64
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from kubernetes import client, config, watch
from kubernetes.client import ApiException

REPO = Path(__file__).resolve().parents[3]
# Generous for a loaded 2-core CI machine.
READY_TIMEOUT = 60
WAIT = 30


def krust_bin() -> str:
    if os.environ.get("KRUST_BIN"):
        return os.environ["KRUST_BIN"]
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    if not target.is_absolute():
        target = REPO / target
    return str(target / "debug" / "krust")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `krust server` process on a free loopback port with a temporary data dir."""

    def __init__(self):
        binary = krust_bin()
        if not os.path.exists(binary):
            pytest.fail(f"krust binary not found at {binary}: run `cargo build -p krust` or set KRUST_BIN")
        self.data_dir = tempfile.mkdtemp(prefix="krust-pytest-")
        self.port = free_port()
        self.log_path = os.path.join(self.data_dir, f"krust-test-{self.port}.log")
        self.log = open(self.log_path, "ab")
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"))
        self.proc = subprocess.Popen(
            # The controllers are left out: these tests are about the API as the client sees
            # it, and objects the controllers add to every namespace (kube-root-ca.crt) would
            # blur exact list and watch expectations.
            [binary, "server", "--bind-address", "127.0.0.1", "--disable-agent",
             "--disable-controller-manager",
             "--https-listen-port", str(self.port), "--data-dir", self.data_dir],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, env=env,
        )
        self.kubeconfig = os.path.join(self.data_dir, "server", "cred", "admin.kubeconfig")
        self._wait_ready()

    def logs(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def _wait_ready(self):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                logs = self.logs()
                self.stop()
                raise RuntimeError(f"krust server exited early ({self.proc.returncode}):\n{logs}")
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{self.port}/readyz", context=ctx, timeout=2) as r:
                    # The log line says this server bound its port: another one that got
                    # the same "free" port could answer /readyz too.
                    if r.status == 200 and r.read().strip() == b"ok" and "krust server ready in" in self.logs():
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                logs = self.logs()
                self.stop()
                raise RuntimeError(f"krust server not ready after {READY_TIMEOUT}s:\n{logs}")
            time.sleep(0.1)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.log.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def server():
    for attempt in range(3):
        try:
            s = Server()
            break
        except RuntimeError as e:
            # Another process took the free port first: try another one.
            if attempt == 2 or "Address already in use" not in str(e):
                raise
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def api(server):
    """A configured `kubernetes.client.ApiClient` from the admin kubeconfig."""
    api_client = config.new_client_from_config(config_file=server.kubeconfig)
    try:
        yield api_client
    finally:
        api_client.close()


@pytest.fixture
def core(api):
    return client.CoreV1Api(api)


@pytest.fixture
def apps(api):
    return client.AppsV1Api(api)


@pytest.fixture
def ns(core):
    """A fresh namespace for one test."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


def api_dict(obj) -> dict:
    """A model as the API's JSON (camelCase keys)."""
    return client.ApiClient().sanitize_for_serialization(obj)


def status_of(e: ApiException) -> dict:
    """The `Status` object an ApiException carries."""
    return json.loads(e.body)


def configmap(name, data=None, labels=None):
    return client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=name, labels=labels), data=data or {"key": "value"}
    )


def deployment(name, labels, image="nginx:1.25", replicas=1):
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels={"app": name}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": name}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="app", image=image)]),
            ),
        ),
    )


def test_namespace_lifecycle(core):
    name = f"life-{uuid.uuid4().hex[:8]}"
    created = core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"a": "1"})))
    assert created.metadata.name == name
    assert created.metadata.uid
    assert created.status.phase == "Active"
    read = core.read_namespace(name)
    # Upstream labels every namespace with its name.
    auto = {"kubernetes.io/metadata.name": name}
    assert read.metadata.labels == {"a": "1", **auto}
    names = [n.metadata.name for n in core.list_namespace().items]
    assert name in names and "default" in names and "kube-system" in names

    read.metadata.labels["b"] = "2"
    replaced = core.replace_namespace(name, read)
    assert replaced.metadata.labels == {"a": "1", "b": "2", **auto}
    patched = core.patch_namespace(name, {"metadata": {"labels": {"a": None, "c": "3"}}})
    assert patched.metadata.labels == {"b": "2", "c": "3", **auto}
    assert [n.metadata.name for n in core.list_namespace(label_selector="c=3").items] == [name]

    core.delete_namespace(name)
    # Without a namespace controller the namespace stays Terminating, as upstream's would
    # until its contents are gone; either way it is on its way out.
    try:
        gone = core.read_namespace(name)
    except ApiException as e:
        assert e.status == 404
    else:
        assert gone.metadata.deletion_timestamp is not None
        assert gone.status.phase == "Terminating"


def test_configmap_create_read_replace_patch_delete(core, ns):
    created = core.create_namespaced_config_map(ns, configmap("cfg", {"a": "1"}, {"app": "web"}))
    assert created.metadata.namespace == ns
    assert created.metadata.resource_version
    read = core.read_namespaced_config_map("cfg", ns)
    assert read.data == {"a": "1"}
    assert read.metadata.labels == {"app": "web"}
    assert read.metadata.uid == created.metadata.uid

    read.data["b"] = "2"
    replaced = core.replace_namespaced_config_map("cfg", ns, read)
    assert replaced.data == {"a": "1", "b": "2"}
    assert int(replaced.metadata.resource_version) > int(read.metadata.resource_version)

    # A dict body is sent as a strategic merge patch; a list as a JSON patch.
    patched = core.patch_namespaced_config_map("cfg", ns, {"data": {"a": None, "c": "3"}})
    assert patched.data == {"b": "2", "c": "3"}
    patched = core.patch_namespaced_config_map("cfg", ns, [{"op": "replace", "path": "/data/b", "value": "20"}])
    assert patched.data == {"b": "20", "c": "3"}
    assert core.read_namespaced_config_map("cfg", ns).data == {"b": "20", "c": "3"}

    # A server-side dry run changes nothing.
    core.patch_namespaced_config_map("cfg", ns, {"data": {"c": "dry"}}, dry_run="All")
    assert core.read_namespaced_config_map("cfg", ns).data["c"] == "3"

    status = core.delete_namespaced_config_map("cfg", ns)
    # This client returns deletes as plain dicts (older ones as V1Status).
    status = status if isinstance(status, dict) else api_dict(status)
    assert status["kind"] == "Status" and status["status"] == "Success", status
    assert status["details"]["name"] == "cfg"
    with pytest.raises(ApiException) as e:
        core.read_namespaced_config_map("cfg", ns)
    assert e.value.status == 404
    assert core.list_namespaced_config_map(ns).items == []


def test_secret_create_read_replace_patch_delete(core, ns):
    secret = client.V1Secret(
        metadata=client.V1ObjectMeta(name="creds"), type="Opaque", string_data={"user": "admin"}
    )
    created = core.create_namespaced_secret(ns, secret)
    assert created.type == "Opaque"
    read = core.read_namespaced_secret("creds", ns)
    # stringData is write-only: it is merged into data, base64-encoded.
    assert read.data == {"user": base64.b64encode(b"admin").decode()}
    assert read.string_data is None

    read.data["password"] = base64.b64encode(b"s3cret").decode()
    replaced = core.replace_namespaced_secret("creds", ns, read)
    assert base64.b64decode(replaced.data["password"]) == b"s3cret"

    patched = core.patch_namespaced_secret("creds", ns, {"metadata": {"labels": {"rotated": "yes"}}, "data": {"user": None}})
    assert patched.metadata.labels == {"rotated": "yes"}
    assert set(patched.data) == {"password"}

    core.delete_namespaced_secret("creds", ns)
    with pytest.raises(ApiException) as e:
        core.read_namespaced_secret("creds", ns)
    assert e.value.status == 404


def test_deployment_create_and_list_with_label_selector(apps, ns):
    created = apps.create_namespaced_deployment(ns, deployment("web", {"app": "web", "tier": "front"}))
    assert created.metadata.generation == 1
    assert created.spec.template.spec.containers[0].image == "nginx:1.25"
    apps.create_namespaced_deployment(ns, deployment("db", {"app": "db", "tier": "back"}))
    apps.create_namespaced_deployment(ns, deployment("cache", {"app": "cache"}))

    def names(**kw):
        return sorted(d.metadata.name for d in apps.list_namespaced_deployment(ns, **kw).items)

    assert names() == ["cache", "db", "web"]
    assert names(label_selector="app=web") == ["web"]
    assert names(label_selector="tier") == ["db", "web"]
    assert names(label_selector="tier in (front,back),app!=db") == ["web"]
    assert names(label_selector="!tier") == ["cache"]
    assert names(field_selector="metadata.name=db") == ["db"]
    everywhere = apps.list_deployment_for_all_namespaces(label_selector="app=web").items
    assert [(d.metadata.namespace, d.metadata.name) for d in everywhere] == [(ns, "web")]

    # Defaults are applied, as upstream's.
    web = apps.read_namespaced_deployment("web", ns)
    assert web.spec.strategy.type == "RollingUpdate"
    assert web.spec.revision_history_limit == 10
    # A spec change bumps the generation.
    web.spec.template.spec.containers[0].image = "nginx:1.27"
    assert apps.replace_namespaced_deployment("web", ns, web).metadata.generation == 2


def test_list_pagination_with_limit_and_continue(core, ns):
    for i in range(7):
        core.create_namespaced_config_map(ns, configmap(f"cm-{i}"))
    seen, pages, token = [], [], None
    while True:
        page = core.list_namespaced_config_map(ns, limit=3, _continue=token)
        pages.append(len(page.items))
        seen.extend(c.metadata.name for c in page.items)
        token = page.metadata._continue
        if not token:
            break
        assert len(pages) < 10, "pagination does not end"
    assert pages == [3, 3, 1]
    assert seen == [f"cm-{i}" for i in range(7)]

    # Pages are a consistent snapshot: objects created after the first page do not appear.
    first = core.list_namespaced_config_map(ns, limit=4)
    core.create_namespaced_config_map(ns, configmap("cm-9"))
    rest = core.list_namespaced_config_map(ns, limit=4, _continue=first.metadata._continue)
    assert [c.metadata.name for c in first.items + rest.items] == [f"cm-{i}" for i in range(7)]
    assert rest.metadata._continue is None


def test_watch_stream_sees_added_modified_deleted(core, ns):
    core.create_namespaced_config_map(ns, configmap("sentinel"))
    events, errors = [], []
    started = threading.Event()
    w = watch.Watch()

    def consume():
        try:
            for ev in w.stream(core.list_namespaced_config_map, ns, timeout_seconds=WAIT * 2):
                events.append((ev["type"], ev["object"].metadata.name, ev["object"].data))
                if ev["object"].metadata.name == "sentinel":
                    started.set()
                if ev["type"] == "DELETED" and ev["object"].metadata.name == "moving":
                    w.stop()
        except Exception as e:  # reported by the test thread
            errors.append(e)
        finally:
            started.set()

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    # The watch lists what exists first (ADDED sentinel): after that, nothing is missed.
    assert started.wait(WAIT), "the watch did not start"
    core.create_namespaced_config_map(ns, configmap("moving", {"step": "1"}))
    core.patch_namespaced_config_map("moving", ns, {"data": {"step": "2"}})
    core.delete_namespaced_config_map("moving", ns)
    t.join(WAIT)
    w.stop()
    assert not t.is_alive(), f"no DELETED event for moving; got {events}"
    assert not errors, errors
    assert events == [
        ("ADDED", "sentinel", {"key": "value"}),
        ("ADDED", "moving", {"step": "1"}),
        ("MODIFIED", "moving", {"step": "2"}),
        ("DELETED", "moving", {"step": "2"}),
    ]


def test_watch_from_resource_version_replays_changes(core, ns):
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    core.create_namespaced_config_map(ns, configmap("later", {"v": "1"}))
    core.patch_namespaced_config_map("later", ns, {"data": {"v": "2"}})
    core.delete_namespaced_config_map("later", ns)
    w = watch.Watch()
    seen = []
    for ev in w.stream(core.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=WAIT):
        seen.append((ev["type"], ev["object"].metadata.name))
        if ev["type"] == "DELETED":
            w.stop()
    assert seen == [("ADDED", "later"), ("MODIFIED", "later"), ("DELETED", "later")]


def test_api_exception_codes_and_reasons(core, ns):
    core.create_namespaced_config_map(ns, configmap("cfg"))
    stored = core.read_namespaced_config_map("cfg", ns)

    with pytest.raises(ApiException) as e:
        core.read_namespaced_config_map("missing", ns)
    assert e.value.status == 404
    s = status_of(e.value)
    assert (s["reason"], s["code"], s["message"]) == ("NotFound", 404, 'configmaps "missing" not found')
    assert s["details"] == {"name": "missing", "kind": "configmaps"}

    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map(f"{ns}-absent", configmap("x"))
    assert e.value.status == 404
    assert status_of(e.value)["details"] == {"name": f"{ns}-absent", "kind": "namespaces"}

    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map(ns, configmap("cfg", {"other": "data"}))
    assert e.value.status == 409
    s = status_of(e.value)
    assert (s["reason"], s["code"], s["message"]) == ("AlreadyExists", 409, 'configmaps "cfg" already exists')

    core.patch_namespaced_config_map("cfg", ns, {"data": {"key": "new"}})
    current = core.read_namespaced_config_map("cfg", ns)
    stored.data = {"key": "stale"}
    with pytest.raises(ApiException) as e:
        core.replace_namespaced_config_map("cfg", ns, stored)
    assert e.value.status == 409
    s = status_of(e.value)
    assert s["reason"] == "Conflict"
    assert "the object has been modified" in s["message"]

    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map(ns, configmap("Bad_Name"))
    assert e.value.status == 422
    s = status_of(e.value)
    assert s["reason"] == "Invalid"
    assert s["details"]["causes"][0]["field"] == "metadata.name"
    assert s["message"].startswith('ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name"')

    # None of the refused requests changed anything.
    after = core.read_namespaced_config_map("cfg", ns)
    assert after.data == {"key": "new"}
    assert after.metadata.resource_version == current.metadata.resource_version
    assert sorted(c.metadata.name for c in core.list_namespaced_config_map(ns).items) == ["cfg"]


def test_pod_without_containers_is_422(core, ns):
    with pytest.raises(ApiException) as e:
        core.create_namespaced_pod(ns, client.V1Pod(metadata=client.V1ObjectMeta(name="p"), spec=client.V1PodSpec(containers=[])))
    assert e.value.status == 422
    s = status_of(e.value)
    assert s["reason"] == "Invalid"
    assert "spec.containers: Required value" in s["message"]
    assert any(c["field"] == "spec.containers" for c in s["details"]["causes"])
    assert core.list_namespaced_pod(ns).items == []


def token_client(api, token):
    """An ApiClient for the same server authenticating with a bearer token only."""
    conf = client.Configuration()
    admin = api.configuration
    conf.host = admin.host
    conf.ssl_ca_cert = admin.ssl_ca_cert
    conf.api_key = {"authorization": "Bearer " + token}
    return client.ApiClient(conf)


def test_rbac_through_the_client(api, core, ns):
    """A service account token is refused what RBAC does not grant (403 with upstream's
    message), allowed once a RoleBinding grants it, and refused again when the account is
    deleted (401); a SelfSubjectAccessReview tells it the truth."""
    core.create_namespaced_service_account(ns, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="robot")))
    req = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[]))
    token = core.create_namespaced_service_account_token("robot", ns, req).status.token
    robot_api = token_client(api, token)
    robot = client.CoreV1Api(robot_api)
    with pytest.raises(ApiException) as e:
        robot.list_namespaced_secret("kube-system")
    assert e.value.status == 403
    st = status_of(e.value)
    assert st["reason"] == "Forbidden"
    assert st["message"] == f'secrets is forbidden: User "system:serviceaccount:{ns}:robot" cannot list resource "secrets" in API group "" in the namespace "kube-system"'
    assert st["details"] == {"kind": "secrets"}

    review = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(
        resource_attributes=client.V1ResourceAttributes(namespace=ns, verb="list", resource="configmaps")))
    authz = client.AuthorizationV1Api(robot_api)
    assert authz.create_self_subject_access_review(review).status.allowed is False

    # (a Role of its own: this server runs no controllers, so the aggregated `view` is empty)
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role(ns, client.V1Role(
        metadata=client.V1ObjectMeta(name="configmap-reader"),
        rules=[client.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=["get", "list", "watch"])]))
    rbac.create_namespaced_role_binding(ns, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="robot-view"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="configmap-reader"),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name="robot", namespace=ns)]))
    deadline = time.time() + WAIT
    while True:
        try:
            robot.list_namespaced_config_map(ns)
            break
        except ApiException as err:
            if err.status != 403 or time.time() > deadline:
                raise
            time.sleep(0.2)
    assert authz.create_self_subject_access_review(review).status.allowed is True

    core.delete_namespaced_service_account("robot", ns)
    deadline = time.time() + WAIT
    while True:
        try:
            robot.list_namespaced_config_map(ns)
        except ApiException as err:
            assert err.status == 401
            break
        assert time.time() < deadline, "token still accepted after its service account was deleted"
        time.sleep(0.2)
    robot_api.close()
