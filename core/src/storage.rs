//! The object-store data plane and its control plane.
//!
//! Every byte Sluice keeps goes through one [`ObjectStore`]: a directory (`file://`) for the
//! embedded default, or S3 and every S3-compatible server (`s3://bucket/prefix`) configured by
//! the standard variables `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
//! `AWS_REGION`. `aws-sdk-s3` is the control plane: it checks the bucket and creates it when
//! it is missing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::{Error, Result};
use crate::instrumented::Instrumented;
use crate::local_sync::SyncedLocal;

/// Where Sluice keeps its data, as given by `--storage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageUrl {
    /// `file://<dir>`: a local directory, relative to the working directory unless absolute.
    Local(PathBuf),
    /// `s3://<bucket>[/<prefix>]`.
    S3 { bucket: String, prefix: String },
}

impl FromStr for StorageUrl {
    type Err = Error;

    fn from_str(url: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidStorageUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        if let Some(dir) = url.strip_prefix("file://") {
            if dir.is_empty() {
                return Err(invalid("file:// needs a directory, e.g. file://./data"));
            }
            Ok(StorageUrl::Local(PathBuf::from(dir)))
        } else if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("s3:// needs a bucket, e.g. s3://sluice"));
            }
            Ok(StorageUrl::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            })
        } else {
            Err(invalid("use file://<dir> or s3://<bucket>[/<prefix>]"))
        }
    }
}

impl StorageUrl {
    /// The URL and storage options (as delta-rs takes them) of the table at `path` inside this
    /// store. A local table's directory is created if missing.
    pub fn table_location(&self, path: &str) -> Result<(url::Url, HashMap<String, String>)> {
        let path = path.trim_matches('/');
        match self {
            StorageUrl::Local(dir) => {
                let io = |source| Error::Io {
                    path: dir.join(path).display().to_string(),
                    source,
                };
                let dir = std::path::absolute(dir.join(path)).map_err(io)?;
                std::fs::create_dir_all(&dir).map_err(io)?;
                let url =
                    url::Url::from_directory_path(&dir).map_err(|()| Error::InvalidStorageUrl {
                        url: self.to_string(),
                        reason: format!("{} is not an absolute path", dir.display()),
                    })?;
                Ok((url, HashMap::new()))
            }
            StorageUrl::S3 { bucket, prefix } => {
                let key = if prefix.is_empty() {
                    path.to_string()
                } else {
                    format!("{prefix}/{path}")
                };
                let url = url::Url::parse(&format!("s3://{bucket}/{key}")).map_err(|e| {
                    Error::InvalidStorageUrl {
                        url: self.to_string(),
                        reason: e.to_string(),
                    }
                })?;
                // The standard AWS variables apply (deltalake reads them too); these two are
                // what deltalake would not infer by itself.
                let mut options = HashMap::from([("AWS_REGION".to_string(), s3_region())]);
                if let Some(endpoint) = s3_endpoint() {
                    options.insert(
                        "AWS_ALLOW_HTTP".into(),
                        endpoint.starts_with("http://").to_string(),
                    );
                    options.insert("AWS_ENDPOINT_URL".into(), endpoint);
                }
                Ok((url, options))
            }
        }
    }
}

impl std::fmt::Display for StorageUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageUrl::Local(dir) => write!(f, "file://{}", dir.display()),
            StorageUrl::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            StorageUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// An opened store: the data plane every service reads and writes through.
#[derive(Debug, Clone)]
pub struct Storage {
    pub url: StorageUrl,
    pub store: Arc<dyn ObjectStore>,
}

impl Storage {
    /// Opens the store, creating the local directory or the S3 bucket when it is missing.
    pub async fn open(url: &StorageUrl) -> Result<Self> {
        let store: Arc<dyn ObjectStore> = match url {
            StorageUrl::Local(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                    path: dir.display().to_string(),
                    source,
                })?;
                let local = LocalFileSystem::new_with_prefix(dir)
                    .map_err(|source| Error::object_store(dir.display().to_string(), source))?;
                // Its root, as the store resolved it: where the files are synced.
                let root = std::fs::canonicalize(dir).map_err(|source| Error::Io {
                    path: dir.display().to_string(),
                    source,
                })?;
                Arc::new(SyncedLocal::new(Arc::new(local), root))
            }
            StorageUrl::S3 { bucket, prefix } => {
                ensure_bucket(bucket).await?;
                let endpoint = s3_endpoint();
                let s3 = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_region(s3_region())
                    .with_allow_http(
                        endpoint
                            .as_deref()
                            .is_some_and(|e| e.starts_with("http://")),
                    )
                    .build()
                    .map_err(|source| Error::object_store(format!("s3://{bucket}"), source))?;
                if prefix.is_empty() {
                    Arc::new(s3)
                } else {
                    Arc::new(PrefixStore::new(s3, prefix.as_str()))
                }
            }
        };
        Ok(Storage {
            url: url.clone(),
            store: Arc::new(Instrumented::new(store, "master")),
        })
    }

    /// Whether the store refuses a second put-if-absent of one key. AWS S3, MinIO and local
    /// directories do; some S3-compatible servers ignore `If-None-Match: *`, and on those a
    /// retried batch could overwrite its first copy (same bytes, so no loss, but the
    /// exactly-once argument of the replica no longer holds). The probe writes one small
    /// object twice under `_sluice/probe/`, in sequence.
    pub async fn probe_put_if_absent(&self) -> Result<bool> {
        let path = Path::from(format!("_sluice/probe/{}", uuid::Uuid::now_v7()));
        let create = PutOptions::from(PutMode::Create);
        let payload = || PutPayload::from(Bytes::from_static(b"sluice put-if-absent probe"));
        self.store
            .put_opts(&path, payload(), create.clone())
            .await
            .map_err(|e| Error::object_store(path.as_ref(), e))?;
        let second = self.store.put_opts(&path, payload(), create).await;
        // Best effort: the probe object is tiny and harmless if it stays.
        let _ = self.store.delete(&path).await;
        match second {
            Err(object_store::Error::AlreadyExists { .. }) => Ok(true),
            Ok(_) => Ok(false),
            Err(e) => Err(Error::object_store(path.as_ref(), e)),
        }
    }
}

