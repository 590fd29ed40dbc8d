//! Choosing one target among the records a selector matched: the sans-IO half of "send to a
//! service".
//!
//! A [`Policy`] says how to choose; a [`Chooser`] keeps the little state the choice needs (where
//! the round robin stands) and makes it. The node keeps one `Chooser` per selector it sends to,
//! so that each selector's round robin spreads its own traffic evenly. [`Locality`] says where the
//! caller is, for [`Policy::Closest`].
//!
//! | Policy              | Chooses                                                           |
//! |---------------------|-------------------------------------------------------------------|
//! | `RoundRobin`        | each candidate in turn, in the order of their names               |
//! | `Closest`           | the closest candidates ([`Proximity`]), in turn when several tie  |
//! | `ConsistentHash(k)` | the highest rendezvous weight for `k`: same key, same candidate   |
//! | `Named(name)`       | the candidate called `name`, if it is among them                  |
//!
//! Every policy returns `None` when there is no candidate, and only then (except `Named`).
//!
//! ```
//! use atbus_discovery::{Chooser, Locality, NodeRecord, Policy};
//!
//! let mut me = NodeRecord::new("client-1");
//! me.metadata.namespace = "prod".into();
//! let me = Locality::of(&me);
//!
//! let candidates: Vec<NodeRecord> = ["echo-b", "echo-a", "echo-c"]
//!     .into_iter()
//!     .map(|name| {
//!         let mut record = NodeRecord::new(name);
//!         record.host.hostname = format!("{name}.example");
//!         record
//!     })
//!     .collect();
//!
//! let mut chooser = Chooser::new();
//! let names: Vec<&str> = (0..4)
//!     .map(|_| chooser.choose(&Policy::RoundRobin, &me, &candidates).unwrap().name.as_str())
//!     .collect();
//! assert_eq!(names, ["echo-a", "echo-b", "echo-c", "echo-a"]);
//!
//! // The same key always goes to the same instance, on every node and every platform.
//! let by_user = Policy::hashed("user-42");
//! let first = chooser.choose(&by_user, &me, &candidates).unwrap();
//! assert_eq!(chooser.choose(&by_user, &me, &candidates).unwrap(), first);
//!
//! let named = Policy::Named("echo-c".into());
//! assert_eq!(chooser.choose(&named, &me, &candidates).unwrap().name, "echo-c");
//! assert!(chooser.choose(&Policy::RoundRobin, &me, &[]).is_none());
//! ```

use crate::record::NodeRecord;

/// The label naming a node's region, the coarsest level of its area.
pub const REGION_LABEL: &str = "area.region";
/// The label naming a node's district, inside its region.
pub const DISTRICT_LABEL: &str = "area.district";
/// The label naming a node's zone, inside its district: the finest level of its area.
pub const ZONE_LABEL: &str = "area.zone_id";

/// How to choose one target among the candidates a selector matched.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Each candidate in turn, in the order of their names: over any `k × n` consecutive choices
    /// among the same `n` candidates, each is chosen exactly `k` times. When candidates come or
    /// go, the turn goes on from the last chosen name: nobody is skipped or served twice in a row
    /// because the list changed size.
    RoundRobin,
    /// The closest candidates by [`Proximity`] (same process, same host, same namespace, then
    /// the area labels); among equally close ones, each in turn as with `RoundRobin`.
    Closest,
    /// The candidate with the highest rendezvous weight for this key (highest random weight
    /// hashing): the same key goes to the same candidate as long as it stays, on every node.
    /// When one of `n` candidates leaves, only the keys it had move (about `1/n` of them), and
    /// each to the candidate that was its second choice; when one joins, only the keys it now
    /// wins move (again about `1/n`), all to it. Build it from bytes with [`Policy::hashed`], or
    /// give a `u64` of your own (a user id, a shard number).
    ConsistentHash(u64),
    /// The candidate with this name; `None` if it is not among the candidates.
    Named(String),
}

impl Policy {
    /// `ConsistentHash` of `key`'s 64-bit FNV-1a hash: a fixed algorithm, so the same key maps to
    /// the same value on every platform, Rust version and run.
    pub fn hashed(key: impl AsRef<[u8]>) -> Policy {
        Policy::ConsistentHash(fnv1a(FNV_OFFSET, key.as_ref()))
    }
}

