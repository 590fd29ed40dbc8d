//! The rules after the handshake: every frame's source is the authenticated name, only relays
//! forward, issued identities keep to their stream until revoked or expired, anonymous peers reach
//! only their allow list; and the API that issues and revokes identities.

use std::time::{Duration, Instant};

use atbus_proto::protocol::MessageHead;
use atbus_proto::protocol::frame_message::Body;

use crate::engine::auth::{AuthFailure, IdentityKind, IssuedIdentity, Token, valid_name};
use crate::engine::endpoint::Endpoint;
use crate::engine::error::IssueError;
use crate::engine::transmit::ConnectionId;

use super::ANONYMOUS_PREFIX;

impl Endpoint {
    /// Issues the identity `(name, stream_id, token)` for a client on an untrusted network, valid
    /// for `lifetime`: the client connects with
    /// [`Credential::Issued`](crate::engine::Credential::Issued) under that name, and may send on
    /// that stream only. Issuing a name again replaces its previous identity.
    pub fn issue_identity(
        &mut self,
        now: Instant,
        name: &str,
        stream_id: i64,
        lifetime: Duration,
    ) -> Result<IssuedIdentity, IssueError> {
        if !valid_name(name) || name.starts_with(ANONYMOUS_PREFIX) {
            return Err(IssueError::InvalidName {
                name: name.to_string(),
            });
        }
        if stream_id < 0 {
            return Err(IssueError::ReservedStream { stream_id });
        }
        let secret: [u8; 32] = self.auth.random();
        let token = Token::new(secret).unwrap_or_else(|_| unreachable!("32 bytes is long enough"));
        let now_ms = self.auth.unix_ms(now);
        let identity = self
            .auth
            .issued
            .issue(name, stream_id, token, now_ms, lifetime);
        // Connections that proved the previous issue of this name are refused from now on.
        self.refuse_stale_identities(now);
        Ok(identity)
    }

    /// Revokes the identity issued to `name`: its connections are refused at once (and any frame
    /// still arriving on them), and its handshakes from now on. Returns whether it was issued.
    pub fn revoke_identity(&mut self, now: Instant, name: &str) -> bool {
        let revoked = self.auth.issued.revoke(name);
        self.refuse_stale_identities(now);
        revoked
    }

    /// Refuses the connections whose issued identity is no longer live.
    pub(super) fn refuse_stale_identities(&mut self, now: Instant) {
        let now_ms = self.auth.unix_ms(now);
        let stale: Vec<ConnectionId> = self
            .connections
            .iter()
            .filter(|(_, state)| {
                matches!(
                    state.identity.as_ref().map(|identity| (&identity.name, &identity.kind)),
                    Some((name, IdentityKind::Issued { generation, .. }))
                        if !self.auth.issued.is_live(name, *generation, now_ms)
                )
            })
            .map(|(&id, _)| id)
            .collect();
        for id in stale {
            self.refuse(id, AuthFailure::Revoked);
        }
    }

    /// Whether a frame from an authenticated peer may be taken; refuses the connection if not.
    pub(in crate::engine::endpoint) fn authorize(
        &mut self,
        now: Instant,
        connection: ConnectionId,
        head: &MessageHead,
        body: Option<&Body>,
    ) -> bool {
        let Some(state) = self.connections.get(&connection) else {
            return false;
        };
        let Some(identity) = &state.identity else {
            return true;
        };
        let failure = if head.source != identity.name {
            Some(AuthFailure::SpoofedSource)
        } else if (!head.forward_for_source.is_empty() || head.forward_for_connection_id != 0)
            && !identity.relay
        {
            Some(AuthFailure::ForwardingNotAllowed)
        } else {
            match &identity.kind {
                IdentityKind::Issued {
                    stream_id,
                    generation,
                } if self.is_accepting_side(connection) => {
                    let now_ms = self.auth.unix_ms(now);
                    if !self
                        .auth
                        .issued
                        .is_live(&identity.name, *generation, now_ms)
                    {
                        Some(AuthFailure::Revoked)
                    } else {
                        match body {
                            Some(Body::Packet(packet))
                                if packet.stream_id >= 0 && packet.stream_id != *stream_id =>
                            {
                                Some(AuthFailure::StreamNotAllowed)
                            }
                            _ => None,
                        }
                    }
                }
                IdentityKind::Anonymous if self.is_accepting_side(connection) => {
                    let allowed = self.config.auth.anonymous.as_ref().is_some_and(|policy| {
                        let labels =
                            (head.destination == self.name).then_some(&self.config.auth.labels);
                        policy
                            .allow
                            .iter()
                            .any(|rule| rule.allows(&head.destination, labels))
                    });
                    (!allowed).then_some(AuthFailure::DestinationNotAllowed)
                }
                _ => None,
            }
        };
        match failure {
            Some(failure) => {
                self.refuse(connection, failure);
                false
            }
            None => true,
        }
    }

    /// Whether this endpoint accepted `connection` (rather than opened it).
    pub(super) fn is_accepting_side(&self, connection: ConnectionId) -> bool {
        self.connections
            .get(&connection)
            .is_some_and(|state| state.accepted_hello.is_some())
    }
}
