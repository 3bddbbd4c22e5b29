//! Controller-manager and scheduler (API clients built on kube-rs). Not built yet: see the controllers issue.