/// The S3 endpoint from `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`, when one is set.
pub fn s3_endpoint() -> Option<String> {
    std::env::var("AWS_ENDPOINT_URL_S3")
        .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
        .ok()
        .filter(|e| !e.is_empty())
}

/// The region from `AWS_REGION` or `AWS_DEFAULT_REGION`; `us-east-1` when neither is set.
pub fn s3_region() -> String {
    std::env::var("AWS_REGION")
        .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|_| "us-east-1".to_string())
}

/// Checks that the bucket exists and creates it when it does not, with the standard AWS
/// configuration chain (environment, profile, SSO, instance metadata).
async fn ensure_bucket(bucket: &str) -> Result<()> {
    let fail = |message: String| Error::Bucket {
        bucket: bucket.to_string(),
        message,
    };
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(s3_region()))
        .load()
        .await;
    // A custom endpoint (MinIO, s3s, Ceph…) rarely resolves bucket subdomains; path-style
    // requests work everywhere such a server runs.
    let config = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(s3_endpoint().is_some())
        .build();
    let client = aws_sdk_s3::Client::from_conf(config);
    match client.head_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(()),
        Err(err) if err.as_service_error().is_some_and(|e| e.is_not_found()) => {
            tracing::info!(bucket, "bucket does not exist; creating it");
            match client.create_bucket().bucket(bucket).send().await {
                Ok(_) => Ok(()),
                // Another service created it between our check and our create.
                Err(err)
                    if err.as_service_error().is_some_and(|e| {
                        e.is_bucket_already_owned_by_you() || e.is_bucket_already_exists()
                    }) =>
                {
                    Ok(())
                }
                Err(err) => Err(fail(format!(
                    "cannot create: {}",
                    aws_sdk_s3::error::DisplayErrorContext(err)
                ))),
            }
        }
        // No answer from the service at all (connection refused or cut, timeout): transient.
        // Not a request that could not be built (no region, no credentials): that is config.
        Err(err) if is_unreachable(&err) => Err(Error::Unreachable {
            bucket: bucket.to_string(),
            message: aws_sdk_s3::error::DisplayErrorContext(err).to_string(),
        }),
        Err(err) => Err(fail(format!(
            "cannot check: {}",
            aws_sdk_s3::error::DisplayErrorContext(err)
        ))),
    }
}

/// Whether an S3 call failed without an answer: the connection was refused or cut, or it timed
/// out. Not a request that could not be made (no region, no credentials): that is config.
fn is_unreachable<E, R>(err: &aws_sdk_s3::error::SdkError<E, R>) -> bool {
    use aws_sdk_s3::error::SdkError;
    match err {
        SdkError::TimeoutError(_) => true,
        SdkError::DispatchFailure(failure) => {
            // "Other" is how a cut connection shows (hyper's incomplete message).
            failure.is_io() || failure.is_timeout() || failure.is_other()
        }
        _ => false,
    }
}

/// Runs `attempt` until it succeeds, fails for a reason that is not transient
/// ([`Error::is_transient`]), or `shutdown` fires: a service started while S3 is down waits for
/// it (backing off to one try every 5 s) instead of exiting.
pub async fn retry_while_unreachable<T, F, Fut>(
    what: &str,
    shutdown: &tokio_util::sync::CancellationToken,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut backoff = std::time::Duration::from_millis(200);
    loop {
        match attempt().await {
            Err(error) if error.is_transient() && !shutdown.is_cancelled() => {
                tracing::warn!(%error, "{what} failed; trying again");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => return Err(error),
                }
                backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
            }
            answer => return answer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_urls_parse() {
        assert_eq!(
            "file://./data".parse::<StorageUrl>().unwrap(),
            StorageUrl::Local("./data".into())
        );
        assert_eq!(
            "s3://bucket/a/b/".parse::<StorageUrl>().unwrap(),
            StorageUrl::S3 {
                bucket: "bucket".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(
            "s3://bucket".parse::<StorageUrl>().unwrap().to_string(),
            "s3://bucket"
        );
        for bad in ["", "file://", "s3://", "/tmp/data", "gs://x"] {
            assert!(bad.parse::<StorageUrl>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn local_store_enforces_put_if_absent() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(&StorageUrl::Local(dir.path().join("nested")))
            .await
            .unwrap();
        assert!(storage.probe_put_if_absent().await.unwrap());
    }
}
