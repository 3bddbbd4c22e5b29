"""FieldValidation (field_validation.go): strict decoding of typed objects and of custom
resources, through POST and server-side apply."""

from conformance import crdutil
from conformance.framework import ApiError, TestFailure, conformance, expect

DEPLOYMENT_UNKNOWN_DUP = """{
  "apiVersion": "apps/v1", "kind": "Deployment",
  "metadata": {"name": "my-dep", "labels": {"app": "nginx"}},
  "spec": {
    "unknownField": "foo",
    "replicas": 2,
    "replicas": 3,
    "selector": {"matchLabels": {"app": "nginx"}},
    "template": {"metadata": {"labels": {"app": "nginx"}},
                 "spec": {"containers": [{"name": "nginx", "image": "nginx:latest"}]}}
  }
}"""

DEPLOYMENT_UNKNOWN_META = """{
  "apiVersion": "apps/v1", "kind": "Deployment",
  "metadata": {"name": "my-dep", "unknownMeta": "foo", "labels": {"app": "nginx"}},
  "spec": {
    "selector": {"matchLabels": {"app": "nginx"}},
    "template": {"metadata": {"labels": {"app": "nginx"}},
                 "spec": {"containers": [{"name": "nginx", "image": "nginx:latest"}]}}
  }
}"""


def strict_post(f, body):
    try:
        f.call("POST", f.path("deployments", group="apps"), body=body,
               query={"fieldManager": "field_validation_mgr", "fieldValidation": "Strict"})
    except ApiError as e:
        return str(e.body.get("message") if isinstance(e.body, dict) else e.body)
    raise TestFailure("the strict create succeeded")


@conformance("[sig-api-machinery] FieldValidation should detect unknown and duplicate fields of a typed object [Conformance]")
def typed_unknown_duplicate(f):
    msg = strict_post(f, DEPLOYMENT_UNKNOWN_DUP)
    want = 'strict decoding error: unknown field "spec.unknownField", duplicate field "spec.replicas"'
    expect(want in msg, f"error {msg!r} lacks {want!r}")


@conformance("[sig-api-machinery] FieldValidation should detect unknown metadata fields of a typed object [Conformance]")
def typed_unknown_meta(f):
    msg = strict_post(f, DEPLOYMENT_UNKNOWN_META)
    want = 'strict decoding error: unknown field "metadata.unknownMeta"'
    expect(want in msg, f"error {msg!r} lacks {want!r}")


PORTS = {
    "type": "array", "x-kubernetes-list-map-keys": ["containerPort", "protocol"],
    "x-kubernetes-list-type": "map",
    "items": {"type": "object", "required": ["containerPort", "protocol"], "properties": {
        "containerPort": {"type": "integer", "format": "int32"}, "hostIP": {"type": "string"},
        "hostPort": {"type": "integer", "format": "int32"}, "name": {"type": "string"},
        "protocol": {"type": "string"}}},
}
CRON = {"type": "string", "pattern": r"^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$"}


def schema(preserve=False, template=False):
    spec = {"type": "object", "properties": {"foo": {"type": "string"}, "cronSpec": CRON, "ports": PORTS}}
    if preserve:
        spec["x-kubernetes-preserve-unknown-fields"] = True
    if template:
        spec["properties"]["template"] = {
            "type": "object", "x-kubernetes-embedded-resource": True,
            "properties": {"metadata": {"type": "object", "properties": {"name": {"type": "string"}}},
                           "spec": {"type": "object"}}}
    return {"openAPIV3Schema": {"type": "object", "properties": {"spec": spec}}}


def noxu_crd(f, sch=None):
    """Upstream's random-name multi-version cluster-scoped fixture (v1beta1 stored, v1 served)."""
    group = crdutil.random_group("noxu")
    body = crdutil.crd_body(group, "noxus", "WishIHadChosenNoxu", scope="Cluster",
                            singular="nonenglishnoxu", list_kind="NoxuItemList",
                            versions=[{"name": "v1beta1", "served": True, "storage": True},
                                      {"name": "v1", "served": True, "storage": False}],
                            schema=sch)
    return crdutil.create_crd(f, body)


