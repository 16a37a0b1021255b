//! `IndraStore`: the [`ReputationStore`] kept as an IndraDB graph plus compact histories, saved
//! atomically to a folder.
//!
//! The name graph lives in an in-memory `indradb::Database<MemoryDatastore>`. Every vertex has a
//! `name` property, and its id is a stable 128-bit FNV-1a hash of `<type>/<name>`, so a name is
//! found without an index and the same name always gets the same id:
//!
//! ```text
//! domain ──mx──► hostname ──resolves──► ip
//! example.net    mx1.example.net        192.0.2.1
//! ```
//!
//! The histories are not IndraDB properties: they sit beside the graph in a map from
//! [`EndpointKey`] (direction + IP) to the compact binary form of `codec.rs` (about 0.5 kB for a
//! busy endpoint). At a million endpoints IndraDB's own cost per vertex, property and edge
//! (B-tree entries, an `Arc<serde_json::Value>` per property) left no room for histories: one
//! endpoint vertex, its name and its `ip -endpoint-> endpoint` edge took about 0.6 kB before any
//! history, and a JSON history property 3–7 kB (bench/RESULTS.md). A vertex whose id is taken by
//! another name (a hash collision) is an error, never a silent merge.
//!
//! Persistence: [`IndraStore::open`] loads `DIR/graph.bin` (a missing file is an empty store) and
//! [`ReputationStore::save`] writes it. The file is our own binary format: [`MAGIC`], the version
//! [`VERSION`] (u32, little-endian), then records, each a tag byte and its fields (integers are
//! LEB128 varints, strings a length and UTF-8 bytes):
//!
//! ```text
//! V type name          a vertex (type 0 domain, 1 hostname, 2 ip); vertices are numbered in order
//! E type from to       an edge (type 0 mx, 1 resolves) between two earlier vertices, by number
//! H endpoint history   an endpoint (`outbound/192.0.2.1`) and its codec.rs bytes, in key order
//! Z vertices edges histories   the counts of the records above; nothing may follow
//! ```
//!
//! Vertex ids are not stored: they are recomputed from type and name. The file is written to
//! `graph.bin.tmp`, fsynced, renamed over `graph.bin` and the folder is fsynced, under an
//! exclusive lock on `graph.lock`; so a crash leaves the previous or the new file, and a leftover
//! `graph.bin.tmp` is never read. IndraDB's own `sync` is not used: it writes a temporary file
//! in the system temp folder (maybe another file system, so the rename is not atomic) and does
//! not fsync. Loading streams the file and checks every record (types, names, edge ends,
//! duplicates, each history decodes, key order, the final counts) before the store is returned,
//! so a truncated or edited file is a clear error naming the path, not a panic or a half-loaded
//! store. A `graph.json` of format version 1 is refused with a message that says what to do.
//! Version 2 files (histories without ports) still load; the next save writes version 3.
//!
//! **Invariant:** only this module talks to IndraDB.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, ensure, Context, Result};
use indradb::{
    BulkInsertItem, Database, Edge, Identifier, Json, MemoryDatastore, QueryExt, SpecificVertexQuery, Vertex,
    VertexProperties,
};
use uuid::Uuid;

use super::codec;
use super::history::HostHistory;
use super::store::{EndpointKey, ReputationStore};

/// The file the graph is saved to, in the store's folder.
pub const GRAPH_FILE: &str = "graph.bin";
/// Where a save writes before the rename; never read.
pub const TEMP_FILE: &str = "graph.bin.tmp";
/// Locked for the duration of a save, so two saving processes cannot interleave their writes.
pub const LOCK_FILE: &str = "graph.lock";
/// The JSON graph file of format version 1, which is refused with a clear error.
pub const LEGACY_FILE: &str = "graph.json";
/// The first bytes of the file: the format name.
pub const MAGIC: &[u8; 16] = b"tlsledger-graph\n";
/// The format version, after the magic (little-endian u32).
pub const VERSION: u32 = 3;

/// Record tags of the file.
const TAG_VERTEX: u8 = b'V';
const TAG_EDGE: u8 = b'E';
const TAG_HISTORY: u8 = b'H';
const TAG_END: u8 = b'Z';
/// Longest vertex name and history accepted when loading (far above any real one), so a
/// garbled length cannot make the loader allocate gigabytes.
const MAX_NAME_BYTES: u64 = 4_096;
const MAX_HISTORY_BYTES: u64 = 1 << 20;

