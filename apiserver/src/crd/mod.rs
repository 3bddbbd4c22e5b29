//! CustomResourceDefinitions: schema checks (`schema`), serving custom resources through
//! the generic store (`resource`), and the controller that registers them (`controller`).

pub mod controller;
pub mod jsonpath;
pub mod resource;
pub mod schema;