/// Where the caller is, as far as [`Policy::Closest`] cares: its namespace, host, process and
/// area labels ([`REGION_LABEL`], [`DISTRICT_LABEL`], [`ZONE_LABEL`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Locality {
    /// Namespace, `default` when the record's is empty (as [`NodeRecord::namespace`]).
    pub namespace: String,
    /// Host name; an empty one is on no known host and shares it with nobody.
    pub hostname: String,
    /// Process id.
    pub pid: u32,
    /// The values of `area.region`, `area.district` and `area.zone_id`, coarsest first; an
    /// empty value counts as missing.
    pub area: [Option<String>; 3],
}

impl Locality {
    /// Where the node with this record (the caller's own) is.
    pub fn of(record: &NodeRecord) -> Self {
        Locality {
            namespace: record.namespace().to_owned(),
            hostname: record.host.hostname.clone(),
            pid: record.host.pid,
            area: area_of(record).map(|value| value.map(str::to_owned)),
        }
    }

    /// How close `record` is to this place.
    pub fn proximity(&self, record: &NodeRecord) -> Proximity {
        let same_namespace = record.namespace() == self.namespace;
        let same_host =
            same_namespace && !self.hostname.is_empty() && record.host.hostname == self.hostname;
        let tier = match (same_namespace, same_host) {
            (true, true) if record.host.pid == self.pid => Tier::Process,
            (true, true) => Tier::Host,
            (true, false) => Tier::Namespace,
            _ => Tier::Elsewhere,
        };
        // The area is a hierarchy: a level counts only when every coarser level agrees. A level
        // that neither side sets does not break the chain (a deployment may use zones alone); a
        // level set on one side only, or to different values, ends it.
        let mut area = 0;
        for (level, theirs) in area_of(record).into_iter().enumerate() {
            match (self.area[level].as_deref(), theirs) {
                (None, None) => {}
                (Some(mine), Some(theirs)) if mine == theirs => area = level + 1,
                _ => break,
            }
        }
        Proximity {
            tier,
            area: [Area::None, Area::Region, Area::District, Area::Zone][area],
        }
    }
}

/// How close a candidate is to the caller: greater is closer. The tier decides first, the area
/// then, so the order is: same process, same host, same namespace, then the area (same zone,
/// same district, same region), then anything else; and within a tier, the candidate sharing
/// more of the caller's area is closer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Proximity {
    /// Process, host, namespace or elsewhere.
    pub tier: Tier,
    /// How much of the area the candidate shares with the caller.
    pub area: Area,
}

/// Where a candidate runs relative to the caller; later variants are closer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// Another namespace.
    Elsewhere,
    /// The same namespace on another host.
    Namespace,
    /// The same namespace and host name ("the same machine"), another process.
    Host,
    /// The same namespace, host name and pid.
    Process,
}

/// How much of the caller's area a candidate shares; later variants are closer. A finer level
/// counts only if the coarser ones agree (or neither side sets them): the same `area.zone_id` in
/// another region is no match at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Area {
    /// Not even the region.
    None,
    /// The same `area.region`.
    Region,
    /// The same `area.region` and `area.district`.
    District,
    /// The same `area.region`, `area.district` and `area.zone_id`.
    Zone,
}

/// Makes the choices of a [`Policy`], keeping what the round robin needs: the name it chose
/// last. Keep one per selector (or per destination): all policies share it, only `RoundRobin`
/// and `Closest` move it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chooser {
    /// The name chosen last by `RoundRobin` or `Closest`.
    last: Option<String>,
}

impl Chooser {
    /// A chooser that has chosen nothing yet.
    pub fn new() -> Self {
        Chooser::default()
    }

