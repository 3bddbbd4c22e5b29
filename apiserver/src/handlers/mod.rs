//! HTTP handlers, one module per area, each exposing `routes()`.

pub mod discovery;
pub mod eviction;
pub mod health;
pub mod metrics;
pub mod negotiate;
pub mod oidc;
pub mod openapi;
pub mod proxy;
pub mod resources;
pub mod tokenrequest;
