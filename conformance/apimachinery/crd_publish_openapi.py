"""CustomResourcePublishOpenAPI (crd_publish_openapi.go): CRD schemas published in
/openapi/v2 (and v3) and used by kubectl for client-side validation and `explain`."""

import copy
import json
import re
import time
import uuid

from conformance import crdutil
from conformance.framework import TestFailure, conformance, expect, wait_for

CRD_PATH = crdutil.CRD_PATH

FOO_SCHEMA = {"openAPIV3Schema": {
    "description": "Foo CRD for Testing", "type": "object",
    "properties": {
        "spec": {"description": "Specification of Foo", "type": "object", "properties": {
            "bars": {"description": "List of Bars and their specs.", "type": "array", "items": {
                "type": "object", "required": ["name"], "properties": {
                    "name": {"description": "Name of Bar.", "type": "string"},
                    "age": {"description": "Age of Bar.", "type": "string"},
                    "bazs": {"description": "List of Bazs.", "type": "array", "items": {"type": "string"}}}}}}},
        "status": {"description": "Status of Foo", "type": "object", "properties": {
            "bars": {"description": "List of Bars and their statuses.", "type": "array", "items": {
                "type": "object", "properties": {
                    "name": {"description": "Name of Bar.", "type": "string"},
                    "available": {"description": "Whether the Bar is installed.", "type": "boolean"},
                    "quxType": {"description": "Indicates to external qux type.", "type": "string",
                                "enum": ["in-tree", "out-of-tree"]}}}}}}}}}
PRESERVE_ROOT = {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}
PRESERVE_ROOT_WITH_PROPS = {"openAPIV3Schema": {
    "description": "preserve-unknown-properties at root for Testing", "type": "object",
    "x-kubernetes-preserve-unknown-fields": True,
    "properties": {"spec": {"description": "Specification of Waldo", "type": "object",
                            "properties": {"dummy": {"description": "Dummy property.", "type": "object"}}},
                   "status": {"description": "Status of Waldo", "type": "object",
                              "properties": {"bars": {"description": "List of Bars and their statuses.",
                                                      "type": "array", "items": {"type": "object"}}}}}}}
