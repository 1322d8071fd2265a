//! The engine's way to an S3 repository: rustic_core's backend traits over an opendal operator,
//! every request under Ferry's retry policy ([`crate::retry`]).
//!
//! Each object is written whole in one request under its content's ID (packs, indexes,
//! snapshots) or its fixed name (config, keys), so a retried write puts the same bytes at the
//! same name, and an object store never shows a half-written object. A listing is retried whole:
//! an entry that fails mid-listing fails the listing rather than being left out of it.

use std::future::Future;

use bytes::Bytes;
use opendal::{Buffer, Operator};
use rustic_core::{
    BytesList, ErrorKind, FileType, Id, ReadBackend, RusticError, RusticResult, WriteBackend,
};
use tokio::runtime::Runtime;

use crate::retry::{RequestFailure, Retrier};

/// A repository in object storage.
pub(crate) struct StoreBackend {
    operator: Operator,
    retrier: Retrier,
    /// The engine's calls block; their requests run on this runtime of the backend's own.
    runtime: Runtime,
    location: String,
}

impl StoreBackend {
    pub(crate) fn new(
        operator: Operator,
        retrier: Retrier,
        location: String,
    ) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ferry-store")
            .enable_all()
            .build()?;
        Ok(Self {
            operator,
            retrier,
            runtime,
            location,
        })
    }

    /// Runs one request to the store under the retry policy, blocking until it ends.
    fn request<T, F, Fut>(&self, operation: &'static str, path: &str, request: F) -> RusticResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = opendal::Result<T>>,
    {
        self.runtime
            .block_on(self.retrier.run(operation, request))
            .map_err(|failure| failed(operation, path, failure))
    }
}

fn failed(operation: &str, path: &str, failure: RequestFailure) -> Box<RusticError> {
    RusticError::with_source(
        ErrorKind::Backend,
        "Cannot {operation} `{path}` in the object store.",
        failure,
    )
    .attach_context("operation", operation.to_owned())
    .attach_context("path", path.to_owned())
}

/// The object's key, as restic lays a repository out.
fn key(tpe: FileType, id: &Id) -> String {
    let hex = id.to_hex();
    match tpe {
        FileType::Config => "config".to_owned(),
        FileType::Pack => format!("data/{}/{}", &hex[..2], &hex[..]),
        _ => format!("{}/{}", tpe.dirname(), &hex[..]),
    }
}

impl ReadBackend for StoreBackend {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn list_with_size(&self, tpe: FileType) -> RusticResult<Vec<(Id, u32)>> {
        let operator = &self.operator;
        if tpe == FileType::Config {
            let size = self.request("stat", "config", || async move {
                match operator.stat("config").await {
                    Ok(meta) => Ok(Some(meta.content_length())),
                    Err(err) if err.kind() == opendal::ErrorKind::NotFound => Ok(None),
                    Err(err) => Err(err),
                }
            })?;
            return Ok(size
                .map(|size| (Id::default(), u32::try_from(size).unwrap_or_default()))
                .into_iter()
                .collect());
        }
        let dir = format!("{}/", tpe.dirname());
        let listed = dir.as_str();
        let entries = self.request("list", listed, || async move {
            operator.list_with(listed).recursive(true).await
        })?;
        Ok(entries
            .iter()
            .filter(|entry| entry.metadata().is_file())
            .filter_map(|entry| {
                let id = Id::parse_some(entry.name(), tpe)?;
                let size = u32::try_from(entry.metadata().content_length()).ok()?;
                Some((id, size))
            })
            .collect())
    }

    fn read_full(&self, tpe: FileType, id: &Id) -> RusticResult<Bytes> {
        let (operator, path) = (&self.operator, key(tpe, id));
        let read = path.as_str();
        let buffer = self.request("read", read, || async move { operator.read(read).await })?;
        Ok(buffer.to_bytes())
    }

    fn read_partial(
        &self,
        tpe: FileType,
        id: &Id,
        _cacheable: bool,
        offset: u32,
        length: u32,
    ) -> RusticResult<Bytes> {
        let (operator, path) = (&self.operator, key(tpe, id));
        let read = path.as_str();
        let start = u64::from(offset);
        let end = start + u64::from(length);
        let buffer = self.request("read", read, || async move {
            operator.read_with(read).range(start..end).await
        })?;
        Ok(buffer.to_bytes())
    }

    fn warmup_path(&self, tpe: FileType, id: &Id) -> String {
        key(tpe, id)
    }
}

/// An object store needs no directories made before objects are put under them, so `create`
/// is the trait's own, which makes none.
impl WriteBackend for StoreBackend {
    fn write_bytes(
        &self,
        tpe: FileType,
        id: &Id,
        _cacheable: bool,
        content: BytesList,
    ) -> RusticResult<()> {
        let (operator, path) = (&self.operator, key(tpe, id));
        let written = path.as_str();
        let buffer = Buffer::from(content.into_vec());
        self.request("write", written, || {
            let buffer = buffer.clone();
            async move { operator.write(written, buffer).await.map(drop) }
        })
    }

    fn remove(&self, tpe: FileType, id: &Id, _cacheable: bool) -> RusticResult<()> {
        let (operator, path) = (&self.operator, key(tpe, id));
        let removed = path.as_str();
        self.request("delete", removed, || async move {
            operator.delete(removed).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_restics_layout() {
        let id: Id = "5a6f1e2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7"
            .parse()
            .unwrap();
        let hex = id.to_hex().to_string();
        assert_eq!(key(FileType::Config, &id), "config");
        assert_eq!(key(FileType::Pack, &id), format!("data/5a/{hex}"));
        assert_eq!(key(FileType::Index, &id), format!("index/{hex}"));
        assert_eq!(key(FileType::Snapshot, &id), format!("snapshots/{hex}"));
        assert_eq!(key(FileType::Key, &id), format!("keys/{hex}"));
    }
}
