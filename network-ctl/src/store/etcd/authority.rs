//! The certificate authorities: the first one stored for a plane wins, and every replica uses
//! it.

use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use super::stored::{StoredAuthority, decode, encode};
use super::{ATTEMPTS, EtcdStore, Read, lost_races};
use crate::error::ControlError;
use crate::records::{AuthorityPem, Plane};

impl EtcdStore {
    pub(super) async fn authority(
        &self,
        plane: Plane,
        candidate: AuthorityPem,
    ) -> Result<AuthorityPem, ControlError> {
        let key = self.keys.authority(plane);
        let value = encode(&StoredAuthority {
            cert_pem: candidate.cert_pem.clone(),
            key_pem: candidate.key_pem.clone(),
        });
        for _ in 0..ATTEMPTS {
            let txn = Txn::new()
                .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.as_str(), value.clone(), None)])
                .or_else([TxnOp::get(key.as_str(), None)]);
            let response = self.txn("store a certificate authority", txn).await?;
            if response.succeeded() {
                return Ok(candidate);
            }
            if let Some(kv) = Read::of(&response).first(0) {
                let stored: StoredAuthority = decode(&key, kv.value())?;
                return Ok(AuthorityPem {
                    cert_pem: stored.cert_pem,
                    key_pem: stored.key_pem,
                });
            }
        }
        Err(lost_races(&format!(
            "storing the {} authority",
            plane.name()
        )))
    }
}
