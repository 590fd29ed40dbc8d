//! The endpoint's peers, by name: the state of each, an id for the timer index, which peers
//! changed since the timers last looked, and the tombstones of the peers that left.
//!
//! Every way to change a peer goes through [`Peers::get_mut`], [`Peers::entry`] or
//! [`Peers::get_or_insert`], which note the peer as *touched*; the endpoint computes the touched
//! peers' deadlines again before it answers `poll_timeout` (`endpoint/timers.rs`). Only
//! [`Peers::iter_mut`] changes peers without noting them: its callers touch what they change.
//!
//! A peer is created on first use, and dropped when it has left and has nothing more to do
//! (`endpoint/departure.rs`); what must outlive it, so that it can come back, is its tombstone
//! (`peers/departed.rs`), from which it is created again.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::Instant;

use super::peer::Peer;

mod departed;

pub(crate) use departed::{Departed, StreamLimits, Tombstone, at_rest};

/// A peer's handle in the timer index: the slot it holds while it exists (a slot is used again
/// after its peer is dropped; the index tells the two apart by the generation of its entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct PeerId(u32);

/// One peer and its bookkeeping.
#[derive(Debug)]
struct Slot {
    name: String,
    peer: Peer,
    /// Its id is in `touched`.
    touched: Cell<bool>,
    /// When its state is dropped, if it stays at rest until then.
    linger: Cell<Option<Instant>>,
}

/// The peers by name.
#[derive(Debug)]
pub(crate) struct Peers {
    ids: BTreeMap<String, PeerId>,
    /// Boxed: a peer is large, and the vector keeps the room of the most peers ever held.
    slots: Vec<Option<Box<Slot>>>,
    /// Slots free for the next peer.
    free: Vec<u32>,
    /// Peers changed since the timers last looked, each once.
    touched: RefCell<Vec<PeerId>>,
    /// What is kept of the peers that left.
    departed: Departed,
}

/// A vacant or occupied place for a peer: see [`Peers::entry`].
pub(crate) struct PeerEntry<'a> {
    peers: &'a mut Peers,
    name: String,
}

impl<'a> PeerEntry<'a> {
    /// The peer, created if new (from its tombstone, if it left before); touched.
    pub fn or_default(self) -> &'a mut Peer {
        let id = match self.peers.ids.get(&self.name) {
            Some(&id) => id,
            None => self.peers.create(self.name),
        };
        self.peers.touched_peer(id)
    }
}

impl Peers {
    /// No peers; tombstones kept as `departed` says.
    pub fn new(departed: Departed) -> Self {
        Self {
            ids: BTreeMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            touched: RefCell::default(),
            departed,
        }
    }

    /// The peer named `name`.
    pub fn get(&self, name: &str) -> Option<&Peer> {
        let id = self.ids.get(name)?;
        Some(&self.slot(*id)?.peer)
    }