    /// One of `candidates` (in any order, names unique) by `policy`, for a caller at `me`;
    /// `None` when there is no candidate, or no candidate of that name for `Policy::Named`.
    pub fn choose<'a>(
        &mut self,
        policy: &Policy,
        me: &Locality,
        candidates: &'a [NodeRecord],
    ) -> Option<&'a NodeRecord> {
        match policy {
            Policy::RoundRobin => self.next_in_turn(candidates.iter()),
            Policy::Closest => {
                let best = candidates.iter().map(|c| me.proximity(c)).max()?;
                self.next_in_turn(candidates.iter().filter(|c| me.proximity(c) == best))
            }
            Policy::ConsistentHash(key) => {
                let key = fmix64(*key);
                let weighed = candidates
                    .iter()
                    .map(|c| (rendezvous_weight(key, &c.name), c));
                // Equal weights (one chance in 2^64) go to the smaller name.
                let heaviest = weighed.max_by(|(w, a), (v, b)| w.cmp(v).then(b.name.cmp(&a.name)));
                heaviest.map(|(_, chosen)| chosen)
            }
            Policy::Named(name) => candidates.iter().find(|c| c.name == *name),
        }
    }

    /// The first candidate whose name follows the last chosen one, wrapping to the smallest name;
    /// one pass, no allocation once the name buffer is large enough.
    fn next_in_turn<'a>(
        &mut self,
        candidates: impl Iterator<Item = &'a NodeRecord>,
    ) -> Option<&'a NodeRecord> {
        let mut smallest: Option<&NodeRecord> = None;
        let mut next: Option<&NodeRecord> = None;
        for candidate in candidates {
            if smallest.is_none_or(|s| candidate.name < s.name) {
                smallest = Some(candidate);
            }
            let after_last = self
                .last
                .as_ref()
                .is_some_and(|last| candidate.name.as_str() > last.as_str());
            if after_last && next.is_none_or(|n| candidate.name < n.name) {
                next = Some(candidate);
            }
        }
        let chosen = next.or(smallest)?;
        let last = self.last.get_or_insert_with(String::new);
        last.clear();
        last.push_str(&chosen.name);
        Some(chosen)
    }
}

/// The record's area labels, coarsest first; empty values count as missing.
fn area_of(record: &NodeRecord) -> [Option<&str>; 3] {
    [REGION_LABEL, DISTRICT_LABEL, ZONE_LABEL].map(|key| {
        record
            .metadata
            .labels
            .get(key)
            .map(String::as_str)
            .filter(|value| !value.is_empty())
    })
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a of `bytes`, starting from `state`.
fn fnv1a(state: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(state, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    })
}

/// MurmurHash3's 64-bit finaliser: every input bit flips each output bit with probability ½.
fn fmix64(mut value: u64) -> u64 {
    value ^= value >> 33;
    value = value.wrapping_mul(0xff51_afd7_ed55_8ccd);
    value ^= value >> 33;
    value = value.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    value ^ (value >> 33)
}

