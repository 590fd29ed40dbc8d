//! The engine on the simulated network: the one driver that tests, benches and fuzz targets share.
//!
//! - [`EngineNode`] is a node of a [`Network`]: an [`Endpoint`] driven by the network's input,
//!   time and polls, next to an [`Application`] (the test's, the bench's) that acts on the
//!   endpoint after each of them: it reads what arrived and sends more. The node derefs to its
//!   application, so `net.node(a).endpoint` and the application's own records read alike.
//! - [`Network::bind`], [`Network::handshake`] and [`Network::accept_link`] register a link's
//!   connections with the endpoints at its ends (which hand out the ids) and join them.
//! - [`BackToBack`] joins two endpoints without a network, for harnesses that drive an endpoint
//!   by hand (a fuzz target, a test of one frame at a time) and want a real handshake on the way.

use std::ops::{Deref, DerefMut};
use std::time::Instant;

use bytes::Bytes;

use super::{Driver, Link, LinkKind, LinkProfile, Network, NodeIndex};
use crate::engine::{
    ConnectOptions, ConnectionError, ConnectionId, ConnectionParams, Endpoint, Event, Transmit,
};

/// What runs on top of an endpoint of the simulated network: the application side of a node.
pub trait Application {
    /// Called after the endpoint was handed input, a timeout or a lost connection, and by
    /// [`EngineNode::pump`]: take events and messages, queue more messages.
    fn pump(&mut self, endpoint: &mut Endpoint);

    /// Raw bytes to put on the wire before the endpoint's own transmits (an attacker's forged or
    /// replayed frames). None by default.
    fn inject(&mut self) -> Option<Transmit> {
        None
    }

    /// Sees each input before the endpoint does (a wiretap). Nothing by default.
    fn received(&mut self, _connection: ConnectionId, _data: &Bytes) {}

    /// Called each time the network asks for a transmit, with what goes out (`None`: nothing
    /// more). Nothing by default.
    fn polled(&mut self, _endpoint: &mut Endpoint, _transmit: Option<&Transmit>) {}
}

/// A bare endpoint: nobody reads what arrives.
impl Application for () {
    fn pump(&mut self, _endpoint: &mut Endpoint) {}
}

/// A node of a [`Network`] that runs the engine, with an [`Application`] on top (see the
/// [`sim`](crate::sim) module).
#[derive(Debug)]
pub struct EngineNode<A = ()> {
    /// The engine.
    pub endpoint: Endpoint,
    /// The application on top of it.
    pub app: A,
}

impl<A: Application> EngineNode<A> {
    /// `endpoint`, with `app` on top of it.
    pub fn new(endpoint: Endpoint, app: A) -> Self {
        Self { endpoint, app }
    }

    /// Lets the application act now (after the test changed something from outside).
    pub fn pump(&mut self) {
        self.app.pump(&mut self.endpoint);
    }
}

impl<A> Deref for EngineNode<A> {
    type Target = A;

    fn deref(&self) -> &A {
        &self.app
    }
}

impl<A> DerefMut for EngineNode<A> {
    fn deref_mut(&mut self) -> &mut A {
        &mut self.app
    }
}

impl<A: Application> Driver for EngineNode<A> {
    fn handle_input(&mut self, now: Instant, connection: ConnectionId, data: Bytes) {
        self.app.received(connection, &data);
        self.endpoint.handle_input(now, connection, data);
        self.app.pump(&mut self.endpoint);
    }

    fn handle_connection_lost(&mut self, now: Instant, connection: ConnectionId) {
        self.endpoint.connection_lost(now, connection);
        self.app.pump(&mut self.endpoint);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.endpoint.handle_timeout(now);
        self.app.pump(&mut self.endpoint);
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        let transmit = self
            .app
            .inject()
            .or_else(|| self.endpoint.poll_transmit(now));
        self.app.polled(&mut self.endpoint, transmit.as_ref());
        transmit
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.endpoint.poll_timeout()
    }
}

/// The connection parameters of a link of `profile`: a stream, or datagrams of the link's MTU
/// (IPv6's 1232 bytes when the profile sets none).
pub fn params_of(profile: &LinkProfile) -> ConnectionParams {
    match (profile.kind, profile.mtu) {
        (LinkKind::Stream, _) => ConnectionParams::stream(),
        (LinkKind::Datagram, None) => ConnectionParams::datagram_ipv6(),
        (LinkKind::Datagram, Some(mtu)) => ConnectionParams::datagram_ipv6().with_mtu(mtu),
    }
}

