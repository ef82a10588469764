//! Who created which topic, for the quotas on topics and partitions a principal may create
//! (`Quotas::topics`, `Quotas::partitions`): `<data_dir>/auth/owners.json` (format 1, written
//! durably), one entry per topic created by a principal that has such a quota, removed when the
//! topic is deleted (by anyone). A count quota is `limit_exceeded`: waiting does not help,
//! deleting one of the principal's topics does.
//!
//! A create reserves its place before the topic is made (two creates at once cannot both take
//! the last place) and writes the entry once the topic exists; a server killed in between leaves
//! a topic that counts for nobody.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use herald_model::Code;
use serde::{Deserialize, Serialize};

use super::grants::{Denied, Principal};

/// The file, relative to the data directory.
pub const OWNERS_FILE: &str = "auth/owners.json";
const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Owned {
    principal: String,
    partitions: u32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct OwnersFile {
    #[serde(default)]
    format: u32,
    topics: BTreeMap<String, Owned>,
}

/// The topics principals with topic quotas created.
pub struct Owners {
    path: PathBuf,
    /// Committed (written down) and reserved (being created) entries; only committed ones are
    /// written to the file.
    topics: Mutex<BTreeMap<String, (Owned, bool)>>,
}

/// A place under a principal's topic quota, held while its topic is being created.
pub struct Reservation {
    owners: Arc<Owners>,
    topic: String,
    done: bool,
}

impl Owners {
    /// Loads the file (none there: nothing owned).
    pub fn load(data_dir: &Path) -> Result<Owners, String> {
        let path = data_dir.join(OWNERS_FILE);
        let file: OwnersFile = match std::fs::read_to_string(&path) {
            Ok(text) => {
                serde_json::from_str(&text).map_err(|e| format!("{}: not an owners file: {e}", path.display()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => OwnersFile::default(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        if file.format > FORMAT {
            return Err(format!(
                "{}: written in format {} by a newer Herald; this build reads up to {FORMAT}: upgrade Herald",
                path.display(),
                file.format
            ));
        }
        let topics = file.topics.into_iter().map(|(k, v)| (k, (v, true))).collect();
        Ok(Owners { path, topics: Mutex::new(topics) })
    }

    fn save(&self, topics: &BTreeMap<String, (Owned, bool)>) -> std::io::Result<()> {
        let topics: BTreeMap<String, Owned> =
            topics.iter().filter(|(_, (_, committed))| *committed).map(|(k, (o, _))| (k.clone(), o.clone())).collect();
        let dir = self.path.parent().expect("the owners file has a directory");
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(".owners.json.tmp");
        let file = OwnersFile { format: FORMAT, topics };
        let text = serde_json::to_vec_pretty(&file).expect("owners serialise");
        {
            use std::io::Write as _;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        std::fs::File::open(dir)?.sync_all()
    }

    /// Takes a place for `topic` of `partitions` under `p`'s topic quotas; `Ok(None)` when `p`
    /// has none (nothing is recorded).
    pub fn reserve(
        self: &Arc<Self>,
        p: &Principal,
        topic: &str,
        partitions: u32,
    ) -> Result<Option<Reservation>, Denied> {
        let (max_topics, max_partitions) = (p.quotas.topics, p.quotas.partitions);
        if max_topics.is_none() && max_partitions.is_none() {
            return Ok(None);
        }
        let mut topics = self.topics.lock().expect("owners lock poisoned");
        if topics.contains_key(topic) {
            // Exists already (or is being made): the create will answer for it.
            return Ok(None);
        }
        let mine = topics.values().map(|(o, _)| o).filter(|o| o.principal == *p.name);
        let (count, sum) = mine.fold((0u32, 0u32), |(c, s), o| (c + 1, s.saturating_add(o.partitions)));
        let over = |what: String| {
            Denied::new(
                Code::LimitExceeded,
                format!(
                    "{:?} has created {what}, its quota; delete one of its topics first (or ask for a higher quota)",
                    p.name
                ),
            )
        };
        if let Some(max) = max_topics
            && count >= max
        {
            return Err(over(format!("{count} topics")));
        }
        if let Some(max) = max_partitions
            && sum.saturating_add(partitions) > max
        {
            return Err(over(format!("topics with {sum} partitions (this one would add {partitions}; at most {max})")));
        }
        topics.insert(topic.to_owned(), (Owned { principal: p.name.to_string(), partitions }, false));
        Ok(Some(Reservation { owners: self.clone(), topic: topic.to_owned(), done: false }))
    }

    /// Takes `topic`'s entry out before the topic is deleted (a create of the same name meanwhile
    /// is then counted afresh); `restore` it if the delete fails. Blocking (a file write).
    fn take(&self, topic: &str) -> Option<(Owned, bool)> {
        let mut topics = self.topics.lock().expect("owners lock poisoned");
        let taken = topics.remove(topic);
        if taken.as_ref().is_some_and(|(_, committed)| *committed)
            && let Err(e) = self.save(&topics)
        {
            tracing::error!(error = %e, topic, "recording a deleted topic's owner failed");
        }
        taken
    }

    fn restore(&self, topic: &str, entry: (Owned, bool)) {
        let mut topics = self.topics.lock().expect("owners lock poisoned");
        topics.insert(topic.to_owned(), entry);
        if let Err(e) = self.save(&topics) {
            tracing::error!(error = %e, topic, "recording a topic's owner failed");
        }
    }
}

/// Creates a topic (or, with `if_not_exists`, finds it): a topic this call made takes `place`
/// under its creator's quota. The one place both APIs create topics. Blocking.
pub fn create_topic(
    broker: &herald_broker::Broker,
    place: Option<Reservation>,
    name: &str,
    config: herald_broker::TopicConfig,
    if_not_exists: bool,
) -> Result<(herald_broker::TopicInfo, bool), herald_broker::BrokerError> {
    let r = if if_not_exists {
        broker.ensure_topic_created(name, config)
    } else {
        broker.create_topic(name, config).map(|i| (i, true))
    };
    if let (Ok((_, true)), Some(place)) = (&r, place) {
        place.commit();
    }
    r
}

/// Deletes a topic; it counts for nobody any more. The one place both APIs delete topics.
/// Blocking.
pub fn delete_topic(
    broker: &herald_broker::Broker,
    owners: &Owners,
    name: &str,
) -> Result<(), herald_broker::BrokerError> {
    let taken = owners.take(name);
    let r = broker.delete_topic(name);
    if let (Err(_), Some(entry)) = (&r, taken) {
        owners.restore(name, entry);
    }
    r
}

impl Reservation {
    /// The topic exists: the entry is written down. Blocking (a file write).
    pub fn commit(mut self) {
        self.done = true;
        let mut topics = self.owners.topics.lock().expect("owners lock poisoned");
        if let Some((_, committed)) = topics.get_mut(&self.topic) {
            *committed = true;
        }
        if let Err(e) = self.owners.save(&topics) {
            tracing::error!(error = %e, topic = %self.topic, "recording a topic's owner failed; it counts until restart");
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            self.owners.topics.lock().expect("owners lock poisoned").remove(&self.topic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_partitions_are_counted_per_principal_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let owners = Arc::new(Owners::load(dir.path()).unwrap());
        let mut p = Principal::new("team", Vec::new(), None);
        p.quotas.topics = Some(2);
        p.quotas.partitions = Some(10);
        owners.reserve(&p, "a", 4).unwrap().unwrap().commit();
        // A failed create gives its place back.
        drop(owners.reserve(&p, "b", 4).unwrap());
        let e = owners.reserve(&p, "c", 7).err().unwrap();
        assert_eq!(e.code, Code::LimitExceeded);
        assert!(e.message.contains("4 partitions"), "{}", e.message);
        owners.reserve(&p, "c", 6).unwrap().unwrap().commit();
        assert!(owners.reserve(&p, "d", 0).is_err(), "two topics, the quota");
        let again = Arc::new(Owners::load(dir.path()).unwrap());
        assert!(again.reserve(&p, "d", 1).is_err(), "counted after a restart");
        again.take("a");
        assert!(again.reserve(&p, "d", 1).unwrap().is_some());
        let free = Principal::new("free", Vec::new(), None);
        assert!(again.reserve(&free, "e", 1000).unwrap().is_none());
    }
}
