//! A set of disjoint half-open ranges of stream offsets, merged on insert and split on remove.

use std::collections::BTreeMap;
use std::ops::Range;

/// Disjoint, non-adjacent ranges `[start, end)` of `u64`, kept merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RangeSet {
    /// start → end.
    ranges: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// An empty set.
    #[cfg(test)]
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the set holds no range.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The ranges, lowest first.
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.ranges.iter().map(|(&start, &end)| start..end)
    }

    /// The lowest range.
    pub fn first(&self) -> Option<Range<u64>> {
        self.ranges
            .first_key_value()
            .map(|(&start, &end)| start..end)
    }

    /// The ranges of the set that share at least one offset with `range`, lowest first.
    pub fn overlapping(&self, range: Range<u64>) -> Vec<Range<u64>> {
        let first = self
            .ranges
            .range(..range.start)
            .next_back()
            .map_or(range.start, |(&key, _)| key);
        self.ranges
            .range(first..range.end)
            .map(|(&start, &end)| start..end)
            .filter(|found| found.end > range.start)
            .collect()
    }

    /// Whether every offset of `range` is in the set.
    #[cfg(test)]
    pub fn contains_range(&self, range: Range<u64>) -> bool {
        if range.is_empty() {
            return true;
        }
        self.ranges
            .range(..=range.start)
            .next_back()
            .is_some_and(|(_, &end)| end >= range.end)
    }

    /// Adds `range`, merging it with the ranges it overlaps or touches.
    pub fn insert(&mut self, range: Range<u64>) {
        if range.is_empty() {
            return;
        }
        let (mut start, mut end) = (range.start, range.end);
        if let Some((&before, &before_end)) = self.ranges.range(..=start).next_back() {
            if before_end >= start {
                start = before;
                end = end.max(before_end);
            }
        }
        let absorbed: Vec<u64> = self
            .ranges
            .range(start..=end)
            .map(|(&key, _)| key)
            .collect();
        for key in absorbed {
            if let Some(old_end) = self.ranges.remove(&key) {
                end = end.max(old_end);
            }
        }
        self.ranges.insert(start, end);
    }

    /// Removes every offset of `range`, splitting the ranges it cuts.
    pub fn remove(&mut self, range: Range<u64>) {
        if range.is_empty() {
            return;
        }
        for Range { start, end } in self.overlapping(range.clone()) {
            self.ranges.remove(&start);
            if start < range.start {
                self.ranges.insert(start, range.start);
            }
            if end > range.end {
                self.ranges.insert(range.end, end);
            }
        }
    }

    /// Removes everything below `offset`.
    pub fn remove_below(&mut self, offset: u64) {
        self.remove(0..offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(ranges: &[Range<u64>]) -> RangeSet {
        let mut set = RangeSet::new();
        for range in ranges {
            set.insert(range.clone());
        }
        set
    }

    #[test]
    fn touching_and_overlapping_ranges_merge() {
        let set = set(&[0..2, 5..7, 2..3, 6..9, 12..13]);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![0..3, 5..9, 12..13]);
        assert!(set.contains_range(5..9));
        assert!(!set.contains_range(2..6));
    }

    #[test]
    fn remove_splits_what_it_cuts() {
        let mut set = set(&[0..10, 20..30]);
        set.remove(5..25);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![0..5, 25..30]);
        set.remove_below(27);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![27..30]);
    }

    proptest! {
        #[test]
        fn behaves_like_a_set_of_offsets(
            operations in proptest::collection::vec((any::<bool>(), 0u64..64, 0u64..16), 0..40)
        ) {
            let mut ranges = RangeSet::new();
            let mut model = [false; 80];
            for (insert, start, len) in operations {
                let range = start..start + len;
                if insert { ranges.insert(range.clone()) } else { ranges.remove(range.clone()) }
                for offset in range {
                    model[offset as usize] = insert;
                }
            }
            let mut from_set = [false; 80];
            let mut previous_end = None;
            for range in ranges.iter() {
                prop_assert!(!range.is_empty());
                prop_assert!(previous_end.is_none_or(|end| end < range.start), "merged and disjoint");
                previous_end = Some(range.end);
                for offset in range {
                    from_set[offset as usize] = true;
                }
            }
            prop_assert_eq!(from_set, model);
        }
    }
}
