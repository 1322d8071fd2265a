//! The object store: objects by resource and key, one global resourceVersion counter (etcd's
//! revision), and a bounded per-resource event history that watches replay from.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde_json::Value;
use tokio::sync::watch;

use super::allocations::Allocations;
use super::authn::Tokens;
use super::authz::Rule;
use super::resources::Registry;

/// A resource type's storage key: its group and plural, whatever version a request names.
pub type ResourceKey = (String, String);

/// An object's key within its resource: namespace (empty when cluster-scoped) and name, in the
/// order lists return them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change, as the watch cache keeps it: the new state (for a deletion, the last state with
/// the deletion's resourceVersion) and the state before.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub revision: u64,
    pub kind: EventType,
    pub key: ObjectKey,
    pub object: Value,
    pub previous: Option<Value>,
}

#[derive(Debug, Clone, Default)]
struct History {
    /// Every event after this revision is still in `events`.
    floor: u64,
    events: VecDeque<StoredEvent>,
}

/// Why a watch cannot resume at the revision it asked for.
#[derive(Debug, Clone, Copy)]
pub struct TooOld {
    pub oldest: u64,
}

/// Everything the server holds. A request works on it under one lock, so each request is atomic.
#[derive(Debug, Clone)]
pub struct State {
    revision: u64,
    /// Bumped by a compaction: open watches end with 410 Gone.
    epoch: u64,
    history_limit: usize,
    pub registry: Registry,
    /// What the authorizer denies.
    pub forbidden: Vec<Rule>,
    /// The service account tokens issued by TokenRequests.
    pub tokens: Tokens,
    objects: HashMap<ResourceKey, BTreeMap<ObjectKey, Value>>,
    history: HashMap<ResourceKey, History>,
    /// What the stored Services hold, kept in step by `put` and `remove`.
    allocations: Allocations,
}

fn set_resource_version(object: &mut Value, revision: u64) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".to_owned(),
            Value::String(revision.to_string()),
        );
    }
}

impl State {
    pub fn new(registry: Registry, history_limit: usize) -> Self {
        Self {
            revision: 1,
            epoch: 0,
            history_limit: history_limit.max(1),
            registry,
            forbidden: Vec::new(),
            tokens: Tokens::default(),
            objects: HashMap::new(),
            history: HashMap::new(),
            allocations: Allocations::default(),
        }
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn get(&self, resource: &ResourceKey, key: &ObjectKey) -> Option<&Value> {
        self.objects.get(resource)?.get(key)
    }

    /// All objects of a resource, in key order.
    pub fn objects(&self, resource: &ResourceKey) -> impl Iterator<Item = (&ObjectKey, &Value)> {
        self.objects.get(resource).into_iter().flatten()
    }

    /// Every stored object of every resource, for owner lookups.
    pub fn all_objects(&self) -> impl Iterator<Item = (&ResourceKey, &ObjectKey, &Value)> {
        self.objects
            .iter()
            .flat_map(|(r, objects)| objects.iter().map(move |(k, v)| (r, k, v)))
    }

    /// The cluster IPs and node ports the stored Services hold.
    pub fn allocations(&self) -> &Allocations {
        &self.allocations
    }

    /// Keeps the Services' allocations in step with a write under `key`.
    fn allocate(&mut self, resource: &ResourceKey, key: &ObjectKey, object: Option<&Value>) {
        if resource.0.is_empty() && resource.1 == "services" {
            self.allocations.update(&key.namespace, &key.name, object);
        }
    }

    fn record(&mut self, resource: &ResourceKey, event: StoredEvent) {
        let limit = self.history_limit;
        let history = self.history.entry(resource.clone()).or_default();
        history.events.push_back(event);
        while history.events.len() > limit {
            if let Some(dropped) = history.events.pop_front() {
                history.floor = dropped.revision;
            }
        }
    }

    /// Stores a new or changed object under the next revision and returns it as stored.
    pub fn put(&mut self, resource: &ResourceKey, key: ObjectKey, mut object: Value) -> Value {
        self.revision += 1;
        set_resource_version(&mut object, self.revision);
        let previous = self
            .objects
            .entry(resource.clone())
            .or_default()
            .insert(key.clone(), object.clone());
        self.allocate(resource, &key, Some(&object));
        let kind = if previous.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        let event = StoredEvent {
            revision: self.revision,
            kind,
            key,
            object: object.clone(),
            previous,
        };
        self.record(resource, event);
        object
    }

    /// Removes an object under the next revision and returns its last stored state.
    pub fn remove(&mut self, resource: &ResourceKey, key: &ObjectKey) -> Option<Value> {
        let last = self.objects.get_mut(resource)?.remove(key)?;
        self.allocate(resource, key, None);
        self.revision += 1;
        let mut tombstone = last.clone();
        set_resource_version(&mut tombstone, self.revision);
        let event = StoredEvent {
            revision: self.revision,
            kind: EventType::Deleted,
            key: key.clone(),
            object: tombstone,
            previous: Some(last.clone()),
        };
        self.record(resource, event);
        Some(last)
    }

    /// Drops every object of a resource, as deleting its CRD does.
    pub fn remove_all(&mut self, resource: &ResourceKey) {
        let keys: Vec<ObjectKey> = self.objects(resource).map(|(k, _)| k.clone()).collect();
        for key in keys {
            self.remove(resource, &key);
        }
    }

    /// The events of a resource after `after`, or why they are no longer known.
    pub fn events_after(
        &self,
        resource: &ResourceKey,
        after: u64,
    ) -> Result<Vec<StoredEvent>, TooOld> {
        let Some(history) = self.history.get(resource) else {
            return Ok(Vec::new());
        };
        if after < history.floor {
            return Err(TooOld {
                oldest: history.floor,
            });
        }
        Ok(history
            .events
            .iter()
            .filter(|e| e.revision > after)
            .cloned()
            .collect())
    }

    /// Whether a watch may start at `revision`.
    pub fn check_resumable(&self, resource: &ResourceKey, revision: u64) -> Result<(), TooOld> {
        match self.history.get(resource) {
            Some(history) if revision < history.floor => Err(TooOld {
                oldest: history.floor,
            }),
            _ => Ok(()),
        }
    }

    /// Forgets all history, as an etcd compaction does.
    pub fn compact(&mut self) {
        let revision = self.revision;
        for history in self.history.values_mut() {
            history.events.clear();
            history.floor = revision;
        }
        self.epoch += 1;
    }
}

/// The shared store: the state under a lock, and a channel that tells watches the revision moved.
#[derive(Debug)]
pub struct Store {
    state: Mutex<State>,
    revision: watch::Sender<u64>,
}

impl Store {
    pub fn new(state: State) -> Self {
        let (revision, _) = watch::channel(state.revision());
        Self {
            state: Mutex::new(state),
            revision,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells watches that the state changed; call after releasing the lock.
    pub fn notify(&self) {
        let revision = self.lock().revision();
        self.revision.send_replace(revision);
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }
}
