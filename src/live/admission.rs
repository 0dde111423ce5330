//! How many live-status streams this process holds open, in all and per
//! user. One user opened 3,000 streams before (issue #13); each holds a
//! connection, buffers and a subscription, so both counts are capped and a
//! stream past a cap is refused (429) before anything is opened.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use crate::domain::UserId;

#[derive(Debug, Clone, Copy)]
pub struct StreamCaps {
    /// Streams one user may hold open in this process.
    pub per_user: usize,
    /// Streams this process holds open in all.
    pub total: usize,
}

/// Why a stream was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    PerUser,
    Total,
}

#[derive(Clone, Default)]
pub struct Admission {
    open: Arc<Mutex<Open>>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_user: HashMap<UserId, usize>,
}

/// One admitted stream; its place is given back when it drops (with the
/// response body, however the stream ends).
pub struct Admitted {
    user: UserId,
    open: Arc<Mutex<Open>>,
}

impl Admission {
    pub fn admit(&self, user: UserId, caps: StreamCaps) -> Result<Admitted, Refused> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.total >= caps.total {
            return Err(Refused::Total);
        }
        let mine = open.by_user.entry(user).or_default();
        if *mine >= caps.per_user {
            return Err(Refused::PerUser);
        }
        *mine += 1;
        open.total += 1;
        Ok(Admitted {
            user,
            open: self.open.clone(),
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.total -= 1;
        if let Some(mine) = open.by_user.get_mut(&self.user) {
            *mine -= 1;
            if *mine == 0 {
                open.by_user.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_and_places_come_back() {
        let admission = Admission::default();
        let caps = StreamCaps {
            per_user: 2,
            total: 3,
        };
        let (alice, bob) = (UserId(uuid::Uuid::new_v4()), UserId(uuid::Uuid::new_v4()));
        let first = admission.admit(alice, caps).expect("first");
        let _second = admission.admit(alice, caps).expect("second");
        assert_eq!(admission.admit(alice, caps).err(), Some(Refused::PerUser));
        let _bobs = admission.admit(bob, caps).expect("bob's own share");
        assert_eq!(admission.admit(bob, caps).err(), Some(Refused::Total));
        drop(first);
        assert!(admission.admit(alice, caps).is_ok(), "a place came back");
    }
}