/// The type names of the graph, interned once (IndraDB identifiers are interned strings).
#[derive(Debug, Clone, Copy)]
struct Names {
    domain: Identifier,
    hostname: Identifier,
    ip: Identifier,
    mx: Identifier,
    resolves: Identifier,
    name: Identifier,
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
            mx: id("mx"),
            resolves: id("resolves"),
            name: id("name"),
        }
    }

    /// Vertex types by their number in the file.
    fn vertex_types(&self) -> [Identifier; 3] {
        [self.domain, self.hostname, self.ip]
    }

    /// Edge types by their number in the file, with the vertex types they join.
    fn edge_types(&self) -> [(Identifier, Identifier, Identifier); 2] {
        [(self.mx, self.domain, self.hostname), (self.resolves, self.hostname, self.ip)]
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

/// An IndraDB graph of names and a map of compact endpoint histories, saved to a folder.
pub struct IndraStore {
    db: Database<MemoryDatastore>,
    /// Each endpoint's history in the form of `codec.rs`, decoded on every read.
    histories: BTreeMap<EndpointKey, Box<[u8]>>,
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
    /// Opens the store kept in `dir`: loads `dir/graph.bin`, or starts empty when there is no
    /// such file (the folder is created by the first save). A leftover `graph.bin.tmp` from an
    /// interrupted save is ignored; a version-1 `graph.json` is an error.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let mut store = IndraStore {
            db: MemoryDatastore::new_db(),
            histories: BTreeMap::new(),
            dir,
            names: Names::new(),
            remove_on_drop: false,
        };
        let path = store.graph_path();
        match File::open(&path) {
            Ok(file) => store
                .load(BufReader::with_capacity(1 << 20, file))
                .with_context(|| format!("cannot load the reputation graph {}", path.display()))?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let legacy = store.dir.join(LEGACY_FILE);
                if legacy.exists() {
                    bail!(
                        "{} is a reputation graph of format version 1, which this version no longer reads: \
                         rebuild the state with `tlsledger reputation rebuild`, or move the file away to start empty",
                        legacy.display()
                    );
                }
            }
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

    /// The graph file, `dir/graph.bin`.
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

    /// Writes the whole store in the file format (see the module doc).
    fn write_snapshot(&self, out: &mut impl Write) -> Result<()> {
        let names = &self.names;
        out.write_all(MAGIC)?;
        out.write_all(&VERSION.to_le_bytes())?;
        let mut buf = Vec::with_capacity(1024);
        let vertex_types = names.vertex_types();
        let mut numbers = std::collections::HashMap::new();
        for found in vertex_properties(&self.db, indradb::AllVertexQuery.properties()?.name(names.name))? {
            let vertex = found.vertex;
            let name = found.props.first().and_then(|p| p.value.as_str());
            let name = name.with_context(|| format!("vertex {} has no name", vertex.id))?;
            let code = vertex_types.iter().position(|t| *t == vertex.t);
            let code = code.with_context(|| format!("vertex {}: unknown type {}", vertex.id, vertex.t.as_str()))?;
            buf.clear();
            buf.push(TAG_VERTEX);
            buf.push(code as u8);
            put_bytes(&mut buf, name.as_bytes());
            out.write_all(&buf)?;
            numbers.insert(vertex.id, numbers.len() as u64);
        }
        let edges = match self.db.get(indradb::AllEdgeQuery)?.pop() {
            Some(indradb::QueryOutputValue::Edges(edges)) => edges,
            _ => bail!("IndraDB returned no edges for AllEdgeQuery"),
        };
        let edge_types = names.edge_types();
        for edge in &edges {
            let code = edge_types.iter().position(|(t, _, _)| *t == edge.t);
            let code = code.with_context(|| format!("edge of unknown type {}", edge.t.as_str()))?;
            let number = |id: &Uuid| numbers.get(id).copied().with_context(|| format!("edge to a missing vertex {id}"));
            buf.clear();
            buf.push(TAG_EDGE);
            buf.push(code as u8);
            codec::put(&mut buf, number(&edge.outbound_id)?);
            codec::put(&mut buf, number(&edge.inbound_id)?);
            out.write_all(&buf)?;
        }
        for (key, history) in &self.histories {
            buf.clear();
            buf.push(TAG_HISTORY);
            put_bytes(&mut buf, key.to_string().as_bytes());
            put_bytes(&mut buf, history);
            out.write_all(&buf)?;
        }
        buf.clear();
        buf.push(TAG_END);
        for count in [numbers.len(), edges.len(), self.histories.len()] {
            codec::put(&mut buf, count as u64);
        }
        out.write_all(&buf)?;
        Ok(())
    }

    /// Checks a saved store record by record and inserts it (into an empty store); on an error
    /// the caller drops the half-built store.
    fn load(&mut self, mut input: impl BufRead) -> Result<()> {
        let mut magic = [0u8; 16];
        read_exact(&mut input, &mut magic)?;
        ensure!(&magic == MAGIC, "not a reputation graph file (it does not start with {MAGIC:?})");
        let mut version = [0u8; 4];
        read_exact(&mut input, &mut version)?;
        let version = u32::from_le_bytes(version);
        ensure!(
            version == VERSION || version == 2,
            "graph file version {version} is not supported (want 2 or {VERSION})"
        );
        let names = self.names;
        let vertex_types = names.vertex_types();
        let edge_types = names.edge_types();
        // Per vertex number: its id and type, to check and build the edges; freed after loading.
        let mut vertices: Vec<(Uuid, Identifier)> = Vec::new();
        let mut ids = HashSet::new();
        let mut edges = HashSet::new();
        let mut batch = Vec::with_capacity(BATCH);
        let mut text = Vec::new();
        let mut history = Vec::new();
        loop {
            match read_byte(&mut input)? {
                TAG_VERTEX => {
                    let number = vertices.len();
                    let t = *vertex_types
                        .get(usize::from(read_byte(&mut input)?))
                        .with_context(|| format!("vertex {number}: unknown type"))?;
                    let name = read_string(&mut input, &mut text, MAX_NAME_BYTES)
                        .with_context(|| format!("vertex {number}: invalid name"))?;
                    ensure!(!name.is_empty(), "vertex {number}: empty name");
                    let id = vertex_id(t, name);
                    ensure!(ids.insert(id), "vertex {}/{name} appears twice (or its id is taken)", t.as_str());
                    vertices.push((id, t));
                    batch.push(BulkInsertItem::Vertex(Vertex::with_id(id, t)));
                    let value = Json::new(serde_json::Value::String(name.to_owned()));
                    batch.push(BulkInsertItem::VertexProperty(id, names.name, value));
                }
                TAG_EDGE => {
                    let (t, from_t, to_t) =
                        *edge_types.get(usize::from(read_byte(&mut input)?)).context("edge of an unknown type")?;
                    let (from, to) = (read_varint(&mut input)?, read_varint(&mut input)?);
                    let vertex = |number: u64| {
                        usize::try_from(number).ok().and_then(|n| vertices.get(n)).copied().with_context(|| {
                            format!("edge {from} -{}-> {to}: no vertex {number} before it", t.as_str())
                        })
                    };
                    let ((from_id, have_from_t), (to_id, have_to_t)) = (vertex(from)?, vertex(to)?);
                    ensure!(
                        (have_from_t, have_to_t) == (from_t, to_t),
                        "edge {from} -{}-> {to} must join a {} and a {} vertex",
                        t.as_str(),
                        from_t.as_str(),
                        to_t.as_str()
                    );
                    ensure!(edges.insert((from, t, to)), "edge {from} -{}-> {to} appears twice", t.as_str());
                    batch.push(BulkInsertItem::Edge(Edge::new(from_id, t, to_id)));
                }
                TAG_HISTORY => {
                    let key = read_string(&mut input, &mut text, MAX_NAME_BYTES).context("invalid endpoint name")?;
                    let key: EndpointKey = key.parse()?;
                    read_bytes(&mut input, &mut history, MAX_HISTORY_BYTES)
                        .with_context(|| format!("endpoint {key}"))?;
                    let bytes: Box<[u8]> = if version == 2 {
                        // Version 2 histories had no ports: keep them in today's form.
                        let decoded =
                            codec::decode_v2(&history).with_context(|| format!("endpoint {key}: invalid history"))?;
                        codec::to_bytes(&decoded).into_boxed_slice()
                    } else {
                        codec::decode(&history).with_context(|| format!("endpoint {key}: invalid history"))?;
                        history.as_slice().into()
                    };
                    if let Some((last, _)) = self.histories.last_key_value() {
                        ensure!(*last < key, "endpoint {key} is out of order or appears twice");
                    }
                    self.histories.insert(key, bytes);
                }
                TAG_END => {
                    let counts = [read_varint(&mut input)?, read_varint(&mut input)?, read_varint(&mut input)?];
                    let want = [vertices.len(), edges.len(), self.histories.len()].map(|n| n as u64);
                    ensure!(counts == want, "the end record counts {counts:?} records, but the file has {want:?}");
                    ensure!(input.fill_buf()?.is_empty(), "data after the end record");
                    break;
                }
                tag => bail!("unknown record tag {tag:#04x}"),
            }
            if batch.len() >= BATCH {
                self.db.bulk_insert(std::mem::take(&mut batch))?;
            }
        }
        self.db.bulk_insert(batch)?;
        Ok(())
    }
}

