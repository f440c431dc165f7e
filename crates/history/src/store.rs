//! The history store: append (fail closed, flushed), read, query, verify, aggregate, prune.
//!
//! All calls block (sled is synchronous); async callers use `spawn_blocking`. Appends are
//! serialised by a mutex: each one reads the chain head and the aggregate series it touches,
//! then writes the entry, its index keys and the new aggregates in one atomic sled batch and
//! flushes before returning, so an acknowledged entry survives a crash of the process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::entry::{Entry, Kind, Outcome, Record, Stored, chain_hash, encode_body};
use crate::keys;

/// Milliseconds since the Unix epoch; injectable so tests can place entries in time.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    })
}

/// The aggregate windows the policy sees: one hour, one day, one week.
pub const WINDOWS_MS: [(&str, i64); 3] = [
    ("1h", 3_600_000),
    ("24h", 86_400_000),
    ("7d", 7 * 86_400_000),
];

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history database {path}: {detail}")]
    Open { path: String, detail: String },
    #[error("history storage error: {0}")]
    Storage(String),
    #[error("history entry {seq} is unreadable: {detail}")]
    Corrupt { seq: u64, detail: String },
    #[error("invalid history record: {0}")]
    InvalidRecord(String),
    #[error("invalid history query: {0}")]
    InvalidQuery(String),
    #[error("no history entry {0}")]
    NotFound(u64),
    #[error("retention: {0}")]
    Retention(String),
}

impl From<sled::Error> for HistoryError {
    fn from(e: sled::Error) -> Self {
        HistoryError::Storage(e.to_string())
    }
}

/// What an append returns: where the entry sits in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    pub seq: u64,
    pub hash: [u8; 32],
    pub at_ms: i64,
}

/// Filters of a query; `None` does not filter. Times are a half-open range on `at_ms`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub vault_id: Option<String>,
    pub kind: Option<Kind>,
    pub outcome: Option<Outcome>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
}

/// One page of a query, newest first.
#[derive(Debug)]
pub struct Page {
    pub entries: Vec<(Entry, [u8; 32])>,
    /// Pass back to get the next page; `None` when there is no more.
    pub next: Option<String>,
}

/// Outcome of a chain verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub checked: u64,
    /// The first entry that does not match, and why.
    pub first_bad: Option<(u64, String)>,
}

/// The policy's view of one window.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Window {
    pub name: &'static str,
    /// Signing requests (allowed or denied).
    pub requests: u64,
    /// Successful signatures.
    pub signatures: u64,
    /// Amount signed per asset (decimal strings, base units; saturating at 2^128 - 1).
    pub spent: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Aggregates {
    pub windows: Vec<Window>,
    pub last_reshare_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Head {
    seq: u64,
    hash: [u8; 32],
    at_ms: i64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Anchor {
    first_seq: u64,
    prev_hash: [u8; 32],
}

/// Running totals of one aggregate series.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Cum {
    amount: u128,
    count: u64,
}

/// What pruning removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub removed: u64,
    /// The first entry kept; the chain now continues from its `prev_hash`.
    pub first_kept: u64,
}

pub struct History {
    db: sled::Db,
    tree: sled::Tree,
    writer: Mutex<()>,
    clock: Clock,
    path: PathBuf,
}

fn decode<T: for<'a> Deserialize<'a>>(bytes: &[u8]) -> Option<T> {
    postcard::from_bytes(bytes).ok()
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).unwrap_or_default()
}

/// Entries with their hashes, as a scan yields them.
type EntryIter<'a> = Box<dyn Iterator<Item = Result<(Entry, [u8; 32]), HistoryError>> + 'a>;

const PAGE_TOKEN_PREFIX: &str = "c1-";

fn make_page_token(seq: u64) -> String {
    format!("{PAGE_TOKEN_PREFIX}{seq:016x}")
}

fn parse_page_token(s: &str) -> Result<u64, HistoryError> {
    s.strip_prefix(PAGE_TOKEN_PREFIX)
        .filter(|h| h.len() == 16)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .ok_or_else(|| {
            HistoryError::InvalidQuery(format!("page token {s:?} was not issued by this server"))
        })
}

