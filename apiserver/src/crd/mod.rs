//! CustomResourceDefinitions: schema checks (`schema`), serving custom resources through
//! the generic store (`resource`), and the controller that registers them (`controller`).

pub mod jsonpath;
// Being assembled: `controller`, `resource` and `schema` join once the schema module lands.
