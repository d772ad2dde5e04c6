//! SIP IP access lists (seed 001 "SIP IP Access List", seed 003 "Allowed inbound IPs",
//! seed 004 "Allowed IP addresses").
//!
//! An entry is an IPv4 or IPv6 address or CIDR block. Host names are refused: an access list
//! decides on the packet's source address, and a name would need a resolver at call time.
//! A CIDR with host bits set (`10.0.0.1/24`) is **refused**, with the network the user probably
//! meant in the message: silently widening or narrowing an access list is worse than asking.
//!
//! [`AccessList`] merges the entries into sorted, disjoint ranges and answers a lookup with one
//! binary search, so 10 000 entries cost about 14 comparisons, not 10 000.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::json::FromJsonText;

/// One access list entry: a network, a single address being a full-length prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AccessEntry(IpNet);

/// Why a string is not an access list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessEntryError {
    /// Nothing was given.
    Empty,
    /// A host name where an address was expected.
    Hostname(String),
    /// The text before `/` is not an IP address.
    BadAddress(String),
    /// The prefix length is not a number within the address family's bits.
    BadPrefixLength {
        /// The text after `/`.
        given: String,
        /// 32 or 128.
        max: u8,
    },
    /// Bits below the prefix length are set.
    HostBitsSet {
        /// The entry as written.
        given: String,
        /// The network the user probably meant.
        network: String,
    },
}

impl fmt::Display for AccessEntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccessEntryError::Empty => f.write_str("must be an IP address or CIDR block"),
            AccessEntryError::Hostname(name) => write!(
                f,
                "{name:?} is a host name; access list entries must be IP addresses or CIDR \
                 blocks (e.g. 203.0.113.7 or 203.0.113.0/24)"
            ),
            AccessEntryError::BadAddress(text) => {
                write!(f, "{text:?} is not an IPv4 or IPv6 address")
            }
            AccessEntryError::BadPrefixLength { given, max } => {
                write!(
                    f,
                    "prefix length {given:?} must be a number from 0 to {max}"
                )
            }
            AccessEntryError::HostBitsSet { given, network } => write!(
                f,
                "{given} has host bits set beyond its prefix length; did you mean {network}?"
            ),
        }
    }
}

impl std::error::Error for AccessEntryError {}

impl AccessEntry {
    /// The network.
    pub fn network(&self) -> IpNet {
        self.0
    }

    /// Whether `addr` is inside this entry (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.0.contains(&canonical(addr))
    }
}

impl FromStr for AccessEntry {
    type Err = AccessEntryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(AccessEntryError::Empty);
        }
        let (addr_text, prefix_text) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| {
            let looks_like_name = addr_text.bytes().any(|b| b.is_ascii_alphabetic())
                && !addr_text.contains(':')
                && crate::host::Host::from_str(addr_text).is_ok();
            if looks_like_name {
                AccessEntryError::Hostname(addr_text.to_owned())
            } else {
                AccessEntryError::BadAddress(addr_text.to_owned())
            }
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= max && !p.starts_with('+') && (p == "0" || !p.starts_with('0')))
                .ok_or_else(|| AccessEntryError::BadPrefixLength {
                    given: p.to_owned(),
                    max,
                })?,
        };
        let net = IpNet::new(addr, prefix).map_err(|_| AccessEntryError::BadPrefixLength {
            given: prefix.to_string(),
            max,
        })?;
        if net.trunc() != net {
            return Err(AccessEntryError::HostBitsSet {
                given: s.to_owned(),
                network: net.trunc().to_string(),
            });
        }
        Ok(AccessEntry(canonical_net(net)))
    }
}

impl fmt::Display for AccessEntry {
    /// A single address prints without a prefix length; a block prints as CIDR.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.prefix_len() == self.0.max_prefix_len() {
            write!(f, "{}", self.0.addr())
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl FromJsonText for AccessEntry {
    fn from_text(text: &str) -> Result<Self, String> {
        text.parse().map_err(|e: AccessEntryError| e.to_string())
    }
}

impl serde::Serialize for AccessEntry {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, what a dual-stack socket reports for an IPv4
/// peer) is that IPv4 address.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// A block inside `::ffff:0:0/96` is the corresponding IPv4 block, so that entries and lookups
/// agree whichever way an IPv4 peer is written.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        other => other,
    }
}

/// A set of entries, matched in logarithmic time.
///
/// Entries are merged into sorted, non-overlapping inclusive ranges per address family; a lookup
/// is one binary search.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessList {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl AccessList {
    /// Builds the matcher for `entries` (duplicates and overlaps are fine).
    pub fn new<'a>(entries: impl IntoIterator<Item = &'a AccessEntry>) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for entry in entries {
            match entry.0 {
                IpNet::V4(n) => v4.push(range_v4(n)),
                IpNet::V6(n) => v6.push(range_v6(n)),
            }
        }
        Self {
            v4: merge(v4),
            v6: merge(v6),
        }
    }

    /// Whether `addr` falls inside any entry.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match canonical(addr) {
            IpAddr::V4(a) => lookup(&self.v4, u32::from(a)),
            IpAddr::V6(a) => lookup(&self.v6, u128::from(a)),
        }
    }

    /// Whether the list admits nothing.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// How many disjoint ranges the entries merged into (what a lookup searches).
    pub fn range_count(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
}