    /// The peer named `name`, to change: it is touched.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Peer> {
        let id = *self.ids.get(name)?;
        self.touch_id(id);
        Some(&mut self.slot_mut(id)?.peer)
    }

    /// Whether a peer named `name` exists.
    pub fn contains_key(&self, name: &str) -> bool {
        self.ids.contains_key(name)
    }

    /// The place of the peer named `name`, to create it if new.
    pub fn entry(&mut self, name: String) -> PeerEntry<'_> {
        PeerEntry { peers: self, name }
    }

    /// The peer named `name`, created if new (from its tombstone, if it left before); touched.
    /// Unlike [`entry`](Self::entry), takes the name without allocating when the peer exists.
    pub fn get_or_insert(&mut self, name: &str) -> &mut Peer {
        let id = match self.ids.get(name) {
            Some(&id) => id,
            None => self.create(name.to_string()),
        };
        self.touched_peer(id)
    }

    /// Touches the peer named `name`: its deadlines are computed again.
    pub fn touch(&mut self, name: &str) {
        if let Some(&id) = self.ids.get(name) {
            self.touch_id(id);
        }
    }

    /// Every peer, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Peer)> {
        self.ids
            .iter()
            .filter_map(|(name, &id)| Some((name, &self.slot(id)?.peer)))
    }

    /// Every peer, to change, in no particular order: nothing is touched (the caller touches
    /// the peers it changes).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&String, &mut Peer)> {
        self.slots
            .iter_mut()
            .flatten()
            .map(|slot| (&slot.name, &mut slot.peer))
    }

    /// The names of the peers, in order.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.ids.keys()
    }

    /// Every peer, by name.
    pub fn values(&self) -> impl Iterator<Item = &Peer> {
        self.iter().map(|(_, peer)| peer)
    }

    /// How many peers there are.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// The id of the peer named `name`.
    pub fn id(&self, name: &str) -> Option<PeerId> {
        self.ids.get(name).copied()
    }

    /// The name and state of the peer with id `id`.
    pub fn by_id(&self, id: PeerId) -> Option<(&str, &Peer)> {
        self.slot(id).map(|slot| (slot.name.as_str(), &slot.peer))
    }

    /// Takes the touched peers.
    pub fn take_touched(&self) -> Vec<PeerId> {
        let touched = std::mem::take(&mut *self.touched.borrow_mut());
        for &id in &touched {
            if let Some(slot) = self.slot(id) {
                slot.touched.set(false);
            }
        }
        touched
    }

    /// When the peer with id `id` is dropped if it stays at rest.
    pub fn linger(&self, id: PeerId) -> Option<Instant> {
        self.slot(id)?.linger.get()
    }

    /// Sets when the peer with id `id` is dropped if it stays at rest.
    pub fn set_linger(&self, id: PeerId, at: Option<Instant>) {
        if let Some(slot) = self.slot(id) {
            slot.linger.set(at);
        }
    }

    /// Drops the peer named `name`, keeping `tombstone` of it (if any) from `now`. Returns its id.
    pub fn remove(
        &mut self,
        name: &str,
        tombstone: Option<Tombstone>,
        now: Instant,
    ) -> Option<PeerId> {
        let id = self.ids.remove(name)?;
        self.slots[id.0 as usize] = None;
        self.free.push(id.0);
        if let Some(tombstone) = tombstone {
            self.departed.insert(name, tombstone, now);
        }
        Some(id)
    }

    /// What is kept of the peers that left.
    pub fn departed(&self) -> &Departed {
        &self.departed
    }

    fn create(&mut self, name: String) -> PeerId {
        let peer = match self.departed.take(&name) {
            Some(tombstone) => tombstone.restore(self.departed.limits()),
            None => Peer::default(),
        };
        let slot = Slot {
            name: name.clone(),
            peer,
            touched: Cell::new(false),
            linger: Cell::new(None),
        };
        let id = match self.free.pop() {
            Some(free) => {
                self.slots[free as usize] = Some(Box::new(slot));
                PeerId(free)
            }
            None => {
                self.slots.push(Some(Box::new(slot)));
                PeerId((self.slots.len() - 1) as u32)
            }
        };
        self.ids.insert(name, id);
        id
    }

    /// The peer with id `id`, touched.
    fn touched_peer(&mut self, id: PeerId) -> &mut Peer {
        self.touch_id(id);
        &mut self
            .slot_mut(id)
            .unwrap_or_else(|| unreachable!("an id names a slot"))
            .peer
    }

    /// Touches the peer with id `id`.
    pub fn touch_id(&mut self, id: PeerId) {
        if let Some(slot) = self.slot(id) {
            if !slot.touched.replace(true) {
                self.touched.get_mut().push(id);
            }
        }
    }

    fn slot(&self, id: PeerId) -> Option<&Slot> {
        self.slots.get(id.0 as usize)?.as_deref()
    }

    fn slot_mut(&mut self, id: PeerId) -> Option<&mut Slot> {
        self.slots.get_mut(id.0 as usize)?.as_deref_mut()
    }
}

impl<'a> IntoIterator for &'a Peers {
    type Item = (&'a String, &'a Peer);
    type IntoIter = Box<dyn Iterator<Item = (&'a String, &'a Peer)> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}
