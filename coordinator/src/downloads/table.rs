//! The downloads of filesystem locations: a random token per download, kept in memory with
//! the file it stands for until it expires, and the `GET /downloads/<token>` route of the
//! coordinator's HTTP server, which reads the file at request time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ferry_shared::layout::ObjectStore;
use tracing::warn;

/// Bytes of randomness in a token.
const TOKEN_BYTES: usize = 32;

/// One download: the file, in its location, and when its token stops working.
#[derive(Clone)]
struct Entry {
    store: ObjectStore,
    key: String,
    expires: Instant,
}

/// The tokens of the downloads that still work, shared by the controller that hands them out
/// and the HTTP server that answers them.
#[derive(Clone, Default)]
pub struct DownloadTable(Arc<Mutex<HashMap<String, Entry>>>);

/// Why no token could be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot make a random download token: {0}")]
pub struct TokenError(#[from] getrandom::Error);

impl DownloadTable {
    fn entries(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A new token for `key` in `store`, valid for `validity`. Expired tokens go.
    pub fn insert(
        &self,
        store: ObjectStore,
        key: String,
        validity: Duration,
    ) -> Result<String, TokenError> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes)?;
        let token = hex::encode(bytes);
        let now = Instant::now();
        let mut entries = self.entries();
        entries.retain(|_, entry| entry.expires > now);
        entries.insert(
            token.clone(),
            Entry {
                store,
                key,
                expires: now + validity,
            },
        );
        Ok(token)
    }

    /// The download of `token` if it still works; an expired one is removed.
    fn valid(&self, token: &str) -> Option<Entry> {
        let mut entries = self.entries();
        let entry = entries.get(token)?.clone();
        if entry.expires <= Instant::now() {
            entries.remove(token);
            return None;
        }
        Some(entry)
    }

    /// `GET /downloads/{token}`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/downloads/{token}", get(download))
            .with_state(self.clone())
    }
}

async fn download(State(table): State<DownloadTable>, Path(token): Path<String>) -> Response {
    let Some(entry) = table.valid(&token) else {
        return refuse(
            StatusCode::NOT_FOUND,
            "this download does not exist or has expired; create a new DownloadRequest",
        );
    };
    match entry.store.get(&entry.key).await {
        Ok(Some(bytes)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/octet-stream")],
            bytes,
        )
            .into_response(),
        Ok(None) => refuse(
            StatusCode::NOT_FOUND,
            "the file is no longer in the storage location",
        ),
        Err(err) => {
            warn!(%err, key = %entry.key, "cannot read a download from its storage location");
            refuse(
                StatusCode::BAD_GATEWAY,
                "the storage location cannot be read now; the coordinator's log says why",
            )
        }
    }
}

/// A one-line plain-text answer.
fn refuse(code: StatusCode, message: &str) -> Response {
    (code, format!("{message}\n")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_shared::repository::RepositoryLocation;
    use ferry_shared::retry::Retrier;

    fn store(dir: &std::path::Path) -> ObjectStore {
        let root = RepositoryLocation::Local {
            path: dir.to_owned(),
        };
        ObjectStore::open(&root, Retrier::unobserved(Duration::ZERO)).unwrap()
    }

    #[test]
    fn tokens_are_random_hex_and_expired_ones_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let table = DownloadTable::default();
        let live = table
            .insert(store(dir.path()), "a".into(), Duration::from_secs(60))
            .unwrap();
        let dead = table
            .insert(store(dir.path()), "b".into(), Duration::ZERO)
            .unwrap();
        assert_eq!(live.len(), 2 * TOKEN_BYTES);
        assert!(live.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(live, dead);
        assert_eq!(table.valid(&live).map(|entry| entry.key), Some("a".into()));
        assert!(table.valid(&dead).is_none());
        assert!(!table.entries().contains_key(&dead), "expired token kept");
        assert!(table.valid("unknown").is_none());
    }
}
