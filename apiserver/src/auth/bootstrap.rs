//! Upstream's RBAC bootstrap policy (being written).
