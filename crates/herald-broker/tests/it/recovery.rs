//! Opening a data directory that a crash, a full disk or damage left behind: the broker always
//! comes up, sets aside what was never finished, reports what is damaged, and serves the rest.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use herald_broker::{Broker, BrokerConfig, GroupConfig, MemberConfig, TopicConfig};

use crate::common::{drain, event, open};

fn damage_of(broker: &Broker) -> Vec<(String, String)> {
    broker.damage().into_iter().map(|d| (d.kind.to_owned(), d.name)).collect()
}

/// Was a bug: a topic directory without `topic.json` (a create cut short by a full disk, a lack of
/// descriptors or SIGKILL) made every later start fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_made_topic_is_set_aside_and_the_rest_serves() {
    let dir = tempfile::tempdir().unwrap();
    {
        let broker = open(dir.path());
        broker.create_topic("good", TopicConfig::default()).unwrap();
        broker.publish("good", event(Some("k"), 1)).await.unwrap();
        broker.close().await.unwrap();
    }
    let topics = dir.path().join("topics");
    // As a release that created topics in place left them: partitions but no topic.json.
    std::fs::create_dir_all(topics.join("half/partitions/0")).unwrap();
    // As this release leaves a create cut short: a staging directory.
    std::fs::create_dir_all(topics.join(".creating-staged/partitions")).unwrap();
    // A topic.json written to its temporary file only.
    std::fs::create_dir_all(topics.join("tmp-only/partitions")).unwrap();
    std::fs::write(topics.join("tmp-only/topic.tmp"), b"{").unwrap();

    let broker = open(dir.path());
    assert_eq!(broker.list_topics(), ["good"]);
    assert_eq!(damage_of(&broker), [("topic".into(), "half".into()), ("topic".into(), "tmp-only".into())]);
    assert!(broker.damage()[0].problem.contains("set aside"), "{:?}", broker.damage());
    assert!(!topics.join(".creating-staged").exists(), "a staging directory is removed at open");
    // The names are free again, and the healthy topic serves.
    broker.create_topic("half", TopicConfig::default()).unwrap();
    broker.create_group("g", GroupConfig::for_topics(["good"])).unwrap();
    let m = broker.join("g", MemberConfig::default()).unwrap();
    assert_eq!(drain(&m, 1, Duration::from_secs(5)).await.len(), 1);
}

/// A group whose settings or state cannot be read is reported and not served; the broker and
/// every other group start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_group_is_reported_and_the_others_serve() {
    let dir = tempfile::tempdir().unwrap();
    {
        let broker = open(dir.path());
        broker.create_topic("t", TopicConfig::default()).unwrap();
        broker.create_group("ok", GroupConfig::for_topics(["t"])).unwrap();
        broker.create_group("broken", GroupConfig::for_topics(["t"])).unwrap();
        broker.create_group("unfinished", GroupConfig::for_topics(["t"])).unwrap();
        broker.close().await.unwrap();
    }
    let groups = dir.path().join("groups");
    std::fs::write(groups.join("broken/group.json"), b"{ not json").unwrap();
    std::fs::remove_file(groups.join("unfinished/group.json")).unwrap();
    let broker = open(dir.path());
    assert_eq!(broker.list_groups(), ["ok"]);
    let damage = broker.damage();
    assert_eq!(damage_of(&broker), [("group".into(), "broken".into()), ("group".into(), "unfinished".into())]);
    assert!(damage[0].problem.contains("not served"), "{damage:?}");
    assert!(damage[1].problem.contains("set aside"), "{damage:?}");
    // The damaged group is not silently recreated from scratch over its state.
    assert!(broker.create_group("broken", GroupConfig::for_topics(["t"])).is_err());
    broker.create_group("unfinished", GroupConfig::for_topics(["t"])).unwrap();
}

