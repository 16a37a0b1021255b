//! `MemoryStore`: the reference [`ReputationStore`], ordered maps in memory and nothing on disk.
//!
//! It is the backend the conformance suite is written against: every answer comes straight
//! from a `BTreeMap` or `BTreeSet`, so it is sorted and deduplicated by construction. Its
//! [`ReputationStore::save`] does nothing, because there is nothing to make durable; use it in
//! tests and for one-shot runs whose state need not outlive the process.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;

use super::history::HostHistory;
use super::store::{EndpointKey, ReputationStore};

/// Endpoint histories and the name graph in ordered maps.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    histories: BTreeMap<EndpointKey, HostHistory>,
    hostname_ips: BTreeMap<String, BTreeSet<String>>,
    ip_hostnames: BTreeMap<String, BTreeSet<String>>,
    domain_hostnames: BTreeMap<String, BTreeSet<String>>,
    ip_certificates: BTreeMap<String, BTreeSet<String>>,
    certificate_ips: BTreeMap<String, BTreeSet<String>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }
}

fn members(map: &BTreeMap<String, BTreeSet<String>>, name: &str) -> Vec<String> {
    map.get(name).map(|set| set.iter().cloned().collect()).unwrap_or_default()
}

impl ReputationStore for MemoryStore {
    fn history(&self, key: &EndpointKey) -> Result<Option<HostHistory>> {
        Ok(self.histories.get(key).cloned())
    }

    fn put_history(&mut self, key: &EndpointKey, history: &HostHistory) -> Result<()> {
        self.histories.insert(key.clone(), history.clone());
        Ok(())
    }

    fn endpoints(&self) -> Result<Vec<(EndpointKey, HostHistory)>> {
        Ok(self.histories.iter().map(|(key, history)| (key.clone(), history.clone())).collect())
    }

    fn link_hostname_ip(&mut self, hostname: &str, ip: &str) -> Result<()> {
        self.hostname_ips.entry(hostname.to_owned()).or_default().insert(ip.to_owned());
        self.ip_hostnames.entry(ip.to_owned()).or_default().insert(hostname.to_owned());
        Ok(())
    }

    fn link_domain_hostname(&mut self, domain: &str, hostname: &str) -> Result<()> {
        self.domain_hostnames.entry(domain.to_owned()).or_default().insert(hostname.to_owned());
        Ok(())
    }

    fn ips_of_hostname(&self, hostname: &str) -> Result<Vec<String>> {
        Ok(members(&self.hostname_ips, hostname))
    }

    fn hostnames_of_domain(&self, domain: &str) -> Result<Vec<String>> {
        Ok(members(&self.domain_hostnames, domain))
    }

    fn hostnames_of_ip(&self, ip: &str) -> Result<Vec<String>> {
        Ok(members(&self.ip_hostnames, ip))
    }

    fn link_ip_certificate(&mut self, ip: &str, certificate: &str) -> Result<()> {
        self.ip_certificates.entry(ip.to_owned()).or_default().insert(certificate.to_owned());
        self.certificate_ips.entry(certificate.to_owned()).or_default().insert(ip.to_owned());
        Ok(())
    }

    fn certificates_of_ip(&self, ip: &str) -> Result<Vec<String>> {
        Ok(members(&self.ip_certificates, ip))
    }

    fn ips_of_certificate(&self, certificate: &str) -> Result<Vec<String>> {
        Ok(members(&self.certificate_ips, certificate))
    }

    fn save(&mut self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reputation::store::reputation_store_suite;

    reputation_store_suite!(suite, MemoryStore::new());
}