/// Items per IndraDB bulk insert while loading.
const BATCH: usize = 65_536;

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    codec::put(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Fills `buf`; the end of the file is reported as an incomplete file.
fn read_exact(input: &mut impl Read, buf: &mut [u8]) -> Result<()> {
    input.read_exact(buf).map_err(|err| {
        if err.kind() == std::io::ErrorKind::UnexpectedEof {
            anyhow::anyhow!("not a complete graph file: it ends in the middle of a record or has no end record")
        } else {
            anyhow::Error::new(err).context("read error")
        }
    })
}

fn read_byte(input: &mut impl Read) -> Result<u8> {
    let mut byte = [0u8];
    read_exact(input, &mut byte)?;
    Ok(byte[0])
}

fn read_varint(input: &mut impl Read) -> Result<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = read_byte(input)?;
        ensure!(shift < 63 || byte <= 1, "a number does not fit in 64 bits");
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    bail!("a number does not fit in 64 bits")
}

/// Reads a length and that many bytes into `buf` (at most `max`).
fn read_bytes(input: &mut impl Read, buf: &mut Vec<u8>, max: u64) -> Result<()> {
    let len = read_varint(input)?;
    ensure!(len <= max, "a length of {len} bytes (more than {max})");
    buf.resize(len as usize, 0);
    read_exact(input, buf)
}