PRESERVE_EMBEDDED = {"openAPIV3Schema": {
    "description": "preserve-unknown-properties in nested field for Testing", "type": "object",
    "properties": {"spec": {"description": "Specification of Waldo", "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                            "properties": {"dummy": {"description": "Dummy property.", "type": "object"}}},
                   "status": {"description": "Status of Waldo", "type": "object",
                              "properties": {"bars": {"description": "List of Bars and their statuses.",
                                                      "type": "array", "items": {"type": "object"}}}}}}}


def new_crd(f, group_base, schema, versions=None, kind_suffix="", group=None):
    n = uuid.uuid4().hex[:4]
    group = group or f"crd-publish-openapi-test-{group_base}{n}.example.com"
    plural = f"e2e-test-crd-publish-openapi-{n}{kind_suffix}-crds"
    kind = f"E2e-test-crd-publish-openapi-{n}{kind_suffix}-crd"
    versions = versions or [{"name": "v1", "served": True, "storage": True}]
    body = crdutil.crd_body(group, plural, kind, scope="Namespaced", versions=versions, schema=schema,
                            singular=f"e2e-test-crd-publish-openapi-{n}{kind_suffix}-crd")
    return crdutil.create_crd(f, body)


def definition_name(group, version, kind):
    return ".".join(reversed(group.split("."))) + f".{version}.{kind}"


def openapi_v2(f):
    return f.get("/openapi/v2").get("definitions") or {}


def wait_definition(f, crd, version, present=True, check=None):
    name = definition_name(crd["spec"]["group"], version, crd["spec"]["names"]["kind"])

    def ok():
        d = openapi_v2(f).get(name)
        if not present:
            return d is None
        return d is not None and (check is None or check(d))
    wait_for(ok, timeout=30, interval=0.5,
             what=f"definition {name} {'in' if present else 'gone from'} /openapi/v2")
    return openapi_v2(f).get(name) if present else None


def cr_yaml(crd, version, name, spec):
    obj = {"apiVersion": f"{crd['spec']['group']}/{version}", "kind": crd["spec"]["names"]["kind"],
           "metadata": {"name": name}}
    obj.update(spec)
    return json.dumps(obj)


def kubectl_ok(f, *args, input=None):
    return f.kubectl(*args, input=input).stdout


def kubectl_fails(f, contains, *args, input=None):
    p = f.kubectl(*args, input=input, check=False)
    expect(p.returncode != 0, f"kubectl {' '.join(args)} succeeded, expected {contains!r}")
    expect(contains in p.stderr, f"kubectl {' '.join(args)}: {p.stderr.strip()[:300]!r} lacks {contains!r}")


def explain(f, crd, field, contains):
    out = kubectl_ok(f, "explain", f"{crd['spec']['names']['plural']}{field}")
    expect(contains in out, f"kubectl explain {field}: output lacks {contains!r}: {out[:300]!r}")


@conformance("[sig-api-machinery] CustomResourcePublishOpenAPI [Privileged:ClusterAdmin] works for CRD with validation schema [Conformance]")
def with_schema(f):
    crd = new_crd(f, "foo", FOO_SCHEMA)
    wait_definition(f, crd, "v1")
    plural = crd["spec"]["names"]["plural"]
    valid = cr_yaml(crd, "v1", "test-foo", {"spec": {"bars": [{"name": "test-bar"}]}})
    kubectl_ok(f, "--namespace", f.ns, "create", "-f", "-", input=valid)
    kubectl_ok(f, "--namespace", f.ns, "delete", plural, "test-foo")
    kubectl_ok(f, "--namespace", f.ns, "apply", "-f", "-", input=valid)
    kubectl_ok(f, "--namespace", f.ns, "delete", plural, "test-foo")
    explain(f, crd, "", "Foo CRD for Testing")
    explain(f, crd, ".metadata", "Standard object's metadata")
    explain(f, crd, ".spec", "Specification of Foo")
    explain(f, crd, ".spec.bars", "List of Bars and their specs.")
    p = f.kubectl("explain", f"{plural}.spec.bars2", check=False)
    expect(p.returncode != 0 and 'field "bars2" does not exist' in p.stderr,
           f"kubectl explain of a field not in the schema: {p.returncode} {p.stderr.strip()[:300]!r}")


@conformance("[sig-api-machinery] CustomResourcePublishOpenAPI [Privileged:ClusterAdmin] works for CRD without validation schema [Conformance]")
def without_schema(f):
    crd = new_crd(f, "empty", PRESERVE_ROOT)
    wait_definition(f, crd, "v1")
    plural = crd["spec"]["names"]["plural"]
    cr = cr_yaml(crd, "v1", "test-cr", {"a": {"b": [{"c": "d"}]}})
    kubectl_ok(f, "--namespace", f.ns, "create", "-f", "-", input=cr)
    kubectl_ok(f, "--namespace", f.ns, "delete", plural, "test-cr")
    kubectl_ok(f, "--namespace", f.ns, "apply", "-f", "-", input=cr)
    kubectl_ok(f, "--namespace", f.ns, "delete", plural, "test-cr")
    out = kubectl_ok(f, "explain", plural)
    expect("DESCRIPTION:" in out and "<empty>" in out, f"kubectl explain of a schemaless CRD: {out[:300]!r}")


@conformance("[sig-api-machinery] CustomResourcePublishOpenAPI [Privileged:ClusterAdmin] works for CRD preserving unknown fields at the schema root [Conformance]")
def preserve_root(f):
    crd = new_crd(f, "unknown-at-root", PRESERVE_ROOT_WITH_PROPS)
    wait_definition(f, crd, "v1")
    plural = crd["spec"]["names"]["plural"]
    cr = cr_yaml(crd, "v1", "test-cr", {"a": {"b": [{"c": "d"}]}})
    kubectl_ok(f, "--namespace", f.ns, "create", "-f", "-", input=cr)
    kubectl_ok(f, "--namespace", f.ns, "delete", plural, "test-cr")
    kubectl_ok(f, "--namespace", f.ns, "apply", "-f", "-", input=cr)
    kubectl_ok(f, "--namespace", f.ns, "delete", plural, "test-cr")
    out = kubectl_ok(f, "explain", plural)
    expect(re.search(r"(?s)KIND:.*" + re.escape(crd["spec"]["names"]["kind"]), out),
           f"kubectl explain does not show the kind: {out[:300]!r}")


@conformance("[sig-api-machinery] CustomResourcePublishOpenAPI [Privileged:ClusterAdmin] works for CRD preserving unknown fields in an embedded object [Conformance]")
def preserve_embedded(f):
    crd = new_crd(f, "unknown-in-nested", PRESERVE_EMBEDDED)
    wait_definition(f, crd, "v1")
    plural = crd["spec"]["names"]["plural"]
    cr = cr_yaml(crd, "v1", "test-cr", {"spec": {"a": None, "b": [{"c": "d"}]}})
    kubectl_ok(f, "--namespace", f.ns, "create", "-f", "-", input=cr)
    kubectl_ok(f, "--namespace", f.ns, "delete", plural, "test-cr")
    kubectl_ok(f, "--namespace", f.ns, "apply", "-f", "-", input=cr)
    kubectl_ok(f, "--namespace", f.ns, "delete", plural, "test-cr")
    explain(f, crd, "", "preserve-unknown-properties in nested field for Testing")


WALDO = {"openAPIV3Schema": {"description": "Waldo CRD for Testing", "type": "object", "properties": {
    "spec": {"description": "Specification of Waldo", "type": "object",
             "properties": {"dummy": {"description": "Dummy property.", "type": "object"}}},
    "status": {"description": "Status of Waldo", "type": "object",
               "properties": {"bars": {"description": "List of Bars and their statuses.", "type": "array",
                                       "items": {"type": "object"}}}}}}}


@conformance("[sig-api-machinery] CustomResourcePublishOpenAPI [Privileged:ClusterAdmin] works for multiple CRDs of different groups [Conformance]")
def multi_groups(f):
    foo = new_crd(f, "multi-group-foo", FOO_SCHEMA)
    waldo = new_crd(f, "multi-group-waldo", WALDO)
    wait_definition(f, foo, "v1")
    wait_definition(f, waldo, "v1")


@conformance("[sig-api-machinery] CustomResourcePublishOpenAPI [Privileged:ClusterAdmin] works for multiple CRDs of same group but different versions [Conformance]")
def multi_versions(f):
    crd = new_crd(f, "multi-ver", FOO_SCHEMA, versions=[
        {"name": "v2", "served": True, "storage": True}, {"name": "v3", "served": True, "storage": False}])
    wait_definition(f, crd, "v3")
    wait_definition(f, crd, "v2")
    # two CRDs in one group, each with its own version
    group = f"crd-publish-openapi-test-common-group{uuid.uuid4().hex[:4]}.example.com"
    foo = new_crd(f, "", FOO_SCHEMA, versions=[{"name": "v4", "served": True, "storage": True}], group=group)
    waldo = new_crd(f, "", WALDO, versions=[{"name": "v5", "served": True, "storage": True}], group=group)
    wait_definition(f, waldo, "v5")
    wait_definition(f, foo, "v4")


@conformance("[sig-api-machinery] CustomResourcePublishOpenAPI [Privileged:ClusterAdmin] works for multiple CRDs of same group and version but different kinds [Conformance]")
def multi_kinds(f):
    n = uuid.uuid4().hex[:4]
    group = f"crd-publish-openapi-test-multi-to-single-ver{n}.example.com"
    crds = []
    for k, sch in (("foo", FOO_SCHEMA), ("waldo", WALDO)):
        plural = f"e2e-test-crd-publish-openapi-{n}-{k}s"
        kind = f"E2e-test-crd-publish-openapi-{n}-{k}"
        crds.append(crdutil.create_crd(f, crdutil.crd_body(group, plural, kind, schema=sch,
                                                           singular=f"e2e-test-crd-publish-openapi-{n}-{k}")))
    for crd in crds:
        wait_definition(f, crd, "v1")


def two_version_crd(f, base):
    crd = new_crd(f, base, FOO_SCHEMA, versions=[
        {"name": "v2", "served": True, "storage": True}, {"name": "v3", "served": True, "storage": False}])
    v2 = wait_definition(f, crd, "v2")
    wait_definition(f, crd, "v3")
    return crd, v2


@conformance("[sig-api-machinery] CustomResourcePublishOpenAPI [Privileged:ClusterAdmin] updates the published spec when one version gets renamed [Conformance]")
def renamed_version(f):
    crd, v2 = two_version_crd(f, "rename-ver")
    p = f"{CRD_PATH}/{crd['metadata']['name']}"
    cur = f.get(p)
    for v in cur["spec"]["versions"]:
        if v["name"] == "v3":
            v["name"] = "v4"
    f.update(p, cur)
    wait_definition(f, crd, "v4")
    wait_definition(f, crd, "v3", present=False)
    now = wait_definition(f, crd, "v2")
    expect(now == v2, "the v2 definition changed when v3 was renamed")


@conformance("[sig-api-machinery] CustomResourcePublishOpenAPI [Privileged:ClusterAdmin] removes definition from spec when one version gets changed to not be served [Conformance]")
def unserved_version(f):
    crd, v2 = two_version_crd(f, "remove-ver")
    p = f"{CRD_PATH}/{crd['metadata']['name']}"
    cur = f.get(p)
    for v in cur["spec"]["versions"]:
        if v["name"] == "v3":
            v["served"] = False
    f.update(p, cur)
    wait_definition(f, crd, "v3", present=False)
    now = wait_definition(f, crd, "v2")
    expect(now == v2, "the v2 definition changed when v3 stopped being served")
