//! Durable event history: the events the shards keep in memory, written
//! through to an embedded store (redb) by one thread of its own, so that no
//! shard ever waits on the disk, and read back at start-up.
//!
//! The shards send [`StoreOp`]s over a bounded queue and never block: when
//! it is full an operation is dropped and counted (the memory history stays
//! right; the file misses that event). The thread writes what has queued up
//! in one transaction. What the shards evict (a topic's limit, its age, the
//! realm's byte bound) they remove from the file as well, so the file holds
//! what memory holds, within the same bounds. At start-up every kept event
//! is read and handed to the shard that is the home of its topic, which
//! applies the configuration in force (rules and limits may have changed;
//! what no longer fits is removed).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use crossbeam::channel::{Receiver, Sender, TrySendError};
use redb::{Database, ReadableTable, TableDefinition};

use crate::codec;
use crate::wamp::message::Serializer;
use crate::wamp::{Dict, Id, Payload, Value};

const EVENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("events");

/// One kept event, as the file holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub realm: String,
    pub topic: String,
    pub at_us: u64,
    pub seq: (u64, usize),
    pub publication: Id,
    pub payload: Payload,
    /// The event's extras that outlive a session (publisher, authid and
    /// authrole lists, passthru attributes), as a dictionary.
    pub extras: Option<Dict>,
}

impl StoredEvent {
    fn key(&self) -> Vec<u8> {
        key(&self.realm, &self.topic, self.at_us, self.seq)
    }

    fn encode(&self) -> Vec<u8> {
        let ser = match self.payload.serializer {
            Serializer::Json => 0,
            Serializer::MsgPack => 1,
            Serializer::Cbor => 2,
        };
        let v = Value::List(vec![
            Value::Str(self.realm.clone()),
            Value::Str(self.topic.clone()),
            Value::UInt(self.at_us),
            Value::UInt(self.seq.0),
            Value::UInt(self.seq.1 as u64),
            Value::UInt(self.publication),
            Value::UInt(ser),
            Value::UInt(u64::from(self.payload.count)),
            Value::Bytes(self.payload.raw.to_vec()),
            self.extras.clone().map_or(Value::Null, Value::Dict),
        ]);
        let mut out = Vec::new();
        codec::msgpack::write_value(&mut out, &v);
        out
    }

    fn decode(bytes: &[u8]) -> Option<StoredEvent> {
        let Ok(Value::List(l)) = codec::parse_value(Serializer::MsgPack, bytes) else {
            return None;
        };
        let u = |i: usize| match l.get(i) {
            Some(Value::UInt(u)) => Some(*u),
            _ => None,
        };
        let s = |i: usize| match l.get(i) {
            Some(Value::Str(s)) => Some(s.clone()),
            _ => None,
        };
        let serializer = match u(6)? {
            0 => Serializer::Json,
            1 => Serializer::MsgPack,
            2 => Serializer::Cbor,
            _ => return None,
        };
        let raw = match l.get(8) {
            Some(Value::Bytes(b)) => Bytes::copy_from_slice(b),
            _ => return None,
        };
        let payload = Payload {
            serializer,
            count: u8::try_from(u(7)?).ok().filter(|c| *c <= 2)?,
            raw,
        };
        // the payload must still read as it did
        codec::payload_values(&payload).ok()?;
        Some(StoredEvent {
            realm: s(0)?,
            topic: s(1)?,
            at_us: u(2)?,
            seq: (u(3)?, usize::try_from(u(4)?).ok()?),
            publication: u(5)?,
            payload,
            extras: match l.get(9) {
                Some(Value::Dict(d)) => Some(d.clone()),
                _ => None,
            },
        })
    }
}

fn key(realm: &str, topic: &str, at_us: u64, seq: (u64, usize)) -> Vec<u8> {
    let mut k = Vec::with_capacity(realm.len() + topic.len() + 26);
    k.extend_from_slice(realm.as_bytes());
    k.push(0);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(&at_us.to_be_bytes());
    k.extend_from_slice(&seq.0.to_be_bytes());
    k.extend_from_slice(&(seq.1 as u64).to_be_bytes());
    k
}

/// What a shard asks of the store.
#[derive(Debug)]
pub enum StoreOp {
    Append(Box<StoredEvent>),
    Remove {
        realm: String,
        topic: String,
        at_us: u64,
        seq: (u64, usize),
    },
}

