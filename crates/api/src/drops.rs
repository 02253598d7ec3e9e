//! `drops` of srmigd's status ([`crate::HostStatus`]): packets dropped per reason.
//!
//! Written here rather than kept as a `BTreeMap<String, u64>` (what it was): srmigd builds a
//! status from every one of its drop reasons (about 70), whose names are static strings it
//! already has in name order (`DropReason::by_name`). A map of strings cost an allocation, a
//! sorting step and a free per reason at every status; the `srmigd_api` fuzz target, which
//! takes a status around every request, spent 30 % of its CPU time there. [`DropCounts`]
//! borrows the static names and keeps them in one vector, sorted once if they do not come in
//! order. The JSON is the same object of counts.

use std::borrow::Cow;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Packets dropped per reason, by the reason's name, in name order.
///
/// JSON: an object of counts, `{"BufferFull": 3, "NoRoute": 0}` (in name order when written).
/// A name given twice, in JSON or to [`FromIterator`], counts both.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropCounts(
    /// Sorted by name, each name once.
    Vec<(Cow<'static, str>, u64)>,
);

impl DropCounts {
    /// No reason counted.
    pub fn new() -> DropCounts {
        DropCounts::default()
    }

    /// The count of `reason`; `None` when it is not listed.
    pub fn get(&self, reason: &str) -> Option<u64> {
        let i = self.position(reason).ok()?;
        self.0.get(i).map(|(_, n)| *n)
    }

    /// Adds `n` to the count of `reason` (listed with 0 first if it was not). Saturates.
    pub fn add(&mut self, reason: impl Into<Cow<'static, str>>, n: u64) {
        let reason = reason.into();
        match self.position(&reason) {
            Ok(i) => {
                if let Some((_, count)) = self.0.get_mut(i) {
                    *count = count.saturating_add(n);
                }
            }
            Err(i) => self.0.insert(i, (reason, n)),
        }
    }

    /// Adds every count of `other` (names it borrows stay borrowed).
    pub fn add_all(&mut self, other: &DropCounts) {
        for (r, n) in &other.0 {
            self.add(r.clone(), *n);
        }
    }

    /// Every reason with its count, in name order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, u64)> + '_ {
        self.0.iter().map(|(r, n)| (r.as_ref(), *n))
    }

    /// The counts, in name order, to set in place: a list of every reason built once and
    /// copied for each snapshot takes its counts without comparing names again (srmigd's status
    /// does).
    pub fn counts_mut(&mut self) -> impl ExactSizeIterator<Item = &mut u64> + '_ {
        self.0.iter_mut().map(|(_, n)| n)
    }

    /// Reasons listed.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no reason is listed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn position(&self, reason: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(r, _)| r.as_ref().cmp(reason))
    }
}

impl<K: Into<Cow<'static, str>>> FromIterator<(K, u64)> for DropCounts {
    /// Names in strictly increasing order (srmigd's) are kept as they come; others are sorted,
    /// and the counts of a name given twice added up.
    fn from_iter<I: IntoIterator<Item = (K, u64)>>(iter: I) -> DropCounts {
        let mut v: Vec<(Cow<'static, str>, u64)> =
            iter.into_iter().map(|(r, n)| (r.into(), n)).collect();
        if !v.is_sorted_by(|a, b| a.0 < b.0) {
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v.dedup_by(|later, kept| {
                let same = later.0 == kept.0;
                if same {
                    kept.1 = kept.1.saturating_add(later.1);
                }
                same
            });
        }
        DropCounts(v)
    }
}

impl<'a> IntoIterator for &'a DropCounts {
    type Item = (&'a str, u64);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (Cow<'static, str>, u64)>,
        fn(&'a (Cow<'static, str>, u64)) -> (&'a str, u64),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(r, n)| (r.as_ref(), *n))
    }
}

