"""AdmissionWebhook (webhook.go): the five tests whose bodies only talk to the API server.
Upstream's shared setup also deploys the agnhost webhook pod and Service; these bodies
never call it, so the port skips that setup (see conformance/README.md)."""

from conformance.framework import ApiError, TestFailure, conformance, expect, expect_equal

ARV1 = "/apis/admissionregistration.k8s.io/v1"


def webhook(name, path, conditions, ns, unique, mutating):
    w = {
        "name": name,
        "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}],
        "clientConfig": {"service": {"namespace": ns, "name": "e2e-test-webhook", "path": path, "port": 8443}},
        "sideEffects": "None",
        "admissionReviewVersions": ["v1", "v1beta1"] if mutating else ["v1"],
        "namespaceSelector": {"matchLabels": {unique: "true"}},
    }
    if not mutating:
        w["matchPolicy"] = "Equivalent"
    if conditions is not None:
        w["matchConditions"] = conditions
    return w


def config(f, mutating, conditions):
    unique = f.ns
    first = (webhook("adding-configmap-data.k8s.io", "/mutating-configmaps", conditions, f.ns, unique, True)
             if mutating else
             webhook("validation-webhook-with-match-conditions.k8s.io", "/always-deny", conditions, f.ns, unique, False))
    ready = webhook(("mutating" if mutating else "validating") + "-is-webhook-configuration-ready.k8s.io",
                    "/always-deny", None, f.ns, unique + "-markers", mutating)
    return {"metadata": {"name": unique}, "webhooks": [first, ready]}


def coll(mutating):
    return f"{ARV1}/{'mutating' if mutating else 'validating'}webhookconfigurations"


INITIAL = [{"name": "expression-1", "expression": "object.metadata.namespace == 'production'"}]
UPDATED = INITIAL + [{"name": "expression-2", "expression": "object.metadata.namespace == 'staging'"}]


def create_and_update(f, mutating):
    c = coll(mutating)
    f.create(c, config(f, mutating, INITIAL))
    f.defer(f.delete_ignore, f"{c}/{f.ns}")
    got = f.get(f"{c}/{f.ns}")
    expect_equal(got["webhooks"][0].get("matchConditions"), INITIAL, "stored match conditions")
    got["webhooks"][0]["matchConditions"] = UPDATED
    f.update(f"{c}/{f.ns}", got)
    got = f.get(f"{c}/{f.ns}")
    expect_equal(got["webhooks"][0].get("matchConditions"), UPDATED, "updated match conditions")


def reject_invalid(f, mutating):
    c = coll(mutating)
    bad = [{"name": "invalid-expression-1", "expression": "... [] bad expression"}]
    try:
        f.create(c, config(f, mutating, bad))
    except ApiError as e:
        expect("compilation failed" in str(e.body), f"rejection lacks 'compilation failed': {e}")
        return
    f.delete_ignore(f"{c}/{f.ns}")
    raise TestFailure("a webhook configuration with an invalid CEL match condition was accepted")


@conformance("[sig-api-machinery] AdmissionWebhook [Privileged:ClusterAdmin] should be able to create and update mutating webhook configurations with match conditions [Conformance]")
def mutating_match_conditions(f):
    create_and_update(f, True)


@conformance("[sig-api-machinery] AdmissionWebhook [Privileged:ClusterAdmin] should be able to create and update validating webhook configurations with match conditions [Conformance]")
def validating_match_conditions(f):
    create_and_update(f, False)


@conformance("[sig-api-machinery] AdmissionWebhook [Privileged:ClusterAdmin] should reject mutating webhook configurations with invalid match conditions [Conformance]")
def mutating_invalid(f):
    reject_invalid(f, True)


@conformance("[sig-api-machinery] AdmissionWebhook [Privileged:ClusterAdmin] should reject validating webhook configurations with invalid match conditions [Conformance]")
def validating_invalid(f):
    reject_invalid(f, False)


@conformance("[sig-api-machinery] AdmissionWebhook [Privileged:ClusterAdmin] should include webhook resources in discovery documents [Conformance]")
def webhook_discovery(f):
    groups = f.get("/apis")["groups"]
    g = next((g for g in groups if g["name"] == "admissionregistration.k8s.io"), None)
    expect(g is not None, "admissionregistration.k8s.io not in /apis")
    expect(any(v["groupVersion"] == "admissionregistration.k8s.io/v1" for v in g["versions"]), "v1 not in /apis")
    g2 = f.get("/apis/admissionregistration.k8s.io")
    expect(any(v["groupVersion"] == "admissionregistration.k8s.io/v1" for v in g2["versions"]), "v1 not in group")
    names = [r["name"] for r in f.get(ARV1)["resources"]]
    for r in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
        expect(r in names, f"{r} not in {ARV1}")
