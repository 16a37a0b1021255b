//! The Postfix TLS policy map `tls_policy` (`smtp_tls_policy_maps`, research/FEEDS.md §1.1.1):
//! opt-in enforcement for next hops whose every endpoint is historically-valid.
//!
//! Default: no entries (the file is comments only). With `[enforcement] postfix_tier` set by the
//! operator, one entry per qualifying next hop:
//!
//! - `encrypt` → `KEY encrypt protocols=…` (TLS required, certificate not checked);
//! - `verify` → `KEY verify protocols=…` (certificate must match the server name; only for next
//!   hops reached by name, never for `[address]` ones, which have no name to match);
//! - `secure-match-observed` → `KEY secure match=NAME:NAME protocols=…` with the server host names
//!   seen so far (again only where names were seen).
//!
//! Never `none`, `dane-only`, `fingerprint`, or the STS/TLSRPT attributes. The protocol floor is
//! written in the syntax of the target Postfix ([`PostfixVersion`]): `>=TLSv1.2` from 3.6 on,
//! `!SSLv2:!SSLv3:!TLSv1:!TLSv1.1` for 3.0–3.5; older releases are refused (an attribute the
//! running Postfix does not know is a policy error that defers mail).
//!
//! Keys are what Postfix looks the policy up by: the verbatim next-hop destination. [`next_hops`]
//! gathers them from three places:
//!
//! - the operator's transport map ([`parse_transport_map`], transport(5) syntax) and relayhost:
//!   each SMTP next hop as written (`[10.0.0.5]:2525`, `[relay.example]`, `example.net`), with
//!   the endpoints that mail for the domains routed there reached;
//! - delivery lines (`relay=host[ip]:port`, kept in each endpoint's history as host names and
//!   ports): a server logged by address was reached as `[ip]` or `[ip]:port` (IPv6 both as
//!   `[ipv6:2001:db8::1]` and `[2001:db8::1]`, the two spellings Postfix accepts), a named server
//!   on a port other than 25 as `[host]:port`;
//! - recipient domains delivered by MX (every server a host name, port 25), keyed by the domain,
//!   unless the transport map or relayhost routes the domain elsewhere.
//!
//! A next hop qualifies only if every endpoint it reached is, right now, historically-valid, not
//! dormant, not flagged broken-STARTTLS and not pinned by `always_allow` / `never_enforce`; and
//! if neither its domain nor any recipient domain routed through it is in `protected_domains`
//! (DANE / MTA-STS: their own resolver decides). A key that Postfix never looks up costs nothing;
//! a missing one only leaves a next hop opportunistic.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::str::FromStr;

use anyhow::{bail, Context, Result};

use super::{Entry, Stamp};
use crate::observation::Direction;
use crate::reputation::store::{dns_name, ReputationStore};
use crate::reputation::thresholds::{Enforcement, PostfixTier};

/// A Postfix release (`mail_version`), as far as policy attributes depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PostfixVersion {
    /// `3` of 3.7.11.
    pub major: u32,
    /// `7` of 3.7.11.
    pub minor: u32,
}

impl FromStr for PostfixVersion {
    type Err = anyhow::Error;

    /// `3.7.11`, `3.6`, `3.11-20250601` (snapshots), `3.10.1-RC1`.
    fn from_str(text: &str) -> Result<Self> {
        let text = text.trim();
        let mut parts = text.split(|c: char| !c.is_ascii_digit());
        let number = |part: Option<&str>| part.filter(|p| !p.is_empty()).and_then(|p| p.parse::<u32>().ok());
        let (Some(major), Some(minor)) = (number(parts.next()), number(parts.next())) else {
            bail!("invalid Postfix version {text:?}: want MAJOR.MINOR, e.g. 3.7");
        };
        if !text.starts_with(&format!("{major}.{minor}")) {
            bail!("invalid Postfix version {text:?}: want MAJOR.MINOR, e.g. 3.7");
        }
        Ok(PostfixVersion { major, minor })
    }
}