/// Was a bug: one damaged record within the dedupe window (re-read at every open) stopped the
/// whole broker from starting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_in_the_dedupe_window_does_not_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let kept = event(Some("k"), 99);
    {
        let broker = open(dir.path());
        broker.create_topic("t", TopicConfig::default()).unwrap();
        broker.create_topic("other", TopicConfig::default()).unwrap();
        broker.publish_batch("t", (0..20).map(|i| event(Some("k"), i)).collect()).await.unwrap();
        broker.publish("t", kept.clone()).await.unwrap();
        broker.publish("other", event(None, 1)).await.unwrap();
        broker.close().await.unwrap();
    }
    // One flipped byte inside the first batch (not the tail).
    let seg = crate::common::segment_file(dir.path(), "t", 0);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[200] ^= 0xff;
    std::fs::write(&seg, bytes).unwrap();

    let broker = open(dir.path());
    assert_eq!(damage_of(&broker), [("partition".into(), "t/0".into())]);
    // The intact event after the damage is still remembered: republishing it stores nothing.
    let again = broker.publish("t", kept).await.unwrap();
    assert!(again.duplicate && again.offset == 20, "{again:?}");
    // Damaged bytes are never served.
    assert_eq!(broker.read("t", 0, 0, 10).unwrap_err().code().as_str(), "corrupt");
    assert_eq!(broker.read("other", 0, 0, 10).unwrap().len(), 1);
}

/// Was a bug: deleting a topic logged one spurious ERROR per partition ("closing the log failed …
/// while creating a temporary index file"): its logs were closed after their directory moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_topic_logs_no_error() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    broker.create_topic("t", TopicConfig::with_partitions(3)).unwrap();
    broker.publish_batch("t", (0..30).map(|i| event(None, i)).collect()).await.unwrap();
    let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || Writer(sink.clone()))
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || broker.delete_topic("t").unwrap());
    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(text.is_empty(), "deleting a topic logged: {text}");
    assert!(broker.list_topics().is_empty());
}

struct Writer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const CREATE_DIR_VAR: &str = "HERALD_BROKER_CREATE_CRASH_DIR";
const CREATE_CYCLE_VAR: &str = "HERALD_BROKER_CREATE_CRASH_CYCLE";

/// The child of `sigkill_during_topic_creates_and_deletes_never_stops_a_start`: creates and deletes
/// topics in a loop, reporting each one acknowledged, until it is killed.
#[test]
fn create_crash_child() {
    let Ok(dir) = std::env::var(CREATE_DIR_VAR) else { return };
    let cycle: u64 = std::env::var(CREATE_CYCLE_VAR).unwrap().parse().unwrap();
    println!();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let broker = Broker::open(&dir, BrokerConfig::default()).unwrap();
        for i in 0.. {
            let name = format!("c{cycle}-{i}");
            broker.create_topic(&name, TopicConfig::with_partitions(2)).unwrap();
            println!("CREATED {name}");
            if i % 2 == 0 {
                broker.delete_topic(&name).unwrap();
                println!("DELETED {name}");
            }
        }
    });
}

