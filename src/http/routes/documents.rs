//! `/api/v1/documents`: upload, list, detail, delete, download links.

use aide::{
    OperationInput,
    axum::{
        ApiRouter,
        routing::{get_with, post_with},
    },
    generate::GenContext,
    openapi::{MediaType, Operation, RequestBody, SchemaObject},
    transform::TransformOperation,
};
use axum::{
    body::Body,
    extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use futures_util::{StreamExt, TryStreamExt};
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use url::Url;
use uuid::Uuid;

use crate::{
    db::documents::Document,
    documents::{BodyError, DocumentError, LinkError, Upload, content_disposition},
    domain::DocumentId,
    ephemeral::RateDecision,
    http::{
        AppState,
        docs::error_responses,
        error::ApiError,
        extract::{CurrentUser, Json, Path, Query},
        pagination::{PageParams, decode_cursor, encode_cursor},
    },
};

/// Room for multipart framing (boundaries, part headers) around the file.
const MULTIPART_OVERHEAD: u64 = 64 * 1024;

pub fn router() -> ApiRouter<AppState> {
    // The upload body is a whole file: the global JSON-sized body limit does
    // not apply; `FileUpload` and the upload stream enforce MAX_UPLOAD_BYTES.
    let upload = ApiRouter::new()
        .api_route("/upload", post_with(upload_document, upload_docs))
        .layer(DefaultBodyLimit::disable());
    ApiRouter::new()
        .merge(upload)
        .api_route("/", get_with(list_documents, list_docs))
        .api_route(
            "/{id}",
            get_with(get_document, get_docs).delete_with(delete_document, delete_docs),
        )
        .api_route(
            "/{id}/download-url",
            get_with(get_download_url, download_url_docs),
        )
        .api_route("/{id}/content", get_with(download_content, content_docs))
        .api_route("/{id}/result", get_with(get_document_result, result_docs))
        .with_path_items(|item| item.tag("documents"))
}

impl From<DocumentError> for ApiError {
    fn from(err: DocumentError) -> Self {
        match err {
            DocumentError::NotFound => ApiError::not_found("No such document."),
            DocumentError::Empty => ApiError::unprocessable("The file is empty."),
            DocumentError::TooLarge { limit } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("The file is larger than the limit of {limit} bytes."),
            ),
            DocumentError::Unsupported(why) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("Unsupported file: {why}."),
            ),
            DocumentError::Body(body) if body.too_large => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "The request body is too large.",
            ),
            DocumentError::Body(body) if body.unexpected => ApiError::unprocessable(body.message),
            DocumentError::Body(body) => ApiError::bad_request("unreadable_body", body.message),
            DocumentError::Link(LinkError::Expired) => ApiError::new(
                StatusCode::FORBIDDEN,
                "link_expired",
                "This download link has expired; ask for a new one.",
            ),
            DocumentError::Link(LinkError::Invalid) => ApiError::new(
                StatusCode::FORBIDDEN,
                "invalid_link",
                "This download link is not valid.",
            ),
            DocumentError::Storage(err) => {
                tracing::error!(error = %err, "object storage failed");
                ApiError::unavailable(
                    "storage_unavailable",
                    "File storage is temporarily unavailable; try again shortly.",
                )
            }
            DocumentError::Busy => ApiError::new(
                StatusCode::CONFLICT,
                "document_busy",
                "A job is processing this document; delete it once the job has finished.",
            ),
            DocumentError::OwnerGone => ApiError::unauthorized(
                "invalid_token",
                "The account behind this token no longer exists.",
            ),
            DocumentError::Database(err) => ApiError::database(err),
        }
    }
}

#[derive(Serialize, Deserialize, JsonSchema)]
pub struct DocumentOut {
    pub id: Uuid,
    /// The client's filename, sanitised (metadata only).
    pub filename: String,
    /// Detected from the content.
    pub content_type: String,
    pub size_bytes: i64,
    /// Hex SHA-256 of the stored bytes.
    pub sha256: String,
    pub created_at: DateTime<Utc>,
}

