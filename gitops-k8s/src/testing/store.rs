//! The fake's storage: objects as JSON under their API path, resource versions, and the history
//! of changes that watches read, kept for a bounded number of events as an API server's watch
//! cache is (older versions are compacted away).

use std::collections::{BTreeMap, VecDeque};

use gitops_core::backend::Cancellation;
use serde_json::{Value, json};

use super::apply::{self, Managed};

/// How many changes watches can resume from by default.
pub const DEFAULT_HISTORY: usize = 1000;

/// Where an object lives: its API (`/api/v1`, `/apis/apps/v1`), resource (plural), namespace
/// (empty for cluster-scoped objects) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Key {
    pub(super) api: String,
    pub(super) plural: String,
    pub(super) namespace: String,
    pub(super) name: String,
}

/// The key of an object.
pub(super) fn key(api: &str, plural: &str, namespace: &str, name: &str) -> Key {
    Key {
        api: api.to_owned(),
        plural: plural.to_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
}

impl Key {
    /// The key of a stored object, from its `apiVersion`, `kind`-given plural and metadata.
    pub(super) fn of(plural: &str, object: &Value) -> Key {
        let api_version = object["apiVersion"].as_str().unwrap_or("v1");
        let api = if api_version.contains('/') {
            format!("/apis/{api_version}")
        } else {
            format!("/api/{api_version}")
        };
        key(
            &api,
            plural,
            object["metadata"]["namespace"].as_str().unwrap_or(""),
            object["metadata"]["name"].as_str().unwrap_or(""),
        )
    }
}

/// One change, as a watch reports it.
#[derive(Debug, Clone)]
pub(super) struct Event {
    pub(super) rv: u64,
    pub(super) kind: &'static str,
    pub(super) key: Key,
    pub(super) object: Value,
}

/// A pod's log, as the kubelet writes it.
#[derive(Default)]
pub(super) struct PodLog {
    pub(super) text: String,
    pub(super) done: bool,
}

/// Everything the fake holds.
pub(super) struct State {
    pub(super) rv: u64,
    pub(super) objects: BTreeMap<Key, Value>,
    /// The latest changes, oldest first, at most `history` of them.
    events: VecDeque<Event>,
    history: usize,
    /// Changes up to this version are forgotten: a watch from an older one is told `410 Gone`.
    pub(super) compacted: u64,
    /// Who manages which fields of each object (server-side apply).
    pub(super) managers: BTreeMap<Key, Vec<Managed>>,
    pub(super) logs: BTreeMap<(String, String), PodLog>,
    /// Processes the kubelet runs, by pod (namespace, name).
    pub(super) running: BTreeMap<(String, String), Cancellation>,
    pub(super) requests: Vec<String>,
    next_id: u64,
}

impl Default for State {
    fn default() -> Self {
        State {
            rv: 0,
            objects: BTreeMap::new(),
            events: VecDeque::new(),
            history: DEFAULT_HISTORY,
            compacted: 0,
            managers: BTreeMap::new(),
            logs: BTreeMap::new(),
            running: BTreeMap::new(),
            requests: Vec::new(),
            next_id: 0,
        }
    }
}

impl State {
    /// Stores `object` under `k` with a new resource version and its managed fields, and records
    /// the change.
    pub(super) fn store(&mut self, k: Key, mut object: Value, kind: &'static str) -> Value {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let managed = apply::render(self.managers.get(&k).map_or(&[][..], Vec::as_slice));
        match managed {
            Some(fields) => object["metadata"]["managedFields"] = fields,
            None => {
                if let Some(meta) = object["metadata"].as_object_mut() {
                    meta.remove("managedFields");
                }
            }
        }
        self.objects.insert(k.clone(), object.clone());
        self.record(Event {
            rv: self.rv,
            kind,
            key: k,
            object: object.clone(),
        });
        object
    }

    /// Removes the object under `k` for good, recording its deletion.
    pub(super) fn remove(&mut self, k: &Key) -> Option<Value> {
        let mut object = self.objects.remove(k)?;
        self.managers.remove(k);
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record(Event {
            rv: self.rv,
            kind: "DELETED",
            key: k.clone(),
            object: object.clone(),
        });
        if k.plural == "pods" {
            let id = (k.namespace.clone(), k.name.clone());
            if let Some(token) = self.running.remove(&id) {
                token.cancel();
            }
            if let Some(log) = self.logs.get_mut(&id) {
                log.done = true;
            }
        }
        Some(object)
    }

    fn record(&mut self, event: Event) {
        self.events.push_back(event);
        while self.events.len() > self.history {
            if let Some(old) = self.events.pop_front() {
                self.compacted = old.rv;
            }
        }
    }

    /// The recorded changes after version `rv`, oldest first; `Err` with the oldest version a
    /// watch can still start from when those changes are forgotten.
    pub(super) fn events_after(&self, rv: u64) -> Result<impl Iterator<Item = &Event>, u64> {
        if rv < self.compacted {
            return Err(self.compacted);
        }
        Ok(self.events.iter().filter(move |e| e.rv > rv))
    }

    /// Forgets every change so far (as etcd's compaction does).
    pub(super) fn compact(&mut self) {
        self.events.clear();
        self.compacted = self.rv;
    }

    /// Keeps at most `events` changes for watches to resume from.
    pub(super) fn set_history(&mut self, events: usize) {
        self.history = events.max(1);
        while self.events.len() > self.history {
            if let Some(old) = self.events.pop_front() {
                self.compacted = old.rv;
            }
        }
    }

    /// A fresh uid.
    pub(super) fn uid(&mut self) -> String {
        self.next_id += 1;
        format!("00000000-0000-4000-8000-{:012x}", self.next_id)
    }

    /// A fresh number (for generated names).
    pub(super) fn next(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The objects whose `ownerReferences` name `uid`.
    pub(super) fn dependents(&self, uid: &Value) -> Vec<Key> {
        self.objects
            .iter()
            .filter(|(_, o)| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| &r["uid"] == uid))
            })
            .map(|(k, _)| k.clone())
            .collect()
    }
}
