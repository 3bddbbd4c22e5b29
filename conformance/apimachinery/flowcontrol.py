"""API priority and fairness (flowcontrol.go): FlowSchema and PriorityLevelConfiguration
API operations."""

from conformance.apiops import api_operations
from conformance.framework import conformance

GV = ("flowcontrol.apiserver.k8s.io", "v1")


def status(o):
    return {"conditions": [{"type": "StatusUpdated", "status": "True", "reason": "E2E",
                            "message": "Set from an e2e test", "lastTransitionTime": "2024-01-01T00:00:00Z"}]}


@conformance("[sig-api-machinery] API priority and fairness should support FlowSchema API operations [Conformance]")
def flowschema_api(f):
    def make(name, labels):
        return {"metadata": {"name": name, "labels": labels},
                "spec": {"priorityLevelConfiguration": {"name": "global-default"}, "matchingPrecedence": 10000,
                         "rules": [{"subjects": [{"kind": "Group", "group": {"name": "e2e-testing"}}],
                                    "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]}]}}
    api_operations(f, *GV, "flowschemas", make, namespaced=False, status=status)


@conformance("[sig-api-machinery] API priority and fairness should support PriorityLevelConfiguration API operations [Conformance]")
def plc_api(f):
    def make(name, labels):
        return {"metadata": {"name": name, "labels": labels},
                "spec": {"type": "Limited", "limited": {"nominalConcurrencyShares": 2,
                                                        "limitResponse": {"type": "Reject"}}}}
    api_operations(f, *GV, "prioritylevelconfigurations", make, namespaced=False, status=status)
