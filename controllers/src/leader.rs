//! Leader election through a `coordination.k8s.io/v1` Lease (to be written).

use std::future::Future;
use std::sync::Arc;

use crate::{Ctx, Error};

/// Runs `work` while this process holds the controller-manager Lease.
pub async fn run_while_leader<F, Fut>(ctx: Arc<Ctx>, work: F) -> Result<(), Error>
where
    F: Fn(Arc<Ctx>) -> Fut,
    Fut: Future<Output = ()>,
{
    // Placeholder until leader election lands: a single server runs the controllers.
    work(ctx).await;
    Ok(())
}
