//! Object storage for uploaded bytes, behind object_store: a local directory
//! (the embedded default) or an S3-compatible bucket, chosen by STORAGE_URL.

use std::{sync::Arc, time::Duration};

use object_store::{
    Attribute, Attributes, GetResult, ObjectStore, ObjectStoreExt,
    aws::{AmazonS3, AmazonS3Builder},
    buffered::BufWriter,
    local::LocalFileSystem,
    path::Path,
    signer::Signer,
};
use secrecy::ExposeSecret;
use url::Url;

use crate::config::StorageConfig;

/// Objects larger than the part size are written with a multipart upload,
/// in parts of that size; smaller ones with a single PUT. Together with the
/// number of parts in flight this bounds what an upload holds in memory.
/// S3 requires parts of at least 5 MiB; the local store has no minimum.
const S3_PART_SIZE: usize = 5 * 1024 * 1024;
const LOCAL_PART_SIZE: usize = 1024 * 1024;
const PARTS_IN_FLIGHT: usize = 2;

#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    backend: &'static str,
    /// Set for S3, which can presign URLs; the local store cannot.
    signer: Option<Arc<AmazonS3>>,
    /// Set for the local store, whose objects are files a worker's
    /// extractor can read in place.
    local: Option<Arc<LocalFileSystem>>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("backend", &self.backend)
            .finish()
    }
}

fn s3_client(s3: &crate::config::S3Config, endpoint: Option<&str>) -> anyhow::Result<AmazonS3> {
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(&s3.bucket)
        .with_region(&s3.region);
    if let Some(endpoint) = endpoint {
        // MinIO and other self-hosted servers: path-style addressing, and
        // plain HTTP when the URL says so.
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"))
            .with_virtual_hosted_style_request(false);
    }
    if let Some(key) = &s3.access_key_id {
        builder = builder.with_access_key_id(key.expose_secret());
    }
    if let Some(secret) = &s3.secret_access_key {
        builder = builder.with_secret_access_key(secret.expose_secret());
    }
    Ok(builder.build()?)
}

impl Storage {
    pub fn open(config: &StorageConfig) -> anyhow::Result<Self> {
        match config {
            StorageConfig::Local { root } => {
                std::fs::create_dir_all(root).map_err(|e| {
                    anyhow::anyhow!("STORAGE_URL: cannot create {}: {e}", root.display())
                })?;
                let store =
                    Arc::new(LocalFileSystem::new_with_prefix(root)?.with_automatic_cleanup(true));
                Ok(Self {
                    store: store.clone(),
                    backend: "local",
                    signer: None,
                    local: Some(store),
                })
            }
            StorageConfig::S3(s3) => {
                crate::install_crypto_provider();
                let store = Arc::new(s3_client(s3, s3.endpoint.as_deref())?);
                // Signing needs no network: a second client, configured for
                // the public host, only computes signatures for it.
                let signer = match &s3.public_endpoint {
                    Some(public) => Arc::new(s3_client(s3, Some(public))?),
                    None => store.clone(),
                };
                Ok(Self {
                    store,
                    backend: "s3",
                    signer: Some(signer),
                    local: None,
                })
            }
        }
    }

    pub fn backend(&self) -> &'static str {
        self.backend
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// A streaming writer for `key`: a single PUT for small objects, a
    /// multipart upload past the part size, never more than a few parts
    /// in memory. Call `shutdown` to complete it or `abort` to discard it.
    pub fn writer(&self, key: &str, content_type: &str, content_disposition: &str) -> BufWriter {
        let part_size = if self.signer.is_some() {
            S3_PART_SIZE
        } else {
            LOCAL_PART_SIZE
        };
        let writer = BufWriter::with_capacity(self.store.clone(), Path::from(key), part_size)
            .with_max_concurrency(PARTS_IN_FLIGHT);
        if self.signer.is_some() {
            // Served by S3 itself on presigned downloads. The local store
            // does not keep attributes; our own download route sets them.
            let mut attributes = Attributes::new();
            attributes.insert(Attribute::ContentType, content_type.to_owned().into());
            attributes.insert(
                Attribute::ContentDisposition,
                content_disposition.to_owned().into(),
            );
            writer.with_attributes(attributes)
        } else {
            writer
        }
    }

    /// The file that holds `key`, on the local store (S3: `None`).
    pub fn local_file(&self, key: &str) -> Option<std::path::PathBuf> {
        self.local
            .as_ref()
            .and_then(|local| local.path_to_filesystem(&Path::from(key)).ok())
    }

    pub async fn get(&self, key: &str) -> Result<GetResult, object_store::Error> {
        self.store.get(&Path::from(key)).await
    }

    /// Whether `key` is stored.
    pub async fn exists(&self, key: &str) -> Result<bool, object_store::Error> {
        match self.store.head(&Path::from(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Deletes `key`; deleting what is already gone is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), object_store::Error> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// A presigned GET URL, for stores that can sign (S3); `None` otherwise.
    pub async fn presigned_get(
        &self,
        key: &str,
        expires_in: Duration,
    ) -> Option<Result<Url, object_store::Error>> {
        let signer = self.signer.as_ref()?;
        Some(
            signer
                .signed_url(
                    object_store::signer::Method::GET,
                    &Path::from(key),
                    expires_in,
                )
                .await,
        )
    }

    /// Whether the store answers for our bucket (or directory). A listing,
    /// not a HEAD of some key: S3 answers a HEAD in a bucket that does not
    /// exist with the same 404 as for a missing key, which looked healthy.
    pub async fn check(&self) -> Result<(), object_store::Error> {
        self.store
            .list_with_delimiter(Some(&Path::from("_readiness-probe")))
            .await
            .map(drop)
    }
}
