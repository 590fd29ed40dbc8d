//! The free addresses of one network, in memory: a cursor over the never-used part of the range
//! and a queue of released addresses, so that an allocation costs O(1) amortised whatever the
//! size of the network (each address passes the cursor once). The storage backend keeps it in
//! step with its rows: loaded at start, changed with every committed binding.

use std::collections::{HashSet, VecDeque};
use std::net::IpAddr;

use crate::cidr::Cidr;

/// The addresses of one network and which of them are bound.
#[derive(Debug, Clone)]
pub struct IpPool {
    cidr: Cidr,
    last: u128,
    /// Offsets never handed out (gateway, server address).
    never: Vec<u128>,
    bound: HashSet<u128>,
    /// The next offset not yet looked at.
    cursor: u128,
    /// Released offsets below the cursor, oldest first.
    free: VecDeque<u128>,
}

impl IpPool {
    /// The pool of `cidr`, where the addresses in `never` are never handed out.
    pub fn new(cidr: Cidr, never: &[IpAddr]) -> Self {
        let (first, last) = cidr.host_offsets();
        let mut never: Vec<u128> = never.iter().filter_map(|ip| cidr.offset_of(*ip)).collect();
        never.sort_unstable();
        never.dedup();
        Self {
            cidr,
            last,
            never,
            bound: HashSet::new(),
            cursor: first,
            free: VecDeque::new(),
        }
    }

    /// Addresses that can be handed out in all.
    pub fn capacity(&self) -> u128 {
        let (first, last) = self.cidr.host_offsets();
        (last - first + 1)
            - self
                .never
                .iter()
                .filter(|&&o| o >= first && o <= last)
                .count() as u128
    }

    /// Addresses bound now (fixed bindings such as the server's included).
    pub fn bound(&self) -> usize {
        self.bound.len()
    }

    /// Whether `ip` is bound.
    pub fn is_bound(&self, ip: IpAddr) -> bool {
        self.cidr
            .offset_of(ip)
            .is_some_and(|offset| self.bound.contains(&offset))
    }

    /// Records `ip` as bound (loading stored bindings, or a fixed one). False when it is
    /// outside the network or already bound.
    pub fn mark_bound(&mut self, ip: IpAddr) -> bool {
        match self.cidr.offset_of(ip) {
            Some(offset) => self.bound.insert(offset),
            None => false,
        }
    }

    /// Binds and returns a free address, if there is one: a never-used one while there are,
    /// then released ones, oldest first (a released address rests as long as possible before
    /// another node gets it).
    pub fn allocate(&mut self) -> Option<IpAddr> {
        while self.cursor <= self.last {
            let offset = self.cursor;
            self.cursor += 1;
            if !self.never.contains(&offset) && self.bound.insert(offset) {
                return Some(self.cidr.address(offset));
            }
        }
        while let Some(offset) = self.free.pop_front() {
            if self.bound.insert(offset) {
                return Some(self.cidr.address(offset));
            }
        }
        None
    }

    /// Frees `ip` (a binding deleted, or an allocation whose write failed).
    pub fn release(&mut self, ip: IpAddr) {
        if let Some(offset) = self.cidr.offset_of(ip)
            && self.bound.remove(&offset)
            && offset < self.cursor
        {
            self.free.push_back(offset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(cidr: &str, never: &[&str]) -> IpPool {
        let never: Vec<IpAddr> = never.iter().map(|ip| ip.parse().unwrap()).collect();
        IpPool::new(cidr.parse().unwrap(), &never)
    }

    #[test]
    fn a_slash_24_hands_out_every_address_but_the_gateway_once() {
        let mut pool = pool("10.1.1.0/24", &["10.1.1.1", "10.1.1.1"]);
        assert_eq!(pool.capacity(), 253);
        let mut seen = HashSet::new();
        while let Some(ip) = pool.allocate() {
            assert!(seen.insert(ip), "{ip} handed out twice");
        }
        assert_eq!(seen.len(), 253);
        for never in ["10.1.1.0", "10.1.1.1", "10.1.1.255"] {
            assert!(!seen.contains(&never.parse::<IpAddr>().unwrap()), "{never}");
        }
    }

    #[test]
    fn released_addresses_come_back_oldest_first_after_the_unused_ones() {
        let mut pool = pool("10.0.0.0/29", &["10.0.0.1"]);
        assert!(pool.mark_bound("10.0.0.3".parse().unwrap()));
        assert!(!pool.mark_bound("10.0.0.3".parse().unwrap()));
        let first: Vec<String> = (0..2)
            .map(|_| pool.allocate().unwrap().to_string())
            .collect();
        assert_eq!(first, ["10.0.0.2", "10.0.0.4"]);
        pool.release("10.0.0.4".parse().unwrap());
        pool.release("10.0.0.2".parse().unwrap());
        let rest: Vec<String> = std::iter::from_fn(|| pool.allocate())
            .map(|ip| ip.to_string())
            .collect();
        assert_eq!(rest, ["10.0.0.5", "10.0.0.6", "10.0.0.4", "10.0.0.2"]);
        assert_eq!(pool.bound(), 5);
    }

    #[test]
    fn an_ipv6_pool_allocates_without_walking_its_range() {
        let mut pool = pool("fd00::/64", &["fd00::1"]);
        assert_eq!(pool.allocate().unwrap().to_string(), "fd00::2");
        assert_eq!(pool.capacity(), u64::MAX as u128 - 1);
    }
}
