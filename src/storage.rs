//! Object storage for uploaded bytes, behind object_store: a local directory
//! (the embedded default) or an S3-compatible bucket, chosen by STORAGE_URL.

use std::sync::Arc;

use object_store::{
    ObjectStore, ObjectStoreExt, aws::AmazonS3Builder, local::LocalFileSystem, path::Path,
};

use crate::config::StorageConfig;

#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    backend: &'static str,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("backend", &self.backend)
            .finish()
    }
}

impl Storage {
    pub fn open(config: &StorageConfig) -> anyhow::Result<Self> {
        match config {
            StorageConfig::Local { root } => {
                std::fs::create_dir_all(root).map_err(|e| {
                    anyhow::anyhow!("STORAGE_URL: cannot create {}: {e}", root.display())
                })?;
                let store = LocalFileSystem::new_with_prefix(root)?.with_automatic_cleanup(true);
                Ok(Self {
                    store: Arc::new(store),
                    backend: "local",
                })
            }
            StorageConfig::S3(s3) => {
                let mut builder = AmazonS3Builder::new()
                    .with_bucket_name(&s3.bucket)
                    .with_region(&s3.region);
                if let Some(endpoint) = &s3.endpoint {
                    // MinIO and other self-hosted servers: path-style
                    // addressing, and plain HTTP when the URL says so.
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"))
                        .with_virtual_hosted_style_request(false);
                }
                if let Some(key) = &s3.access_key_id {
                    builder = builder.with_access_key_id(key.expose());
                }
                if let Some(secret) = &s3.secret_access_key {
                    builder = builder.with_secret_access_key(secret.expose());
                }
                Ok(Self {
                    store: Arc::new(builder.build()?),
                    backend: "s3",
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

    /// A cheap round trip that fails when the store is unreachable or the
    /// credentials are wrong: a HEAD of a key that need not exist.
    pub async fn check(&self) -> Result<(), object_store::Error> {
        match self.store.head(&Path::from("_readiness-probe")).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(err),
        }
    }
}
