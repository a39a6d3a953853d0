//! What this node asks of the fleet's other nodes: the services reconciler runs a replica where
//! there is room and removes one wherever it runs. The server's fleet link does it, through
//! the other node's fleet listener; on one machine nobody is asked.

use std::future::Future;
use std::pin::Pin;

use crate::model::{ContainerConfig, HostConfig};
use crate::Result;

/// The answer of another node, once it has acted.
pub type Done<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

pub trait OtherNodes: Send + Sync {
    /// Creates the tenant's container `name` on `node` and starts it.
    fn run<'a>(
        &'a self,
        node: &'a str,
        tenant: &'a str,
        name: &'a str,
        config: ContainerConfig,
        host: HostConfig,
    ) -> Done<'a>;

    /// Removes the tenant's container `id`, which `node` runs, running or not.
    fn remove<'a>(&'a self, node: &'a str, tenant: &'a str, id: &'a str) -> Done<'a>;
}