def apply_cr(f, crd, yaml_body):
    spec = crd["spec"]
    path = f"/apis/{spec['group']}/{spec['versions'][0]['name']}/{spec['names']['plural']}/mytest"
    f.defer(remove_cr, f, path)
    return f.request("PATCH", path, body=yaml_body, content_type="application/apply-patch+yaml",
                     query={"fieldManager": "field_validation_mgr", "fieldValidation": "Strict"})


def remove_cr(f, path):
    try:
        f.patch(path, {"metadata": {"finalizers": None}})
        f.delete(path)
    except ApiError:
        pass


def header(crd, name="mytest"):
    spec = crd["spec"]
    return (f"\napiVersion: {spec['group']}/{spec['versions'][0]['name']}\nkind: {spec['names']['kind']}\n"
            f"metadata:\n  name: {name}\n  finalizers:\n  - test-finalizer\n")


PORTS_YAML = '  cronSpec: "* * * * */5"\n  ports:\n  - name: x\n    containerPort: 80\n    protocol: TCP\n'


@conformance("[sig-api-machinery] FieldValidation should create/apply a valid CR for CRD with validation schema [Conformance]")
def cr_valid(f):
    crd = noxu_crd(f, schema())
    r = apply_cr(f, crd, header(crd) + "spec:\n  foo: foo1\n" + PORTS_YAML)
    expect(r.status < 300, f"apply of a valid CR: {r.status} {r.data[:300]!r}")


@conformance("[sig-api-machinery] FieldValidation should create/apply a CR with unknown fields for CRD with no validation schema [Conformance]")
def cr_no_schema(f):
    crd = noxu_crd(f)
    r = apply_cr(f, crd, header(crd) + "spec:\n  unknown: uk1\n" + PORTS_YAML)
    expect(r.status < 300, f"apply of a CR with unknown fields (no schema): {r.status} {r.data[:300]!r}")


@conformance("[sig-api-machinery] FieldValidation should create/apply an invalid CR with extra properties for CRD with validation schema [Conformance]")
def cr_extra(f):
    crd = noxu_crd(f, schema())
    r = apply_cr(f, crd, header(crd) + "unknownField: unknown\nspec:\n  foo: foo1\n" + PORTS_YAML)
    expect(b".unknownField: field not declared in schema" in r.data,
           f"apply with an unknown root field: {r.status} {r.data[:300]!r}")


@conformance("[sig-api-machinery] FieldValidation should detect unknown metadata fields in both the root and embedded object of a CR [Conformance]")
def cr_unknown_meta(f):
    crd = noxu_crd(f, schema(preserve=True, template=True))
    spec = crd["spec"]
    body = (f"\napiVersion: {spec['group']}/{spec['versions'][0]['name']}\nkind: {spec['names']['kind']}\n"
            "metadata:\n  name: mytest\n  unknownMeta: unknown\n  finalizers:\n  - test-finalizer\n"
            "spec:\n  template:\n    apiversion: foo/v1\n    kind: Sub\n    metadata:\n"
            f"        unknownSubMeta: unknown\n        name: subobject\n        namespace: {f.ns}\n"
            "  foo: foo1\n" + PORTS_YAML)
    r = apply_cr(f, crd, body)
    expect(b".spec.template.metadata.unknownSubMeta: field not declared in schema" in r.data
           or b".metadata.unknownMeta: field not declared in schema" in r.data,
           f"apply with unknown metadata fields: {r.status} {r.data[:300]!r}")


@conformance("[sig-api-machinery] FieldValidation should detect duplicates in a CR when preserving unknown fields [Conformance]")
def cr_duplicates(f):
    crd = noxu_crd(f, schema(preserve=True))
    r = apply_cr(f, crd, header(crd) + "spec:\n  unknown: uk1\n  foo: foo1\n  foo: foo2\n" + PORTS_YAML)
    expect(b'line 11: key \\"foo\\" already set in map' in r.data,
           f"apply with a duplicate field: {r.status} {r.data[:300]!r}")