/// A shard's end of the store: sends without waiting.
#[derive(Debug, Clone)]
pub struct StoreHandle {
    tx: Sender<StoreOp>,
}

impl StoreHandle {
    /// Queues `op`; false if the queue is full (the caller counts it).
    pub fn send(&self, op: StoreOp) -> bool {
        match self.tx.try_send(op) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }
}

/// The store's thread, and what it read at start-up.
#[derive(Debug)]
pub struct Store {
    pub handle: StoreHandle,
    pub loaded: Vec<StoredEvent>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Store {
    /// Opens (or creates) `dir/history.redb`, reads every kept event and
    /// starts the writer thread, fed by a queue of `queue` operations.
    pub fn open(dir: &Path, queue: usize) -> Result<Store, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("router.history_path: cannot create {}: {e}", dir.display()))?;
        let path: PathBuf = dir.join("history.redb");
        let db = Database::create(&path).map_err(|e| format!("router.history_path: cannot open {}: {e}", path.display()))?;
        let loaded = read_all(&db).map_err(|e| format!("router.history_path: cannot read {}: {e}", path.display()))?;
        let (tx, rx) = crossbeam::channel::bounded(queue);
        let thread = std::thread::Builder::new()
            .name("history-store".into())
            .spawn(move || write_loop(db, rx))
            .map_err(|e| format!("cannot start the history store thread: {e}"))?;
        Ok(Store {
            handle: StoreHandle { tx },
            loaded,
            thread: Some(thread),
        })
    }

    /// Waits until the thread has written everything queued (every handle
    /// must be dropped first; the shards have stopped).
    pub fn close(mut self) {
        drop(self.handle);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn read_all(db: &Database) -> Result<Vec<StoredEvent>, String> {
    let txn = db.begin_read().map_err(text)?;
    let table = match txn.open_table(EVENTS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(text(e)),
    };
    let mut out = Vec::new();
    for row in table.iter().map_err(text)? {
        let (_, v) = row.map_err(text)?;
        match StoredEvent::decode(v.value()) {
            Some(e) => out.push(e),
            None => tracing::warn!("history store: an unreadable event skipped"),
        }
    }
    Ok(out)
}

fn write_loop(db: Database, rx: Receiver<StoreOp>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < 4096 {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        if let Err(e) = write_batch(&db, batch) {
            tracing::error!(error = %e, "history store: a write failed");
        }
    }
}

fn write_batch(db: &Database, batch: Vec<StoreOp>) -> Result<(), String> {
    let txn = db.begin_write().map_err(text)?;
    {
        let mut table = txn.open_table(EVENTS).map_err(text)?;
        for op in batch {
            match op {
                StoreOp::Append(e) => {
                    table.insert(e.key().as_slice(), e.encode().as_slice()).map_err(text)?;
                }
                StoreOp::Remove { realm, topic, at_us, seq } => {
                    table.remove(key(&realm, &topic, at_us, seq).as_slice()).map_err(text)?;
                }
            }
        }
    }
    txn.commit().map_err(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(topic: &str, at_us: u64) -> StoredEvent {
        StoredEvent {
            realm: "realm1".into(),
            topic: topic.into(),
            at_us,
            seq: (at_us, 1),
            publication: 7,
            payload: codec::payload_from(Serializer::Json, &[Value::Str("x".into())]),
            extras: Some(Dict::new().with("publisher", Value::UInt(3))),
        }
    }

    /// Events written are read back by a new store on the same directory;
    /// removed ones are not.
    #[test]
    fn events_survive_a_reopen() {
        let dir = std::env::temp_dir().join(format!("switchyard-history-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir, 16).expect("opens");
        assert!(store.loaded.is_empty());
        for (i, t) in ["a", "b", "c"].iter().enumerate() {
            assert!(store.handle.send(StoreOp::Append(Box::new(event(t, i as u64 + 1)))));
        }
        assert!(store.handle.send(StoreOp::Remove {
            realm: "realm1".into(),
            topic: "b".into(),
            at_us: 2,
            seq: (2, 1),
        }));
        store.close();
        let again = Store::open(&dir, 16).expect("reopens");
        let mut topics: Vec<&str> = again.loaded.iter().map(|e| e.topic.as_str()).collect();
        topics.sort_unstable();
        assert_eq!(topics, ["a", "c"]);
        assert_eq!(again.loaded[0], event(&again.loaded[0].topic.clone(), again.loaded[0].at_us));
        again.close();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