fn read_string<'a>(input: &mut impl Read, buf: &'a mut Vec<u8>, max: u64) -> Result<&'a str> {
    read_bytes(input, buf, max)?;
    std::str::from_utf8(buf).context("not UTF-8")
}

impl Drop for IndraStore {
    fn drop(&mut self) {
        if self.remove_on_drop {
            // A temp folder left behind is harmless, and a destructor cannot report an error.
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
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
        let Some(bytes) = self.histories.get(key) else {
            return Ok(None);
        };
        Ok(Some(codec::decode(bytes).with_context(|| format!("invalid history of {key}"))?))
    }

    fn put_history(&mut self, key: &EndpointKey, history: &HostHistory) -> Result<()> {
        self.histories.insert(key.clone(), codec::to_bytes(history).into_boxed_slice());
        Ok(())
    }

    fn endpoints(&self) -> Result<Vec<(EndpointKey, HostHistory)>> {
        let mut endpoints = Vec::with_capacity(self.histories.len());
        self.for_each_endpoint(&mut |key, history| {
            endpoints.push((key.clone(), history.clone()));
            Ok(())
        })?;
        Ok(endpoints)
    }

    fn for_each_endpoint(&self, visit: &mut dyn FnMut(&EndpointKey, &HostHistory) -> Result<()>) -> Result<()> {
        for (key, bytes) in &self.histories {
            let history = codec::decode(bytes).with_context(|| format!("invalid history of {key}"))?;
            visit(key, &history)?;
        }
        Ok(())
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
        fs::create_dir_all(&self.dir).with_context(|| format!("cannot create {}", self.dir.display()))?;
        let lock_path = self.dir.join(LOCK_FILE);
        let lock = File::create(&lock_path).with_context(|| format!("cannot create {}", lock_path.display()))?;
        lock.lock().with_context(|| format!("cannot lock {}", lock_path.display()))?;
        let temp = self.dir.join(TEMP_FILE);
        let write = || -> Result<()> {
            let mut writer = BufWriter::with_capacity(1 << 20, File::create(&temp)?);
            self.write_snapshot(&mut writer)?;
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
        assert_eq!(vertex_id(names.ip, "192.0.2.1"), Uuid::from_u128(fnv1a_128(&[b"ip/192.0.2.1"])));
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
        for len in 0..full.len() {
            fs::write(&path, &full[..len]).unwrap();
            let err = format!("{:#}", IndraStore::open(store.dir()).unwrap_err());
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains("not a complete graph file"), "{len}: {err}");
        }
    }

    /// A graph file made of the given records.
    fn file(records: &[&[u8]]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        for record in records {
            bytes.extend_from_slice(record);
        }
        bytes
    }

    /// A record: a tag and its fields, strings given as byte strings with their length first.
    fn record_of(tag: u8, fields: &[&[u8]]) -> Vec<u8> {
        let mut bytes = vec![tag];
        for field in fields {
            bytes.extend_from_slice(field);
        }
        bytes
    }

    fn string(text: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        put_bytes(&mut bytes, text);
        bytes
    }

    #[test]
    fn a_version_2_file_loads_without_ports() {
        let mut history = sample_history("192.0.2.1", 1);
        history.ports.clear();
        let mut bytes_v2 = codec::to_bytes(&history);
        bytes_v2.pop();
        let mut bytes = file(&[
            &record_of(b'H', &[&string(b"outbound/192.0.2.1"), &string(&bytes_v2)]),
            &record_of(b'Z', &[&[0], &[0], &[1]]),
        ]);
        bytes[16] = 2;
        let store = IndraStore::temp().unwrap();
        fs::write(store.graph_path(), &bytes).unwrap();
        let mut store = IndraStore::open(store.dir()).unwrap();
        assert_eq!(store.endpoints().unwrap(), vec![(key(Direction::Outbound, "192.0.2.1"), history.clone())]);
        store.save().unwrap();
        let saved = fs::read(store.graph_path()).unwrap();
        assert_eq!(saved[16], 3, "saved as version 3");
        assert_eq!(IndraStore::open(store.dir()).unwrap().endpoints().unwrap()[0].1, history);
    }

    #[test]
    fn a_hand_made_file_loads() {
        let history = codec::to_bytes(&sample_history("192.0.2.1", 1));
        let bytes = file(&[
            &record_of(b'V', &[&[0], &string(b"example.net")]),
            &record_of(b'V', &[&[1], &string(b"mx1.example.net")]),
            &record_of(b'V', &[&[2], &string(b"192.0.2.1")]),
            &record_of(b'E', &[&[0], &[0], &[1]]),
            &record_of(b'E', &[&[1], &[1], &[2]]),
            &record_of(b'H', &[&string(b"outbound/192.0.2.1"), &string(&history)]),
            &record_of(b'Z', &[&[3], &[2], &[1]]),
        ]);
        let store = IndraStore::temp().unwrap();
        fs::write(store.graph_path(), &bytes).unwrap();
        let store = IndraStore::open(store.dir()).unwrap();
        assert_eq!(store.hostnames_of_domain("example.net").unwrap(), vec!["mx1.example.net".to_owned()]);
        assert_eq!(store.hostnames_of_ip("192.0.2.1").unwrap(), vec!["mx1.example.net".to_owned()]);
        assert_eq!(
            store.endpoints().unwrap(),
            vec![(key(Direction::Outbound, "192.0.2.1"), sample_history("192.0.2.1", 1))]
        );
        // Saving it writes a file of the same size (vertices in id order, so maybe numbered
        // differently) that loads into the same store.
        let mut store = store;
        store.save().unwrap();
        assert_eq!(fs::read(store.graph_path()).unwrap().len(), bytes.len());
        let again = IndraStore::open(store.dir()).unwrap();
        assert_eq!(contents(&again), contents(&store));
    }

    #[test]
    fn an_inconsistent_file_is_an_error() {
        let store = IndraStore::temp().unwrap();
        let path = store.graph_path();
        let history = codec::to_bytes(&sample_history("192.0.2.1", 1));
        let domain = record_of(b'V', &[&[0], &string(b"example.net")]);
        let hostname = record_of(b'V', &[&[1], &string(b"mx1.example.net")]);
        let h = |name: &[u8], bytes: &[u8]| record_of(b'H', &[&string(name), &string(bytes)]);
        let end = |v: u8, e: u8, h: u8| record_of(b'Z', &[&[v], &[e], &[h]]);
        let mut garbled = history.clone();
        garbled.push(0);
        let mut bad_magic = file(&[&end(0, 0, 0)]);
        bad_magic[0] = b'{';
        let mut version_4 = file(&[&end(0, 0, 0)]);
        version_4[16] = 4;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("not a reputation graph file", bad_magic),
            ("version 4 is not supported", version_4),
            ("unknown type", file(&[&record_of(b'V', &[&[3], &string(b"x")]), &end(1, 0, 0)])),
            ("empty name", file(&[&record_of(b'V', &[&[0], &string(b"")]), &end(1, 0, 0)])),
            ("not UTF-8", file(&[&record_of(b'V', &[&[0], &string(b"\xff")]), &end(1, 0, 0)])),
            ("more than 4096", file(&[&record_of(b'V', &[&[0], &[0xff, 0xff, 0x03]]), &end(1, 0, 0)])),
            ("appears twice", file(&[&domain, &domain, &end(2, 0, 0)])),
            ("no vertex 2", file(&[&domain, &hostname, &record_of(b'E', &[&[0], &[0], &[2]]), &end(2, 1, 0)])),
            ("must join", file(&[&domain, &hostname, &record_of(b'E', &[&[0], &[1], &[0]]), &end(2, 1, 0)])),
            ("edge of an unknown type", file(&[&domain, &hostname, &record_of(b'E', &[&[2], &[0], &[1]])])),
            (
                "appears twice",
                file(&[
                    &domain,
                    &hostname,
                    &record_of(b'E', &[&[0], &[0], &[1]]),
                    &record_of(b'E', &[&[0], &[0], &[1]]),
                ]),
            ),
            ("invalid history", file(&[&h(b"outbound/192.0.2.1", &garbled), &end(0, 0, 1)])),
            ("invalid endpoint", file(&[&h(b"sideways/192.0.2.1", &history), &end(0, 0, 1)])),
            (
                "out of order",
                file(&[&h(b"outbound/192.0.2.2", &history), &h(b"outbound/192.0.2.1", &history), &end(0, 0, 2)]),
            ),
            (
                "out of order or appears twice",
                file(&[&h(b"outbound/192.0.2.1", &history), &h(b"outbound/192.0.2.1", &history), &end(0, 0, 2)]),
            ),
            ("counts [1, 0, 0] records, but the file has [0, 0, 0]", file(&[&end(1, 0, 0)])),
            ("data after the end record", file(&[&end(0, 0, 0), b"Z"])),
            ("unknown record tag 0x7b", file(&[b"{"])),
        ];
        for (want, bytes) in cases {
            fs::write(&path, bytes).unwrap();
            let err = format!("{:#}", IndraStore::open(store.dir()).unwrap_err());
            assert!(err.contains(want) && err.contains(&path.display().to_string()), "{want}: {err}");
        }
        // The empty graph is a valid file.
        fs::write(&path, file(&[&end(0, 0, 0)])).unwrap();
        assert!(IndraStore::open(store.dir()).unwrap().endpoints().unwrap().is_empty());
    }