impl std::fmt::Display for PostfixVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl PostfixVersion {
    /// The TLS 1.2 floor in this release's `protocols=` syntax (postconf(5): the `>=` form since
    /// 3.6; the attribute exists since 2.6). Releases before 3.0 are refused.
    pub fn protocols_floor(self) -> Result<&'static str> {
        if self >= (PostfixVersion { major: 3, minor: 6 }) {
            Ok("protocols=>=TLSv1.2")
        } else if self.major >= 3 {
            Ok("protocols=!SSLv2:!SSLv3:!TLSv1:!TLSv1.1")
        } else {
            bail!("Postfix {self} is too old for tlsledger's enforcement tiers (3.0 or later is needed)")
        }
    }
}

/// One route of a transport map (or the relayhost): where mail for `pattern` goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `example.com`, `.example.com` (subdomains), `*`, or an address (`user@example.com`).
    pub pattern: String,
    /// The SMTP next hops as written (`[10.0.0.5]:2525`); empty when the route keeps the
    /// recipient domain as next hop (`smtp:`) or does not deliver by SMTP (`error:`, `local:`).
    pub nexthops: Vec<String>,
    /// False for routes that do not deliver by SMTP, or keep the domain as next hop.
    pub explicit: bool,
}

/// Transports that never make an SMTP connection: their routes have no TLS policy.
const NON_SMTP_TRANSPORTS: [&str; 7] = ["error", "retry", "discard", "local", "virtual", "lmtp", "pipe"];

/// Parses a transport(5) table (the text source: `pattern result`, `#` comments, lines that
/// start with white space continue the previous one).
pub fn parse_transport_map(text: &str) -> Result<Vec<Route>> {
    let mut logical: Vec<(usize, String)> = Vec::new();
    for (idx, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if line.starts_with(char::is_whitespace) {
            let Some((_, previous)) = logical.last_mut() else {
                bail!("line {}: a continuation line with nothing to continue", idx + 1);
            };
            previous.push(' ');
            previous.push_str(trimmed);
        } else {
            logical.push((idx + 1, trimmed.to_owned()));
        }
    }
    let mut routes = Vec::new();
    for (number, line) in logical {
        let Some((pattern, result)) = line.split_once(char::is_whitespace) else {
            bail!("line {number}: want `pattern transport:nexthop`, got {line:?}");
        };
        routes.push(route(&pattern.to_ascii_lowercase(), result.trim()));
    }
    Ok(routes)
}

/// The route of `pattern` to a transport(5) result (`smtp:[host]:port`, `:[host]`, `error:…`).
pub fn route(pattern: &str, result: &str) -> Route {
    let (transport, nexthop) = result.split_once(':').unwrap_or((result, ""));
    let smtp = !NON_SMTP_TRANSPORTS.contains(&transport.trim());
    let nexthops: Vec<String> = if smtp {
        nexthop.split([',', ' ', '\t']).filter(|n| !n.is_empty()).map(str::to_owned).collect()
    } else {
        Vec::new()
    };
    Route { pattern: pattern.to_owned(), explicit: !smtp || !nexthops.is_empty(), nexthops }
}

/// The route that takes mail for `domain`: an exact pattern, then `.parent` patterns from the
/// nearest parent up, then `*`.
pub fn route_of<'a>(routes: &'a [Route], domain: &str) -> Option<&'a Route> {
    if let Some(exact) = routes.iter().find(|r| r.pattern == domain) {
        return Some(exact);
    }
    let mut rest = domain;
    while let Some((_, parent)) = rest.split_once('.') {
        if let Some(found) = routes.iter().find(|r| r.pattern.strip_prefix('.') == Some(parent)) {
            return Some(found);
        }
        rest = parent;
    }
    routes.iter().find(|r| r.pattern == "*")
}

/// A next hop Postfix may look a policy up by, and what we saw behind it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NextHop {
    /// Reached by address (`[192.0.2.1]`): no name to verify a certificate against.
    pub by_address: bool,
    /// Server host names, for `match=`.
    pub names: BTreeSet<String>,
    /// Endpoint IPs reached through it.
    pub endpoints: BTreeSet<String>,
    /// Recipient domains whose mail took it (or its own domain).
    pub domains: BTreeSet<String>,
}

