//! The object types a backup or a restore deals with: those the API server serves, found
//! through discovery, and those a Backup's or Restore's filters select.

mod discovery;
mod filter;

pub use discovery::{ServedType, discover};
pub use filter::{ClusterScope, NamespaceFilter, ResourceFilter, never_moved};