/// The weight of the candidate called `name` for a (mixed) key: FNV-1a of the name seeded with
/// the key, finalised; fixed algorithms, so every node computes the same weights.
fn rendezvous_weight(mixed_key: u64, name: &str) -> u64 {
    fmix64(fnv1a(mixed_key ^ FNV_OFFSET, name.as_bytes()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A record at `place`, "namespace host pid", in `area`, "region district zone" (or fewer);
    /// `_` leaves a field empty.
    fn node(name: &str, place: &str, area: &str) -> NodeRecord {
        let field = |value: &str| value.replace('_', "");
        let place: Vec<String> = place.split(' ').map(field).collect();
        let mut record = NodeRecord::new(name);
        record.metadata.namespace = place[0].clone();
        record.host.hostname = place[1].clone();
        record.host.pid = place[2].parse().unwrap();
        let levels = [REGION_LABEL, DISTRICT_LABEL, ZONE_LABEL];
        for (key, value) in levels.into_iter().zip(area.split_whitespace().map(field)) {
            record.metadata.labels.insert(key.into(), value);
        }
        record
    }

    fn me() -> Locality {
        Locality::of(&node("me", "prod h1 100", "eu paris z1"))
    }

    fn instances(count: usize) -> Vec<NodeRecord> {
        (0..count)
            .map(|i| node(&format!("svc-{i}"), &format!("prod host-{i} 1"), ""))
            .collect()
    }

    /// Records called `names`, in one namespace on one host.
    fn named(names: &[&str]) -> Vec<NodeRecord> {
        names
            .iter()
            .map(|name| node(name, "prod h 1", ""))
            .collect()
    }

    fn pick<'a>(policy: &Policy, candidates: &'a [NodeRecord]) -> Option<&'a str> {
        Chooser::new()
            .choose(policy, &me(), candidates)
            .map(|record| record.name.as_str())
    }

    /// The indices of the keys whose candidate differs, and their share.
    fn moved(before: &[String], after: &[String]) -> (Vec<usize>, f64) {
        let moved: Vec<usize> = (0..before.len())
            .filter(|&i| before[i] != after[i])
            .collect();
        let share = moved.len() as f64 / before.len() as f64;
        (moved, share)
    }

    /// The candidate each key goes to.
    fn assign(keys: &[Policy], candidates: &[NodeRecord]) -> Vec<String> {
        keys.iter()
            .map(|key| pick(key, candidates).unwrap().to_owned())
            .collect()
    }

    fn keys() -> Vec<Policy> {
        (0..10_000)
            .map(|i| Policy::hashed(format!("user-{i}")))
            .collect()
    }

    /// How many times each name comes up.
    fn tally<'a>(names: impl IntoIterator<Item = &'a str>) -> BTreeMap<&'a str, usize> {
        let mut counts = BTreeMap::new();
        names
            .into_iter()
            .for_each(|name| *counts.entry(name).or_default() += 1);
        counts
    }

    /// `count` choices by `policy` with one chooser.
    fn choices<'a>(policy: &Policy, candidates: &'a [NodeRecord], count: usize) -> Vec<&'a str> {
        let (me, mut chooser) = (me(), Chooser::new());
        let mut next = || chooser.choose(policy, &me, candidates).unwrap();
        (0..count).map(|_| next().name.as_str()).collect()
    }

    #[test]
    fn round_robin_gives_each_of_five_candidates_exactly_2000_of_10000_picks() {
        let candidates = named(&["d", "b", "e", "a", "c"]);
        assert_eq!(
            choices(&Policy::RoundRobin, &candidates, 5),
            ["a", "b", "c", "d", "e"]
        );
        let counts = tally(choices(&Policy::RoundRobin, &candidates, 10_000));
        assert_eq!(counts, ["a", "b", "c", "d", "e"].map(|n| (n, 2_000)).into());
    }

    #[test]
    fn round_robin_goes_on_after_the_last_name_when_candidates_come_and_go() {
        let all = named(&["a", "b", "c", "d", "e"]);
        let mut chooser = Chooser::new();
        let mut next = |candidates: &[NodeRecord]| {
            chooser
                .choose(&Policy::RoundRobin, &me(), candidates)
                .unwrap()
                .name
                .clone()
        };
        assert_eq!([next(&all), next(&all)], ["a", "b"]);
        // c leaves: d is next, nobody is served twice.
        let mut changed: Vec<_> = all.iter().filter(|r| r.name != "c").cloned().collect();
        assert_eq!(next(&changed), "d");
        // bb joins behind the turn, f ahead of it: e, f, then around to a, b, bb.
        changed.extend(named(&["bb", "f"]));
        assert_eq!(
            (0..5).map(|_| next(&changed)).collect::<Vec<_>>(),
            ["e", "f", "a", "b", "bb"]
        );
        // Down to one, then back to all: the turn resumes after the last name.
        assert_eq!([next(&all[..1]), next(&all)], ["a", "b"]);
    }

    #[test]
    fn proximity_ranks_process_host_namespace_then_zone_district_region() {
        let me = me();
        let ranked = [
            node("process", "prod h1 100", ""),
            node("host", "prod h1 200", ""),
            node("namespace-zone", "prod h2 1", "eu paris z1"),
            node("namespace", "prod h2 1", ""),
            node("zone", "test h3 1", "eu paris z1"),
            node("district", "test h3 1", "eu paris z2"),
            node("region", "test h3 1", "eu lyon z1"),
            node("elsewhere", "test h3 1", "us paris z1"),
        ];
        let proximities: Vec<_> = ranked.iter().map(|record| me.proximity(record)).collect();
        assert!(
            proximities.windows(2).all(|pair| pair[0] > pair[1]),
            "{proximities:#?}"
        );
        assert_eq!(proximities[4].area, Area::Zone);
        // The same zone id in another region is no match: the area is a hierarchy.
        let tier_and_area = |p: Proximity| (p.tier, p.area);
        assert_eq!(tier_and_area(proximities[7]), (Tier::Elsewhere, Area::None));
        // The same host name in another namespace is another machine.
        let same_host_name = me.proximity(&node("x", "test h1 100", ""));
        assert_eq!(tier_and_area(same_host_name), (Tier::Elsewhere, Area::None));
        // Levels neither side sets do not break the chain; an unknown host is nobody's.
        let zone_only = Locality::of(&node("me", "_ _ 7", "_ _ z9"));
        let other = zone_only.proximity(&node("x", "default _ 7", "_ _ z9"));
        assert_eq!(tier_and_area(other), (Tier::Namespace, Area::Zone));
    }

    #[test]
    fn closest_picks_same_host_then_same_namespace_then_same_region_then_anything() {
        let mut candidates = vec![
            node("anywhere", "test h9 1", "us"),
            node("same-region", "test h8 1", "eu"),
            node("same-namespace", "prod h2 1", ""),
            node("same-host", "prod h1 200", ""),
        ];
        for expected in ["same-host", "same-namespace", "same-region", "anywhere"] {
            assert_eq!(pick(&Policy::Closest, &candidates), Some(expected));
            candidates.retain(|record| record.name != expected);
        }
        assert_eq!(pick(&Policy::Closest, &candidates), None);
    }

    #[test]
    fn closest_spreads_load_evenly_over_equally_close_candidates() {
        let mut candidates: Vec<_> = (0..3)
            .map(|i| node(&format!("local-{i}"), &format!("prod h1 20{i}"), ""))
            .collect();
        candidates.extend(instances(4));
        let counts = tally(choices(&Policy::Closest, &candidates, 3_000));
        assert_eq!(
            counts,
            ["local-0", "local-1", "local-2"].map(|n| (n, 1_000)).into()
        );
    }

    #[test]
    fn consistent_hash_spreads_10000_keys_within_30_percent_of_even_over_10() {
        let assigned = assign(&keys(), &instances(10));
        let counts = tally(assigned.iter().map(String::as_str));
        eprintln!("10 000 keys over 10 instances: {counts:?}");
        assert_eq!(counts.len(), 10);
        assert!(
            counts.values().all(|&count| (700..=1_300).contains(&count)),
            "{counts:?}"
        );
    }

    #[test]
    fn consistent_hash_moves_only_the_keys_of_a_leaving_instance_and_about_a_tenth() {
        let (keys, all) = (keys(), instances(10));
        let before = assign(&keys, &all);
        let remaining: Vec<_> = all.iter().filter(|r| r.name != "svc-3").cloned().collect();
        let (moved, share) = moved(&before, &assign(&keys, &remaining));
        let on_leaver: Vec<usize> = (0..keys.len()).filter(|&i| before[i] == "svc-3").collect();
        assert_eq!(moved, on_leaver);
        eprintln!(
            "svc-3 leaves: {} keys of 10 000 move ({share})",
            moved.len()
        );
        assert!((0.07..=0.13).contains(&share), "{share}");

        // It comes back: exactly its keys return to it.
        assert_eq!(assign(&keys, &all), before);
        // An eleventh joins: only the keys it wins move, about 1/11 of them.
        let added = assign(&keys, &instances(11));
        let (moved, share) = self::moved(&before, &added);
        assert!(moved.iter().all(|&i| added[i] == "svc-10"));
        eprintln!(
            "svc-10 joins 10: {} keys of 10 000 move ({share})",
            moved.len()
        );
        assert!(
            (1.0 / 11.0 - 0.03..=1.0 / 11.0 + 0.03).contains(&share),
            "{share}"
        );
    }

    #[test]
    fn consistent_hash_ignores_candidate_order_and_is_stable_across_versions() {
        let mut candidates = instances(10);
        let key = Policy::hashed("user-42");
        assert_eq!(pick(&key, &candidates), Some("svc-3"));
        candidates.reverse();
        assert_eq!(pick(&key, &candidates), Some("svc-3"));
        // Fixed algorithms: FNV-1a's published vector, and choices pinned (computed by an
        // independent implementation) that change only if the hashing does, which would move
        // the keys of every deployment.
        assert_eq!(
            Policy::hashed("a"),
            Policy::ConsistentHash(0xaf63_dc4c_8601_ec8c)
        );
        let pinned = ["9", "4", "2", "0", "6", "1", "5", "9", "0", "2"].map(|n| format!("svc-{n}"));
        assert_eq!(assign(&keys()[..10], &instances(10)), pinned);
    }

    #[test]
    fn named_finds_its_instance_or_nothing() {
        let (candidates, named) = (instances(3), |name: &str| Policy::Named(name.into()));
        assert_eq!(pick(&named("svc-1"), &candidates), Some("svc-1"));
        assert_eq!(pick(&named("svc-7"), &candidates), None);
    }

    #[test]
    fn every_policy_chooses_nothing_among_no_candidates() {
        let policies = [
            Policy::RoundRobin,
            Policy::Closest,
            Policy::ConsistentHash(7),
            Policy::Named("me".into()),
        ];
        for policy in policies {
            assert_eq!(pick(&policy, &[]), None, "{policy:?}");
        }
    }
}
