//! `IndraStore`: the [`ReputationStore`] kept as an IndraDB graph plus compact histories, saved
//! atomically to a folder.
//!
//! The name graph lives in an in-memory `indradb::Database<MemoryDatastore>`, which holds the
//! vertices (id and type) and the edges between them. A vertex id is a stable 128-bit FNV-1a
//! hash of `<type>/<name>`, so a name is found without an index and the same name always gets
//! the same id:
//!
//! ```text
//! domain ──mx──► hostname ──resolves──► ip ──presents──► certificate
//! example.net    mx1.example.net        192.0.2.1            2F:DC:…:62 (its identity)
//! ```
//!
//! Everything per vertex or per endpoint that is not a relation sits beside the graph, in flat
//! buffers, because IndraDB's own cost per vertex, property and edge (B-tree entries, an
//! `Arc<serde_json::Value>` per property) left no room for it at a million endpoints
//! (bench/RESULTS.md):
//!
//! - vertex names: one string buffer and a hash map from vertex id to a (offset, length, type)
//!   slot in it, instead of a `name` property per vertex;
//! - histories: not in memory. The store keeps the file it loaded (or last saved) open, and an
//!   index of its history section: the endpoint names in key order and where each history is in
//!   the file. A history is read (one positioned read) and decoded when it is asked for; walking
//!   all of them reads the section in 1 MB pieces. Histories written since sit in a map that
//!   shadows the section until the next save writes the merged section to the new file. The open
//!   file never changes under the store: a save renames a new file over the name.
//!
//! A vertex whose id is taken by another name (a hash collision) is an error, never a silent
//! merge.
//!
//! Persistence: [`IndraStore::open`] loads `DIR/graph.bin` (a missing file is an empty store) and
//! [`ReputationStore::save`] writes it. The file is our own binary format: [`MAGIC`], the version
//! [`VERSION`] (u32, little-endian), two size hints (the number of vertices and the bytes of
//! their names, so the loader allocates its tables once; the counts that are checked are those of
//! the end record), then records, each a tag byte and its fields (integers are LEB128 varints,
//! strings a length and UTF-8 bytes):
//!
//! ```text
//! V type name          a vertex (type 0 domain, 1 hostname, 2 ip, 3 certificate), in decreasing id order;
//!                      vertices are numbered in file order
//! E type from to       an edge (type 0 mx, 1 resolves, 2 presents) between two earlier vertices, by number,
//!                      in decreasing (from id, type, to id) order
//! H count length section checksum
//!                      the histories: `length` bytes of `count` records, each an endpoint
//!                      (`outbound/192.0.2.1`) and its codec.rs bytes, in key order; then the
//!                      XXH3-64 of the section (u64, little-endian)
//! Z vertices edges histories   the counts of the records above; nothing may follow
//! ```
//!
//! Vertex ids are not stored: they are recomputed from type and name. The file is written to
//! `graph.bin.tmp`, fsynced, renamed over `graph.bin` and the folder is fsynced, under an
//! exclusive lock on `graph.lock`; so a crash leaves the previous or the new file, and a leftover
//! `graph.bin.tmp` is never read. IndraDB's own `sync` is not used: it writes a temporary file
//! in the system temp folder (maybe another file system, so the rename is not atomic) and does
//! not fsync. Loading streams the vertex and edge records and checks each (types, names, edge
//! ends, order, so no duplicates), streams the history section through its checksum
//! and walks its records (endpoint names, key order, lengths), and checks the final counts, all
//! before the store is returned: a truncated or edited file is a clear error naming the path, not
//! a panic or a half-loaded store. A history is decoded only when it is read; one that does not
//! decode (only a writer bug can make one, since the checksum covers the section) is an error
//! naming the endpoint then. Version 4 files (no certificates) load as they are: their histories
//! are valid version-5 histories. Older files (versions 2 and 3 of `graph.bin`, 1 of `graph.json`)
//! are refused with a message that says what to do.
//!
//! Memory: a loaded store holds about 40 bytes per endpoint (its name and where its history is),
//! about 45 bytes per vertex name, IndraDB's vertices and edges, and the histories written since
//! the load or the last save. Loading inserts into IndraDB on a second thread while the file is
//! read and checked; IndraDB's inserts (a B-tree search per vertex, four per edge) are most of
//! the load time.
//!
//! **Invariant:** only this module talks to IndraDB.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::hash::Hasher as _;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, ensure, Context, Result};
use indradb::{Database, Edge, Identifier, MemoryDatastore, QueryExt, SpecificVertexQuery, Vertex};
use rustc_hash::FxHashMap;
use twox_hash::XxHash3_64;
use uuid::Uuid;

use super::codec;
use super::history::HostHistory;
use super::store::{direction_name, EndpointKey, ReputationStore};
use crate::observation::Direction;

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
pub const VERSION: u32 = 5;
/// The oldest format version still loaded (4: no certificate vertices, same histories).
pub const OLDEST_VERSION: u32 = 4;

