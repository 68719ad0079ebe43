//! Where resource bytes live. [`BlobStore`] is the one seam: the embedded
//! default keeps blobs as files in the data directory ([`FsBlobStore`]); an
//! object store can implement the same trait.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWriteExt};

/// A blob being read.
pub type BlobReader = Pin<Box<dyn AsyncRead + Send>>;

/// Stores and serves blobs by key (`sources/<id>`, `artifacts/<job>/<hash>`).
pub trait BlobStore: Send + Sync + 'static {
    /// Starts writing a blob; nothing is visible until [`BlobWriter::commit`].
    fn create(&self, key: &str) -> BoxFuture<'_, io::Result<Box<dyn BlobWriter>>>;
    /// Opens a blob, `None` when absent.
    fn open(&self, key: &str) -> BoxFuture<'_, io::Result<Option<BlobReader>>>;
    /// Deletes a blob; absent is fine.
    fn delete(&self, key: &str) -> BoxFuture<'_, io::Result<()>>;
}

/// A blob being written.
pub trait BlobWriter: Send {
    /// Appends bytes.
    fn write<'a>(&'a mut self, chunk: &'a [u8]) -> BoxFuture<'a, io::Result<()>>;
    /// Makes the blob visible under its key, durably.
    fn commit(self: Box<Self>) -> BoxFuture<'static, io::Result<()>>;
    /// Throws the partial blob away.
    fn abort(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// Blobs as files under a directory: written to `tmp/`, renamed into place.
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    root: PathBuf,
}

fn invalid_key(key: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("invalid blob key {key:?}"),
    )
}

impl FsBlobStore {
    /// Blobs under `root` (created when missing).
    pub fn new(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(root.join("tmp"))?;
        Ok(Self { root })
    }

    fn path(&self, key: &str) -> io::Result<PathBuf> {
        let valid = !key.is_empty()
            && key.split('/').all(|part| {
                !part.is_empty()
                    && part != "."
                    && part != ".."
                    && part.bytes().all(|byte| {
                        byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.')
                    })
            });
        if valid {
            Ok(self.root.join(key))
        } else {
            Err(invalid_key(key))
        }
    }
}

struct FsWriter {
    file: tokio::fs::File,
    temp: PathBuf,
    target: PathBuf,
}

impl BlobStore for FsBlobStore {
    fn create(&self, key: &str) -> BoxFuture<'_, io::Result<Box<dyn BlobWriter>>> {
        let target = self.path(key);
        let temp = self.root.join("tmp").join(uuid::Uuid::new_v4().to_string());
        Box::pin(async move {
            let target = target?;
            let file = tokio::fs::File::create(&temp).await?;
            Ok(Box::new(FsWriter { file, temp, target }) as Box<dyn BlobWriter>)
        })
    }

    fn open(&self, key: &str) -> BoxFuture<'_, io::Result<Option<BlobReader>>> {
        let path = self.path(key);
        Box::pin(async move {
            match tokio::fs::File::open(path?).await {
                Ok(file) => Ok(Some(Box::pin(file) as BlobReader)),
                Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(error) => Err(error),
            }
        })
    }

    fn delete(&self, key: &str) -> BoxFuture<'_, io::Result<()>> {
        let path = self.path(key);
        Box::pin(async move {
            match tokio::fs::remove_file(path?).await {
                Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
                _ => Ok(()),
            }
        })
    }
}

impl BlobWriter for FsWriter {
    fn write<'a>(&'a mut self, chunk: &'a [u8]) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(self.file.write_all(chunk))
    }

    fn commit(self: Box<Self>) -> BoxFuture<'static, io::Result<()>> {
        Box::pin(async move {
            let FsWriter {
                mut file,
                temp,
                target,
            } = *self;
            file.flush().await?;
            file.sync_all().await?;
            drop(file);
            if let Some(parent) = target.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            tokio::fs::rename(&temp, &target).await
        })
    }

    fn abort(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let temp: &Path = &self.temp;
            let _ = tokio::fs::remove_file(temp).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn blobs_appear_only_when_committed_and_keys_cannot_escape() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsBlobStore::new(dir.path()).expect("store");
        let mut writer = store.create("sources/abc").await.expect("create");
        writer.write(b"hello ").await.expect("write");
        writer.write(b"world").await.expect("write");
        assert!(store.open("sources/abc").await.expect("open").is_none());
        writer.commit().await.expect("commit");
        let mut reader = store
            .open("sources/abc")
            .await
            .expect("open")
            .expect("present");
        let mut text = String::new();
        reader.read_to_string(&mut text).await.expect("read");
        assert_eq!(text, "hello world");

        let mut aborted = store.create("sources/gone").await.expect("create");
        aborted.write(b"x").await.expect("write");
        aborted.abort().await;
        assert!(store.open("sources/gone").await.expect("open").is_none());
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp"))
                .expect("tmp")
                .count(),
            0
        );

        for bad in ["../etc/passwd", "/abs", "a//b", "a/./b", ""] {
            assert!(store.open(bad).await.is_err(), "{bad}");
        }
        store.delete("sources/abc").await.expect("delete");
        store.delete("sources/abc").await.expect("delete twice");
    }
}
