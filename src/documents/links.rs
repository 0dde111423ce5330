//! Expiring download links for stores that cannot presign (the local store):
//! an API URL carrying its expiry and an HMAC over the document id and expiry.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::DocumentId;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LinkError {
    #[error("the download link has expired")]
    Expired,
    #[error("the download link is invalid")]
    Invalid,
}

#[derive(Clone)]
pub struct LinkSigner {
    key: Vec<u8>,
}

impl LinkSigner {
    /// Derives a key of its own from the server secret, so a link signature
    /// can never be replayed as (or mistaken for) any other MAC we compute.
    pub fn new(server_secret: &[u8]) -> Self {
        let mut mac = HmacSha256::new_from_slice(server_secret)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(b"docflow download links v1");
        Self {
            key: mac.finalize().into_bytes().to_vec(),
        }
    }

    fn mac(&self, id: DocumentId, expires: i64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(format!("{id}.{expires}").as_bytes());
        mac
    }

    pub fn sign(&self, id: DocumentId, expires: i64) -> String {
        hex::encode(self.mac(id, expires).finalize().into_bytes())
    }

    /// Checks the signature (in constant time) before the expiry, so a forged
    /// link learns nothing from which error it gets.
    pub fn verify(
        &self,
        id: DocumentId,
        expires: i64,
        signature: &str,
        now: i64,
    ) -> Result<(), LinkError> {
        let signature = hex::decode(signature).map_err(|_| LinkError::Invalid)?;
        self.mac(id, expires)
            .verify_slice(&signature)
            .map_err(|_| LinkError::Invalid)?;
        if now >= expires {
            return Err(LinkError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    #[test]
    fn sign_verify_expire_tamper() {
        let signer = LinkSigner::new(b"secret-secret-secret-secret-secret");
        let id = DocumentId(Uuid::new_v4());
        let sig = signer.sign(id, 1_000);
        assert_eq!(signer.verify(id, 1_000, &sig, 999), Ok(()));
        assert_eq!(
            signer.verify(id, 1_000, &sig, 1_000),
            Err(LinkError::Expired)
        );
        assert_eq!(signer.verify(id, 1_001, &sig, 999), Err(LinkError::Invalid));
        assert_eq!(
            signer.verify(DocumentId(Uuid::new_v4()), 1_000, &sig, 999),
            Err(LinkError::Invalid)
        );
        assert_eq!(signer.verify(id, 1_000, "zz", 999), Err(LinkError::Invalid));
        let other = LinkSigner::new(b"another-secret-another-secret-xx");
        assert_eq!(other.verify(id, 1_000, &sig, 999), Err(LinkError::Invalid));
    }
}