/// Record tags of the file.
const TAG_VERTEX: u8 = b'V';
const TAG_EDGE: u8 = b'E';
const TAG_HISTORIES: u8 = b'H';
const TAG_END: u8 = b'Z';
/// Longest vertex name, endpoint name and history accepted (far above any real one), so a
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
    certificate: Identifier,
    presents: Identifier,
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
            certificate: id("certificate"),
            presents: id("presents"),
        }
    }

    /// Vertex types by their number in the file.
    fn vertex_types(&self) -> [Identifier; 4] {
        [self.domain, self.hostname, self.ip, self.certificate]
    }

    /// The number of a vertex type in the file.
    fn vertex_code(&self, t: Identifier) -> Option<u8> {
        self.vertex_types().iter().position(|have| *have == t).map(|code| code as u8)
    }

    /// Edge types by their number in the file, with the vertex types they join.
    fn edge_types(&self) -> [(Identifier, Identifier, Identifier); 3] {
        [
            (self.mx, self.domain, self.hostname),
            (self.resolves, self.hostname, self.ip),
            (self.presents, self.ip, self.certificate),
        ]
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

/// Where a vertex name sits in [`VertexNames::text`], and the vertex's type number.
#[derive(Debug, Clone, Copy)]
struct NameSlot {
    offset: u32,
    len: u16,
    code: u8,
}

/// The names of the graph's vertices, outside IndraDB: one string buffer and a map from id to
/// a slot in it (about 45 bytes per name instead of a B-tree entry and a JSON value).
#[derive(Debug, Default)]
struct VertexNames {
    text: String,
    by_id: FxHashMap<Uuid, NameSlot>,
}

impl VertexNames {
    /// The type number and name of vertex `id`.
    fn get(&self, id: Uuid) -> Option<(u8, &str)> {
        let slot = self.by_id.get(&id)?;
        let start = slot.offset as usize;
        self.text.get(start..start + usize::from(slot.len)).map(|name| (slot.code, name))
    }

    /// Records the name of a new vertex (the caller checked that `id` is not known).
    fn insert(&mut self, id: Uuid, code: u8, name: &str) -> Result<()> {
        let offset = u32::try_from(self.text.len()).context("more than 4 GB of vertex names")?;
        let len = u16::try_from(name.len()).ok().filter(|len| u64::from(*len) <= MAX_NAME_BYTES);
        let len = len.with_context(|| format!("a name of {} bytes (more than {MAX_NAME_BYTES})", name.len()))?;
        self.text.push_str(name);
        self.by_id.insert(id, NameSlot { offset, len, code });
        Ok(())
    }
}

/// One endpoint of the loaded section: where its name ends in [`Histories::keys`] (it starts
/// where the previous one ends) and where its history bytes are in the file.
#[derive(Debug, Clone, Copy)]
struct Slot {
    key_end: u32,
    len: u32,
    at: u64,
}

/// Where [`Histories::merged`] found a history.
#[derive(Debug, Clone, Copy)]
enum Found<'a> {
    /// In the section of the file.
    Section(Slot),
    /// Written since; these are its bytes.
    Changed(&'a [u8]),
}

/// The endpoint histories in codec.rs form: the section of the file as loaded or last saved,
/// read from that file when needed, and the histories written since, in memory.
#[derive(Debug, Default)]
struct Histories {
    /// The file the section was loaded from or last saved to. It stays open: a later save (by
    /// this or another process) renames a new file over the name, so this one never changes.
    file: Option<File>,
    /// The endpoint names of the section (`outbound/192.0.2.1`), one after the other.
    keys: String,
    /// The section's endpoints, in key order.
    slots: Vec<Slot>,
    /// Histories written since the section was loaded or saved; they shadow the section.
    changed: BTreeMap<EndpointKey, Box<[u8]>>,
}

/// Compares the text form of a key (`outbound/192.0.2.1`) with a key, in the order of
/// [`EndpointKey`]'s `Ord` (which orders like the text form).
fn cmp_key_text(text: &str, key: &EndpointKey) -> CmpOrdering {
    let want = direction_name(key.direction).bytes().chain(*b"/").chain(key.ip.bytes());
    text.bytes().cmp(want)
}

/// Checks an endpoint name of the file (`outbound/…` or `inbound/…` and a non-empty IP) and
/// fills `key` with it, reusing its IP buffer.
fn parse_key(text: &str, key: &mut EndpointKey) -> Result<()> {
    let (direction, ip) = text.split_once('/').with_context(|| format!("invalid endpoint {text:?}"))?;
    key.direction = match direction {
        "outbound" => Direction::Outbound,
        "inbound" => Direction::Inbound,
        _ => bail!("invalid endpoint {text:?}: the direction must be outbound or inbound"),
    };
    ensure!(!ip.is_empty(), "invalid endpoint {text:?}: no IP");
    key.ip.clear();
    key.ip.push_str(ip);
    Ok(())
}

/// Reads `buf.len()` bytes of `file` at `at`, without moving its cursor.
#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, at)
}

/// Reads `buf.len()` bytes of `file` at `at` (this moves the cursor, which nothing else uses).
#[cfg(windows)]
fn read_at(file: &File, mut buf: &mut [u8], mut at: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        match std::os::windows::fs::FileExt::seek_read(file, buf, at)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                at += n as u64;
            }
        }
    }
    Ok(())
}

/// Bytes read from the section file at once while walking it in order.
const WINDOW_BYTES: usize = 1 << 20;

/// A window on the section file, so walking every history in order reads it in large pieces.
struct Window<'a> {
    file: &'a File,
    bytes: Vec<u8>,
    start: u64,
}

impl<'a> Window<'a> {
    fn new(file: &'a File) -> Self {
        Window { file, bytes: Vec::new(), start: 0 }
    }

    /// The `len` bytes at `at`, which must lie before `end`, the end of the section.
    fn get(&mut self, at: u64, len: u32, end: u64) -> std::io::Result<&[u8]> {
        let window_end = self.start + self.bytes.len() as u64;
        if at < self.start || at + u64::from(len) > window_end {
            let want = (end - at).min(WINDOW_BYTES.max(len as usize) as u64) as usize;
            self.bytes.resize(want, 0);
            read_at(self.file, &mut self.bytes, at)?;
            self.start = at;
        }
        let from = (at - self.start) as usize;
        Ok(&self.bytes[from..from + len as usize])
    }
}

impl Histories {
    /// The name of the section's endpoint `number`.
    fn key_text(&self, number: usize) -> &str {
        let start = if number == 0 { 0 } else { self.slots[number - 1].key_end as usize };
        &self.keys[start..self.slots[number].key_end as usize]
    }

    /// The end of the section in its file.
    fn section_end(&self) -> u64 {
        self.slots.last().map_or(0, |slot| slot.at + u64::from(slot.len))
    }

    /// The file of the section; only an empty section has none.
    fn file(&self) -> Result<&File> {
        self.file.as_ref().context("a history section without its file")
    }

    /// The section's record number of `key`, if it is there.
    fn find(&self, key: &EndpointKey) -> Option<usize> {
        let (mut low, mut high) = (0, self.slots.len());
        while low < high {
            let mid = low + (high - low) / 2;
            match cmp_key_text(self.key_text(mid), key) {
                CmpOrdering::Less => low = mid + 1,
                CmpOrdering::Greater => high = mid,
                CmpOrdering::Equal => return Some(mid),
            }
        }
        None
    }

    /// The stored bytes of `key`'s history.
    fn get(&self, key: &EndpointKey) -> Result<Option<Box<[u8]>>> {
        if let Some(bytes) = self.changed.get(key) {
            return Ok(Some(bytes.clone()));
        }
        let Some(number) = self.find(key) else { return Ok(None) };
        let slot = self.slots[number];
        let mut bytes = vec![0u8; slot.len as usize];
        read_at(self.file()?, &mut bytes, slot.at).context("cannot read the history")?;
        Ok(Some(bytes.into_boxed_slice()))
    }

