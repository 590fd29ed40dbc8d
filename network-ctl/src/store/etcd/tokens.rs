//! Bootstrap tokens: storing one, listing them, and sweeping the expired ones (each deleted by
//! a compare of its key's revision, so a token used meanwhile is looked at again).

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};

use super::keys::Key;
use super::stored::{StoredToken, decode, encode};
use super::{ATTEMPTS, EtcdStore, Read};
use crate::clock::Millis;
use crate::error::ControlError;
use crate::records::BootstrapToken;

impl EtcdStore {
    pub(super) async fn add_token(&self, token: BootstrapToken) -> Result<(), ControlError> {
        let key = self.keys.bootstrap(&token.digest);
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.as_str(),
                encode(&StoredToken::of(&token)),
                None,
            )]);
        if self.txn("store a bootstrap token", txn).await?.succeeded() {
            Ok(())
        } else {
            Err(ControlError::Conflict(format!(
                "a bootstrap token with digest {} is stored already: create another token",
                crate::token::id_of(&token.digest)
            )))
        }
    }

    pub(super) async fn tokens(&self) -> Result<Vec<(BootstrapToken, String, i64)>, ControlError> {
        let read = self
            .read(
                "list the bootstrap tokens",
                vec![TxnOp::get(
                    self.keys.bootstraps(),
                    Some(GetOptions::new().with_prefix()),
                )],
            )
            .await?;
        let mut tokens = Vec::new();
        for kv in read.all(0) {
            let Ok(key) = kv.key_str() else { continue };
            let Some(Key::Bootstrap(digest)) = self.keys.parse(key) else {
                continue;
            };
            let stored: StoredToken = decode(key, kv.value())?;
            tokens.push((stored.token(&digest), key.to_string(), kv.mod_revision()));
        }
        tokens.sort_by(|(a, ..), (b, ..)| {
            (a.create_time, &a.digest).cmp(&(b.create_time, &b.digest))
        });
        Ok(tokens)
    }

    pub(super) async fn sweep(&self, now: Millis) -> Result<usize, ControlError> {
        let expired = |token: &BootstrapToken| token.expire_time.is_some_and(|at| at <= now);
        let mut swept = 0;
        for (token, key, mut revision) in self.tokens().await? {
            if !expired(&token) {
                continue;
            }
            for _ in 0..ATTEMPTS {
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        key.as_str(),
                        CompareOp::Equal,
                        revision,
                    )])
                    .and_then([TxnOp::delete(key.as_str(), None)])
                    .or_else([TxnOp::get(key.as_str(), None)]);
                let response = self.txn("delete an expired bootstrap token", txn).await?;
                if response.succeeded() {
                    swept += 1;
                    break;
                }
                // Changed meanwhile: still there and expired? Try again; else leave it.
                let read = Read::of(&response);
                let Some(kv) = read.first(0) else { break };
                let stored: StoredToken = decode(&key, kv.value())?;
                if !expired(&stored.token(&token.digest)) {
                    break;
                }
                revision = kv.mod_revision();
            }
        }
        Ok(swept)
    }
}
