//! Documents: streaming ingest into object storage, listing, deletion and
//! download links. Independent of HTTP: the upload takes any byte stream.

mod content;
mod links;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chrono::Utc;
use docflow_extract::ContentKind;
use futures_util::{Stream, StreamExt};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio::io::AsyncWriteExt;
use url::Url;

pub use content::{SNIFF_LEN, Unsupported, identify};
pub use links::{LinkError, LinkSigner};

use crate::{
    db::{
        self,
        documents::{Document, NewDocument},
    },
    domain::{DocumentId, Filename, UserId},
    storage::Storage,
};
use content::TextCheck;

/// One page of documents.
#[derive(Debug)]
pub struct DocumentPage {
    pub items: Vec<Document>,
    pub total: i64,
    pub total_exact: bool,
    pub next: Option<db::Cursor>,
}

#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("no such document")]
    NotFound,
    #[error("the file is empty")]
    Empty,
    #[error("the file is larger than the {limit}-byte limit")]
    TooLarge { limit: u64 },
    #[error("unsupported content: {0}")]
    Unsupported(String),
    #[error("the request body could not be read: {0}")]
    Body(#[source] BodyError),
    #[error(transparent)]
    Link(#[from] LinkError),
    /// A job is processing the document right now.
    #[error("a job is processing this document")]
    Busy,
    /// The token's account was deleted after the token was issued.
    #[error("the account no longer exists")]
    OwnerGone,
    #[error("object storage is unavailable: {0}")]
    Storage(#[from] object_store::Error),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A failure reading the client's bytes (the HTTP layer maps its own errors
/// into this, keeping their status).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BodyError {
    pub too_large: bool,
    /// The body is readable but carries something the API does not take
    /// (a form part other than the file): 422 rather than 400.
    pub unexpected: bool,
    pub message: String,
}

/// What an upload looks like from the outside.
pub struct Upload<S> {
    pub owner: UserId,
    pub filename: Option<String>,
    pub declared_type: Option<String>,
    pub bytes: S,
}

/// A link a client can follow without credentials until it expires.
pub struct DownloadLink {
    pub url: String,
    pub expires_at: chrono::DateTime<Utc>,
}

/// An upload between its first write and its row. If the request is
/// abandoned there (it timed out, or the client went away, and the handler's
/// future was dropped), `Drop` aborts the storage write and removes the key
/// in the background: an S3 multipart upload would otherwise linger,
/// invisible and billed.
struct UploadInProgress {
    storage: Storage,
    key: String,
    /// `None` once completion has started (it can no longer be aborted).
    writer: Option<object_store::buffered::BufWriter>,
    abandoned: bool,
}

impl Drop for UploadInProgress {
    fn drop(&mut self) {
        if !self.abandoned {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (storage, key, writer) = (
            self.storage.clone(),
            std::mem::take(&mut self.key),
            self.writer.take(),
        );
        runtime.spawn(async move {
            if let Some(mut writer) = writer
                && let Err(err) = writer.abort().await
            {
                tracing::warn!(error = %err, key, "could not abort an abandoned upload");
            }
            match storage.delete(&key).await {
                Ok(()) => tracing::info!(key, "removed an abandoned upload"),
                Err(err) => {
                    tracing::warn!(error = %err, key, "could not remove an abandoned upload")
                }
            }
        });
    }
}

#[derive(Clone)]
pub struct DocumentService {
    db: PgPool,
    storage: Storage,
    links: LinkSigner,
    max_upload_bytes: u64,
    allowed: Vec<ContentKind>,
    link_ttl: Duration,
}

/// RFC 5987 `attr-char`: everything else in a filename is percent-encoded.
const ATTR_CHAR_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// A Content-Disposition that downloads rather than renders, with an ASCII
/// fallback name and the exact UTF-8 name for clients that understand it.
pub fn content_disposition(filename: &str) -> String {
    let ascii: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded = utf8_percent_encode(filename, ATTR_CHAR_ESCAPES);
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

impl DocumentService {
    pub fn new(
        db: PgPool,
        storage: Storage,
        links: LinkSigner,
        max_upload_bytes: u64,
        allowed: Vec<ContentKind>,
        link_ttl: Duration,
    ) -> Self {
        Self {
            db,
            storage,
            links,
            max_upload_bytes,
            allowed,
            link_ttl,
        }
    }

    pub fn max_upload_bytes(&self) -> u64 {
        self.max_upload_bytes
    }

    /// Streams an upload into storage, hashing and checking it on the way;
    /// at most one storage part (plus the sniffing prefix) is held in memory.
    /// On any refusal the partial object is removed.
    pub async fn upload<S>(&self, upload: Upload<S>) -> Result<Document, DocumentError>
    where
        S: Stream<Item = Result<Bytes, BodyError>> + Unpin,
    {
        let Upload {
            owner,
            filename,
            declared_type,
            mut bytes,
        } = upload;
        let filename = Filename::sanitize(filename.as_deref());
        let limit = self.max_upload_bytes;
        let mut size: u64 = 0;
        let mut count = |len: usize| -> Result<(), DocumentError> {
            size += len as u64;
            if size > limit {
                Err(DocumentError::TooLarge { limit })
            } else {
                Ok(())
            }
        };

        // Gather enough of the head to know what this is.
        let mut head = BytesMut::new();
        let mut pending: Option<Bytes> = None;
        while head.len() < SNIFF_LEN {
            match bytes.next().await {
                Some(chunk) => {
                    let chunk = chunk.map_err(DocumentError::Body)?;
                    count(chunk.len())?;
                    let room = SNIFF_LEN - head.len();
                    if chunk.len() > room {
                        head.extend_from_slice(&chunk[..room]);
                        pending = Some(chunk.slice(room..));
                    } else {
                        head.extend_from_slice(&chunk);
                    }
                }
                None => break,
            }
        }
        if head.is_empty() {
            return Err(DocumentError::Empty);
        }
        let kind = content::identify(&head, declared_type.as_deref())
            .map_err(|Unsupported(why)| DocumentError::Unsupported(why))?;
        if !self.allowed.contains(&kind) {
            return Err(DocumentError::Unsupported(format!(
                "{kind} uploads are not accepted here"
            )));
        }

        let id = DocumentId::generate();
        let key = id.storage_key(owner);
        let mut upload = UploadInProgress {
            storage: self.storage.clone(),
            key: key.clone(),
            writer: Some(self.storage.writer(
                &key,
                kind.mime(),
                &content_disposition(filename.as_str()),
            )),
            abandoned: true,
        };
        let mut hasher = Sha256::new();
        let mut text = kind.is_text().then(TextCheck::default);
        // Once `shutdown` has started, `abort` would panic: only delete then.
        let mut shutting_down = false;

        let written: Result<(), DocumentError> = async {
            let writer = upload.writer.as_mut().ok_or_else(|| {
                DocumentError::Storage(object_store::Error::Generic {
                    store: "upload",
                    source: "the writer was already used".into(),
                })
            })?;
            let mut next = Some(head.freeze());
            if let Some(rest) = pending.take() {
                // Keep the order: head, then the rest of the chunk it came from.
                let head = next.take().unwrap_or_default();
                hasher.update(&head);
                if let Some(text) = text.as_mut() {
                    text.feed(&head);
                }
                writer.put(head).await?;
                next = Some(rest);
            }
            loop {
                let chunk = match next.take() {
                    Some(chunk) => chunk,
                    None => match bytes.next().await {
                        Some(chunk) => {
                            let chunk = chunk.map_err(DocumentError::Body)?;
                            count(chunk.len())?;
                            chunk
                        }
                        None => break,
                    },
                };
                hasher.update(&chunk);
                if let Some(text) = text.as_mut() {
                    text.feed(&chunk);
                }
                writer.put(chunk).await?;
            }
            if let Some(text) = text.take() {
                text.finish()
                    .map_err(|Unsupported(why)| DocumentError::Unsupported(why))?;
            }
            shutting_down = true;
            writer.shutdown().await.map_err(|e| {
                DocumentError::Storage(object_store::Error::Generic {
                    store: "upload",
                    source: Box::new(e),
                })
            })?;
            Ok(())
        }
        .await;

        if shutting_down {
            // Completed or failed completing: either way it cannot be aborted.
            upload.writer = None;
        }
        if let Err(err) = written {
            if let Some(writer) = upload.writer.as_mut()
                && let Err(abort) = writer.abort().await
            {
                tracing::warn!(error = %abort, key, "could not abort a refused upload");
            }
            // A multipart upload may have completed its parts; a single PUT
            // may have landed. Either way nothing of a refused upload stays.
            if let Err(cleanup) = self.storage.delete(&key).await {
                tracing::warn!(error = %cleanup, key, "could not remove a refused upload");
            }
            upload.abandoned = false;
            return Err(err);
        }

        let sha256 = hex::encode(hasher.finalize());
        let inserted = db::documents::insert(
            &self.db,
            &NewDocument {
                id,
                owner_id: owner,
                filename: filename.as_str(),
                content_type: kind.mime(),
                size_bytes: i64::try_from(size).unwrap_or(i64::MAX),
                sha256: &sha256,
                storage_key: &key,
            },
        )
        .await;
        upload.abandoned = false;
        match inserted {
            Ok(document) => Ok(document),
            Err(err) => {
                // No row points at the object: remove it rather than leak it.
                if let Err(cleanup) = self.storage.delete(&key).await {
                    tracing::warn!(error = %cleanup, key, "could not remove an unrecorded upload");
                }
                // The only reference a new document has is its owner.
                Err(match err {
                    sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                        DocumentError::OwnerGone
                    }
                    other => other.into(),
                })
            }
        }
    }

    pub async fn get(&self, owner: UserId, id: DocumentId) -> Result<Document, DocumentError> {
        db::documents::find_owned(&self.db, owner, id)
            .await?
            .ok_or(DocumentError::NotFound)
    }

    /// One page of the owner's documents, newest first, and how many there
    /// are (counted up to `db::jobs::COUNT_CAP`; `exact` says whether all).
    pub async fn list(
        &self,
        owner: UserId,
        after: Option<db::Cursor>,
        limit: i64,
        offset: i64,
    ) -> Result<DocumentPage, DocumentError> {
        let items = db::documents::list_owned(&self.db, owner, after, limit, offset).await?;
        let counted =
            db::documents::count_owned_capped(&self.db, owner, db::jobs::COUNT_CAP).await?;
        let next = (items.len() as i64 == limit)
            .then(|| items.last())
            .flatten()
            .map(|document| db::Cursor {
                created_at: document.created_at,
                id: document.id.0,
            });
        Ok(DocumentPage {
            items,
            total: counted.min(db::jobs::COUNT_CAP),
            total_exact: counted <= db::jobs::COUNT_CAP,
            next,
        })
    }

    /// Removes the row, then the object. Once the row is gone the document
    /// no longer exists for anyone; an object left by a failed delete is
    /// logged and unreachable.
    pub async fn delete(&self, owner: UserId, id: DocumentId) -> Result<(), DocumentError> {
        let mut tx = self.db.begin().await?;
        // Lock the document's jobs, then refuse while one is mid-run (its
        // result would point at nothing): a worker about to start one waits
        // for this transaction and then finds the job gone.
        db::documents::find_owned(&mut *tx, owner, id)
            .await?
            .ok_or(DocumentError::NotFound)?;
        if db::jobs::lock_for_document_delete(&mut tx, id).await? {
            return Err(DocumentError::Busy);
        }
        let document = db::documents::delete_owned(&mut *tx, owner, id)
            .await?
            .ok_or(DocumentError::NotFound)?;
        tx.commit().await?;
        if let Err(err) = self.storage.delete(&document.storage_key).await {
            tracing::error!(error = %err, key = document.storage_key, "document row deleted but its object was not");
        }
        Ok(())
    }

    /// A short-lived link: presigned by S3 itself, or, on the local store, a
    /// signed URL to our own streaming route under `base_url`.
    pub async fn download_link(
        &self,
        owner: UserId,
        id: DocumentId,
        base_url: &Url,
    ) -> Result<DownloadLink, DocumentError> {
        let document = self.get(owner, id).await?;
        let ttl = chrono::Duration::from_std(self.link_ttl).unwrap_or(chrono::Duration::minutes(5));
        let expires_at = Utc::now() + ttl;
        if let Some(presigned) = self
            .storage
            .presigned_get(&document.storage_key, self.link_ttl)
            .await
        {
            return Ok(DownloadLink {
                url: presigned?.to_string(),
                expires_at,
            });
        }
        let expires = expires_at.timestamp();
        let signature = self.links.sign(id, expires);
        let mut url = base_url
            .join(&format!("/api/v1/documents/{id}/content"))
            .map_err(|e| {
                DocumentError::Storage(object_store::Error::Generic {
                    store: "link",
                    source: Box::new(e),
                })
            })?;
        url.query_pairs_mut()
            .append_pair("expires", &expires.to_string())
            .append_pair("signature", &signature);
        Ok(DownloadLink {
            url: url.to_string(),
            expires_at,
        })
    }

    /// Opens the bytes behind a signed local link.
    pub async fn open_signed(
        &self,
        id: DocumentId,
        expires: i64,
        signature: &str,
    ) -> Result<(Document, object_store::GetResult), DocumentError> {
        self.links
            .verify(id, expires, signature, Utc::now().timestamp())?;
        let document = db::documents::find(&self.db, id)
            .await?
            .ok_or(DocumentError::NotFound)?;
        let object = match self.storage.get(&document.storage_key).await {
            Ok(object) => object,
            Err(object_store::Error::NotFound { .. }) => return Err(DocumentError::NotFound),
            Err(err) => return Err(err.into()),
        };
        Ok((document, object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_disposition_is_safe_and_exact() {
        assert_eq!(
            content_disposition("report.pdf"),
            "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"
        );
        let tricky = content_disposition("naïve \"quote\"\r\n.txt");
        assert!(
            tricky.starts_with("attachment; filename=\"na_ve _quote___.txt\""),
            "{tricky}"
        );
        assert!(
            tricky.ends_with("filename*=UTF-8''na%C3%AFve%20%22quote%22%0D%0A.txt"),
            "{tricky}"
        );
    }
}
