//! `file://` storage that survives power loss: what `LocalFileSystem` writes is only in the
//! page cache until the kernel flushes it, so an acknowledged durable write could vanish with
//! the machine. This wrapper makes every completed put (a master segment, a dead letter, a
//! lease) reach the disk before it returns: the file, then each directory from the file's up
//! to the store's root, since a new file's name lives in its directory and a new directory's
//! in its parent.
//!
//! Multipart uploads are passed through unsynced: Sluice's own data plane never uses them (the
//! replica's Parquet files go through deltalake's own store, and can be rebuilt from the
//! master with `sluice replay`).

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

#[derive(Debug)]
pub struct SyncedLocal {
    inner: Arc<dyn ObjectStore>,
    root: PathBuf,
}

impl SyncedLocal {
    /// `inner` must be a `LocalFileSystem` whose prefix is `root`.
    pub fn new(inner: Arc<dyn ObjectStore>, root: PathBuf) -> Self {
        SyncedLocal { inner, root }
    }

    /// Flushes `location`'s file and the directories above it, up to the root, to the disk.
    async fn sync(&self, location: &Path) -> Result<()> {
        let file = location
            .parts()
            .fold(self.root.clone(), |path, part| path.join(part.as_ref()));
        let root = self.root.clone();
        let path = location.to_string();
        tokio::task::spawn_blocking(move || sync_up_to(&file, &root))
            .await
            .map_err(|e| io_error(&path, std::io::Error::other(e)))?
            .map_err(|e| io_error(&path, e))
    }
}

fn sync_up_to(file: &std::path::Path, root: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(file)?.sync_all()?;
    let mut dir = file.parent();
    while let Some(current) = dir {
        std::fs::File::open(current)?.sync_all()?;
        if current == root {
            break;
        }
        dir = current.parent();
    }
    Ok(())
}

fn io_error(path: &str, source: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "LocalFileSystem",
        source: format!("syncing {path} to disk: {source}").into(),
    }
}

impl fmt::Display for SyncedLocal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SyncedLocal({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for SyncedLocal {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let put = self.inner.put_opts(location, payload, opts).await?;
        self.sync(location).await?;
        Ok(put)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await?;
        self.sync(to).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await?;
        self.sync(to).await
    }
}

#[cfg(test)]
mod tests {
    use object_store::local::LocalFileSystem;
    use object_store::{ObjectStoreExt, PutMode};

    use super::*;

    #[tokio::test]
    async fn puts_land_in_new_directories_and_keep_put_if_absent() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let local = Arc::new(LocalFileSystem::new_with_prefix(&root).unwrap());
        let store = SyncedLocal::new(local, root.clone());
        let path = Path::from("master/p-1/00000000000000000001.avro");
        let create = || PutOptions::from(PutMode::Create);
        store
            .put_opts(&path, PutPayload::from_static(b"segment"), create())
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(root.join("master/p-1/00000000000000000001.avro")).unwrap(),
            b"segment"
        );
        let again = store
            .put_opts(&path, PutPayload::from_static(b"other"), create())
            .await;
        assert!(matches!(
            again,
            Err(object_store::Error::AlreadyExists { .. })
        ));
        let read = store.get(&path).await.unwrap().bytes().await.unwrap();
        assert_eq!(&read[..], b"segment");
        // A file the sync cannot open (removed under it) is an error, not a silent success.
        assert!(sync_up_to(&root.join("missing"), &root).is_err());
    }
}