impl From<Document> for DocumentOut {
    fn from(document: Document) -> Self {
        Self {
            id: document.id.0,
            filename: document.filename,
            content_type: document.content_type,
            size_bytes: document.size_bytes,
            sha256: document.sha256,
            created_at: document.created_at,
        }
    }
}

/// The multipart body of an upload: one part named `file`.
pub struct FileUpload(Multipart);

impl FromRequest<AppState> for FileUpload {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        // Refuse at once what cannot fit, before reading a byte of it.
        let limit = state.documents.max_upload_bytes() + MULTIPART_OVERHEAD;
        let declared_len = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared_len.is_some_and(|len| len > limit) {
            return Err(DocumentError::TooLarge {
                limit: state.documents.max_upload_bytes(),
            }
            .into());
        }
        // The file part's bytes are counted while streaming, but multer keeps
        // whatever precedes the first boundary or ends a part's headers; bound
        // the whole body so no framing trick can make it buffer without end.
        let body_limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let request = request
            .map(|body| axum::body::Body::new(http_body_util::Limited::new(body, body_limit)));
        let multipart = Multipart::from_request(request, state)
            .await
            .map_err(|rejection| {
                ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    format!(
                        "Expected a multipart/form-data body with a `file` part ({}).",
                        rejection.body_text()
                    ),
                )
            })?;
        Ok(Self(multipart))
    }
}

impl OperationInput for FileUpload {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        aide::operation::set_body(
            ctx,
            operation,
            RequestBody {
                description: Some("The file, as the multipart part named `file`.".into()),
                content: IndexMap::from_iter([(
                    "multipart/form-data".into(),
                    MediaType {
                        schema: Some(SchemaObject {
                            json_schema: schemars::json_schema!({
                                "type": "object",
                                "required": ["file"],
                                "properties": {
                                    "file": {"type": "string", "format": "binary", "minLength": 1}
                                },
                                // Any other part is refused (422), so that
                                // nothing a client sends is silently dropped.
                                "additionalProperties": false
                            }),
                            example: None,
                            external_docs: None,
                        }),
                        ..Default::default()
                    },
                )]),
                required: true,
                extensions: IndexMap::default(),
            },
        );
    }
}

/// What the upload form yields: the file part's metadata, then its bytes.
enum FormPart {
    File {
        filename: Option<String>,
        declared_type: Option<String>,
    },
    Chunk(bytes::Bytes),
}

/// Reads the form: exactly one part, named `file`. A part after the file is
/// an error at the end of the stream, so the upload fails before it commits
/// instead of silently dropping what the client sent.
fn form_parts(
    mut multipart: Multipart,
) -> impl futures_util::Stream<Item = Result<FormPart, BodyError>> + Send {
    let unexpected = |name: Option<&str>| BodyError {
        too_large: false,
        unexpected: true,
        message: format!(
            "Unexpected form part {:?}; send only the file, as the part named `file`.",
            name.unwrap_or_default()
        ),
    };
    async_stream::stream! {
        let mut field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => return,
            Err(err) => {
                yield Err(body_error(err));
                return;
            }
        };
        if field.name() != Some("file") {
            yield Err(unexpected(field.name()));
            return;
        }
        yield Ok(FormPart::File {
            filename: field.file_name().map(str::to_owned),
            declared_type: field.content_type().map(str::to_owned),
        });
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) => yield Ok(FormPart::Chunk(chunk)),
                Ok(None) => break,
                Err(err) => {
                    yield Err(body_error(err));
                    return;
                }
            }
        }
        drop(field);
        match multipart.next_field().await {
            Ok(None) => {}
            Ok(Some(extra)) => yield Err(unexpected(extra.name())),
            Err(err) => yield Err(body_error(err)),
        }
    }
}

fn body_error(err: axum::extract::multipart::MultipartError) -> BodyError {
    BodyError {
        too_large: err.status() == StatusCode::PAYLOAD_TOO_LARGE,
        unexpected: false,
        message: err.body_text(),
    }
}