fn range_v4(net: Ipv4Net) -> (u32, u32) {
    (u32::from(net.network()), u32::from(net.broadcast()))
}

fn range_v6(net: Ipv6Net) -> (u128, u128) {
    (u128::from(net.network()), u128::from(net.broadcast()))
}

/// Sorts ranges and merges the ones that overlap or touch.
fn merge<T: Copy + Ord + num::Successor>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut merged: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if last.1.successor().is_none_or(|next| start <= next) => {
                last.1 = last.1.max(end);
            }
            _ => merged.push((start, end)),
        }
    }
    merged
}

fn lookup<T: Copy + Ord>(ranges: &[(T, T)], addr: T) -> bool {
    // The last range starting at or below addr is the only one that can contain it.
    let after = ranges.partition_point(|(start, _)| *start <= addr);
    after > 0 && addr <= ranges[after - 1].1
}

mod num {
    /// The next integer, if any; used to merge ranges that touch.
    pub trait Successor: Sized {
        fn successor(self) -> Option<Self>;
    }
    impl Successor for u32 {
        fn successor(self) -> Option<Self> {
            self.checked_add(1)
        }
    }
    impl Successor for u128 {
        fn successor(self) -> Option<Self> {
            self.checked_add(1)
        }
    }
}

/// The comma-separated list of seed 003 ("Allowed inbound IPs: comma-separated list of IPv4 /
/// IPv4 CIDR", e.g. `1.2.3.4, 10.0.0.0/24`): IPv4 only, spaces around commas allowed, no empty
/// items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4CidrList(pub Vec<AccessEntry>);

impl FromJsonText for Ipv4CidrList {
    fn from_text(text: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        let mut problems = Vec::new();
        for (i, item) in text.split(',').map(str::trim).enumerate() {
            let n = i + 1;
            match item.parse::<AccessEntry>() {
                Ok(entry) if entry.0.addr().is_ipv4() => entries.push(entry),
                Ok(_) => problems.push(format!("item {n} ({item}) is IPv6; only IPv4 is accepted")),
                Err(AccessEntryError::Empty) => problems.push(format!("item {n} is empty")),
                Err(e) => problems.push(format!("item {n}: {e}")),
            }
        }
        if problems.is_empty() {
            Ok(Ipv4CidrList(entries))
        } else {
            Err(problems.join("; "))
        }
    }
}