/// `[192.0.2.1]`, `[192.0.2.1]:2525`; for IPv6 both `[ipv6:2001:db8::1]` and `[2001:db8::1]`
/// (with `:port` when it is not 25).
pub fn address_keys(ip: IpAddr, port: u16) -> Vec<String> {
    let suffix = if port == 25 { String::new() } else { format!(":{port}") };
    match ip {
        IpAddr::V4(v4) => vec![format!("[{v4}]{suffix}")],
        IpAddr::V6(v6) => vec![format!("[ipv6:{v6}]{suffix}"), format!("[{v6}]{suffix}")],
    }
}

/// The address inside a bracketed next hop (`[192.0.2.1]:25`, `[ipv6:2001:db8::1]`), if it is one.
fn bracketed(nexthop: &str) -> Option<(&str, Option<IpAddr>)> {
    let inner = nexthop.strip_prefix('[')?.split_once(']')?.0;
    let address = inner.get(..5).filter(|p| p.eq_ignore_ascii_case("ipv6:")).map_or(inner, |_| &inner[5..]);
    Some((inner, address.parse().ok()))
}

/// True for a host name usable in `match=` (letters, digits, `-`, `.`).
fn plain_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// Every next hop the feed may key an entry by, from the routes (transport map, then relayhost),
/// the outbound entries' histories and the store's name graph.
pub fn next_hops(
    store: &dyn ReputationStore,
    entries: &[Entry],
    routes: &[Route],
) -> Result<BTreeMap<String, NextHop>> {
    let mut hops: BTreeMap<String, NextHop> = BTreeMap::new();
    let outbound: Vec<&Entry> = entries.iter().filter(|e| e.key.direction == Direction::Outbound).collect();
    let ports: HashMap<&str, &[u16]> =
        outbound.iter().map(|e| (e.key.ip.as_str(), e.summary.ports.as_slice())).collect();
    let domains: BTreeSet<String> =
        outbound.iter().flat_map(|e| e.summary.domains.iter().map(|d| dns_name(d))).collect();
    let ips_of = |names: &BTreeSet<String>| -> Result<BTreeSet<String>> {
        let mut ips = BTreeSet::new();
        for name in names {
            ips.extend(store.ips_of_hostname(name)?);
        }
        Ok(ips)
    };
    let mut names_of_domain: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for domain in &domains {
        let names = store.hostnames_of_domain(domain).with_context(|| format!("cannot read the MX of {domain}"))?;
        names_of_domain.insert(domain, names.into_iter().collect());
    }

    // Routes: each SMTP next hop as written, with what mail for its domains reached.
    for route in routes.iter().filter(|r| !r.nexthops.is_empty()) {
        let routed: Vec<&str> = domains
            .iter()
            .map(String::as_str)
            .filter(|d| route_of(routes, d).is_some_and(|r| std::ptr::eq(r, route)))
            .collect();
        for nexthop in &route.nexthops {
            if nexthop.contains(|c: char| c.is_whitespace() || c == '#') {
                continue;
            }
            let mut hop = NextHop::default();
            hop.domains.extend(routed.iter().map(|d| (*d).to_owned()));
            let pattern = route.pattern.trim_start_matches('.');
            if pattern != "*" && !pattern.contains('@') {
                hop.domains.insert(pattern.to_owned());
            }
            match bracketed(nexthop) {
                Some((_, Some(ip))) => {
                    hop.by_address = true;
                    hop.endpoints.insert(ip.to_string());
                }
                Some((name, None)) => {
                    let name = dns_name(name);
                    hop.endpoints.extend(store.ips_of_hostname(&name)?);
                    if plain_name(&name) {
                        hop.names.insert(name);
                    }
                }
                None => {
                    // `host` or `host:port` without brackets: Postfix looks up the MX of host.
                    for domain in &routed {
                        let names = &names_of_domain[domain];
                        hop.endpoints.extend(ips_of(names)?);
                        hop.names.extend(names.iter().filter(|n| plain_name(n)).cloned());
                    }
                }
            }
            merge(&mut hops, nexthop.to_ascii_lowercase(), hop);
        }
    }

    // Delivery lines: servers reached by address, or by name on a port other than 25.
    for entry in &outbound {
        let Ok(ip) = entry.key.ip.parse::<IpAddr>() else { continue };
        for hostname in &entry.summary.hostnames {
            let by_address = hostname.parse::<IpAddr>().ok() == Some(ip);
            for port in &entry.summary.ports {
                let hop = NextHop {
                    by_address,
                    names: if by_address || !plain_name(hostname) {
                        BTreeSet::new()
                    } else {
                        [hostname.clone()].into()
                    },
                    endpoints: if by_address {
                        [entry.key.ip.clone()].into()
                    } else {
                        store.ips_of_hostname(hostname)?.into_iter().collect()
                    },
                    domains: entry.summary.domains.iter().map(|d| dns_name(d)).collect(),
                };
                if by_address {
                    for key in address_keys(ip, *port) {
                        merge(&mut hops, key, hop.clone());
                    }
                } else if *port != 25 && plain_name(hostname) {
                    merge(&mut hops, format!("[{hostname}]:{port}"), hop);
                }
            }
        }
    }

    // MX deliveries: the recipient domain, when every server was a name on port 25 and no
    // route sends the domain elsewhere.
    for domain in &domains {
        if route_of(routes, domain).is_some_and(|r| r.explicit) {
            continue;
        }
        let names = &names_of_domain[domain.as_str()];
        if names.is_empty() || !names.iter().all(|n| plain_name(n) && n.parse::<IpAddr>().is_err()) {
            continue;
        }
        let endpoints = ips_of(names)?;
        let mx_port = |ip: &String| ports.get(ip.as_str()).is_none_or(|p| p.is_empty() || p.contains(&25));
        if endpoints.is_empty() || !endpoints.iter().all(mx_port) {
            continue;
        }
        let hop = NextHop { by_address: false, names: names.clone(), endpoints, domains: [domain.clone()].into() };
        merge(&mut hops, domain.clone(), hop);
    }
    Ok(hops)
}

