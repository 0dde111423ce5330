//! Extractors whose rejections speak the error envelope, and which document
//! themselves in the OpenAPI spec.

use std::net::{IpAddr, SocketAddr};

use aide::{
    OperationInput, OperationIo,
    generate::GenContext,
    openapi::{Operation, ReferenceOr, Response as OpenApiResponse, StatusCode as OpenApiStatus},
};
use axum::{
    extract::{ConnectInfo, FromRequest, FromRequestParts, Request},
    http::{HeaderMap, header, request::Parts},
};
use ipnet::IpNet;
use serde::de::DeserializeOwned;

use super::{AppState, error::ApiError};
use crate::auth::AccessClaims;

/// `axum::Json`, with rejections rendered as the error envelope.
#[derive(FromRequest, OperationIo)]
#[from_request(via(axum::Json), rejection(ApiError))]
#[aide(
    input_with = "axum::Json<T>",
    output_with = "axum::Json<T>",
    json_schema
)]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Query`, with rejections rendered as the error envelope.
#[derive(FromRequestParts, OperationIo)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
#[aide(input_with = "axum::extract::Query<T>", json_schema)]
pub struct Query<T>(pub T);

/// `axum::extract::Path`; a malformed id is a resource that cannot exist: 404.
#[derive(FromRequestParts, OperationIo)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
#[aide(input_with = "axum::extract::Path<T>", json_schema)]
pub struct Path<T>(pub T);

/// A JSON body that may be absent altogether (no body, or an empty one).
pub struct OptionalJson<T>(pub Option<T>);

impl<T> FromRequest<AppState> for OptionalJson<T>
where
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let declares_body = request.headers().contains_key(header::CONTENT_TYPE)
            || request
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|len| len != "0");
        if !declares_body {
            return Ok(Self(None));
        }
        let Json(value) = Json::<T>::from_request(request, state).await?;
        Ok(Self(Some(value)))
    }
}

impl<T: schemars::JsonSchema> OperationInput for OptionalJson<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        axum::Json::<T>::operation_input(ctx, operation);
        if let Some(ReferenceOr::Item(body)) = &mut operation.request_body {
            body.required = false;
        }
    }
}

/// The authenticated caller: a valid, unexpired, not-logged-out access token.
pub struct CurrentUser(pub AccessClaims);

pub const BEARER_SCHEME: &str = "bearerAuth";
/// A job's stream token as `?token=`: the other way into its event stream.
pub const STREAM_TOKEN_SCHEME: &str = "streamToken";

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer_token(&parts.headers).ok_or_else(|| {
            ApiError::unauthorized(
                "unauthenticated",
                "Send an access token as `Authorization: Bearer <token>`.",
            )
        })?;
        let claims = state.auth.authenticate(token).await?;
        Ok(Self(claims))
    }
}

pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl OperationInput for CurrentUser {
    fn operation_input(_ctx: &mut GenContext, operation: &mut Operation) {
        let requirement = [(BEARER_SCHEME.to_owned(), Vec::new())]
            .into_iter()
            .collect();
        if !operation.security.contains(&requirement) {
            operation.security.push(requirement);
        }
    }

    fn inferred_early_responses(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Vec<(Option<OpenApiStatus>, OpenApiResponse)> {
        use aide::OperationOutput;
        ApiError::operation_response(ctx, operation)
            .map(|mut response| {
                response.description = "Missing, invalid, expired or revoked access token".into();
                vec![(Some(OpenApiStatus::Code(401)), response)]
            })
            .unwrap_or_default()
    }
}

/// The client's address: the TCP peer, or, when the peer is one of our
/// trusted proxies, the nearest untrusted address in X-Forwarded-For.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .ok_or_else(|| {
                ApiError::internal(anyhow::anyhow!("server started without ConnectInfo"))
            })?;
        Ok(Self(client_ip(
            peer,
            &parts.headers,
            &state.config.http.trusted_proxies,
        )))
    }
}

impl OperationInput for ClientIp {}

pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted_proxies: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted_proxies.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    // Walk right to left: each trusted hop appended the address it saw, so
    // the first untrusted one is the client; anything left of it is claimed
    // by the client itself and cannot be believed.
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    let mut client = peer;
    for hop in forwarded.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn xff(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_str(value).expect("header"),
        );
        headers
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let proxy: IpAddr = "10.0.0.5".parse().expect("ip");
        let stranger: IpAddr = "198.51.100.7".parse().expect("ip");

        assert_eq!(client_ip(stranger, &xff("203.0.113.9"), &trusted), stranger);
        assert_eq!(
            client_ip(proxy, &xff("203.0.113.9"), &trusted),
            "203.0.113.9".parse::<IpAddr>().expect("ip")
        );
        // A spoofed left-most entry is ignored; the right-most untrusted wins.
        assert_eq!(
            client_ip(proxy, &xff("1.2.3.4, 203.0.113.9, 10.0.0.7"), &trusted),
            "203.0.113.9".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(client_ip(proxy, &xff("garbage"), &trusted), proxy);
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &trusted), proxy);
    }

    #[test]
    fn bearer_parsing() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        assert_eq!(bearer_token(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer_token(&headers), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer_token(&headers), None);
    }
}
