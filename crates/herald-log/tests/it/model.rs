//! The log against a simple in-memory model: random appends, reads, time lookups, reopens
//! (clean and as after a crash) and retention.

use herald_log::{Log, LogConfig, LogError, Retention};
use proptest::prelude::*;

use crate::common::small_config;

#[derive(Debug, Clone)]
enum Op {
    Append { sizes: Vec<usize>, seed: u8, ts_step: i64 },
    Read { pick: u64, max_bytes: usize, max_records: usize },
    FindTime { pick: i64 },
    Reopen { crash: bool },
    Retention { age_slack_ms: i64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (prop::collection::vec(0usize..120, 1..8), any::<u8>(), -50i64..400)
            .prop_map(|(sizes, seed, ts_step)| Op::Append { sizes, seed, ts_step }),
        4 => (any::<u64>(), 0usize..600, 0usize..12)
            .prop_map(|(pick, max_bytes, max_records)| Op::Read { pick, max_bytes, max_records }),
        1 => (-100i64..20_000).prop_map(|pick| Op::FindTime { pick }),
        1 => any::<bool>().prop_map(|crash| Op::Reopen { crash }),
        1 => (0i64..5000).prop_map(|age_slack_ms| Op::Retention { age_slack_ms }),
    ]
}

struct Model {
    /// (offset, timestamp, data) of every record ever appended.
    records: Vec<(u64, i64, Vec<u8>)>,
    earliest: u64,
    last_ts: i64,
}

fn run(ops: Vec<Op>, retention: Retention) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig { retention, ..small_config() };
    let mut log = Log::open(dir.path(), config.clone()).unwrap();
    let mut m = Model { records: Vec::new(), earliest: 0, last_ts: 0 };
    let mut clock = 1_000i64;
    for op in ops {
        match op {
            Op::Append { sizes, seed, ts_step } => {
                clock += ts_step;
                let batch: Vec<Vec<u8>> = sizes
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| (0..n).map(|j| seed.wrapping_add((i * 31 + j) as u8)).collect())
                    .collect();
                let a = log.append_at(&batch, clock).unwrap();
                let next = m.records.len() as u64;
                let ts = clock.max(m.last_ts);
                prop_assert_eq!(a.base_offset, next);
                prop_assert_eq!(a.next_offset, next + batch.len() as u64);
                prop_assert_eq!(a.timestamp_ms, ts);
                m.last_ts = ts;
                for (i, data) in batch.into_iter().enumerate() {
                    m.records.push((next + i as u64, ts, data));
                }
            }
            Op::Read { pick, max_bytes, max_records } => {
                let latest = m.records.len() as u64;
                let offset = pick % (latest + 4);
                match log.read(offset, max_bytes, max_records) {
                    Ok(got) => {
                        prop_assert!(offset >= m.earliest && offset <= latest, "read at {offset} should fail");
                        let want = &m.records[offset as usize..];
                        if !want.is_empty() {
                            prop_assert!(!got.is_empty(), "a read where records exist returns at least one");
                        }
                        prop_assert!(got.len() <= max_records.max(1));
                        let bytes: usize = got.iter().map(|r| r.data.len()).sum();
                        prop_assert!(
                            got.len() <= 1 || bytes <= max_bytes,
                            "{bytes} bytes over budget {max_bytes}: offset {offset} got {:?}",
                            got.iter().map(|r| (r.offset, r.data.len())).collect::<Vec<_>>()
                        );
                        for (r, (o, ts, data)) in got.iter().zip(want) {
                            prop_assert_eq!(r.offset, *o);
                            prop_assert_eq!(r.timestamp_ms, *ts);
                            prop_assert_eq!(r.data.as_ref(), data.as_slice());
                        }
                    }
                    Err(LogError::OffsetBelowEarliest { offset: o, earliest }) => {
                        prop_assert_eq!((o, earliest), (offset, m.earliest));
                        prop_assert!(offset < m.earliest);
                    }
                    Err(LogError::OffsetBeyondLatest { offset: o, latest: l }) => {
                        prop_assert_eq!((o, l), (offset, latest));
                        prop_assert!(offset > latest);
                    }
                    Err(e) => prop_assert!(false, "unexpected error {e}"),
                }
            }
            Op::FindTime { pick } => {
                let want = m.records[m.earliest as usize..].iter().find(|r| r.1 >= pick).map(|r| r.0);
                prop_assert_eq!(log.offset_for_timestamp(pick).unwrap(), want, "timestamp {}", pick);
            }
            Op::Reopen { crash } => {
                if crash {
                    log.close_as_if_crashed();
                } else {
                    log.close().unwrap();
                }
                drop(log);
                let (l, report) = Log::open_with_report(dir.path(), config.clone()).unwrap();
                prop_assert_eq!(report.clean, !crash);
                prop_assert_eq!(report.truncated_bytes, 0);
                log = l;
                prop_assert_eq!(log.latest_offset(), m.records.len() as u64);
                prop_assert_eq!(log.earliest_offset(), m.earliest);
            }
            Op::Retention { age_slack_ms } => {
                let now = m.last_ts + age_slack_ms;
                let before = log.size_bytes();
                let report = log.enforce_retention(now).unwrap();
                let earliest = log.earliest_offset();
                prop_assert_eq!(report.earliest_offset, earliest);
                prop_assert!(earliest >= m.earliest);
                if !m.records.is_empty() {
                    // The active segment, which holds the newest record, is never deleted.
                    prop_assert!(earliest < m.records.len() as u64);
                }
                for r in &m.records[m.earliest as usize..earliest as usize] {
                    let by_age = retention.age_ms.is_some_and(|age| now - r.1 > age as i64);
                    prop_assert!(by_age || retention.bytes.is_some(), "record {} deleted by no rule", r.0);
                }
                if let Some(limit) = retention.bytes
                    && retention.age_ms.is_none()
                {
                    prop_assert!(log.size_bytes() >= limit.min(before), "deleted below the byte retention");
                }
                m.earliest = earliest;
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(
        ops in prop::collection::vec(op(), 1..80),
        age in prop::option::of(100u64..3000),
        bytes in prop::option::of(500u64..4000),
    ) {
        run(ops, Retention { age_ms: age, bytes })?;
    }
}
