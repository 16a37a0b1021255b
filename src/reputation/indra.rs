//! `IndraStore`: the [`ReputationStore`] kept as an IndraDB graph, saved atomically to a folder.
//!
//! The graph lives in an in-memory `indradb::Database<MemoryDatastore>`. Every vertex has a
//! `name` property, and its id is a stable 128-bit FNV-1a hash of `<type>/<name>`, so a name is
//! found without an index and the same name always gets the same id:
//!
//! ```text
//! domain ──mx──► hostname ──resolves──► ip ──endpoint──► endpoint
//! example.net    mx1.example.net        192.0.2.1        outbound/192.0.2.1  {history: HostHistory}
//! ```
//!
//! An `ip` vertex stands for the address alone; its `endpoint` vertices (one per direction) carry
//! the history as the property `history`: a JSON string holding the `HostHistory` JSON text, not a
//! JSON tree, because a `serde_json::Value` tree takes about four times the memory (1.4 GB against
//! 0.3 GB for 100k endpoints of five observations) and twice the time to load. A vertex whose id
//! is taken by another name (a hash collision) is an error, never a silent merge.
//!
//! Persistence: [`IndraStore::open`] loads `DIR/graph.json` (a missing file is an empty store)
//! and [`ReputationStore::save`] writes it. The file is our own format ([`FORMAT`], version
//! [`VERSION`]): one JSON object with every vertex `[id, type]`, edge `[from, type, to]` and
//! vertex property `[id, name, value]`. It is written to `graph.json.tmp`, fsynced, renamed over
//! `graph.json` and the folder is fsynced, under an exclusive lock on `graph.lock`; so a crash
//! leaves the previous or the new file, and a leftover `graph.json.tmp` is never read. IndraDB's
//! own `sync` is not used: it writes a temporary file in the system temp folder (maybe another
//! file system, so the rename is not atomic) and does not fsync. Loading checks the whole file
//! (format, ids, types, edge ends, every history) before anything is used, so a truncated or
//! edited file is a clear error naming the path, not a panic or a half-loaded graph.
//!
//! **Invariant:** only this module talks to IndraDB.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, ensure, Context, Result};
use indradb::{
    BulkInsertItem, Database, Edge, Identifier, Json, MemoryDatastore, QueryExt, RangeVertexQuery, SpecificVertexQuery,
    Vertex, VertexProperties,
};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use super::history::HostHistory;
use super::store::{EndpointKey, ReputationStore};

/// The file the graph is saved to, in the store's folder.
pub const GRAPH_FILE: &str = "graph.json";
/// Where a save writes before the rename; never read.
pub const TEMP_FILE: &str = "graph.json.tmp";
/// Locked for the duration of a save, so two saving processes cannot interleave their writes.
pub const LOCK_FILE: &str = "graph.lock";
/// The `format` field of the file.
pub const FORMAT: &str = "tlsledger-reputation-graph";
/// The `version` field of the file.
pub const VERSION: u32 = 1;

/// The type names of the graph, interned once (IndraDB identifiers are interned strings).
#[derive(Debug, Clone, Copy)]
struct Names {
    domain: Identifier,
    hostname: Identifier,
    ip: Identifier,
    endpoint: Identifier,
    mx: Identifier,
    resolves: Identifier,
    name: Identifier,
    history: Identifier,
}

impl Names {
    fn new() -> Self {
        // The names are constants made of ASCII letters, so IndraDB's validation (at most 255
        // characters of letters, digits, `-` and `_`) cannot fail.
        let id = |name: &str| Identifier::new(name).expect("a valid constant identifier");
        Names {
            domain: id("domain"),
            hostname: id("hostname"),
            ip: id("ip"),
            endpoint: id("endpoint"),
            mx: id("mx"),
            resolves: id("resolves"),
            name: id("name"),
            history: id("history"),
        }
    }