/// Was a bug: SIGKILL during a loop of topic creates left half-made topics that refused 3 of 25
/// restarts. Now every restart opens, and every acknowledged create or delete holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_topic_creates_and_deletes_never_stops_a_start() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut live = BTreeSet::new();
    let mut iterations = 0;
    let mut cycle = 0;
    while iterations < 200 || cycle < 10 {
        let mut child = Command::new(&exe)
            .args(["--exact", "recovery::create_crash_child", "--nocapture", "--test-threads", "1"])
            .env(CREATE_DIR_VAR, dir.path())
            .env(CREATE_CYCLE_VAR, cycle.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // Killed after a random number of acknowledged operations.
        let stop_after = rand::Rng::random_range(&mut rand::rng(), 3..40);
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = 0;
        // The last topic reported created: its delete may have been cut short by the kill.
        let mut last_created = None;
        let mut note = |line: &str, live: &mut BTreeSet<String>| {
            if let Some(name) = line.strip_prefix("CREATED ") {
                live.insert(name.to_owned());
                last_created = Some(name.to_owned());
                true
            } else {
                if let Some(name) = line.strip_prefix("DELETED ") {
                    live.remove(name);
                }
                false
            }
        };
        while seen < stop_after {
            let Some(line) = lines.next() else { break };
            if note(&line.unwrap(), &mut live) {
                iterations += 1;
                seen += 1;
            }
        }
        child.kill().unwrap();
        // Whatever the child printed before the kill was acknowledged too.
        for line in lines.map_while(|l| l.ok()) {
            note(&line, &mut live);
        }
        child.wait().unwrap();
        let broker = Broker::open(dir.path(), BrokerConfig::default())
            .unwrap_or_else(|e| panic!("cycle {cycle}: the broker did not start: {e}"));
        let present: BTreeSet<String> = broker.list_topics().into_iter().collect();
        let missing: Vec<&String> = live.difference(&present).filter(|m| Some(*m) != last_created.as_ref()).collect();
        assert!(missing.is_empty(), "cycle {cycle}: acknowledged topics missing: {missing:?}");
        // Only a create or delete cut short may differ, and nothing may be left half-made.
        assert!(present.difference(&live).count() <= 1, "cycle {cycle}: {present:?} vs {live:?}");
        live = present;
        assert!(broker.damage().is_empty(), "cycle {cycle}: {:?}", broker.damage());
        broker.close().await.unwrap();
        cycle += 1;
    }
}

/// Publishes 600 events to `t`, drains them with group `g` (committed at 600), closes cleanly
/// and cuts the partition's active segment to half its length.
async fn six_hundred_consumed_then_tail_cut(dir: &std::path::Path) {
    {
        let broker = open(dir);
        broker.create_topic("t", TopicConfig { dedupe_window_ms: 0, ..TopicConfig::default() }).unwrap();
        broker.create_group("g", GroupConfig::for_topics(["t"])).unwrap();
        for chunk in 0..6 {
            broker.publish_batch("t", (0..100).map(|i| event(Some("k"), chunk * 100 + i)).collect()).await.unwrap();
        }
        let m = broker.join("g", MemberConfig::default()).unwrap();
        assert_eq!(drain(&m, 600, Duration::from_secs(20)).await.len(), 600);
        drop(m);
        assert_eq!(broker.describe_group("g").unwrap().partitions[0].committed, 600);
        broker.close().await.unwrap();
    }
    let seg = crate::common::segment_file(dir, "t", 0);
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(len / 2).unwrap();
}

/// Repro 3 of #8, was a bug: after the active segment lost its tail (truncated after a clean
/// shutdown), the next events took the lost offsets and a group committed beyond them skipped
/// them as consumed. The log now remembers its end across a clean shutdown: the lost offsets are
/// reported as damage with the numbers and never reused, and the group receives every new event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_cut_after_a_clean_shutdown_is_reported_and_no_offset_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    six_hundred_consumed_then_tail_cut(dir.path()).await;

    let broker = open(dir.path());
    assert_eq!(broker.describe_topic("t").unwrap().partitions[0].latest_offset, 600, "the end is remembered");
    assert_eq!(broker.describe_group("g").unwrap().partitions[0].committed, 600, "the group is not moved");
    let damage = broker.damage();
    assert_eq!(damage.len(), 1, "{damage:?}");
    assert_eq!((damage[0].kind, damage[0].name.as_str()), ("partition", "t/0"));
    assert!(damage[0].problem.contains("..600 were lost"), "{damage:?}");
    broker.publish_batch("t", (1000..1040).map(|i| event(Some("k"), i)).collect()).await.unwrap();
    let m = broker.join("g", MemberConfig::default()).unwrap();
    let got = drain(&m, 40, Duration::from_secs(10)).await;
    assert_eq!(got.iter().map(crate::common::number).collect::<Vec<_>>(), (1000..1040).collect::<Vec<_>>());
    assert_eq!(got.iter().map(|d| d.stored.offset).collect::<Vec<_>>(), (600..640).collect::<Vec<_>>());
}

