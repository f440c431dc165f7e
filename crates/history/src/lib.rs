//! cosigner-history: the record of every request, decision and ceremony, in sled.
//!
//! - Tamper-evident: entries form a SHA-256 hash chain; [`History::verify`] names the first
//!   entry that does not match.
//! - Fail closed: [`History::append`] returns only after the entry is written and flushed; on
//!   error nothing was recorded and the caller must not run the ceremony.
//! - Queryable: by vault, kind, outcome and time range, newest first, with opaque page
//!   tokens; export as JSON lines.
//! - Policy inputs: requests, signatures and amounts per asset over 1 h / 24 h / 7 d and the
//!   last reshare, each in O(log n) from prefix sums; nonce lookup against replays.
//! - Retention: pruning keeps the chain verifiable from an anchor.
//!
//! Durability: sled's flush ends in `sync_file_range`, which survives a crash of the process
//! but not necessarily a power cut or kernel crash.

mod entry;
mod keys;
mod store;

pub use entry::{
    BlameRecord, CommitteeRecord, Entry, Kind, Outcome, PolicyRecord, Record, ResultRecord,
    SignatureRecord, Summary,
};
pub use store::{
    Aggregates, Clock, History, HistoryError, Page, Pruned, Query, Receipt, Verification,
    WINDOWS_MS, Window, system_clock,
};