    /// Every endpoint in key order, the section merged with the changes, and where its history
    /// is.
    fn merged(&self, visit: &mut dyn FnMut(&EndpointKey, Found<'_>) -> Result<()>) -> Result<()> {
        let mut changed = self.changed.iter().peekable();
        let mut key = EndpointKey { direction: Direction::Outbound, ip: String::new() };
        for (number, slot) in self.slots.iter().enumerate() {
            parse_key(self.key_text(number), &mut key)?;
            while let Some((changed_key, changed_bytes)) = changed.next_if(|(k, _)| **k <= key) {
                visit(changed_key, Found::Changed(changed_bytes))?;
            }
            if !self.changed.contains_key(&key) {
                visit(&key, Found::Section(*slot))?;
            }
        }
        for (changed_key, changed_bytes) in changed {
            visit(changed_key, Found::Changed(changed_bytes))?;
        }
        Ok(())
    }

    /// Every endpoint and its history bytes, in key order: the section merged with the changes.
    fn for_each(&self, visit: &mut dyn FnMut(&EndpointKey, &[u8]) -> Result<()>) -> Result<()> {
        let mut window = self.file.as_ref().map(Window::new);
        let end = self.section_end();
        self.merged(&mut |key, found| match found {
            Found::Changed(bytes) => visit(key, bytes),
            Found::Section(slot) => {
                let window = window.as_mut().context("a history section without its file")?;
                visit(key, window.get(slot.at, slot.len, end).context("cannot read the histories")?)
            }
        })
    }

    /// The number of endpoints.
    fn len(&self) -> usize {
        self.slots.len() + self.changed.keys().filter(|key| self.find(key).is_none()).count()
    }
}

/// An IndraDB graph of names and compact endpoint histories, saved to a folder.
pub struct IndraStore {
    db: Database<MemoryDatastore>,
    vertex_names: VertexNames,
    histories: Histories,
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
            vertex_names: VertexNames::default(),
            histories: Histories::default(),
            dir,
            names: Names::new(),
            remove_on_drop: false,
        };
        let path = store.graph_path();
        match File::open(&path) {
            Ok(file) => {
                store.load(file).with_context(|| format!("cannot load the reputation graph {}", path.display()))?;
            }
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

    /// The number of endpoints with a history, without decoding any.
    pub fn n_endpoints(&self) -> Result<usize> {
        Ok(self.histories.len())
    }

    /// The id of vertex `t`/`name` if it exists; an error if the id belongs to another name.
    fn find_vertex(&self, t: Identifier, name: &str) -> Result<Option<Uuid>> {
        let id = vertex_id(t, name);
        let Some((have_code, have_name)) = self.vertex_names.get(id) else {
            return Ok(None);
        };
        let have_t = self.names.vertex_types()[usize::from(have_code)];
        if have_t == t && have_name == name {
            return Ok(Some(id));
        }
        bail!("vertex id {id} of {}/{name} is taken by {}/{have_name} (hash collision)", t.as_str(), have_t.as_str())
    }

    /// The id of vertex `t`/`name`, created if missing.
    fn ensure_vertex(&mut self, t: Identifier, name: &str) -> Result<Uuid> {
        if let Some(id) = self.find_vertex(t, name)? {
            return Ok(id);
        }
        let id = vertex_id(t, name);
        let code = self.names.vertex_code(t).with_context(|| format!("unknown vertex type {}", t.as_str()))?;
        self.vertex_names.insert(id, code, name)?;
        ensure!(self.db.create_vertex(&Vertex::with_id(id, t))?, "vertex {id} exists in IndraDB but has no name");
        Ok(id)
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
        let found = indradb::util::extract_vertices(self.db.get(query)?).context("IndraDB returned no vertices")?;
        let mut names = Vec::with_capacity(found.len());
        for vertex in found {
            let (_, name) =
                self.vertex_names.get(vertex.id).with_context(|| format!("vertex {} has no name", vertex.id))?;
            names.push(name.to_owned());
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Writes the whole store in the file format (see the module doc) and returns the index of
    /// the history section it wrote (without its file).
    fn write_snapshot(&self, out: &mut impl Write) -> Result<Histories> {
        // The position in the file, for the index of the new section.
        let mut out = Counted { out, pos: 0 };
        out.put(MAGIC)?;
        out.put(&VERSION.to_le_bytes())?;
        let mut buf = Vec::with_capacity(1024);
        let vertices = indradb::util::extract_vertices(self.db.get(indradb::AllVertexQuery)?)
            .context("IndraDB returned no vertices for AllVertexQuery")?;
        codec::put(&mut buf, vertices.len() as u64);
        codec::put(&mut buf, self.vertex_names.text.len() as u64);
        out.put(&buf)?;
        // IndraDB lists vertices in id order; the file wants them reversed, because IndraDB's
        // B-trees (a linear search in each node) insert at the front with one comparison per
        // level, and at the end with a whole node's worth. Edges are then numbered
        // by a binary search.
        ensure!(vertices.windows(2).all(|pair| pair[0].id < pair[1].id), "IndraDB listed vertices out of id order");
        for vertex in vertices.iter().rev() {
            let (code, name) =
                self.vertex_names.get(vertex.id).with_context(|| format!("vertex {} has no name", vertex.id))?;
            buf.clear();
            buf.push(TAG_VERTEX);
            buf.push(code);
            put_bytes(&mut buf, name.as_bytes());
            out.put(&buf)?;
        }
        let edges = match self.db.get(indradb::AllEdgeQuery)?.pop() {
            Some(indradb::QueryOutputValue::Edges(edges)) => edges,
            _ => bail!("IndraDB returned no edges for AllEdgeQuery"),
        };
        ensure!(edges.windows(2).all(|pair| pair[0] < pair[1]), "IndraDB listed edges out of order");
        let edge_types = self.names.edge_types();
        let number = |id: &Uuid| {
            vertices
                .binary_search_by(|v| v.id.cmp(id))
                .map(|n| (vertices.len() - 1 - n) as u64)
                .map_err(|_| anyhow::anyhow!("edge to a missing vertex {id}"))
        };
        for edge in edges.iter().rev() {
            let code = edge_types.iter().position(|(t, _, _)| *t == edge.t);
            let code = code.with_context(|| format!("edge of unknown type {}", edge.t.as_str()))?;
            buf.clear();
            buf.push(TAG_EDGE);
            buf.push(code as u8);
            codec::put(&mut buf, number(&edge.outbound_id)?);
            codec::put(&mut buf, number(&edge.inbound_id)?);
            out.put(&buf)?;
        }
        // The section is streamed: its length first (without reading a history), then the
        // records, from the old file or the changes, with their checksum.
        let (mut n_histories, mut len) = (0u64, 0u64);
        self.histories.merged(&mut |key, found| {
            let key_len = direction_name(key.direction).len() + 1 + key.ip.len();
            let history_len = match found {
                Found::Section(slot) => slot.len as usize,
                Found::Changed(bytes) => bytes.len(),
            };
            n_histories += 1;
            len += (varint_len(key_len as u64) + key_len + varint_len(history_len as u64) + history_len) as u64;
            Ok(())
        })?;
        buf.clear();
        buf.push(TAG_HISTORIES);
        codec::put(&mut buf, n_histories);
        codec::put(&mut buf, len);
        out.put(&buf)?;
        let mut hasher = XxHash3_64::with_seed(0);
        let mut written = Histories::default();
        let mut window = self.histories.file.as_ref().map(Window::new);
        let end = self.histories.section_end();
        let mut text = String::new();
        self.histories.merged(&mut |key, found| {
            text.clear();
            text.push_str(direction_name(key.direction));
            text.push('/');
            text.push_str(&key.ip);
            let bytes = match found {
                Found::Changed(bytes) => bytes,
                Found::Section(slot) => {
                    let window = window.as_mut().context("a history section without its file")?;
                    window.get(slot.at, slot.len, end).context("cannot read the histories")?
                }
            };
            buf.clear();
            put_bytes(&mut buf, text.as_bytes());
            codec::put(&mut buf, bytes.len() as u64);
            hasher.write(&buf);
            hasher.write(bytes);
            out.put(&buf)?;
            let at = out.pos;
            out.put(bytes)?;
            written.keys.push_str(&text);
            let key_end = u32::try_from(written.keys.len()).context("more than 4 GB of endpoint names")?;
            let len = u32::try_from(bytes.len()).context("a history of more than 4 GB")?;
            written.slots.push(Slot { key_end, len, at });
            Ok(())
        })?;
        out.put(&hasher.finish().to_le_bytes())?;
        buf.clear();
        buf.push(TAG_END);
        for count in [vertices.len(), edges.len(), written.slots.len()] {
            codec::put(&mut buf, count as u64);
        }
        out.put(&buf)?;
        Ok(written)
    }

    /// Checks a saved store record by record and inserts it (into an empty store); on an error
    /// the caller drops the half-built store. `file_len` bounds the history section.
    fn load(&mut self, file: File) -> Result<()> {
        let file_len = file.metadata()?.len();
        let mut input = Tracked { inner: BufReader::with_capacity(1 << 20, file.try_clone()?), pos: 0, hasher: None };
        let mut magic = [0u8; 16];
        read_exact(&mut input, &mut magic)?;
        ensure!(&magic == MAGIC, "not a reputation graph file (it does not start with {MAGIC:?})");
        let mut version = [0u8; 4];
        read_exact(&mut input, &mut version)?;
        let version = u32::from_le_bytes(version);
        ensure!(
            version >= OLDEST_VERSION,
            "graph file version {version} is not supported (want {VERSION}): rebuild the state with \
             `tlsledger reputation rebuild`, or move the file away to start empty"
        );
        ensure!(version <= VERSION, "graph file version {version} is not supported (want {VERSION})");
        // Size hints, so the tables are allocated once; a vertex record takes at least 4 bytes.
        let (n_vertices_hint, name_bytes_hint) = (read_varint(&mut input)?, read_varint(&mut input)?);
        ensure!(
            n_vertices_hint <= file_len / 4 && name_bytes_hint <= file_len,
            "not a complete graph file: the size hints ({n_vertices_hint} vertices, {name_bytes_hint} bytes of names) do not fit in a file of {file_len} bytes"
        );
        self.vertex_names.by_id.reserve(n_vertices_hint as usize);
        self.vertex_names.text.reserve(name_bytes_hint as usize);
        // IndraDB's inserts (a B-tree search per vertex, four per edge) take most of the time,
        // so they run on a thread of their own while this one reads and checks the file.
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        let (back_tx, back_rx) = std::sync::mpsc::channel();
        let db = &self.db;
        let (read, inserted) = std::thread::scope(|scope| {
            let inserter = scope.spawn(move || insert_graph(db, &rx, &back_tx));
            let mut graph = GraphSender { tx, back_rx, chunk: Vec::with_capacity(CHUNK) };
            let read = read_records(
                &mut input,
                file,
                file_len,
                self.names,
                &mut self.vertex_names,
                n_vertices_hint,
                &mut graph,
            );
            // Closing the channel ends the inserter.
            drop(graph);
            (read, inserter.join())
        });
        // The inserter fails only on a bug; its error explains a failed send, so it comes first.
        inserted.map_err(|_| anyhow::anyhow!("the graph inserter panicked"))??;
        self.histories = read?;
        Ok(())
    }
}

/// Vertices and edges per message to the inserter thread.
const CHUNK: usize = 4_096;

/// A vertex or an edge for IndraDB.
enum GraphItem {
    Vertex(Vertex),
    Edge(Edge),
}

/// Sends checked graph items to the inserter thread in chunks, reusing the chunks it returns.
struct GraphSender {
    tx: std::sync::mpsc::SyncSender<Vec<GraphItem>>,
    back_rx: std::sync::mpsc::Receiver<Vec<GraphItem>>,
    chunk: Vec<GraphItem>,
}

impl GraphSender {
    fn push(&mut self, item: GraphItem) -> Result<()> {
        self.chunk.push(item);
        if self.chunk.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    /// Sends what is pending.
    fn flush(&mut self) -> Result<()> {
        let next = self.back_rx.try_recv().unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        let chunk = std::mem::replace(&mut self.chunk, next);
        self.tx.send(chunk).map_err(|_| anyhow::anyhow!("the graph inserter stopped"))
    }
}

/// The inserter thread: inserts the chunks it receives, in order, and returns them emptied.
fn insert_graph(
    db: &Database<MemoryDatastore>,
    rx: &std::sync::mpsc::Receiver<Vec<GraphItem>>,
    back_tx: &std::sync::mpsc::Sender<Vec<GraphItem>>,
) -> Result<()> {
    for mut chunk in rx {
        for item in chunk.drain(..) {
            match item {
                GraphItem::Vertex(vertex) => {
                    ensure!(db.create_vertex(&vertex)?, "vertex {} exists twice", vertex.id);
                }
                // Both ends were checked before, so IndraDB finds them.
                GraphItem::Edge(edge) => ensure!(db.create_edge(&edge)?, "edge {edge:?}: a vertex is missing"),
            }
        }
        // The reader may have finished already; then the chunk is just dropped.
        let _ = back_tx.send(chunk);
    }
    Ok(())
}

/// Reads and checks the records after the header: sends the graph to `graph`, fills
/// `vertex_names`, and returns the indexed history section.
fn read_records(
    input: &mut Tracked<impl Read>,
    file: File,
    file_len: u64,
    names: Names,
    vertex_names: &mut VertexNames,
    n_vertices_hint: u64,
    graph: &mut GraphSender,
) -> Result<Histories> {
    let vertex_types = names.vertex_types();
    let edge_types = names.edge_types();
    // Per vertex number: its id and type number, to check and build the edges; freed
    // before the history section is read.
    let mut vertices: Vec<(Uuid, u8)> = Vec::with_capacity(n_vertices_hint as usize);
    let mut n_edges = 0u64;
    let mut last_edge: Option<Edge> = None;
    let mut text = Vec::new();
    let n_histories = loop {
        match read_byte(input)? {
            TAG_VERTEX => {
                let number = vertices.len();
                let code = read_byte(input)?;
                let t =
                    *vertex_types.get(usize::from(code)).with_context(|| format!("vertex {number}: unknown type"))?;
                let name = read_string(input, &mut text, MAX_NAME_BYTES)
                    .with_context(|| format!("vertex {number}: invalid name"))?;
                ensure!(!name.is_empty(), "vertex {number}: empty name");
                let id = vertex_id(t, name);
                if let Some((last_id, _)) = vertices.last() {
                    ensure!(
                        *last_id > id,
                        "vertex {}/{name} is out of id order, appears twice or its id is taken",
                        t.as_str()
                    );
                }
                vertex_names.insert(id, code, name)?;
                vertices.push((id, code));
                graph.push(GraphItem::Vertex(Vertex::with_id(id, t)))?;
            }
            TAG_EDGE => {
                let (t, from_t, to_t) =
                    *edge_types.get(usize::from(read_byte(input)?)).context("edge of an unknown type")?;
                let (from, to) = (read_varint(input)?, read_varint(input)?);
                let vertex =
                    |number: u64| {
                        usize::try_from(number).ok().and_then(|n| vertices.get(n)).copied().with_context(|| {
                            format!("edge {from} -{}-> {to}: no vertex {number} before it", t.as_str())
                        })
                    };
                let ((from_id, from_code), (to_id, to_code)) = (vertex(from)?, vertex(to)?);
                ensure!(
                    (vertex_types[usize::from(from_code)], vertex_types[usize::from(to_code)]) == (from_t, to_t),
                    "edge {from} -{}-> {to} must join a {} and a {} vertex",
                    t.as_str(),
                    from_t.as_str(),
                    to_t.as_str()
                );
                let edge = Edge::new(from_id, t, to_id);
                if let Some(last) = &last_edge {
                    ensure!(*last > edge, "edge {from} -{}-> {to} is out of order or appears twice", t.as_str());
                }
                last_edge = Some(edge.clone());
                graph.push(GraphItem::Edge(edge))?;
                n_edges += 1;
            }
            TAG_HISTORIES => {
                let counts = (vertices.len() as u64, n_edges);
                drop(std::mem::take(&mut vertices));
                graph.flush()?;
                let n_histories = read_varint(input)?;
                let len = read_varint(input)?;
                ensure!(
                    len <= file_len,
                    "not a complete graph file: a history section of {len} bytes in a file of {file_len}"
                );
                // Each record takes at least 4 bytes, so a larger count is garbled; checked
                // before the reservation below.
                ensure!(n_histories <= len / 4, "a history section of {len} bytes cannot hold {n_histories} records");
                let histories = read_histories(input, file, n_histories, len)?;
                break (counts, n_histories, histories);
            }
            TAG_END => bail!("the end record comes before the history section"),
            tag => bail!("unknown record tag {tag:#04x}"),
        }
    };
    let ((n_vertices, n_edges), n_histories, histories) = n_histories;
    let tag = read_byte(input)?;
    ensure!(tag == TAG_END, "record tag {tag:#04x} after the history section (want the end record)");
    let counts = [read_varint(input)?, read_varint(input)?, read_varint(input)?];
    let want = [n_vertices, n_edges, n_histories];
    ensure!(counts == want, "the end record counts {counts:?} records, but the file has {want:?}");
    ensure!(input.read(&mut [0u8])? == 0, "data after the end record");
    Ok(histories)
}

/// A writer that counts the bytes written.
struct Counted<W> {
    out: W,
    pos: u64,
}

impl<W: Write> Counted<W> {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.pos += bytes.len() as u64;
        self.out.write_all(bytes)
    }
}

/// The file being loaded: counts the bytes read, and hashes them while `hasher` is set.
struct Tracked<R> {
    inner: R,
    pos: u64,
    hasher: Option<XxHash3_64>,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        if let Some(hasher) = &mut self.hasher {
            hasher.write(&buf[..n]);
        }
        Ok(n)
    }
}

/// Reads and checks the history section of `len` bytes and `count` records that starts at the
/// input's position (see the module doc), and indexes it; the histories stay in `file`.
fn read_histories(input: &mut Tracked<impl Read>, file: File, count: u64, len: u64) -> Result<Histories> {
    let end = input.pos + len;
    input.hasher = Some(XxHash3_64::with_seed(0));
    let mut histories = Histories { slots: Vec::with_capacity(count as usize), ..Histories::default() };
    let (mut text, mut scratch) = (Vec::new(), Vec::new());
    let mut key = EndpointKey { direction: Direction::Outbound, ip: String::new() };
    while input.pos < end {
        let number = histories.slots.len();
        let name = read_string(input, &mut text, MAX_NAME_BYTES).with_context(|| format!("history record {number}"))?;
        parse_key(name, &mut key)?;
        if number > 0 {
            ensure!(histories.key_text(number - 1) < name, "endpoint {name} is out of order or appears twice");
        }
        let history_len = read_varint(input)?;
        ensure!(
            history_len <= MAX_HISTORY_BYTES,
            "endpoint {name}: a history of {history_len} bytes (more than {MAX_HISTORY_BYTES})"
        );
        let at = input.pos;
        // Read only for the checksum: histories are decoded when they are read.
        scratch.resize(history_len as usize, 0);
        read_exact(input, &mut scratch)?;
        ensure!(input.pos <= end, "endpoint {name}: the record runs past the end of the history section");
        histories.keys.push_str(name);
        let key_end = u32::try_from(histories.keys.len()).context("more than 4 GB of endpoint names")?;
        histories.slots.push(Slot { key_end, len: history_len as u32, at });
    }
    let hash = input.hasher.take().map(|hasher| hasher.finish());
    let mut checksum = [0u8; 8];
    read_exact(input, &mut checksum)?;
    ensure!(
        Some(u64::from_le_bytes(checksum)) == hash,
        "the history section does not match its checksum (the file was damaged or edited)"
    );
    let n = histories.slots.len();
    ensure!(n as u64 == count, "the history section holds {n} records, not {count}");
    histories.file = Some(file);
    Ok(histories)
}

/// The length of `value` as a LEB128 varint.
fn varint_len(value: u64) -> usize {
    (64 - value.max(1).leading_zeros() as usize).div_ceil(7)
}

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

impl IndraStore {
    /// Decodes the stored bytes of `key`'s history.
    fn decode(&self, key: &EndpointKey, bytes: &[u8]) -> Result<HostHistory> {
        codec::decode(bytes).with_context(|| format!("invalid history of {key} in {}", self.graph_path().display()))
    }
}

impl ReputationStore for IndraStore {
    fn history(&self, key: &EndpointKey) -> Result<Option<HostHistory>> {
        match self.histories.get(key)? {
            Some(bytes) => Ok(Some(self.decode(key, &bytes)?)),
            None => Ok(None),
        }
    }

    fn put_history(&mut self, key: &EndpointKey, history: &HostHistory) -> Result<()> {
        self.histories.changed.insert(key.clone(), codec::to_bytes(history).into_boxed_slice());
        Ok(())
    }

    fn endpoints(&self) -> Result<Vec<(EndpointKey, HostHistory)>> {
        let mut endpoints = Vec::with_capacity(self.histories.slots.len());
        self.for_each_endpoint(&mut |key, history| {
            endpoints.push((key.clone(), history.clone()));
            Ok(())
        })?;
        Ok(endpoints)
    }

    fn for_each_endpoint(&self, visit: &mut dyn FnMut(&EndpointKey, &HostHistory) -> Result<()>) -> Result<()> {
        self.histories.for_each(&mut |key, bytes| {
            let history = self.decode(key, bytes)?;
            visit(key, &history)
        })
    }

    fn link_hostname_ip(&mut self, hostname: &str, ip: &str) -> Result<()> {
        let names = self.names;
        let from = self.ensure_vertex(names.hostname, hostname)?;
        let to = self.ensure_vertex(names.ip, ip)?;
        self.link(from, names.resolves, to)
    }

    fn link_domain_hostname(&mut self, domain: &str, hostname: &str) -> Result<()> {
        let names = self.names;
        let from = self.ensure_vertex(names.domain, domain)?;
        let to = self.ensure_vertex(names.hostname, hostname)?;
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

    fn link_ip_certificate(&mut self, ip: &str, certificate: &str) -> Result<()> {
        let names = self.names;
        let from = self.ensure_vertex(names.ip, ip)?;
        let to = self.ensure_vertex(names.certificate, certificate)?;
        self.link(from, names.presents, to)
    }

    fn certificates_of_ip(&self, ip: &str) -> Result<Vec<String>> {
        self.neighbours(self.names.ip, ip, self.names.presents, false, self.names.certificate)
    }

    fn ips_of_certificate(&self, certificate: &str) -> Result<Vec<String>> {
        self.neighbours(self.names.certificate, certificate, self.names.presents, true, self.names.ip)
    }

    fn save(&mut self) -> Result<()> {
        self.save_then(&mut || Ok(()))
    }
}

impl IndraStore {
    /// [`ReputationStore::save`], calling `after_rename` right after the new file took the
    /// place of the old one, before anything else (syncing the folder, reopening): a daemon
    /// renames its checkpoint there, so that only two renames separate the state from the
    /// checkpoint that describes it.
    pub fn save_then(&mut self, after_rename: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        fs::create_dir_all(&self.dir).with_context(|| format!("cannot create {}", self.dir.display()))?;
        let lock_path = self.dir.join(LOCK_FILE);
        let lock = File::create(&lock_path).with_context(|| format!("cannot create {}", lock_path.display()))?;
        lock.lock().with_context(|| format!("cannot lock {}", lock_path.display()))?;
        let temp = self.dir.join(TEMP_FILE);
        let write = || -> Result<Histories> {
            let mut writer = BufWriter::with_capacity(1 << 20, File::create(&temp)?);
            let written = self.write_snapshot(&mut writer)?;
            let file = writer.into_inner().map_err(std::io::IntoInnerError::into_error)?;
            file.sync_all()?;
            Ok(written)
        };
        let mut written = write().with_context(|| format!("cannot write {}", temp.display()))?;
        let path = self.graph_path();
        fs::rename(&temp, &path).with_context(|| format!("cannot rename {} to {}", temp.display(), path.display()))?;
        let after = after_rename();
        sync_dir(&self.dir).with_context(|| format!("cannot sync the folder {}", self.dir.display()))?;
        after?;
        // The new file holds every history now: read them from it (the lock keeps other
        // savers from replacing it before it is open).
        written.file = Some(File::open(&path).with_context(|| format!("cannot reopen {}", path.display()))?);
        self.histories = written;
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
        bytes.extend_from_slice(&[0, 0]);
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

    /// The history section record of the given endpoints and history bytes.
    fn histories(records: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut section = Vec::new();
        for (key, history) in records {
            put_bytes(&mut section, key);
            put_bytes(&mut section, history);
        }
        let mut bytes = vec![b'H'];
        codec::put(&mut bytes, records.len() as u64);
        codec::put(&mut bytes, section.len() as u64);
        bytes.extend_from_slice(&section);
        bytes.extend_from_slice(&XxHash3_64::oneshot(&section).to_le_bytes());
        bytes
    }

    /// The vertex records of `(type, name)`, in decreasing id order as the file wants them, and the
    /// number each name gets.
    fn vertex_records(vertices: &[(u8, &str)]) -> (Vec<Vec<u8>>, Vec<u8>) {
        let types = Names::new().vertex_types();
        let mut sorted: Vec<_> =
            vertices.iter().map(|(t, name)| (vertex_id(types[*t as usize], name), *t, *name)).collect();
        sorted.sort_by(|a, b| b.cmp(a));
        let records = sorted.iter().map(|(_, t, name)| record_of(b'V', &[&[*t], &string(name.as_bytes())])).collect();
        let numbers = vertices
            .iter()
            .map(|(t, name)| sorted.iter().position(|(_, have_t, have)| have_t == t && have == name).unwrap() as u8)
            .collect();
        (records, numbers)
    }

    #[test]
    fn a_hand_made_file_loads() {
        let history = codec::to_bytes(&sample_history("192.0.2.1", 1));
        let (vertices, n) = vertex_records(&[(0, "example.net"), (1, "mx1.example.net"), (2, "192.0.2.1")]);
        let mut edges = [record_of(b'E', &[&[0], &[n[0]], &[n[1]]]), record_of(b'E', &[&[1], &[n[1]], &[n[2]]])];
        // Edges go in decreasing (from id, type, to id) order: increasing vertex numbers here.
        if n[1] < n[0] {
            edges.swap(0, 1);
        }
        let tail = [histories(&[(b"outbound/192.0.2.1", &history)]), record_of(b'Z', &[&[3], &[2], &[1]])];
        let records: Vec<&[u8]> = vertices.iter().chain(&edges).chain(&tail).map(Vec::as_slice).collect();
        let bytes = file(&records);
        let store = IndraStore::temp().unwrap();
        fs::write(store.graph_path(), &bytes).unwrap();
        let store = IndraStore::open(store.dir()).unwrap();
        assert_eq!(store.hostnames_of_domain("example.net").unwrap(), vec!["mx1.example.net".to_owned()]);
        assert_eq!(store.hostnames_of_ip("192.0.2.1").unwrap(), vec!["mx1.example.net".to_owned()]);
        assert_eq!(
            store.endpoints().unwrap(),
            vec![(key(Direction::Outbound, "192.0.2.1"), sample_history("192.0.2.1", 1))]
        );
        // Saving it writes the same bytes, but for the size hints (3 vertices, 35 bytes of names).
        let mut store = store;
        store.save().unwrap();
        let mut want = bytes.clone();
        want.splice(20..22, [3, 35]);
        assert_eq!(fs::read(store.graph_path()).unwrap(), want);
    }

    #[test]
    fn an_inconsistent_file_is_an_error() {
        let store = IndraStore::temp().unwrap();
        let path = store.graph_path();
        let history = codec::to_bytes(&sample_history("192.0.2.1", 1));
        let (vertices, n) = vertex_records(&[(0, "example.net"), (1, "mx1.example.net")]);
        let (first, second) = (vertices[0].as_slice(), vertices[1].as_slice());
        let (domain, hostname) = (n[0], n[1]);
        let no_histories = histories(&[]);
        let end = |v: u8, e: u8, h: u8| record_of(b'Z', &[&[v], &[e], &[h]]);
        let with_histories =
            |records: &[(&[u8], &[u8])], n_histories: u8| file(&[&histories(records), &end(0, 0, n_histories)]);
        let mut bad_magic = file(&[&no_histories, &end(0, 0, 0)]);
        bad_magic[0] = b'{';
        let mut version_6 = file(&[&no_histories, &end(0, 0, 0)]);
        version_6[16] = 6;
        let mut version_3 = version_6.clone();
        version_3[16] = 3;
        let mut bad_checksum = histories(&[(b"outbound/192.0.2.1", &history)]);
        let last = bad_checksum.len() - 1;
        bad_checksum[last] ^= 1;
        let mut wrong_count = histories(&[(b"outbound/192.0.2.1", &history)]);
        wrong_count[1] = 2;
        let mut section_too_long = histories(&[]);
        section_too_long[2] = 0x7f;
        let edge = |t: u8, from: u8, to: u8| record_of(b'E', &[&[t], &[from], &[to]]);
        let v = |t: u8, name: &[u8]| record_of(b'V', &[&[t], &string(name)]);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("not a reputation graph file", bad_magic),
            ("version 6 is not supported", version_6),
            ("version 3 is not supported (want 5): rebuild the state", version_3),
            ("unknown type", file(&[&v(4, b"x"), &no_histories, &end(1, 0, 0)])),
            ("empty name", file(&[&v(0, b""), &no_histories, &end(1, 0, 0)])),
            ("not UTF-8", file(&[&v(0, b"\xff"), &no_histories, &end(1, 0, 0)])),
            ("more than 4096", file(&[&record_of(b'V', &[&[0], &[0xff, 0xff, 0x03]]), &end(1, 0, 0)])),
            ("appears twice", file(&[first, first, &no_histories, &end(2, 0, 0)])),
            ("out of id order", file(&[second, first, &no_histories, &end(2, 0, 0)])),
            ("no vertex 2", file(&[first, second, &edge(0, 0, 2), &no_histories, &end(2, 1, 0)])),
            ("must join", file(&[first, second, &edge(0, hostname, domain), &no_histories, &end(2, 1, 0)])),
            ("edge of an unknown type", file(&[first, second, &edge(3, 0, 1)])),
            (
                "appears twice",
                file(&[first, second, &edge(0, domain, hostname), &edge(0, domain, hostname), &no_histories]),
            ),
            ("checksum", file(&[&bad_checksum, &end(0, 0, 1)])),
            ("holds 1 records, not 2", file(&[&wrong_count, &end(0, 0, 1)])),
            ("a history section of 127 bytes in a file of", file(&[&section_too_long, &end(0, 0, 0)])),
            ("invalid endpoint", with_histories(&[(b"sideways/192.0.2.1", &history)], 1)),
            ("no IP", with_histories(&[(b"outbound/", &history)], 1)),
            (
                "out of order",
                with_histories(&[(b"outbound/192.0.2.2", &history), (b"outbound/192.0.2.1", &history)], 2),
            ),
            (
                "out of order or appears twice",
                with_histories(&[(b"outbound/192.0.2.1", &history), (b"outbound/192.0.2.1", &history)], 2),
            ),
            ("counts [1, 0, 0] records, but the file has [0, 0, 0]", file(&[&no_histories, &end(1, 0, 0)])),
            ("data after the end record", file(&[&no_histories, &end(0, 0, 0), b"Z"])),
            ("the end record comes before the history section", file(&[&end(0, 0, 0)])),
            ("after the history section", file(&[&no_histories, &no_histories, &end(0, 0, 0)])),
            ("unknown record tag 0x7b", file(&[b"{"])),
            ("size hints (1000 vertices, 0 bytes of names) do not fit", {
                let mut bytes = file(&[&no_histories, &end(0, 0, 0)]);
                bytes.splice(20..21, [0xe8, 0x07]);
                bytes
            }),
        ];
        for (want, bytes) in cases {
            fs::write(&path, bytes).unwrap();
            let err = format!("{:#}", IndraStore::open(store.dir()).unwrap_err());
            assert!(err.contains(want) && err.contains(&path.display().to_string()), "{want}: {err}");
        }
        // The empty graph is a valid file.
        fs::write(&path, file(&[&no_histories, &end(0, 0, 0)])).unwrap();
        assert!(IndraStore::open(store.dir()).unwrap().endpoints().unwrap().is_empty());
        // A version-4 file (before certificates) loads: its histories are version-5 ones.
        let mut old_history = sample_history("192.0.2.1", 1);
        old_history.certs.clear();
        let mut v4_bytes = codec::to_bytes(&old_history);
        assert_eq!(v4_bytes.pop(), Some(0), "version 4 had no certificate count");
        let mut version_4 = with_histories(&[(b"outbound/192.0.2.1", &v4_bytes)], 1);
        version_4[16] = 4;
        fs::write(&path, &version_4).unwrap();
        let loaded = IndraStore::open(store.dir()).unwrap();
        let key = EndpointKey { direction: Direction::Outbound, ip: "192.0.2.1".to_owned() };
        assert_eq!(loaded.history(&key).unwrap(), Some(old_history));
    }

    #[test]
    fn a_history_that_does_not_decode_is_an_error_when_read() {
        // Only a writer bug makes one (the checksum matches): the file loads, and reading that
        // history names the endpoint and the file.
        let store = IndraStore::temp().unwrap();
        let path = store.graph_path();
        let good = codec::to_bytes(&sample_history("192.0.2.1", 1));
        let mut garbled = good.clone();
        garbled.push(0);
        let records: [(&[u8], &[u8]); 2] = [(b"outbound/192.0.2.1", &good), (b"outbound/192.0.2.2", &garbled)];
        fs::write(&path, file(&[&histories(&records), &record_of(b'Z', &[&[0], &[0], &[2]])])).unwrap();
        let store = IndraStore::open(store.dir()).unwrap();
        assert_eq!(store.n_endpoints().unwrap(), 2);
        assert_eq!(
            store.history(&key(Direction::Outbound, "192.0.2.1")).unwrap(),
            Some(sample_history("192.0.2.1", 1))
        );
        let want = format!("invalid history of outbound/192.0.2.2 in {}", path.display());
        let err = format!("{:#}", store.history(&key(Direction::Outbound, "192.0.2.2")).unwrap_err());
        assert!(err.contains(&want), "{err}");
        let mut seen = 0;
        let err = store.for_each_endpoint(&mut |_, _| {
            seen += 1;
            Ok(())
        });
        assert!(format!("{:#}", err.unwrap_err()).contains(&want));
        assert_eq!(seen, 1, "the good history first, then the error");
    }

    #[test]
    fn a_loaded_store_keeps_reading_its_own_file_after_another_save() {
        // Histories are read from the file that was loaded; another save renames a new file
        // over the name, so the loaded store still sees its own snapshot.
        let mut store = filled();
        store.save().unwrap();
        let want = store.endpoints().unwrap();
        let reader = IndraStore::open(store.dir()).unwrap();
        let mut writer = IndraStore::open(store.dir()).unwrap();
        writer.put_history(&key(Direction::Outbound, "192.0.2.1"), &sample_history("192.0.2.1", 7)).unwrap();
        writer.save().unwrap();
        assert_eq!(reader.endpoints().unwrap(), want);
        assert_eq!(reader.history(&key(Direction::Outbound, "192.0.2.1")).unwrap(), Some(want[1].1.clone()));
        let now = IndraStore::open(store.dir()).unwrap().history(&key(Direction::Outbound, "192.0.2.1")).unwrap();
        assert_eq!(now, Some(sample_history("192.0.2.1", 7)));
    }

    #[test]
    fn changes_after_a_load_shadow_the_section_until_the_next_save() {
        // Endpoints in the saved section, then overwrites and new ones before, between and
        // after them; every read must agree with the reference store at each step.
        let mut store = IndraStore::temp().unwrap();
        let mut reference = crate::reputation::memory::MemoryStore::new();
        let put = |store: &mut IndraStore, reference: &mut crate::reputation::memory::MemoryStore, ip: &str, seed| {
            let (key, history) = (key(Direction::Outbound, ip), sample_history(ip, seed));
            store.put_history(&key, &history).unwrap();
            reference.put_history(&key, &history).unwrap();
        };
        for ip in ["192.0.2.20", "192.0.2.40", "192.0.2.60"] {
            put(&mut store, &mut reference, ip, 1);
        }
        store.save().unwrap();
        let mut store = IndraStore::open(store.dir()).unwrap();
        assert_eq!(store.endpoints().unwrap(), reference.endpoints().unwrap());
        for (ip, seed) in
            [("192.0.2.10", 2), ("192.0.2.40", 3), ("192.0.2.50", 4), ("192.0.2.70", 5), ("192.0.2.60", 6)]
        {
            put(&mut store, &mut reference, ip, seed);
            assert_eq!(store.endpoints().unwrap(), reference.endpoints().unwrap());
            assert_eq!(store.n_endpoints().unwrap(), reference.endpoints().unwrap().len());
        }
        for ip in ["192.0.2.10", "192.0.2.20", "192.0.2.40", "192.0.2.99"] {
            let key = key(Direction::Outbound, ip);
            assert_eq!(store.history(&key).unwrap(), reference.history(&key).unwrap(), "{ip}");
        }
        store.save().unwrap();
        assert!(store.histories.changed.is_empty(), "a save folds the changes into the section");
        assert_eq!(store.endpoints().unwrap(), reference.endpoints().unwrap());
        let reopened = IndraStore::open(store.dir()).unwrap();
        assert_eq!(reopened.endpoints().unwrap(), reference.endpoints().unwrap());
        assert_eq!(reopened.n_endpoints().unwrap(), 6);
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
        store.vertex_names.insert(id, 1, "b.example").unwrap();
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
        assert_eq!(&bytes[16..20], &[5, 0, 0, 0]);
        assert_eq!(&bytes[20..22], &[2, 26], "size hints: 2 vertices, 26 bytes of names");
        let vertices: Vec<&[u8]> = vec![b"V\x00\x0bexample.net", b"V\x01\x0fmx1.example.net"];
        let rest = &bytes[22..];
        // Vertices come in id order, so check both without assuming which is first.
        let (first, second) = if rest.starts_with(vertices[0]) { (0, 1) } else { (1, 0) };
        assert!(rest.starts_with(vertices[first]), "{rest:?}");
        let rest = &rest[vertices[first].len()..];
        assert!(rest.starts_with(vertices[second]), "{rest:?}");
        let rest = &rest[vertices[second].len()..];
        let empty_section = [b"H\x00\x00".as_slice(), &XxHash3_64::oneshot(&[]).to_le_bytes()].concat();
        assert_eq!(
            rest,
            [b"E\x00".as_slice(), &[first as u8, second as u8], &empty_section, b"Z\x02\x01\x00"].concat()
        );
    }
}
