//! Accounts and sessions: registration, login, token rotation, logout.
//!
//! Access tokens are short-lived JWTs checked without a database round trip
//! (plus a blocklist look-up for logged-out ones); refresh tokens are JWTs
//! whose every use is recorded in Postgres, which is what makes rotation and
//! reuse detection possible.

mod passwords;
mod service;
mod tokens;

pub use service::{AuthError, AuthService, Session};
pub use tokens::{
    ACCESS_TOKEN_TTL, AccessClaims, REFRESH_TOKEN_TTL, StreamClaims, TokenError, TokenKeys,
};