impl serde::Serialize for Ipv4CidrList {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        serializer.serialize_str(&text.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn ipv4(n: u32) -> Ipv4Addr {
        Ipv4Addr::from(n)
    }

    fn ipv6(n: u128) -> Ipv6Addr {
        Ipv6Addr::from(n)
    }

    fn entry(s: &str) -> AccessEntry {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn addresses_and_blocks_of_both_families_parse() {
        for (text, shown) in [
            ("203.0.113.7", "203.0.113.7"),
            ("203.0.113.7/32", "203.0.113.7"),
            ("10.0.0.0/24", "10.0.0.0/24"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("2001:db8::1", "2001:db8::1"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("::/0", "::/0"),
            ("::ffff:192.0.2.1", "192.0.2.1"),
            ("::ffff:192.0.2.0/120", "192.0.2.0/24"),
        ] {
            assert_eq!(entry(text).to_string(), shown, "{text}");
        }
    }

    // DESIGN.md: "hostnames are not access-list entries".
    #[test]
    fn hostnames_are_refused_by_name() {
        let err = "pbx.example.com".parse::<AccessEntry>().unwrap_err();
        assert_eq!(err, AccessEntryError::Hostname("pbx.example.com".into()));
        assert!(err.to_string().contains("host name"));
    }

    #[test]
    fn bad_prefix_lengths_are_refused() {
        for (text, max) in [
            ("10.0.0.0/33", 32),
            ("10.0.0.0/-1", 32),
            ("10.0.0.0/", 32),
            ("10.0.0.0/08", 32),
            ("10.0.0.0/+8", 32),
            ("2001:db8::/129", 128),
        ] {
            assert!(
                matches!(text.parse::<AccessEntry>(), Err(AccessEntryError::BadPrefixLength { max: m, .. }) if m == max),
                "{text}"
            );
        }
    }

    #[test]
    fn host_bits_set_is_refused_with_the_network_meant() {
        let err = "10.0.0.1/24".parse::<AccessEntry>().unwrap_err();
        assert_eq!(
            err,
            AccessEntryError::HostBitsSet {
                given: "10.0.0.1/24".into(),
                network: "10.0.0.0/24".into()
            }
        );
        assert!(err.to_string().contains("did you mean 10.0.0.0/24"));
        assert!("2001:db8::1/64".parse::<AccessEntry>().is_err());
    }

    #[test]
    fn garbage_is_a_bad_address() {
        for text in [
            "1.2.3",
            "1.2.3.4.5",
            "256.0.0.1",
            "01.2.3.4",
            " 1.2.3.4",
            "1.2.3.4 ",
            "::g",
        ] {
            assert!(
                matches!(
                    text.parse::<AccessEntry>(),
                    Err(AccessEntryError::BadAddress(_))
                ),
                "{text}"
            );
        }
        assert_eq!("".parse::<AccessEntry>(), Err(AccessEntryError::Empty));
    }

    #[test]
    fn list_matches_members_and_nothing_else() {
        let entries = [
            entry("127.0.0.1/32"),
            entry("10.1.0.0/16"),
            entry("2001:db8::/48"),
        ];
        let list = AccessList::new(&entries);
        assert!(list.contains(ip("127.0.0.1")));
        assert!(!list.contains(ip("127.0.0.2")));
        assert!(list.contains(ip("10.1.255.255")));
        assert!(!list.contains(ip("10.2.0.0")));
        assert!(list.contains(ip("2001:db8:0:ffff::1")));
        assert!(!list.contains(ip("2001:db8:1::1")));
        // A dual-stack socket reports IPv4 peers as mapped addresses.
        assert!(list.contains(ip("::ffff:127.0.0.1")));
        assert!(!AccessList::default().contains(ip("127.0.0.1")));
    }

    #[test]
    fn overlapping_and_touching_entries_merge() {
        let entries = [
            entry("10.0.0.0/25"),
            entry("10.0.0.128/25"),
            entry("10.0.0.0/24"),
            entry("10.0.0.7"),
            entry("255.255.255.255"),
            entry("255.255.255.254"),
        ];
        let list = AccessList::new(&entries);
        assert_eq!(list.range_count(), 2);
        assert!(list.contains(ip("255.255.255.255")));
    }

    #[test]
    fn ten_thousand_entries_are_ten_thousand_ranges_searched_in_log_time() {
        let entries: Vec<AccessEntry> = (0..10_000u32)
            .map(|i| AccessEntry(IpNet::V4(Ipv4Net::new(ipv4(i << 8), 31).expect("valid"))))
            .collect();
        let list = AccessList::new(&entries);
        assert_eq!(list.range_count(), 10_000);
        assert!(list.contains(IpAddr::V4(ipv4((9_999 << 8) + 1))));
        assert!(!list.contains(IpAddr::V4(ipv4((9_999 << 8) + 2))));
    }

    // seed 003: "Comma-separated list of IPv4 / IPv4 CIDR", example "1.2.3.4, 10.0.0.0/24".
    #[test]
    fn seed_003_comma_separated_ipv4_list() {
        let list = Ipv4CidrList::from_text("1.2.3.4, 10.0.0.0/24").expect("seed example");
        assert_eq!(list.0.len(), 2);
        let err = Ipv4CidrList::from_text("1.2.3.4,,2001:db8::1, pbx.example.com").unwrap_err();
        assert!(err.contains("item 2 is empty"), "{err}");
        assert!(err.contains("item 3 (2001:db8::1) is IPv6"), "{err}");
        assert!(
            err.contains("item 4: \"pbx.example.com\" is a host name"),
            "{err}"
        );
    }

    proptest! {
        #[test]
        fn v4_entries_round_trip(a in any::<u32>(), len in 0u8..=32) {
            let net = Ipv4Net::new(ipv4(a), len).expect("len <= 32").trunc();
            let e = AccessEntry(IpNet::V4(net));
            prop_assert_eq!(e.to_string().parse::<AccessEntry>(), Ok(e));
        }

        #[test]
        fn v6_entries_round_trip(a in any::<u128>(), len in 0u8..=128) {
            let net = canonical_net(IpNet::V6(Ipv6Net::new(ipv6(a), len).expect("len <= 128").trunc()));
            let e = AccessEntry(net);
            prop_assert_eq!(e.to_string().parse::<AccessEntry>(), Ok(e));
        }

        #[test]
        fn matcher_agrees_with_a_linear_scan(
            nets in proptest::collection::vec((any::<u32>(), 8u8..=32), 0..64),
            probes in proptest::collection::vec(any::<u32>(), 64),
        ) {
            let entries: Vec<AccessEntry> = nets
                .iter()
                .map(|(a, l)| AccessEntry(IpNet::V4(Ipv4Net::new(ipv4(*a), *l).expect("valid").trunc())))
                .collect();
            let list = AccessList::new(&entries);
            let starts: Vec<IpAddr> = entries.iter().map(|e| e.0.network()).collect();
            for probe in probes.into_iter().map(|p| IpAddr::V4(ipv4(p))).chain(starts) {
                let linear = entries.iter().any(|e| e.contains(probe));
                prop_assert_eq!(list.contains(probe), linear);
            }
        }
    }
}
