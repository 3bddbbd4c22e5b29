//! Node agent: kubelet, runtime and kube-proxy. Not built yet: see the agent issue.