async fn upload_document(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    FileUpload(multipart): FileUpload,
) -> Result<(StatusCode, Json<DocumentOut>), ApiError> {
    let limit = state.config.uploads.rate_limit_per_minute;
    let bucket = format!("upload:{}", user.user_id);
    match state
        .ephemeral
        .hit_rate_limit(&bucket, limit, std::time::Duration::from_secs(60))
        .await
    {
        Ok(RateDecision::Allowed) => {}
        Ok(RateDecision::Limited { retry_after }) => {
            return Err(ApiError::rate_limited(retry_after));
        }
        Err(err) => tracing::warn!(error = %err, "upload rate limiter unavailable; allowing"),
    }

    let mut parts = Box::pin(form_parts(multipart));
    let (filename, declared_type) = match parts.next().await {
        Some(Ok(FormPart::File {
            filename,
            declared_type,
        })) => (filename, declared_type),
        Some(Ok(FormPart::Chunk(_))) | None => {
            return Err(ApiError::unprocessable("The form has no `file` part."));
        }
        Some(Err(err)) => return Err(DocumentError::Body(err).into()),
    };
    let bytes = parts
        .filter_map(|part| async move {
            match part {
                Ok(FormPart::Chunk(chunk)) => Some(Ok(chunk)),
                Ok(FormPart::File { .. }) => None,
                Err(err) => Some(Err(err)),
            }
        })
        .boxed();
    let document = state
        .documents
        .upload(Upload {
            owner: user.user_id,
            filename,
            declared_type,
            bytes,
        })
        .await?;
    tracing::info!(document_id = %document.id, size_bytes = document.size_bytes, content_type = document.content_type, "document uploaded");
    Ok((StatusCode::CREATED, Json(document.into())))
}

fn upload_docs(op: TransformOperation) -> TransformOperation {
    error_responses(
        op.id("upload_document")
            .summary("Upload a PDF, PNG, JPEG or plain-text file")
            .description(
                "Streams the part named `file` to storage. The type is detected from \
                 the content and must agree with the part's declared type.",
            )
            .response::<201, Json<DocumentOut>>(),
        &[400, 413, 415, 422, 429, 503],
    )
}

#[derive(Deserialize, JsonSchema)]
pub struct DocumentListParams {
    /// Page size, 1–100 (default 20).
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<i64>,
    /// Items to skip (default 0, at most 10,000; use `cursor` to go further).
    #[schemars(range(min = 0, max = 10_000))]
    pub offset: Option<i64>,
    /// Continue after the page that handed out this `next_cursor`.
    #[schemars(regex(pattern = crate::http::pagination::CURSOR_PATTERN))]
    pub cursor: Option<String>,
}