impl Serialize for DropCounts {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (r, n) in &self.0 {
            map.serialize_entry(r.as_ref(), n)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for DropCounts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<DropCounts, D::Error> {
        struct Counts;
        impl<'de> Visitor<'de> for Counts {
            type Value = DropCounts;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of drop counts by reason")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DropCounts, A::Error> {
                let mut v: Vec<(String, u64)> = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(entry) = map.next_entry()? {
                    v.push(entry);
                }
                Ok(v.into_iter().collect())
            }
        }
        deserializer.deserialize_map(Counts)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn json_is_an_object_of_counts_in_name_order() {
        let d: DropCounts = [("NoRoute", 2), ("BufferFull", 3)].into_iter().collect();
        assert_eq!(
            serde_json::to_string(&d).expect("serializes"),
            r#"{"BufferFull":3,"NoRoute":2}"#
        );
        let back: DropCounts =
            serde_json::from_str(r#"{"NoRoute":2,"BufferFull":3}"#).expect("parses");
        assert_eq!(back, d);
        assert_eq!(
            serde_json::from_str::<DropCounts>("{}").expect("parses"),
            DropCounts::new()
        );
    }

    #[test]
    fn not_an_object_is_refused() {
        for bad in [
            r#"[["NoRoute",2]]"#,
            r#"{"NoRoute":-1}"#,
            r#"{"NoRoute":"2"}"#,
            "null",
        ] {
            let e = serde_json::from_str::<DropCounts>(bad).expect_err(bad);
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn get_add_and_iterate() {
        let mut d = DropCounts::new();
        assert_eq!(d.get("NoRoute"), None);
        d.add("NoRoute", 2);
        d.add(String::from("BufferFull"), 1);
        d.add("NoRoute", u64::MAX);
        assert_eq!(d.get("NoRoute"), Some(u64::MAX), "saturates");
        assert_eq!(d.get("BufferFull"), Some(1));
        let listed: Vec<_> = (&d).into_iter().collect();
        assert_eq!(listed, [("BufferFull", 1), ("NoRoute", u64::MAX)]);
        assert_eq!(d.iter().len(), 2);
        assert!(!d.is_empty());
        let mut zeroed = d.clone();
        zeroed.counts_mut().for_each(|n| *n = 0);
        let listed: Vec<_> = zeroed.iter().collect();
        assert_eq!(listed, [("BufferFull", 0), ("NoRoute", 0)]);
        let mut sum: DropCounts = [("Hmac", 1), ("BufferFull", 2)].into_iter().collect();
        sum.add_all(&d);
        let listed: Vec<_> = sum.iter().collect();
        assert_eq!(
            listed,
            [("BufferFull", 3), ("Hmac", 1), ("NoRoute", u64::MAX)]
        );
    }

    proptest! {
        /// Whatever order and repetitions the counts come in, they are what a map of the sums
        /// would hold, and the JSON round trip keeps them.
        #[test]
        fn counts_as_a_map_of_sums(
            entries in proptest::collection::vec(("[A-Ca-c]{0,3}", 0u64..1_000), 0..24)
        ) {
            let mut want: BTreeMap<String, u64> = BTreeMap::new();
            for (r, n) in &entries {
                *want.entry(r.clone()).or_default() += n;
            }
            let d: DropCounts = entries.iter().cloned().collect();
            let got: Vec<(String, u64)> = d.iter().map(|(r, n)| (r.to_owned(), n)).collect();
            let want_list: Vec<(String, u64)> = want.clone().into_iter().collect();
            prop_assert_eq!(got, want_list);
            let mut added = DropCounts::new();
            for (r, n) in entries {
                added.add(r, n);
            }
            prop_assert_eq!(&added, &d);
            let json = serde_json::to_string(&d).expect("serializes");
            prop_assert_eq!(&json, &serde_json::to_string(&want).expect("serializes"));
            let back: DropCounts = serde_json::from_str(&json).expect("parses");
            prop_assert_eq!(back, d);
        }
    }
}