/// When the log cannot know its old end (the clean-shutdown marker is gone too, as after a crash
/// that lost the page cache), a group position beyond the partition's end is moved back to the
/// end durably and reported with the numbers, so that new events are delivered, not skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_beyond_its_partition_s_end_is_moved_back_and_receives_new_events() {
    let dir = tempfile::tempdir().unwrap();
    six_hundred_consumed_then_tail_cut(dir.path()).await;
    std::fs::remove_file(dir.path().join("topics/t/partitions/0/clean-shutdown")).unwrap();

    let broker = open(dir.path());
    let end = broker.describe_topic("t").unwrap().partitions[0].latest_offset;
    assert!(end < 600, "the truncation cut the log: it ends at {end}");
    let info = broker.describe_group("g").unwrap();
    assert_eq!(info.partitions[0].committed, end, "the position moved back to the end");
    let damage = broker.damage();
    assert_eq!(damage.len(), 1, "{damage:?}");
    assert!(damage[0].problem.contains("t/0@600") && damage[0].problem.contains(&end.to_string()), "{damage:?}");
    // Events published now reach the group, none skipped.
    broker.publish_batch("t", (1000..1040).map(|i| event(Some("k"), i)).collect()).await.unwrap();
    let m = broker.join("g", MemberConfig::default()).unwrap();
    let got: Vec<u64> = drain(&m, 40, Duration::from_secs(10)).await.iter().map(crate::common::number).collect();
    assert_eq!(got, (1000..1040).collect::<Vec<_>>());
    drop(m);
    // Durable: a restart keeps the moved position.
    broker.close().await.unwrap();
    let broker = open(dir.path());
    assert_eq!(broker.describe_group("g").unwrap().partitions[0].committed, end + 40);
}

/// Repro 4 of #8, was a bug: a damaged batch stalled a group for good (every poll ended with
/// `corrupt`, no way past it). An operator now steps the group over it: the stored bytes are
/// kept as a `herald.damaged` dead letter with reason `corrupt`, the position moves to the next
/// readable offset durably, the group receives everything after, and the skip is counted and
/// listed as damage. Refused while events before the damage are unsettled, and where nothing
/// is damaged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_steps_a_group_over_a_damaged_batch_keeping_the_evidence() {
    use herald_model::Code;
    let dir = tempfile::tempdir().unwrap();
    {
        let broker = open(dir.path());
        broker.create_topic("t", TopicConfig { dedupe_window_ms: 0, ..TopicConfig::default() }).unwrap();
        broker.create_group("g", GroupConfig::for_topics(["t"])).unwrap();
        for batch in 0..6 {
            broker.publish_batch("t", (0..10).map(|i| event(None, batch * 10 + i)).collect()).await.unwrap();
        }
        broker.close().await.unwrap();
    }
    // Flip one byte in the middle of the fourth batch (offsets 30..39).
    let seg = crate::common::segment_file(dir.path(), "t", 0);
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.len() * 7 / 12;
    bytes[at] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();

    let broker = open(dir.path());
    let m = broker.join("g", MemberConfig::default()).unwrap();
    let mut got = Vec::new();
    let err = loop {
        match m.poll(100, Duration::from_millis(200)).await {
            Ok(ds) => got.extend(ds),
            Err(e) => break e,
        }
    };
    assert_eq!(err.code(), Code::Corrupt, "{err}");
    let from = got.len() as u64;
    assert!((20..=30).contains(&from), "delivered up to the damage: {from}");
    // Events before the damage are still in flight: refused, nothing written.
    let refused = broker.skip_damaged("g", "t", 0).await.unwrap_err();
    assert_eq!(refused.code(), Code::GroupActive, "{refused}");
    assert!(broker.dlq_list("g", 10).unwrap().is_empty());
    for d in &got {
        m.ack(d).unwrap();
    }
    let skipped = broker.skip_damaged("g", "t", 0).await.unwrap();
    assert_eq!((skipped.from, skipped.to), (from, 40), "{skipped:?}");
    assert!(skipped.bytes_kept > 0 && skipped.reason.contains("CRC"), "{skipped:?}");
    // The evidence: the stored bytes from where the damage starts, in a dead letter.
    let letters = broker.dlq_list("g", 10).unwrap();
    assert_eq!(letters.len(), 1);
    let letter = &letters[0].event;
    assert_eq!(letter.ty(), herald_model::dead_letter::DAMAGED_TYPE);
    assert!(letter.header("dlqreason").unwrap().starts_with("corrupt: offsets"), "{letter:?}");
    assert_eq!(letter.header("dlqoffset"), Some(from.to_string().as_str()));
    assert_eq!(letter.header("dlqdamagedto"), Some("40"));
    let data = letter.data();
    let start = bytes.windows(data.len().min(64)).position(|w| w == &data[..data.len().min(64)]).unwrap();
    assert!(start <= at && at < start + data.len(), "the kept bytes include the flipped one");
    // The group goes on after the damage, in order.
    let rest: Vec<u64> =
        crate::common::drain(&m, 20, Duration::from_secs(10)).await.iter().map(crate::common::number).collect();
    assert_eq!(rest, (40..60).collect::<Vec<_>>());
    assert_eq!(broker.damaged_offsets_skipped(), 40 - from);
    assert!(broker.damage().iter().any(|d| d.kind == "group" && d.name == "g" && d.problem.contains("stepped over")));
    // Nothing damaged at the position now; the evidence is never replayed.
    assert_eq!(broker.skip_damaged("g", "t", 0).await.unwrap_err().code(), Code::InvalidArgument);
    drop(m);
    assert_eq!(broker.dlq_replay("g").await.unwrap(), 0);
    assert_eq!(broker.dlq_list("g", 10).unwrap().len(), 1);
    broker.close().await.unwrap();
    let broker = open(dir.path());
    assert_eq!(broker.describe_group("g").unwrap().partitions[0].committed, 60, "durable");
}