    #[test]
    fn a_version_1_json_file_is_refused() {
        let store = IndraStore::temp().unwrap();
        let legacy = store.dir().join(LEGACY_FILE);
        fs::write(
            &legacy,
            br#"{"format":"tlsledger-reputation-graph","version":1,"vertices":[],"edges":[],"properties":[]}"#,
        )
        .unwrap();
        let err = format!("{:#}", IndraStore::open(store.dir()).unwrap_err());
        assert!(err.contains(&legacy.display().to_string()) && err.contains("format version 1"), "{err}");
        assert!(err.contains("tlsledger reputation rebuild"), "{err}");
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
    fn the_file_has_the_documented_shape() {
        let mut store = IndraStore::temp().unwrap();
        store.link_domain_hostname("example.net", "mx1.example.net").unwrap();
        store.save().unwrap();
        let bytes = fs::read(store.graph_path()).unwrap();
        assert_eq!(&bytes[..16], b"tlsledger-graph\n");
        assert_eq!(&bytes[16..20], &[3, 0, 0, 0]);
        let vertices: Vec<&[u8]> = vec![b"V\x00\x0bexample.net", b"V\x01\x0fmx1.example.net"];
        let rest = &bytes[20..];
        // Vertices come in id order, so check both without assuming which is first.
        let (first, second) = if rest.starts_with(vertices[0]) { (0, 1) } else { (1, 0) };
        assert!(rest.starts_with(vertices[first]), "{rest:?}");
        let rest = &rest[vertices[first].len()..];
        assert!(rest.starts_with(vertices[second]), "{rest:?}");
        let rest = &rest[vertices[second].len()..];
        assert_eq!(rest, [b"E\x00".as_slice(), &[first as u8, second as u8], b"Z\x02\x01\x00"].concat());
    }
}
