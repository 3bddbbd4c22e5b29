"""ValidatingAdmissionPolicy (validatingadmissionpolicy.go): CEL admission in the API server."""

import time

from conformance.apiops import api_operations
from conformance.framework import ApiError, TestFailure, conformance, expect, rand_suffix, wait_for

GV = ("admissionregistration.k8s.io", "v1")
AR = "/apis/admissionregistration.k8s.io/v1"


def deployment(name, replicas):
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": {"app": "nginx"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "nginx"}},
                     "template": {"metadata": {"labels": {"app": "nginx"}},
                                  "spec": {"containers": [{"name": "nginx", "image": "nginx:latest"}]}}}}


def install(f, validations, variables=None):
    name = f"{f.ns}-policy"
    label = f"{f.ns}-vap"
    f.patch(f"/api/v1/namespaces/{f.ns}", {"metadata": {"labels": {label: "true"}}})
    spec = {"failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"],
                                                    "operations": ["CREATE", "UPDATE"],
                                                    "resources": ["deployments"]}]},
            "validations": validations}
    if variables:
        spec["variables"] = variables
    f.create(f"{AR}/validatingadmissionpolicies", {"metadata": {"name": name}, "spec": spec})
    f.defer(f.delete_ignore, f"{AR}/validatingadmissionpolicies/{name}")
    f.create(f"{AR}/validatingadmissionpolicybindings", {
        "metadata": {"name": name + "-binding"},
        "spec": {"policyName": name, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchLabels": {label: "true"}}}}})
    f.defer(f.delete_ignore, f"{AR}/validatingadmissionpolicybindings/{name}-binding")


def wait_denied(f, body, contains):
    """Policies take effect asynchronously: retry a create that must be denied."""
    def denied():
        try:
            f.create(f.path("deployments", group="apps"), body)
        except ApiError as e:
            if e.status in (400, 403, 422) and contains in str(e.body):
                return True
            raise
        f.delete(f.path("deployments", body["metadata"]["name"], group="apps"))
        return False
    try:
        wait_for(denied, timeout=10, interval=0.5, what="the policy to deny")
    except ApiError as e:
        raise TestFailure(f"unexpected error while waiting for the policy: {e}") from None


@conformance("[sig-api-machinery] ValidatingAdmissionPolicy [Privileged:ClusterAdmin] should validate against a Deployment [Conformance]")
def vap_deployment(f):
    install(f, [{"expression": "object.spec.replicas > 1",
                 "messageExpression": "'wants replicas > 1, got ' + string(object.spec.replicas)"},
                {"expression": f"namespaceObject.metadata.name == '{f.ns}'",
                 "message": "Internal error! Other namespace should not be allowed."}])
    wait_denied(f, deployment("replica-1", 1), "wants replicas > 1")
    f.create(f.path("deployments", group="apps"), deployment("replica-2", 2))
    rs = deployment("replicaset-1", 1)
    rs["kind"] = "ReplicaSet"
    f.create(f.path("replicasets", group="apps"), rs)


@conformance("[sig-api-machinery] ValidatingAdmissionPolicy [Privileged:ClusterAdmin] should allow expressions to refer variables. [Conformance]")
def vap_variables(f):
    install(f, [{"expression": "variables.replicas > 1", "message": "must have replicas > 1"},
                {"expression": "variables.oddReplicas", "message": "must have an odd number of replicas"}],
            variables=[{"name": "replicas", "expression": "object.spec.replicas"},
                       {"name": "oddReplicas", "expression": "variables.replicas % 2 == 1"}])
    wait_denied(f, deployment("replica-1", 1), "must have replicas > 1")
    try:
        f.create(f.path("deployments", group="apps"), deployment("replica-2", 2))
        raise TestFailure("a deployment with 2 replicas was not denied")
    except ApiError as e:
        expect("must have an odd number of replicas" in str(e.body), f"denial of 2 replicas: {e}")
    f.create(f.path("deployments", group="apps"), deployment("replica-3", 3))


@conformance("[sig-api-machinery] ValidatingAdmissionPolicy [Privileged:ClusterAdmin] should support ValidatingAdmissionPolicy API operations [Conformance]")
def vap_api(f):
    def make(name, labels):
        return {"metadata": {"name": name, "labels": labels},
                "spec": {"matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"],
                                                                 "operations": ["CREATE"], "resources": ["deployments"]}]},
                         "validations": [{"expression": "object.spec.replicas > 1"}]}}
    api_operations(f, *GV, "validatingadmissionpolicies", make, namespaced=False,
                   status=lambda o: {"conditions": [{"type": "Ready", "status": "True", "reason": "E2E",
                                                     "message": "set by e2e", "lastTransitionTime": "2024-01-01T00:00:00Z"}]})


@conformance("[sig-api-machinery] ValidatingAdmissionPolicy [Privileged:ClusterAdmin] should support ValidatingAdmissionPolicyBinding API operations [Conformance]")
def vapb_api(f):
    def make(name, labels):
        return {"metadata": {"name": name, "labels": labels},
                "spec": {"policyName": "replicalimit-policy.example.com", "validationActions": ["Deny"],
                         "paramRef": {"name": "replica-limit-test.example.com", "namespace": "default",
                                      "parameterNotFoundAction": "Deny"}}}
    api_operations(f, *GV, "validatingadmissionpolicybindings", make, namespaced=False)