/// A full disk under a group's state log: deliveries fail with `storage_full` (none goes out
/// unrecorded), the group is listed as fenced, and within seconds of space
/// returning it works again without a restart; nothing is lost.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_a_group_s_state_recovers_by_itself() {
    use herald_broker::failpoints::set_disk_full;
    use herald_model::Code;
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    broker.create_topic("t", TopicConfig { dedupe_window_ms: 0, ..TopicConfig::default() }).unwrap();
    broker.create_group("g", GroupConfig::for_topics(["t"])).unwrap();
    broker.publish_batch("t", (0..10).map(|i| event(None, i)).collect()).await.unwrap();
    let m = broker.join("g", MemberConfig::default()).unwrap();
    let first = m.poll(5, Duration::from_secs(5)).await.unwrap();
    assert!(!first.is_empty());
    let state = dir.path().join("groups/g/state");
    set_disk_full(&state, true);
    // Deliveries are recorded durably before a member sees them: with no space, none go out.
    let err = m.poll(5, Duration::from_secs(5)).await.unwrap_err();
    assert_eq!(err.code(), Code::StorageFull, "{err}");
    let fenced = broker.fenced();
    assert!(fenced.iter().any(|f| f.kind == "group" && f.name == "g" && f.storage_full), "{fenced:?}");

    set_disk_full(&state, false);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !broker.fenced().is_empty() {
        assert!(std::time::Instant::now() < deadline, "still fenced: {:?}", broker.fenced());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for d in &first {
        let _ = m.ack(d);
    }
    let mut seen: BTreeSet<u64> = first.iter().map(crate::common::number).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while seen.len() < 10 {
        assert!(std::time::Instant::now() < deadline, "received {seen:?}");
        for d in m.poll(10, Duration::from_millis(200)).await.unwrap() {
            m.ack(&d).unwrap();
            seen.insert(crate::common::number(&d));
        }
    }
    drop(m);
    broker.close().await.unwrap();
    let broker = open(dir.path());
    assert_eq!(broker.describe_group("g").unwrap().partitions[0].committed, 10);
}