fn merge(hops: &mut BTreeMap<String, NextHop>, key: String, hop: NextHop) {
    let have = hops.entry(key).or_default();
    have.by_address |= hop.by_address;
    have.names.extend(hop.names);
    have.endpoints.extend(hop.endpoints);
    have.domains.extend(hop.domains);
}

/// True when `domain` is listed in `protected` (`example.com` itself, `.example.com` below it).
pub fn is_protected(protected: &[String], domain: &str) -> bool {
    let domain = dns_name(domain);
    protected.iter().any(|p| {
        let p = dns_name(p);
        match p.strip_prefix('.') {
            Some(parent) => domain.ends_with(&format!(".{parent}")),
            None => domain == p,
        }
    })
}

/// Why a next hop gets no entry, if it gets none.
fn refusal(key: &str, hop: &NextHop, by_ip: &HashMap<&str, &Entry>, enforcement: &Enforcement) -> Option<String> {
    if hop.endpoints.is_empty() {
        return Some("no endpoint seen".to_owned());
    }
    let own_domain = (!key.starts_with('[')).then_some(key);
    if let Some(domain) = own_domain
        .into_iter()
        .chain(hop.domains.iter().map(String::as_str))
        .find(|d| is_protected(&enforcement.protected_domains, d))
    {
        return Some(format!("{domain} is DANE/MTA-STS protected"));
    }
    if let Some(name) = hop.names.iter().find(|n| is_protected(&enforcement.protected_domains, n)) {
        return Some(format!("{name} is DANE/MTA-STS protected"));
    }
    for ip in &hop.endpoints {
        let Some(entry) = by_ip.get(ip.as_str()) else { return Some(format!("{ip} has no current history")) };
        if let Some(why) = super::enforcement::refusal(entry, enforcement) {
            return Some(why);
        }
    }
    None
}

/// The value of a qualifying next hop's entry for `tier`, `None` where the tier cannot apply.
fn value(tier: PostfixTier, hop: &NextHop, protocols: &str) -> Option<String> {
    let names: Vec<&str> = hop.names.iter().map(String::as_str).collect();
    match tier {
        PostfixTier::Off => None,
        PostfixTier::Encrypt => Some(format!("encrypt {protocols}")),
        PostfixTier::Verify => (!hop.by_address && !names.is_empty()).then(|| format!("verify {protocols}")),
        PostfixTier::SecureMatchObserved => {
            (!hop.by_address && !names.is_empty()).then(|| format!("secure match={} {protocols}", names.join(":")))
        }
    }
}

