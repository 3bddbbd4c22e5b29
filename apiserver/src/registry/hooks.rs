//! Store hooks: work a kind needs done around its writes that goes beyond pure strategy
//! (allocating from shared ranges), as upstream's generic Store `BeginCreate`,
//! `BeginUpdate` and `AfterDelete` function fields.

use async_trait::async_trait;
use serde_json::Value;

use crate::error::ApiResult;

/// What a `begin_*` hook took (e.g. reserved keys), given back to `abort` when the write
/// does not happen.
#[derive(Debug, Default)]
pub struct Reservation(pub Vec<String>);

/// Hooks around one kind's writes; every method has a do-nothing default.
#[async_trait]
pub trait StoreHooks: Send + Sync + 'static {
    /// Before a create is written, after validation. May mutate the object.
    async fn begin_create(&self, _obj: &mut Value) -> ApiResult<Reservation> {
        Ok(Reservation::default())
    }

    /// Before an update of the main resource is written, after validation. May mutate `new`.
    async fn begin_update(&self, _new: &mut Value, _old: &Value) -> ApiResult<Reservation> {
        Ok(Reservation::default())
    }

    /// After an update was written.
    async fn after_update(&self, _new: &Value, _old: &Value) {}

    /// After the object was removed from storage.
    async fn after_delete(&self, _obj: &Value) {}

    /// The write a `begin_*` prepared did not happen: give back what it took.
    async fn abort(&self, _reservation: Reservation) {}
}