impl<A: Application> Network<EngineNode<A>> {
    /// Joins `a` and `b` with a link of `profile` that each endpoint registers with
    /// [`add_connection`](Endpoint::add_connection), naming the other (a transport that vouches
    /// for its peers: no handshake).
    pub fn bind(
        &mut self,
        a: NodeIndex,
        b: NodeIndex,
        profile: LinkProfile,
    ) -> Result<Link, ConnectionError> {
        let (now, params) = (self.now(), params_of(&profile));
        let a_name = self.node(a).endpoint.name().to_string();
        let b_name = self.node(b).endpoint.name().to_string();
        let at_a = self.endpoint(a).add_connection(now, &b_name, params)?;
        let at_b = self.endpoint(b).add_connection(now, &a_name, params)?;
        Ok(self.link(a, at_a, b, at_b, profile))
    }

    /// Joins `a` and `b` with a link of `profile` that `a` opens with a handshake proving what
    /// `options` say ([`connect`](Endpoint::connect)), and `b` [accepts](Endpoint::accept).
    pub fn handshake(
        &mut self,
        a: NodeIndex,
        b: NodeIndex,
        profile: LinkProfile,
        options: ConnectOptions,
    ) -> Result<Link, ConnectionError> {
        let (now, params) = (self.now(), params_of(&profile));
        let at_a = self.endpoint(a).connect(now, params, options)?;
        self.accept_link(a, at_a, b, profile)
    }

    /// Joins `a_connection` of `a` (a connection `a` opened, or one the network numbered for raw
    /// bytes: [`Network::number_connection`]) to a new connection that `b` accepts.
    pub fn accept_link(
        &mut self,
        a: NodeIndex,
        a_connection: ConnectionId,
        b: NodeIndex,
        profile: LinkProfile,
    ) -> Result<Link, ConnectionError> {
        let (now, params) = (self.now(), params_of(&profile));
        let at_b = self.endpoint(b).accept(now, params)?;
        Ok(self.link(a, a_connection, b, at_b, profile))
    }

    fn endpoint(&mut self, node: NodeIndex) -> &mut Endpoint {
        &mut self.node_mut(node).endpoint
    }
}

/// Two endpoints joined back to back, without a network: what one sends on its end of the link
/// goes to the other at once, at the same instant, whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackToBack {
    /// The link's id at the first endpoint.
    pub a: ConnectionId,
    /// The link's id at the second endpoint.
    pub b: ConnectionId,
}

/// One end of a [`BackToBack`] link: an endpoint, and what to do with its output that does not
/// cross the link. A bare [`Endpoint`] is an end that drops it.
pub trait End {
    /// The endpoint at this end.
    fn endpoint(&mut self) -> &mut Endpoint;

    /// An event the endpoint gave. Dropped by default.
    fn event(&mut self, _event: Event) {}

    /// A transmit of the endpoint on another connection than the link. Dropped by default.
    fn elsewhere(&mut self, _transmit: Transmit) {}

    /// A transmit about to cross the link (to check it). Nothing by default.
    fn crossing(&mut self, _transmit: &Transmit) {}
}

impl End for Endpoint {
    fn endpoint(&mut self) -> &mut Endpoint {
        self
    }
}

impl BackToBack {
    /// Opens a connection from `a` to `b` with a handshake proving what `options` say, over
    /// `params` at both ends: `a` connects, `b` accepts. [`exchange`](Self::exchange) runs it.
    pub fn connect(
        now: Instant,
        a: &mut Endpoint,
        b: &mut Endpoint,
        params: ConnectionParams,
        options: ConnectOptions,
    ) -> Result<Self, ConnectionError> {
        let at_a = a.connect(now, params, options)?;
        let at_b = b.accept(now, params)?;
        Ok(Self { a: at_a, b: at_b })
    }

    /// Moves transmits across the link at `now` until a round moves nothing (true) or `rounds`
    /// rounds have passed (false). A round takes `a`'s events and transmits, then `b`'s
    /// transmits and events; what does not cross goes to its end.
    pub fn exchange(
        &self,
        now: Instant,
        a: &mut impl End,
        b: &mut impl End,
        rounds: usize,
    ) -> bool {
        for _ in 0..rounds {
            let mut progress = false;
            while let Some(event) = a.endpoint().poll_event() {
                progress = true;
                a.event(event);
            }
            progress |= cross(now, (a, self.a), (b, self.b));
            progress |= cross(now, (b, self.b), (a, self.a));
            while let Some(event) = b.endpoint().poll_event() {
                progress = true;
                b.event(event);
            }
            if !progress {
                return true;
            }
        }
        false
    }
}

/// Takes every transmit of `from`: those on the link (its id there, `from_id`) go to `to` (as
/// `to_id`), the others to `from`'s [`End::elsewhere`]. True if there was any.
fn cross(
    now: Instant,
    (from, from_id): (&mut impl End, ConnectionId),
    (to, to_id): (&mut impl End, ConnectionId),
) -> bool {
    let mut any = false;
    while let Some(transmit) = from.endpoint().poll_transmit(now) {
        any = true;
        if transmit.connection == from_id {
            from.crossing(&transmit);
            to.endpoint().handle_input(now, to_id, transmit.data);
        } else {
            from.elsewhere(transmit);
        }
    }
    any
}
