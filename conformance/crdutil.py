"""Custom resource definitions for the tests that need them (upstream's
apiextensions-apiserver test fixtures, re-expressed as JSON)."""

from conformance.framework import ApiError, rand_suffix, wait_for

CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"

ALLOW_ALL = {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}


def crd_body(group, plural, kind, scope="Namespaced", versions=None, schema=None, subresources=None,
             singular=None, list_kind=None):
    versions = versions or [{"name": "v1", "served": True, "storage": True}]
    vs = []
    for v in versions:
        v = dict(v)
        v.setdefault("schema", schema or ALLOW_ALL)
        if subresources:
            v.setdefault("subresources", subresources)
        vs.append(v)
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group, "scope": scope, "versions": vs,
            "names": {"plural": plural, "singular": singular or (plural[:-1] if plural.endswith("s") else plural),
                      "kind": kind, "listKind": list_kind or kind + "List"},
        },
    }


def random_group(prefix="group"):
    return f"{prefix}{rand_suffix(5)}.example.com"


def create_crd(f, body, wait=True):
    """Creates a CRD, waits for Established and its resources to be served; deletes it at
    the end of the test."""
    crd = f.create(CRD_PATH, body)
    name = crd["metadata"]["name"]
    f.defer(delete_crd, f, name)
    if wait:
        def established():
            c = f.get(f"{CRD_PATH}/{name}")
            conds = {x["type"]: x["status"] for x in (c.get("status") or {}).get("conditions") or []}
            return c if conds.get("Established") == "True" else None
        def processed():
            # a real API server's CRD naming controller answers within a second: when no
            # controller has touched the CRD after a few seconds, none will
            c = f.get(f"{CRD_PATH}/{name}")
            return any(x["type"] == "NamesAccepted" for x in (c.get("status") or {}).get("conditions") or [])
        wait_for(processed, timeout=5, what=f"CRD {name} to be processed (NamesAccepted condition)")
        crd = wait_for(established, timeout=30, what=f"CRD {name} Established")
        spec = crd["spec"]
        for v in spec["versions"]:
            if v.get("served"):
                gv = f"/apis/{spec['group']}/{v['name']}"

                def served(gv=gv):
                    rl = f.get(gv)
                    return any(r["name"] == spec["names"]["plural"] for r in rl.get("resources", []))
                wait_for(served, timeout=30, what=f"{gv} to serve {spec['names']['plural']}")
    return crd


def delete_crd(f, name):
    try:
        f.delete(f"{CRD_PATH}/{name}")
    except ApiError as e:
        if e.status != 404:
            raise