/// Makes `dir` (created if missing) 0700 and everything in it 0700 (folders) or 0600.
fn restrict(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))?;
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                todo.push(e.path());
            } else if ft.is_file() {
                std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    Ok(())
}

impl History {
    /// Opens (or creates) the history at `path`. A database that sled cannot read, or whose
    /// chain head does not match its last entry, is an error, never a panic.
    pub fn open(path: &Path) -> Result<History, HistoryError> {
        Self::open_with_clock(path, system_clock())
    }

    pub fn open_with_clock(path: &Path, clock: Clock) -> Result<History, HistoryError> {
        let open_err = |detail: String| HistoryError::Open {
            path: path.display().to_string(),
            detail,
        };
        // The history says who asked for what: readable by the daemon's user only. sled
        // creates its files with the process umask; the daemon sets 077, and files made
        // before (or by a caller with another umask) are tightened here.
        restrict(path).map_err(|e| open_err(format!("cannot restrict permissions: {e}")))?;
        // sled 0.34 can panic on some corrupt files; a daemon must report that, not crash.
        let try_open = || {
            let cfg = sled::Config::new().path(path);
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || cfg.open()))
                .map_err(|_| open_err("the files are corrupt (sled could not recover them)".into()))
        };
        // sled releases its file lock from a background thread shortly after the last handle
        // of a previous open is dropped; give that a moment before calling the lock taken.
        let mut attempt = 0;
        let db = loop {
            match try_open()? {
                Ok(db) => break db,
                Err(e) if attempt < 100 && e.to_string().contains("acquire lock") => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => return Err(open_err(e.to_string())),
            }
        };
        let tree = db
            .open_tree("history")
            .map_err(|e| open_err(e.to_string()))?;
        let h = History {
            db,
            tree,
            writer: Mutex::new(()),
            clock,
            path: path.to_path_buf(),
        };
        h.check_head().map_err(|e| open_err(e.to_string()))?;
        restrict(path).map_err(|e| open_err(format!("cannot restrict permissions: {e}")))?;
        Ok(h)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last entry and the head record must agree.
    fn check_head(&self) -> Result<(), HistoryError> {
        let Some(head) = self.head()? else {
            if self.tree.scan_prefix([keys::ENTRY]).next().is_some() {
                return Err(HistoryError::Corrupt {
                    seq: 0,
                    detail: "entries exist but the chain head record is missing".into(),
                });
            }
            return Ok(());
        };
        match self.tree.scan_prefix([keys::ENTRY]).next_back() {
            None if self.anchor()?.first_seq == head.seq + 1 => Ok(()),
            None => Err(HistoryError::Corrupt {
                seq: head.seq,
                detail: "the chain head names an entry that is missing".into(),
            }),
            Some(item) => {
                let (k, v) = item?;
                let seq = keys::seq_suffix(&k).unwrap_or(0);
                let stored: Stored = decode(&v).ok_or_else(|| HistoryError::Corrupt {
                    seq,
                    detail: "not a history entry".into(),
                })?;
                if seq != head.seq || stored.hash != head.hash {
                    return Err(HistoryError::Corrupt {
                        seq,
                        detail: format!(
                            "the chain head (entry {}) does not match the last entry",
                            head.seq
                        ),
                    });
                }
                Ok(())
            }
        }
    }

    fn head(&self) -> Result<Option<Head>, HistoryError> {
        match self.tree.get(keys::HEAD)? {
            None => Ok(None),
            Some(v) => decode(&v).map(Some).ok_or_else(|| HistoryError::Corrupt {
                seq: 0,
                detail: "unreadable chain head record".into(),
            }),
        }
    }

    fn anchor(&self) -> Result<Anchor, HistoryError> {
        match self.tree.get(keys::ANCHOR)? {
            None => Ok(Anchor {
                first_seq: 1,
                prev_hash: [0; 32],
            }),
            Some(v) => decode(&v).ok_or_else(|| HistoryError::Corrupt {
                seq: 0,
                detail: "unreadable anchor record".into(),
            }),
        }
    }

    fn validate(r: &Record) -> Result<(), HistoryError> {
        let bad = |m: String| Err(HistoryError::InvalidRecord(m));
        if r.vault_id.len() > 255 {
            return bad("vault id longer than 255 bytes".into());
        }
        if r.requester.len() > 255 {
            return bad("requester longer than 255 bytes".into());
        }
        if r.nonce.len() > 255 {
            return bad("nonce longer than 255 bytes".into());
        }
        if r.session_id.len() > 255 {
            return bad("session id longer than 255 bytes".into());
        }
        if let Some(s) = &r.summary {
            if s.asset.len() > 255 {
                return bad("asset longer than 255 bytes".into());
            }
            if !s.amount.is_empty() && cosigner_amount::parse(&s.amount).is_none() {
                return bad(format!(
                    "amount {:?} is not a decimal string of base units",
                    s.amount
                ));
            }
        }
        Ok(())
    }

    /// Appends one record and flushes it. An error means nothing was recorded: the caller
    /// must not run (or report) the ceremony.
    pub fn append(&self, record: Record) -> Result<Receipt, HistoryError> {
        Self::validate(&record)?;
        let _guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let head = self.head()?;
        let anchor = self.anchor()?;
        let (seq, prev_hash, last_at) = match head {
            Some(h) => (h.seq + 1, h.hash, h.at_ms),
            None => (anchor.first_seq, anchor.prev_hash, i64::MIN),
        };
        let at_ms = (self.clock)().max(last_at);
        let entry = Entry {
            seq,
            at_ms,
            prev_hash,
            record,
        };
        let body = encode_body(&entry);
        let hash = chain_hash(&prev_hash, &body);
        let r = &entry.record;

        let mut batch = sled::Batch::default();
        batch.insert(keys::entry(seq), encode(&Stored { body, hash }));
        if !r.vault_id.is_empty() {
            batch.insert(keys::with_seq(&keys::vault_prefix(&r.vault_id), seq), &[]);
        }
        batch.insert(
            keys::with_seq(&keys::tag_prefix(keys::KIND, r.kind.tag()), seq),
            &[],
        );
        batch.insert(
            keys::with_seq(&keys::tag_prefix(keys::OUTCOME, r.outcome.tag()), seq),
            &[],
        );
        batch.insert(keys::time_key(at_ms, seq), &[]);
        if !r.nonce.is_empty() {
            let k = keys::nonce(&r.requester, &r.nonce);
            if self.tree.get(&k)?.is_none() {
                batch.insert(k, &seq.to_be_bytes());
            }
        }
        if !r.session_id.is_empty() {
            let k = keys::session(&r.session_id);
            if self.tree.get(&k)?.is_none() {
                batch.insert(k, &seq.to_be_bytes());
            }
        }
        if r.kind == Kind::Sign {
            let mut bump = |series: Vec<u8>, add: u128| -> Result<(), HistoryError> {
                let head_key = keys::series_head(&series);
                let mut cum: Cum = match self.tree.get(&head_key)? {
                    Some(v) => decode(&v).ok_or_else(|| HistoryError::Corrupt {
                        seq,
                        detail: "unreadable aggregate series".into(),
                    })?,
                    None => Cum::default(),
                };
                cum.amount = cum.amount.saturating_add(add);
                cum.count += 1;
                let v = encode(&cum);
                batch.insert(head_key, v.clone());
                batch.insert(keys::agg(&series, at_ms, seq), v);
                Ok(())
            };
            match r.outcome {
                Outcome::Succeeded => {
                    let (asset, amt) = match &r.summary {
                        Some(s) if !s.asset.is_empty() => (
                            s.asset.as_str(),
                            cosigner_amount::parse(&s.amount).unwrap_or(0),
                        ),
                        _ => ("", 0),
                    };
                    bump(keys::series(keys::SPENT, &r.vault_id, asset), amt)?;
                }
                Outcome::Started | Outcome::Denied => {
                    bump(keys::series(keys::REQUESTS, &r.vault_id, ""), 0)?;
                }
                _ => {}
            }
        }
        if matches!(r.kind, Kind::Reshare | Kind::Refresh) && r.outcome == Outcome::Succeeded {
            batch.insert(keys::reshare(&r.vault_id), &keys::time(at_ms));
        }
        batch.insert(keys::HEAD, encode(&Head { seq, hash, at_ms }));
        self.tree.apply_batch(batch)?;
        self.db.flush()?;
        Ok(Receipt { seq, hash, at_ms })
    }

    /// One entry and its hash.
    pub fn get(&self, seq: u64) -> Result<(Entry, [u8; 32]), HistoryError> {
        let v = self
            .tree
            .get(keys::entry(seq))?
            .ok_or(HistoryError::NotFound(seq))?;
        Self::decode_stored(seq, &v)
    }

    fn decode_stored(seq: u64, v: &[u8]) -> Result<(Entry, [u8; 32]), HistoryError> {
        let corrupt = |d: &str| HistoryError::Corrupt {
            seq,
            detail: d.to_string(),
        };
        let stored: Stored = decode(v).ok_or_else(|| corrupt("not a history entry"))?;
        let entry: Entry = decode(&stored.body).ok_or_else(|| corrupt("undecodable body"))?;
        Ok((entry, stored.hash))
    }

    /// Number of entries kept (after pruning).
    pub fn len(&self) -> Result<u64, HistoryError> {
        Ok(match self.head()? {
            None => 0,
            Some(h) => (h.seq + 1).saturating_sub(self.anchor()?.first_seq),
        })
    }

    pub fn is_empty(&self) -> Result<bool, HistoryError> {
        Ok(self.len()? == 0)
    }

    pub fn size_on_disk(&self) -> Result<u64, HistoryError> {
        Ok(self.db.size_on_disk()?)
    }

    /// Seq bounds [lo, hi) of the entries whose time is in [from, to).
    fn seq_bounds(&self, q: &Query) -> Result<(u64, u64), HistoryError> {
        let end = self.head()?.map(|h| h.seq + 1).unwrap_or(0);
        let first_at_or_after = |ms: i64| -> Result<u64, HistoryError> {
            let mut k = vec![keys::TIME];
            k.extend(keys::time(ms));
            match self.tree.range(k..).next() {
                Some(item) => {
                    let (key, _) = item?;
                    if key.first() != Some(&keys::TIME) {
                        return Ok(end);
                    }
                    Ok(keys::seq_suffix(&key).unwrap_or(end))
                }
                None => Ok(end),
            }
        };
        let lo = match q.from_ms {
            Some(f) => first_at_or_after(f)?,
            None => 0,
        };
        let hi = match q.to_ms {
            Some(t) => first_at_or_after(t)?,
            None => end,
        };
        Ok((lo, hi))
    }

    fn check_query(q: &Query) -> Result<(), HistoryError> {
        if let (Some(f), Some(t)) = (q.from_ms, q.to_ms)
            && f > t
        {
            return Err(HistoryError::InvalidQuery(format!(
                "time range starts ({f}) after it ends ({t})"
            )));
        }
        if q.from_ms.is_some_and(|f| f < 0) || q.to_ms.is_some_and(|t| t < 0) {
            return Err(HistoryError::InvalidQuery(
                "times must not be negative".into(),
            ));
        }
        if q.vault_id.as_ref().is_some_and(|v| v.len() > 255) {
            return Err(HistoryError::InvalidQuery(
                "vault id longer than 255 bytes".into(),
            ));
        }
        Ok(())
    }

    /// Entries matching `q` with seq in [lo, hi), in ascending or descending order.
    fn scan<'a>(&'a self, q: &'a Query, lo: u64, hi: u64, descending: bool) -> EntryIter<'a> {
        if lo >= hi {
            return Box::new(std::iter::empty());
        }
        let (prefix, is_index) = if let Some(v) = &q.vault_id {
            (keys::vault_prefix(v), true)
        } else if let Some(k) = q.kind {
            (keys::tag_prefix(keys::KIND, k.tag()), true)
        } else if let Some(o) = q.outcome {
            (keys::tag_prefix(keys::OUTCOME, o.tag()), true)
        } else {
            (vec![keys::ENTRY], false)
        };
        let range = self
            .tree
            .range(keys::with_seq(&prefix, lo)..keys::with_seq(&prefix, hi));
        let iter: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = if descending {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        Box::new(iter.filter_map(move |item| {
            let result = (|| {
                let (k, v) = item?;
                let seq = keys::seq_suffix(&k).unwrap_or(0);
                let (entry, hash) = if is_index {
                    self.get(seq)?
                } else {
                    Self::decode_stored(seq, &v)?
                };
                let r = &entry.record;
                let keep = q.vault_id.as_ref().is_none_or(|v| *v == r.vault_id)
                    && q.kind.is_none_or(|k| k == r.kind)
                    && q.outcome.is_none_or(|o| o == r.outcome);
                Ok(keep.then_some((entry, hash)))
            })();
            result.transpose()
        }))
    }

    /// One page of entries matching `q`, newest first. `page_size` 0 means 100; at most 1000.
    pub fn list(
        &self,
        q: &Query,
        page_size: u32,
        page_token: Option<&str>,
    ) -> Result<Page, HistoryError> {
        Self::check_query(q)?;
        let size = match page_size {
            0 => 100,
            n if n > 1000 => {
                return Err(HistoryError::InvalidQuery(format!(
                    "page size {n}; at most 1000"
                )));
            }
            n => n as usize,
        };
        let cursor = page_token.map(parse_page_token).transpose()?;
        let (lo, mut hi) = self.seq_bounds(q)?;
        if let Some(c) = cursor {
            hi = hi.min(c);
        }
        let mut entries = Vec::with_capacity(size);
        for item in self.scan(q, lo, hi, true) {
            entries.push(item?);
            if entries.len() == size {
                break;
            }
        }
        let next = match entries.last() {
            Some((e, _)) if entries.len() == size && e.seq > lo => Some(make_page_token(e.seq)),
            _ => None,
        };
        Ok(Page { entries, next })
    }

    /// Every entry matching `q`, oldest first, as JSON lines (for export).
    pub fn export<'a>(
        &'a self,
        q: &'a Query,
    ) -> Result<impl Iterator<Item = Result<String, HistoryError>> + 'a, HistoryError> {
        Self::check_query(q)?;
        let (lo, hi) = self.seq_bounds(q)?;
        Ok(self
            .scan(q, lo, hi, false)
            .map(|item| item.map(|(e, h)| e.to_json(&h).to_string())))
    }

    /// Walks the chain from the anchor: every entry must decode, have the expected seq,
    /// continue from the previous entry's hash and hash to its stored hash; the head record
    /// must name the last entry.
    pub fn verify(&self) -> Result<Verification, HistoryError> {
        let anchor = self.anchor()?;
        let mut expect_seq = anchor.first_seq;
        let mut prev = anchor.prev_hash;
        let mut checked = 0u64;
        let bad = |seq: u64, why: String, checked: u64| {
            Ok(Verification {
                checked,
                first_bad: Some((seq, why)),
            })
        };
        for item in self.tree.scan_prefix([keys::ENTRY]) {
            let (k, v) = item?;
            let seq = keys::seq_suffix(&k).unwrap_or(0);
            if seq != expect_seq {
                return bad(
                    expect_seq,
                    format!("entry {expect_seq} is missing (next stored is {seq})"),
                    checked,
                );
            }
            let Some(stored) = decode::<Stored>(&v) else {
                return bad(seq, "unreadable: not a history entry".into(), checked);
            };
            let Some(entry) = decode::<Entry>(&stored.body) else {
                return bad(seq, "unreadable: undecodable body".into(), checked);
            };
            if entry.seq != seq {
                return bad(
                    seq,
                    format!("stored under {seq} but says it is entry {}", entry.seq),
                    checked,
                );
            }
            if entry.prev_hash != prev {
                return bad(
                    seq,
                    "does not continue from the previous entry's hash".into(),
                    checked,
                );
            }
            if chain_hash(&prev, &stored.body) != stored.hash {
                return bad(
                    seq,
                    "its content does not match its hash (edited)".into(),
                    checked,
                );
            }
            prev = stored.hash;
            expect_seq = seq + 1;
            checked += 1;
        }
        match self.head()? {
            Some(h) if h.seq + 1 != expect_seq || h.hash != prev => bad(
                expect_seq,
                format!(
                    "the chain head says entry {} is last; entries after {} are missing or changed",
                    h.seq,
                    expect_seq.saturating_sub(1)
                ),
                checked,
            ),
            None if checked > 0 => bad(0, "entries exist without a chain head".into(), checked),
            _ => Ok(Verification {
                checked,
                first_bad: None,
            }),
        }
    }

    /// The entry that first used `nonce` for `requester`, if any.
    pub fn nonce_seen(&self, requester: &[u8], nonce: &[u8]) -> Result<Option<u64>, HistoryError> {
        if requester.len() > 255 {
            return Err(HistoryError::InvalidQuery(
                "requester longer than 255 bytes".into(),
            ));
        }
        Ok(self
            .tree
            .get(keys::nonce(requester, nonce))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes))
    }

    /// The entry that first used relay session `id`, if any: a session runs once per party,
    /// across restarts (its keys and the engine session derive from it).
    pub fn session_seen(&self, id: &[u8]) -> Result<Option<u64>, HistoryError> {
        if id.len() > 255 {
            return Err(HistoryError::InvalidQuery(
                "session id longer than 255 bytes".into(),
            ));
        }
        Ok(self
            .tree
            .get(keys::session(id))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes))
    }

    /// The vault's epoch floor: no share of an older epoch may be used as current.
    pub fn floor(&self, vault: &str) -> Result<Option<u64>, HistoryError> {
        if vault.len() > 255 {
            return Err(HistoryError::InvalidQuery(
                "vault id longer than 255 bytes".into(),
            ));
        }
        Ok(self
            .tree
            .get(keys::floor(vault))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes))
    }

    /// Raises the vault's epoch floor to `epoch` (never lowers it) and flushes; returns
    /// the floor now in force.
    pub fn raise_floor(&self, vault: &str, epoch: u64) -> Result<u64, HistoryError> {
        if vault.len() > 255 {
            return Err(HistoryError::InvalidRecord(
                "vault id longer than 255 bytes".into(),
            ));
        }
        let _guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let k = keys::floor(vault);
        let now = self
            .tree
            .get(&k)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes);
        let new = now.map_or(epoch, |f| f.max(epoch));
        if now != Some(new) {
            self.tree.insert(k, &new.to_be_bytes())?;
            self.db.flush()?;
        }
        Ok(new)
    }

    /// Cumulative totals of a series at the last entry at or before `at`.
    fn cum_at(&self, series: &[u8], at: i64) -> Result<Cum, HistoryError> {
        let mut start = vec![keys::AGG];
        start.extend_from_slice(series);
        let end = keys::agg(series, at, u64::MAX);
        match self.tree.range(start..=end).next_back() {
            None => Ok(Cum::default()),
            Some(item) => {
                let (_, v) = item?;
                decode(&v).ok_or_else(|| HistoryError::Corrupt {
                    seq: 0,
                    detail: "unreadable aggregate".into(),
                })
            }
        }
    }

    /// Requests, signatures and amounts per asset for `vault` over the last hour, day and
    /// week before `now_ms` (windows are (now - w, now]), and the last reshare. Each window
    /// costs two O(log n) lookups per series (prefix sums), not a scan.
    pub fn aggregates(&self, vault: &str, now_ms: i64) -> Result<Aggregates, HistoryError> {
        if vault.len() > 255 {
            return Err(HistoryError::InvalidQuery(
                "vault id longer than 255 bytes".into(),
            ));
        }
        let mut spent_series = Vec::new();
        let mut prefix = vec![keys::SERIES_HEAD];
        prefix.extend(keys::series(keys::SPENT, vault, ""));
        prefix.pop(); // drop the empty asset's length byte: match every asset of this vault
        for item in self.tree.scan_prefix(&prefix) {
            let (k, _) = item?;
            let series = k[1..].to_vec();
            let asset_len = usize::from(*series.get(prefix.len() - 1).unwrap_or(&0));
            let asset_start = prefix.len();
            let asset = String::from_utf8_lossy(
                series
                    .get(asset_start..asset_start + asset_len)
                    .unwrap_or(&[]),
            )
            .into_owned();
            spent_series.push((asset, series));
        }
        let requests = keys::series(keys::REQUESTS, vault, "");
        let mut windows = Vec::with_capacity(WINDOWS_MS.len());
        for (name, w) in WINDOWS_MS {
            let from = now_ms.saturating_sub(w);
            let reqs = self.cum_at(&requests, now_ms)?.count - self.cum_at(&requests, from)?.count;
            let mut window = Window {
                name,
                requests: reqs,
                ..Window::default()
            };
            for (asset, series) in &spent_series {
                let (a, b) = (self.cum_at(series, now_ms)?, self.cum_at(series, from)?);
                window.signatures += a.count - b.count;
                if !asset.is_empty() {
                    window
                        .spent
                        .insert(asset.clone(), a.amount.saturating_sub(b.amount).to_string());
                }
            }
            windows.push(window);
        }
        let last_reshare_ms = self
            .tree
            .get(keys::reshare(vault))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(|b| (u64::from_be_bytes(b) ^ (1 << 63)) as i64);
        Ok(Aggregates {
            windows,
            last_reshare_ms,
        })
    }

    /// Removes entries older than `before_ms`, which must be at least a week ago (so every
    /// aggregate window stays exact). The chain stays verifiable: the anchor records the
    /// first kept entry and the hash it continues from.
    pub fn prune(&self, before_ms: i64) -> Result<Pruned, HistoryError> {
        let _guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let now = (self.clock)();
        let longest = WINDOWS_MS[WINDOWS_MS.len() - 1].1;
        if before_ms > now.saturating_sub(longest) {
            return Err(HistoryError::Retention(format!(
                "can only prune entries older than the longest aggregate window (7 days); {before_ms} is too recent"
            )));
        }
        if self.head()?.is_none() {
            return Ok(Pruned {
                removed: 0,
                first_kept: 1,
            });
        }
        let q = Query {
            to_ms: Some(before_ms),
            ..Query::default()
        };
        let (lo, hi) = self.seq_bounds(&q)?;
        let mut batch = sled::Batch::default();
        let mut removed = 0u64;
        let mut last_hash = self.anchor()?.prev_hash;
        for item in self.scan(&Query::default(), lo, hi, false) {
            let (e, h) = item?;
            let r = &e.record;
            batch.remove(keys::entry(e.seq));
            if !r.vault_id.is_empty() {
                batch.remove(keys::with_seq(&keys::vault_prefix(&r.vault_id), e.seq));
            }
            batch.remove(keys::with_seq(
                &keys::tag_prefix(keys::KIND, r.kind.tag()),
                e.seq,
            ));
            batch.remove(keys::with_seq(
                &keys::tag_prefix(keys::OUTCOME, r.outcome.tag()),
                e.seq,
            ));
            batch.remove(keys::time_key(e.at_ms, e.seq));
            if !r.nonce.is_empty() {
                let k = keys::nonce(&r.requester, &r.nonce);
                if self.tree.get(&k)?.as_deref() == Some(&e.seq.to_be_bytes()[..]) {
                    batch.remove(k);
                }
            }
            last_hash = h;
            removed += 1;
        }
        // Aggregate points older than the cut-off: keep only the newest of each series, the
        // baseline every window subtraction needs.
        let mut last_in_series: BTreeMap<Vec<u8>, sled::IVec> = BTreeMap::new();
        for item in self.tree.scan_prefix([keys::AGG]) {
            let (k, _) = item?;
            if k.len() < 17 {
                continue;
            }
            let (series, tail) = k.split_at(k.len() - 16);
            let t = i64::from_be_bytes(tail[..8].try_into().unwrap_or([0; 8])) ^ i64::MIN;
            if t >= before_ms {
                continue;
            }
            if let Some(older) = last_in_series.insert(series.to_vec(), k.clone()) {
                batch.remove(older);
            }
        }
        let first_kept = if removed == 0 {
            lo.max(self.anchor()?.first_seq)
        } else {
            hi
        };
        if removed > 0 {
            batch.insert(
                keys::ANCHOR,
                encode(&Anchor {
                    first_seq: first_kept,
                    prev_hash: last_hash,
                }),
            );
        }
        self.tree.apply_batch(batch)?;
        self.db.flush()?;
        Ok(Pruned {
            removed,
            first_kept,
        })
    }
}
