//! Identity of a user and what they may do.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::text_enum::text_enum;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[sqlx(transparent)]
pub struct UserId(pub Uuid);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

text_enum! {
    /// Admins manage the dead-letter queue. The only way to become one is
    /// `docflow user promote`, run by an operator on the server.
    pub enum Role {
        User = "user",
        Admin = "admin",
    }
}