/// The TLS policy map. `version` is needed (and checked) only when a tier is on.
pub fn tls_policy(
    entries: &[Entry],
    hops: &BTreeMap<String, NextHop>,
    enforcement: &Enforcement,
    version: Option<PostfixVersion>,
    stamp: &Stamp,
) -> Result<String> {
    let mut text = String::from("# tlsledger TLS policy -- smtp_tls_policy_maps (texthash: or postmap hash:)\n");
    text.push_str(&stamp.comment());
    if enforcement.postfix_tier == PostfixTier::Off {
        text.push_str("# Empty on purpose: tlsledger emits no enforcement unless the operator opts in.\n");
        return Ok(text);
    }
    let version = version.context("an enforcement tier needs the target Postfix version")?;
    let protocols = version.protocols_floor()?;
    text.push_str(&format!(
        "# Opt-in tier {} for Postfix {version}: historically-valid next hops only, never DANE/MTA-STS domains.\n",
        enforcement.postfix_tier.as_str()
    ));
    let by_ip: HashMap<&str, &Entry> =
        entries.iter().filter(|e| e.key.direction == Direction::Outbound).map(|e| (e.key.ip.as_str(), e)).collect();
    for (key, hop) in hops {
        if refusal(key, hop, &by_ip, enforcement).is_some() {
            continue;
        }
        let Some(value) = value(enforcement.postfix_tier, hop, protocols) else { continue };
        let endpoints: Vec<&str> = hop.endpoints.iter().map(String::as_str).collect();
        text.push_str(&format!("# {}: historically-valid\n", endpoints.join(" ")));
        text.push_str(&format!("{key}\t{value}\n"));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feeds::testing::stamp;
    use crate::reputation::classify::{classify, Class};
    use crate::reputation::memory::MemoryStore;
    use crate::reputation::store::conformance::{observation, outbound, Kind, T0};
    use crate::reputation::store::record;
    use crate::reputation::thresholds::Thresholds;

    fn version(text: &str) -> PostfixVersion {
        text.parse().unwrap()
    }

    #[test]
    fn versions_and_their_protocol_syntax() {
        assert_eq!(version("3.7.11"), PostfixVersion { major: 3, minor: 7 });
        assert_eq!(version("3.11-20250601"), PostfixVersion { major: 3, minor: 11 });
        assert_eq!(version(" 3.6\n"), PostfixVersion { major: 3, minor: 6 });
        for bad in ["", "3", "three.six", ".3.6", "3.", "x3.6"] {
            assert!(bad.parse::<PostfixVersion>().is_err(), "{bad:?}");
        }
        assert_eq!(version("3.6").protocols_floor().unwrap(), "protocols=>=TLSv1.2");
        assert_eq!(version("3.10").protocols_floor().unwrap(), "protocols=>=TLSv1.2");
        assert_eq!(version("3.5.25").protocols_floor().unwrap(), "protocols=!SSLv2:!SSLv3:!TLSv1:!TLSv1.1");
        assert_eq!(version("3.0").protocols_floor().unwrap(), "protocols=!SSLv2:!SSLv3:!TLSv1:!TLSv1.1");
        assert!(version("2.11").protocols_floor().is_err());
    }

    #[test]
    fn address_keys_as_postfix_spells_them() {
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(address_keys(v4, 25), ["[192.0.2.1]"]);
        assert_eq!(address_keys(v4, 2525), ["[192.0.2.1]:2525"]);
        assert_eq!(address_keys(v6, 25), ["[ipv6:2001:db8::1]", "[2001:db8::1]"]);
        assert_eq!(address_keys(v6, 587), ["[ipv6:2001:db8::1]:587", "[2001:db8::1]:587"]);
        assert_eq!(bracketed("[ipv6:2001:db8::1]:25"), Some(("ipv6:2001:db8::1", Some(v6))));
        assert_eq!(bracketed("[IPv6:2001:db8::1]"), Some(("IPv6:2001:db8::1", Some(v6))));
        assert_eq!(bracketed("[192.0.2.1]"), Some(("192.0.2.1", Some(v4))));
        assert_eq!(bracketed("[relay.example]:587"), Some(("relay.example", None)));
        assert_eq!(bracketed("relay.example"), None);
    }

    #[test]
    fn transport_maps() {
        let text = "# comment\n\
                    example.com   smtp:[192.0.2.10]:2525\n\
                    .example.com  relay:[relay.example]\n\
                    list.example  smtp:[192.0.2.11], [192.0.2.12]\n\
                    mx.example    smtp:\n\
                    bounce.example error:5.1.1 no such domain\n\
                    user@x.example smtp:[192.0.2.13]\n\
                    *             :[smarthost.example]:587\n\
                    cont.example\n  smtp:[192.0.2.14]\n";
        let routes = parse_transport_map(text).unwrap();
        let hops: Vec<(&str, Vec<&str>, bool)> = routes
            .iter()
            .map(|r| (r.pattern.as_str(), r.nexthops.iter().map(String::as_str).collect(), r.explicit))
            .collect();
        assert_eq!(
            hops,
            [
                ("example.com", vec!["[192.0.2.10]:2525"], true),
                (".example.com", vec!["[relay.example]"], true),
                ("list.example", vec!["[192.0.2.11]", "[192.0.2.12]"], true),
                ("mx.example", vec![], false),
                ("bounce.example", vec![], true),
                ("user@x.example", vec!["[192.0.2.13]"], true),
                ("*", vec!["[smarthost.example]:587"], true),
                ("cont.example", vec!["[192.0.2.14]"], true),
            ]
        );
        assert_eq!(route_of(&routes, "example.com").unwrap().pattern, "example.com");
        assert_eq!(route_of(&routes, "a.b.example.com").unwrap().pattern, ".example.com");
        assert_eq!(route_of(&routes, "other.example").unwrap().pattern, "*");
        assert!(parse_transport_map("  smtp:[192.0.2.1]\n").is_err(), "a continuation of nothing");
        assert!(parse_transport_map("lonely\n").is_err());
        assert!(parse_transport_map("").unwrap().is_empty());
    }

    #[test]
    fn protected_domains() {
        let protected = vec!["example.com".to_owned(), ".example.org".to_owned()];
        assert!(is_protected(&protected, "example.com"));
        assert!(is_protected(&protected, "Example.COM."));
        assert!(!is_protected(&protected, "sub.example.com"));
        assert!(is_protected(&protected, "sub.example.org"));
        assert!(!is_protected(&protected, "example.org"));
        assert!(!is_protected(&protected, "badexample.org"));
    }

    /// Days of history in [`lab`]: more than the default baseline needs.
    const DAYS: i64 = 10;

    /// A store with: `mx.example.net` (192.0.2.1, port 25, historically valid) for example.net;
    /// 192.0.2.2 reached by address on port 2525 (valid); `relay.example` (2001:db8::25, port
    /// 587, valid); 2001:db8::26 reached by address on port 25 (valid); 192.0.2.3 (plaintext) for
    /// plain.example; and `mx.protected.example` (192.0.2.4, valid) for protected.example.
    fn lab() -> (MemoryStore, Vec<Entry>) {
        let mut store = MemoryStore::new();
        let mut observations = Vec::new();
        let mut id = 0;
        let mut add = |ip: &str, host: &str, domains: &[&str], port: u16, kind: Kind| {
            let peer = outbound(ip, host, domains);
            for day in 0..DAYS {
                id += 1;
                let mut o = observation(&peer, day * 86_400, kind, id);
                o.peer.port = Some(port);
                observations.push(o);
            }
        };
        add("192.0.2.1", "mx.example.net", &["example.net"], 25, Kind::Valid);
        add("192.0.2.2", "192.0.2.2", &["routed.example"], 2525, Kind::Valid);
        add("2001:db8::25", "relay.example", &["relayed.example"], 587, Kind::Valid);
        add("2001:db8::26", "2001:db8::26", &["v6.example"], 25, Kind::Valid);
        add("192.0.2.3", "mx.plain.example", &["plain.example"], 25, Kind::Plain);
        add("192.0.2.4", "mx.protected.example", &["protected.example"], 25, Kind::Valid);
        record(&mut store, &observations, |_| true).unwrap();
        let thresholds = Thresholds::default();
        let now = T0 + DAYS * 86_400;
        let entries = store
            .endpoints()
            .unwrap()
            .into_iter()
            .map(|(key, history)| {
                let classification = classify(key.direction, &key.ip, &history, &thresholds, now);
                Entry { key, summary: crate::feeds::Summary::of(&history), classification }
            })
            .collect();
        (store, entries)
    }

    fn enforcement(tier: PostfixTier) -> Enforcement {
        Enforcement {
            postfix_tier: tier,
            protected_domains: vec!["protected.example".to_owned()],
            ..Enforcement::default()
        }
    }

    /// The non-comment lines of a policy map.
    fn lines(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    fn check(tier: PostfixTier, routes: &[Route], postfix: &str, want: &[&str]) {
        let (store, entries) = lab();
        let hops = next_hops(&store, &entries, routes).unwrap();
        let map = tls_policy(&entries, &hops, &enforcement(tier), Some(version(postfix)), &stamp()).unwrap();
        assert_eq!(lines(&map), want, "{map}");
        assert!(map.lines().filter(|l| l.starts_with('#')).count() >= 2, "stamped: {map}");
    }

    #[test]
    fn historically_valid_next_hops_get_encrypt() {
        let (_, entries) = lab();
        let classes: Vec<(&str, Class)> = entries.iter().map(|e| (e.key.ip.as_str(), e.classification.class)).collect();
        assert!(classes.iter().all(|(ip, c)| (*c == Class::HistoricallyValid) == (*ip != "192.0.2.3")), "{classes:?}");
        check(
            PostfixTier::Encrypt,
            &[],
            "3.7.11",
            &[
                "[192.0.2.2]:2525\tencrypt protocols=>=TLSv1.2",
                "[2001:db8::26]\tencrypt protocols=>=TLSv1.2",
                "[ipv6:2001:db8::26]\tencrypt protocols=>=TLSv1.2",
                "[relay.example]:587\tencrypt protocols=>=TLSv1.2",
                "example.net\tencrypt protocols=>=TLSv1.2",
            ],
        );
    }

    #[test]
    fn old_postfix_gets_the_legacy_protocol_list() {
        check(
            PostfixTier::Encrypt,
            &[route("example.net", "smtp:")],
            "3.5.9",
            &[
                "[192.0.2.2]:2525\tencrypt protocols=!SSLv2:!SSLv3:!TLSv1:!TLSv1.1",
                "[2001:db8::26]\tencrypt protocols=!SSLv2:!SSLv3:!TLSv1:!TLSv1.1",
                "[ipv6:2001:db8::26]\tencrypt protocols=!SSLv2:!SSLv3:!TLSv1:!TLSv1.1",
                "[relay.example]:587\tencrypt protocols=!SSLv2:!SSLv3:!TLSv1:!TLSv1.1",
                "example.net\tencrypt protocols=!SSLv2:!SSLv3:!TLSv1:!TLSv1.1",
            ],
        );
        let (store, entries) = lab();
        let hops = next_hops(&store, &entries, &[]).unwrap();
        let refused = tls_policy(&entries, &hops, &enforcement(PostfixTier::Encrypt), Some(version("2.11")), &stamp());
        assert!(refused.is_err(), "too old");
        let unknown = tls_policy(&entries, &hops, &enforcement(PostfixTier::Encrypt), None, &stamp());
        assert!(unknown.is_err(), "no version, no enforcement");
    }

    #[test]
    fn verify_tiers_need_names() {
        check(
            PostfixTier::Verify,
            &[],
            "3.7",
            &["[relay.example]:587\tverify protocols=>=TLSv1.2", "example.net\tverify protocols=>=TLSv1.2"],
        );
        check(
            PostfixTier::SecureMatchObserved,
            &[],
            "3.7",
            &[
                "[relay.example]:587\tsecure match=relay.example protocols=>=TLSv1.2",
                "example.net\tsecure match=mx.example.net protocols=>=TLSv1.2",
            ],
        );
    }

    #[test]
    fn routes_key_by_the_next_hop_as_written() {
        // example.net goes to its server by transport map: its domain key goes, the
        // bracketed one comes.
        let routes = [route("example.net", "smtp:[mx.example.net]"), route("routed.example", "smtp:[192.0.2.2]:2525")];
        check(
            PostfixTier::Encrypt,
            &routes,
            "3.7",
            &[
                "[192.0.2.2]:2525\tencrypt protocols=>=TLSv1.2",
                "[2001:db8::26]\tencrypt protocols=>=TLSv1.2",
                "[ipv6:2001:db8::26]\tencrypt protocols=>=TLSv1.2",
                "[mx.example.net]\tencrypt protocols=>=TLSv1.2",
                "[relay.example]:587\tencrypt protocols=>=TLSv1.2",
            ],
        );
        // A smarthost for everything also takes the protected domain's mail: no entry for it.
        check(
            PostfixTier::Encrypt,
            &[route("*", "smtp:[192.0.2.2]:2525")],
            "3.7",
            &[
                "[2001:db8::26]\tencrypt protocols=>=TLSv1.2",
                "[ipv6:2001:db8::26]\tencrypt protocols=>=TLSv1.2",
                "[relay.example]:587\tencrypt protocols=>=TLSv1.2",
            ],
        );
        // A route to a server that also took plaintext mail, or to one never seen: no entry.
        let routes = [route("example.net", "smtp:[192.0.2.3]"), route("new.example", "smtp:[192.0.2.99]")];
        let (store, entries) = lab();
        let hops = next_hops(&store, &entries, &routes).unwrap();
        let map =
            tls_policy(&entries, &hops, &enforcement(PostfixTier::Encrypt), Some(version("3.7")), &stamp()).unwrap();
        assert!(
            !map.contains("[192.0.2.3]") && !map.contains("[192.0.2.99]") && !map.contains("\nexample.net"),
            "{map}"
        );
    }

    #[test]
    fn protected_and_pinned_next_hops_get_nothing() {
        let (store, mut entries) = lab();
        let hops = next_hops(&store, &entries, &[]).unwrap();
        assert!(hops.contains_key("protected.example"), "the hop exists: {hops:?}");
        for entry in &mut entries {
            if entry.key.ip == "192.0.2.1" {
                entry.classification.never_enforce = true;
            }
        }
        let map =
            tls_policy(&entries, &hops, &enforcement(PostfixTier::Encrypt), Some(version("3.7")), &stamp()).unwrap();
        assert!(!map.contains("protected.example"), "DANE/MTA-STS domain: {map}");
        assert!(!map.contains("example.net"), "never_enforce: {map}");
    }

    #[test]
    fn off_and_empty_feeds_are_comments_only() {
        let (store, entries) = lab();
        let hops = next_hops(&store, &entries, &[]).unwrap();
        let off = tls_policy(&entries, &hops, &enforcement(PostfixTier::Off), None, &stamp()).unwrap();
        assert!(lines(&off).is_empty(), "{off}");
        let empty =
            tls_policy(&[], &BTreeMap::new(), &enforcement(PostfixTier::Encrypt), Some(version("3.7")), &stamp());
        assert!(lines(&empty.unwrap()).is_empty());
        let store = MemoryStore::new();
        assert!(next_hops(&store, &[], &[]).unwrap().is_empty());
    }

    #[test]
    fn never_a_forbidden_level() {
        for tier in [PostfixTier::Encrypt, PostfixTier::Verify, PostfixTier::SecureMatchObserved] {
            let (store, entries) = lab();
            let hops = next_hops(&store, &entries, &[]).unwrap();
            let map = tls_policy(&entries, &hops, &enforcement(tier), Some(version("3.10")), &stamp()).unwrap();
            for line in lines(&map) {
                let level = line.split('\t').nth(1).and_then(|v| v.split(' ').next()).unwrap_or_default();
                assert!(["encrypt", "verify", "secure"].contains(&level), "{line}");
                assert!(!line.contains("policy_type") && !line.contains("servername"), "{line}");
            }
        }
    }
}