    fn vertex_type(&self, text: &str) -> Option<Identifier> {
        [self.domain, self.hostname, self.ip, self.endpoint].into_iter().find(|t| t.as_str() == text)
    }

    /// The edge type and the vertex types it joins.
    fn edge_type(&self, text: &str) -> Option<(Identifier, Identifier, Identifier)> {
        [
            (self.mx, self.domain, self.hostname),
            (self.resolves, self.hostname, self.ip),
            (self.endpoint, self.ip, self.endpoint),
        ]
        .into_iter()
        .find(|(t, _, _)| t.as_str() == text)
    }
}

/// A stable 128-bit FNV-1a hash. Written out (not `std`'s hasher) because ids are stored.
fn fnv1a_128(parts: &[&[u8]]) -> u128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let mut hash = OFFSET;
    for byte in parts.iter().flat_map(|part| part.iter()) {
        hash ^= u128::from(*byte);
        hash = hash.wrapping_mul(PRIME);
    }
    hash
}

/// The id of the vertex of type `t` named `name`: the hash of `<t>/<name>`.
fn vertex_id(t: Identifier, name: &str) -> Uuid {
    Uuid::from_u128(fnv1a_128(&[t.as_bytes(), b"/", name.as_bytes()]))
}

/// An IndraDB graph of endpoint histories and names, saved to a folder.
pub struct IndraStore {
    db: Database<MemoryDatastore>,
    dir: PathBuf,
    names: Names,
    /// Set by [`IndraStore::temp`]: the folder is ours, and is removed on drop.
    remove_on_drop: bool,
}