#[derive(Serialize, Deserialize, JsonSchema)]
pub struct DocumentPage {
    /// Newest first.
    pub items: Vec<DocumentOut>,
    /// The caller's documents, counted up to 1,000.
    pub total: i64,
    /// False when there are more than `total`.
    pub total_exact: bool,
    pub limit: i64,
    pub offset: i64,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

async fn list_documents(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Query(params): Query<DocumentListParams>,
) -> Result<Json<DocumentPage>, ApiError> {
    let (limit, offset) = PageParams {
        limit: params.limit,
        offset: params.offset,
    }
    .resolve()?;
    let after = params.cursor.as_deref().map(decode_cursor).transpose()?;
    let page = state
        .documents
        .list(user.user_id, after, limit, offset)
        .await?;
    Ok(Json(DocumentPage {
        items: page.items.into_iter().map(Into::into).collect(),
        total: page.total,
        total_exact: page.total_exact,
        limit,
        offset,
        next_cursor: page.next.as_ref().map(encode_cursor),
    }))
}

fn list_docs(op: TransformOperation) -> TransformOperation {
    error_responses(
        op.id("list_documents")
            .summary("The caller's documents, newest first")
            .response::<200, Json<DocumentPage>>(),
        &[400, 422],
    )
}

#[derive(Deserialize, JsonSchema)]
pub struct DocumentPath {
    pub id: Uuid,
}

async fn get_document(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(path): Path<DocumentPath>,
) -> Result<Json<DocumentOut>, ApiError> {
    let document = state
        .documents
        .get(user.user_id, DocumentId(path.id))
        .await?;
    Ok(Json(document.into()))
}

fn get_docs(op: TransformOperation) -> TransformOperation {
    error_responses(
        op.id("get_document")
            .summary("One of the caller's documents")
            .response::<200, Json<DocumentOut>>(),
        &[404],
    )
}

async fn delete_document(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(path): Path<DocumentPath>,
) -> Result<StatusCode, ApiError> {
    state
        .documents
        .delete(user.user_id, DocumentId(path.id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn delete_docs(op: TransformOperation) -> TransformOperation {
    error_responses(
        op.id("delete_document")
            .summary("Delete a document and its stored file")
            .response::<204, ()>(),
        &[404, 409],
    )
}

#[derive(Serialize, Deserialize, JsonSchema)]
pub struct DownloadUrl {
    /// Works without credentials until `expires_at`.
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

/// The URL clients reach us at: PUBLIC_BASE_URL, else the request's Host.
fn base_url(state: &AppState, headers: &HeaderMap) -> Result<Url, ApiError> {
    if let Some(base) = &state.config.http.public_base_url {
        return Ok(base.clone());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .ok_or_else(|| {
            ApiError::bad_request("missing_host", "The request has no usable Host header.")
        })?;
    Url::parse(&format!("http://{host}/")).map_err(|_| {
        ApiError::bad_request("missing_host", "The request has no usable Host header.")
    })
}

async fn get_download_url(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(path): Path<DocumentPath>,
    headers: HeaderMap,
) -> Result<Json<DownloadUrl>, ApiError> {
    let base = base_url(&state, &headers)?;
    let link = state
        .documents
        .download_link(user.user_id, DocumentId(path.id), &base)
        .await?;
    Ok(Json(DownloadUrl {
        url: link.url,
        expires_at: link.expires_at,
    }))
}

fn download_url_docs(op: TransformOperation) -> TransformOperation {
    error_responses(
        op.id("get_document_download_url")
            .summary("A short-lived link to the file")
            .description("Presigned by S3, or a signed link to `/content` on the local store.")
            .response::<200, Json<DownloadUrl>>(),
        &[404, 503],
    )
}

#[derive(Deserialize, JsonSchema)]
pub struct SignedLink {
    /// Unix time after which the link stops working.
    pub expires: i64,
    /// Hex HMAC-SHA256 of the document id and expiry.
    pub signature: String,
}

async fn download_content(
    State(state): State<AppState>,
    Path(path): Path<DocumentPath>,
    Query(link): Query<SignedLink>,
) -> Result<Response, ApiError> {
    let (document, object) = state
        .documents
        .open_signed(DocumentId(path.id), link.expires, &link.signature)
        .await?;
    let stream = object.into_stream().map_err(std::io::Error::other);
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    let header_value = |value: &str| {
        HeaderValue::from_str(value).map_err(|e| ApiError::internal(anyhow::anyhow!("header: {e}")))
    };
    headers.insert(header::CONTENT_TYPE, header_value(&document.content_type)?);
    headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(document.size_bytes),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        header_value(&content_disposition(&document.filename))?,
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    Ok(response)
}

fn content_docs(op: TransformOperation) -> TransformOperation {
    error_responses(
        op.id("download_document_content")
            .summary("The file behind a signed local-store link (no bearer token)")
            .response_with::<200, (), _>(|r| r.description("The file's bytes")),
        &[403, 404, 503],
    )
}

async fn get_document_result(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(path): Path<DocumentPath>,
) -> Result<Json<crate::http::routes::jobs::ResultOut>, ApiError> {
    let stored = state
        .jobs
        .latest_result(user.user_id, DocumentId(path.id))
        .await?;
    Ok(Json(stored.try_into()?))
}

fn result_docs(op: TransformOperation) -> TransformOperation {
    error_responses(
        op.id("get_document_result")
            .summary("The latest extraction result for a document")
            .description("404 until a job for the document has succeeded.")
            .response::<200, Json<crate::http::routes::jobs::ResultOut>>(),
        &[404],
    )
}