impl std::fmt::Debug for IndraStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndraStore").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl IndraStore {
    /// Opens the store kept in `dir`: loads `dir/graph.json`, or starts empty when there is no
    /// such file (the folder is created by the first save). A leftover `graph.json.tmp` from an
    /// interrupted save is ignored.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let store = IndraStore { db: MemoryDatastore::new_db(), dir, names: Names::new(), remove_on_drop: false };
        let path = store.graph_path();
        match fs::read(&path) {
            Ok(bytes) => {
                store.load(bytes).with_context(|| format!("cannot load the reputation graph {}", path.display()))?
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
        }
        Ok(store)
    }

    /// An empty store in a fresh folder under the system temp folder, removed when the store is
    /// dropped (for tests).
    pub fn temp() -> Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let name = format!("tlsledger-store-{}-{nanos}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let dir = std::env::temp_dir().join(name);
        fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut store = IndraStore::open(&dir)?;
        store.remove_on_drop = true;
        Ok(store)
    }

    /// The folder the store is saved in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The graph file, `dir/graph.json`.
    pub fn graph_path(&self) -> PathBuf {
        self.dir.join(GRAPH_FILE)
    }

    /// The `name` property and type of the vertex `id`, if it exists.
    fn vertex_name(&self, id: Uuid) -> Result<Option<(Identifier, String)>> {
        let query = SpecificVertexQuery::single(id).properties()?.name(self.names.name);
        let Some(found) = vertex_properties(&self.db, query)?.pop() else {
            return Ok(None);
        };
        let name = found.props.iter().find(|p| p.name == self.names.name).and_then(|p| p.value.as_str());
        let name = name.with_context(|| format!("vertex {id} has no name"))?;
        Ok(Some((found.vertex.t, name.to_owned())))
    }

    /// The id of vertex `t`/`name` if it exists; an error if the id belongs to another name.
    fn find_vertex(&self, t: Identifier, name: &str) -> Result<Option<Uuid>> {
        let id = vertex_id(t, name);
        match self.vertex_name(id)? {
            None => Ok(None),
            Some((have_t, have_name)) if have_t == t && have_name == name => Ok(Some(id)),
            Some((have_t, have_name)) => {
                bail!(
                    "vertex id {id} of {}/{name} is taken by {}/{have_name} (hash collision)",
                    t.as_str(),
                    have_t.as_str()
                )
            }
        }
    }

    /// The id of vertex `t`/`name`, created if missing; true when it was created.
    fn ensure_vertex(&mut self, t: Identifier, name: &str) -> Result<(Uuid, bool)> {
        let id = vertex_id(t, name);
        if self.db.create_vertex(&Vertex::with_id(id, t))? {
            let value = Json::new(serde_json::Value::String(name.to_owned()));
            self.db.set_properties(SpecificVertexQuery::single(id), self.names.name, &value)?;
            return Ok((id, true));
        }
        self.find_vertex(t, name)?;
        Ok((id, false))
    }

    fn link(&mut self, from: Uuid, t: Identifier, to: Uuid) -> Result<()> {
        // Both ends were just ensured, so this only fails on a bug.
        ensure!(
            self.db.create_edge(&Edge::new(from, t, to))?,
            "edge {from} -{}-> {to}: a vertex is missing",
            t.as_str()
        );
        Ok(())
    }

    /// Names of the vertices of type `to_t` reached from vertex `from_t`/`name` along `edge`
    /// (backwards when `reverse`), sorted and deduplicated.
    fn neighbours(
        &self,
        from_t: Identifier,
        name: &str,
        edge: Identifier,
        reverse: bool,
        to_t: Identifier,
    ) -> Result<Vec<String>> {
        let Some(id) = self.find_vertex(from_t, name)? else {
            return Ok(Vec::new());
        };
        let start = SpecificVertexQuery::single(id);
        let query = if reverse {
            start.inbound()?.t(edge).outbound()?.t(to_t)
        } else {
            start.outbound()?.t(edge).inbound()?.t(to_t)
        };
        let mut names = Vec::new();
        for found in vertex_properties(&self.db, query.properties()?.name(self.names.name))? {
            let name = found.props.first().and_then(|p| p.value.as_str());
            names.push(name.with_context(|| format!("vertex {} has no name", found.vertex.id))?.to_owned());
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Every vertex, edge and vertex property, in the file's form.
    fn snapshot(&self) -> Result<SnapshotOut> {
        let vertices = match self.db.get(indradb::AllVertexQuery)?.pop() {
            Some(indradb::QueryOutputValue::Vertices(vertices)) => vertices,
            _ => bail!("IndraDB returned no vertices for AllVertexQuery"),
        };
        let edges = match self.db.get(indradb::AllEdgeQuery)?.pop() {
            Some(indradb::QueryOutputValue::Edges(edges)) => edges,
            _ => bail!("IndraDB returned no edges for AllEdgeQuery"),
        };
        let properties = vertex_properties(&self.db, indradb::AllVertexQuery.properties()?)?;
        Ok(SnapshotOut {
            format: FORMAT,
            version: VERSION,
            vertices: vertices.into_iter().map(|v| (Id(v.id), v.t)).collect(),
            edges: edges.into_iter().map(|e| (Id(e.outbound_id), e.t, Id(e.inbound_id))).collect(),
            properties: properties
                .into_iter()
                .flat_map(|found| {
                    let id = found.vertex.id;
                    found.props.into_iter().map(move |p| (Id(id), p.name, p.value))
                })
                .collect(),
        })
    }

    /// Checks a saved graph completely, then inserts it (into an empty database).
    fn load(&self, bytes: Vec<u8>) -> Result<()> {
        let snapshot: SnapshotIn = serde_json::from_slice(&bytes).context("not a complete graph file")?;
        // The file text can be large (a few kB per endpoint): free it before building the graph.
        drop(bytes);
        ensure!(snapshot.format == FORMAT, "not a graph file: format is {:?}, want {FORMAT:?}", snapshot.format);
        ensure!(
            snapshot.version == VERSION,
            "graph file version {} is not supported (want {VERSION})",
            snapshot.version
        );
        let names = &self.names;
        let mut types = std::collections::HashMap::with_capacity(snapshot.vertices.len());
        let mut items = Vec::with_capacity(snapshot.vertices.len() + snapshot.edges.len() + snapshot.properties.len());
        for (Id(id), t) in &snapshot.vertices {
            let t = names.vertex_type(t).with_context(|| format!("vertex {id}: unknown type {t:?}"))?;
            ensure!(types.insert(*id, (t, false, false)).is_none(), "vertex {id} appears twice");
            items.push(BulkInsertItem::Vertex(Vertex::with_id(*id, t)));
        }
        for (Id(id), name, value) in snapshot.properties {
            let (t, has_name, has_history) =
                types.get_mut(&id).with_context(|| format!("property {name:?} of a missing vertex {id}"))?;
            if name == names.name.as_str() {
                let text = value.as_str().with_context(|| format!("vertex {id}: the name is not a string"))?;
                ensure!(vertex_id(*t, text) == id, "vertex {id}: the id does not match {}/{text}", t.as_str());
                if *t == names.endpoint {
                    text.parse::<EndpointKey>().with_context(|| format!("vertex {id}"))?;
                }
                ensure!(!*has_name, "vertex {id}: two names");
                *has_name = true;
                items.push(BulkInsertItem::VertexProperty(id, names.name, Json::new(value)));
            } else if name == names.history.as_str() && *t == names.endpoint {
                parse_history(&value).with_context(|| format!("vertex {id}: invalid history"))?;
                ensure!(!*has_history, "vertex {id}: two histories");
                *has_history = true;
                items.push(BulkInsertItem::VertexProperty(id, names.history, Json::new(value)));
            } else {
                bail!("vertex {id}: unexpected property {name:?} on a {} vertex", t.as_str());
            }
        }
        for (id, (t, has_name, has_history)) in &types {
            ensure!(*has_name, "vertex {id} has no name");
            ensure!(*has_history || *t != names.endpoint, "endpoint vertex {id} has no history");
        }
        let mut edges = std::collections::HashSet::with_capacity(snapshot.edges.len());
        for (Id(from), t, Id(to)) in &snapshot.edges {
            let (t, from_t, to_t) =
                names.edge_type(t).with_context(|| format!("edge {from} -> {to}: unknown type {t:?}"))?;
            let ends = (types.get(from).map(|v| v.0), types.get(to).map(|v| v.0));
            ensure!(
                ends == (Some(from_t), Some(to_t)),
                "edge {from} -{}-> {to} must join a {} and a {} vertex",
                t.as_str(),
                from_t.as_str(),
                to_t.as_str()
            );
            ensure!(edges.insert((*from, t, *to)), "edge {from} -{}-> {to} appears twice", t.as_str());
            items.push(BulkInsertItem::Edge(Edge::new(*from, t, *to)));
        }
        self.db.bulk_insert(items)?;
        Ok(())
    }
}

impl Drop for IndraStore {
    fn drop(&mut self) {
        if self.remove_on_drop {
            // A temp folder left behind is harmless, and a destructor cannot report an error.
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// A `history` property: the JSON text of a [`HostHistory`] (see the module doc for why text).
fn parse_history(value: &serde_json::Value) -> Result<HostHistory> {
    let text = value.as_str().context("the history is not a JSON string")?;
    Ok(serde_json::from_str(text)?)
}

/// Runs a query that ends in `.properties()` and returns its output.
fn vertex_properties(
    db: &Database<MemoryDatastore>,
    query: impl Into<indradb::Query>,
) -> Result<Vec<VertexProperties>> {
    indradb::util::extract_vertex_properties(db.get(query)?).context("IndraDB returned no vertex properties")
}

impl ReputationStore for IndraStore {
    fn history(&self, key: &EndpointKey) -> Result<Option<HostHistory>> {
        let id = vertex_id(self.names.endpoint, &key.to_string());
        let query = SpecificVertexQuery::single(id).properties()?;
        let Some(found) = vertex_properties(&self.db, query)?.pop() else {
            return Ok(None);
        };
        let mut name = None;
        let mut history = None;
        for property in &found.props {
            if property.name == self.names.name {
                name = property.value.as_str();
            } else if property.name == self.names.history {
                history = Some(&property.value);
            }
        }
        if name != Some(key.to_string().as_str()) || found.vertex.t != self.names.endpoint {
            bail!("vertex id {id} of endpoint {key} is taken by {}/{name:?} (hash collision)", found.vertex.t.as_str());
        }
        let history = history.with_context(|| format!("endpoint {key} has no history"))?;
        let history = parse_history(history).with_context(|| format!("invalid history of {key}"))?;
        Ok(Some(history))
    }

    fn put_history(&mut self, key: &EndpointKey, history: &HostHistory) -> Result<()> {
        let names = self.names;
        let (id, created) = self.ensure_vertex(names.endpoint, &key.to_string())?;
        let text = serde_json::to_string(history).context("cannot serialise a history")?;
        let value = Json::new(serde_json::Value::String(text));
        self.db.set_properties(SpecificVertexQuery::single(id), names.history, &value)?;
        if created {
            let (ip, _) = self.ensure_vertex(names.ip, &key.ip)?;
            self.link(ip, names.endpoint, id)?;
        }
        Ok(())
    }

    fn endpoints(&self) -> Result<Vec<(EndpointKey, HostHistory)>> {
        let query = RangeVertexQuery::new().t(self.names.endpoint).properties()?;
        let mut endpoints = Vec::new();
        for found in vertex_properties(&self.db, query)? {
            let id = found.vertex.id;
            let mut key = None;
            let mut history = None;
            for property in &found.props {
                if property.name == self.names.name {
                    let text =
                        property.value.as_str().with_context(|| format!("vertex {id}: the name is not a string"))?;
                    key = Some(text.parse::<EndpointKey>().with_context(|| format!("vertex {id}"))?);
                } else if property.name == self.names.history {
                    history =
                        Some(parse_history(&property.value).with_context(|| format!("vertex {id}: invalid history"))?);
                }
            }
            match (key, history) {
                (Some(key), Some(history)) => endpoints.push((key, history)),
                _ => bail!("endpoint vertex {id} has no name or no history"),
            }
        }
        endpoints.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(endpoints)
    }

    fn link_hostname_ip(&mut self, hostname: &str, ip: &str) -> Result<()> {
        let names = self.names;
        let (from, _) = self.ensure_vertex(names.hostname, hostname)?;
        let (to, _) = self.ensure_vertex(names.ip, ip)?;
        self.link(from, names.resolves, to)
    }

    fn link_domain_hostname(&mut self, domain: &str, hostname: &str) -> Result<()> {
        let names = self.names;
        let (from, _) = self.ensure_vertex(names.domain, domain)?;
        let (to, _) = self.ensure_vertex(names.hostname, hostname)?;
        self.link(from, names.mx, to)
    }

    fn ips_of_hostname(&self, hostname: &str) -> Result<Vec<String>> {
        self.neighbours(self.names.hostname, hostname, self.names.resolves, false, self.names.ip)
    }

    fn hostnames_of_domain(&self, domain: &str) -> Result<Vec<String>> {
        self.neighbours(self.names.domain, domain, self.names.mx, false, self.names.hostname)
    }

    fn hostnames_of_ip(&self, ip: &str) -> Result<Vec<String>> {
        self.neighbours(self.names.ip, ip, self.names.resolves, true, self.names.hostname)
    }

    fn save(&mut self) -> Result<()> {
        let snapshot = self.snapshot()?;
        fs::create_dir_all(&self.dir).with_context(|| format!("cannot create {}", self.dir.display()))?;
        let lock_path = self.dir.join(LOCK_FILE);
        let lock = File::create(&lock_path).with_context(|| format!("cannot create {}", lock_path.display()))?;
        lock.lock().with_context(|| format!("cannot lock {}", lock_path.display()))?;
        let temp = self.dir.join(TEMP_FILE);
        let write = || -> Result<()> {
            let mut writer = BufWriter::with_capacity(1 << 20, File::create(&temp)?);
            serde_json::to_writer(&mut writer, &snapshot)?;
            writer.write_all(b"\n")?;
            let file = writer.into_inner().map_err(std::io::IntoInnerError::into_error)?;
            file.sync_all()?;
            Ok(())
        };
        write().with_context(|| format!("cannot write {}", temp.display()))?;
        let path = self.graph_path();
        fs::rename(&temp, &path).with_context(|| format!("cannot rename {} to {}", temp.display(), path.display()))?;
        sync_dir(&self.dir).with_context(|| format!("cannot sync the folder {}", self.dir.display()))?;
        // Dropping the file releases the lock.
        drop(lock);
        Ok(())
    }
}

/// Makes a rename in `dir` durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Other systems cannot open a folder to sync it; the rename is still atomic.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

/// A vertex id in the file: the hyphenated UUID text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Id(Uuid);

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0.hyphenated())
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Uuid::parse_str(&text).map(Id).map_err(|err| D::Error::custom(format!("invalid vertex id {text:?}: {err}")))
    }
}

/// The graph file, as written.
#[derive(Serialize)]
struct SnapshotOut {
    format: &'static str,
    version: u32,
    vertices: Vec<(Id, Identifier)>,
    edges: Vec<(Id, Identifier, Id)>,
    properties: Vec<(Id, Identifier, Json)>,
}

/// The graph file, as read: names are plain strings until they are checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotIn {
    format: String,
    version: u32,
    vertices: Vec<(Id, String)>,
    edges: Vec<(Id, String, Id)>,
    properties: Vec<(Id, String, serde_json::Value)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observation::Direction;
    use crate::reputation::store::conformance::{observation, outbound, sample_history, Kind};
    use crate::reputation::store::{record, reputation_store_suite};

    reputation_store_suite!(suite, IndraStore::temp().unwrap());

    fn key(direction: Direction, ip: &str) -> EndpointKey {
        EndpointKey { direction, ip: ip.to_owned() }
    }

    /// A store with endpoints in both directions and every kind of edge.
    fn filled() -> IndraStore {
        let mut store = IndraStore::temp().unwrap();
        let a = outbound("192.0.2.1", "mx1.example.net", &["example.net", "example.org"]);
        let b = outbound("2001:db8::25", "mx2.example.net", &["example.net"]);
        let observations: Vec<_> =
            (0..6).map(|i| observation(if i % 2 == 0 { &a } else { &b }, i * 3_600, Kind::Valid, i as usize)).collect();
        record(&mut store, &observations, |_| true).unwrap();
        store.put_history(&key(Direction::Inbound, "198.51.100.4"), &sample_history("198.51.100.4", 3)).unwrap();
        store
    }

    /// Everything a store answers, to compare two stores.
    fn contents(store: &IndraStore) -> (Vec<(EndpointKey, HostHistory)>, Vec<Vec<String>>) {
        let mut edges = Vec::new();
        for name in ["mx1.example.net", "mx2.example.net"] {
            edges.push(store.ips_of_hostname(name).unwrap());
        }
        for name in ["example.net", "example.org"] {
            edges.push(store.hostnames_of_domain(name).unwrap());
        }
        for ip in ["192.0.2.1", "2001:db8::25", "198.51.100.4"] {
            edges.push(store.hostnames_of_ip(ip).unwrap());
        }
        (store.endpoints().unwrap(), edges)
    }

    #[test]
    fn fnv1a_128_matches_the_reference_vectors() {
        // Ids are stored: these values must never change.
        assert_eq!(fnv1a_128(&[]), 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d);
        assert_eq!(fnv1a_128(&[b"a"]), 0xd228_cb69_6f1a_8caf_7891_2b70_4e4a_8964);
        assert_eq!(fnv1a_128(&[b"foo", b"bar"]), fnv1a_128(&[b"foobar"]));
        let names = Names::new();
        assert_eq!(
            vertex_id(names.endpoint, "outbound/192.0.2.1"),
            Uuid::from_u128(fnv1a_128(&[b"endpoint/outbound/192.0.2.1"]))
        );
        assert_ne!(vertex_id(names.domain, "example.net"), vertex_id(names.hostname, "example.net"));
    }

    #[test]
    fn save_and_reopen_gives_the_same_store() {
        let mut store = filled();
        let want = contents(&store);
        assert_eq!(want.0.len(), 3);
        assert_eq!(want.1[0], vec!["192.0.2.1".to_owned()]);
        store.save().unwrap();
        let reopened = IndraStore::open(store.dir()).unwrap();
        assert_eq!(contents(&reopened), want);

        // A second save replaces the first, and a reopened store can be written and saved again.
        let mut reopened = reopened;
        reopened.put_history(&key(Direction::Outbound, "192.0.2.99"), &sample_history("192.0.2.99", 9)).unwrap();
        reopened.link_hostname_ip("mx1.example.net", "192.0.2.99").unwrap();
        reopened.save().unwrap();
        let again = IndraStore::open(store.dir()).unwrap();
        assert_eq!(contents(&again), contents(&reopened));
        assert_eq!(again.endpoints().unwrap().len(), 4);
        assert!(!store.dir().join(TEMP_FILE).exists());
    }

    #[test]
    fn a_missing_file_or_folder_is_an_empty_store() {
        let store = IndraStore::temp().unwrap();
        let dir = store.dir().join("not").join("yet");
        let mut fresh = IndraStore::open(&dir).unwrap();
        assert!(fresh.endpoints().unwrap().is_empty());
        assert!(!dir.exists(), "opening must not create the folder");
        fresh.put_history(&key(Direction::Outbound, "192.0.2.1"), &HostHistory::default()).unwrap();
        fresh.save().unwrap();
        assert_eq!(IndraStore::open(&dir).unwrap().endpoints().unwrap().len(), 1);
    }

    #[test]
    fn a_leftover_temp_file_is_ignored() {
        let mut store = filled();
        store.save().unwrap();
        let want = contents(&store);
        // A crash in the middle of the next save: a partial temp file, the old graph intact.
        let snapshot = fs::read(store.graph_path()).unwrap();
        fs::write(store.dir().join(TEMP_FILE), &snapshot[..snapshot.len() / 2]).unwrap();
        let mut reopened = IndraStore::open(store.dir()).unwrap();
        assert_eq!(contents(&reopened), want);
        // The next save overwrites it.
        reopened.save().unwrap();
        assert!(!store.dir().join(TEMP_FILE).exists());
        assert_eq!(contents(&IndraStore::open(store.dir()).unwrap()), want);
    }

    #[test]
    fn a_truncated_file_is_an_error_naming_the_path() {
        let mut store = filled();
        store.save().unwrap();
        let path = store.graph_path();
        let full = fs::read(&path).unwrap();
        for len in [0, 1, full.len() / 3, full.len() - 3] {
            fs::write(&path, &full[..len]).unwrap();
            let err = format!("{:#}", IndraStore::open(store.dir()).unwrap_err());
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains("not a complete graph file"), "{err}");
        }
    }

    #[test]
    fn an_inconsistent_file_is_an_error() {
        let mut store = filled();
        store.save().unwrap();
        let path = store.graph_path();
        let good: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        let endpoint = vertex_id(store.names.endpoint, "outbound/192.0.2.1").hyphenated().to_string();
        let unknown = Uuid::from_u128(7).hyphenated().to_string();
        type Edit = Box<dyn Fn(&mut serde_json::Value)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("format", Box::new(|v| v["format"] = "something-else".into())),
            ("version 2", Box::new(|v| v["version"] = 2.into())),
            ("unknown type", Box::new(|v| v["vertices"][0][1] = "planet".into())),
            (
                "appears twice",
                Box::new(|v| {
                    let first = v["vertices"][0].clone();
                    v["vertices"].as_array_mut().unwrap().push(first);
                }),
            ),
            ("missing vertex", Box::new(move |v| v["properties"][0][0] = unknown.clone().into())),
            (
                "does not match",
                Box::new(|v| {
                    let props = v["properties"].as_array_mut().unwrap();
                    let name = props.iter_mut().find(|p| p[1] == "name").unwrap();
                    name[2] = "somewhere.else".into();
                }),
            ),
            (
                "invalid history",
                Box::new(move |v| {
                    let props = v["properties"].as_array_mut().unwrap();
                    let history = props.iter_mut().find(|p| p[0] == endpoint.as_str() && p[1] == "history").unwrap();
                    history[2] = r#"{"days": "lots"}"#.into();
                }),
            ),
            (
                "not a JSON string",
                Box::new(|v| {
                    let props = v["properties"].as_array_mut().unwrap();
                    let history = props.iter_mut().find(|p| p[1] == "history").unwrap();
                    history[2] = serde_json::json!({"days": []});
                }),
            ),
            (
                "must join",
                Box::new(|v| {
                    let edge = &mut v["edges"][0];
                    let (from, to) = (edge[0].clone(), edge[2].clone());
                    edge[0] = to;
                    edge[2] = from;
                }),
            ),
            ("invalid vertex id", Box::new(|v| v["edges"][0][0] = "not-a-uuid".into())),
        ];
        for (want, edit) in cases {
            let mut bad = good.clone();
            edit(&mut bad);
            fs::write(&path, serde_json::to_vec(&bad).unwrap()).unwrap();
            let err = format!("{:#}", IndraStore::open(store.dir()).unwrap_err());
            assert!(err.contains(want) && err.contains(&path.display().to_string()), "{want}: {err}");
        }
    }

    #[test]
    fn a_taken_id_is_an_error_not_a_merge() {
        // Simulate a hash collision: the id of hostname "a.example" names "b.example".
        let mut store = IndraStore::temp().unwrap();
        let names = store.names;
        let id = vertex_id(names.hostname, "a.example");
        store.db.create_vertex(&Vertex::with_id(id, names.hostname)).unwrap();
        let other = Json::new(serde_json::Value::String("b.example".into()));
        store.db.set_properties(SpecificVertexQuery::single(id), names.name, &other).unwrap();
        let err = store.link_hostname_ip("a.example", "192.0.2.1").unwrap_err().to_string();
        assert!(err.contains("hash collision") && err.contains("hostname/b.example"), "{err}");
        assert!(store.ips_of_hostname("a.example").is_err());
    }

    #[test]
    fn the_file_is_json_of_the_documented_shape() {
        let mut store = IndraStore::temp().unwrap();
        store.link_domain_hostname("example.net", "mx1.example.net").unwrap();
        store.save().unwrap();
        let file: serde_json::Value = serde_json::from_slice(&fs::read(store.graph_path()).unwrap()).unwrap();
        assert_eq!(file["format"], FORMAT);
        assert_eq!(file["version"], VERSION);
        let domain = vertex_id(store.names.domain, "example.net").hyphenated().to_string();
        let hostname = vertex_id(store.names.hostname, "mx1.example.net").hyphenated().to_string();
        assert_eq!(file["edges"], serde_json::json!([[domain, "mx", hostname]]));
        assert!(file["vertices"].as_array().unwrap().contains(&serde_json::json!([domain, "domain"])));
        assert!(file["properties"].as_array().unwrap().contains(&serde_json::json!([domain, "name", "example.net"])));
    }
}
