//! The short soak CI runs: the same harness as `scripts/soak` (the `soak` example), 3 SIGKILL
//! cycles of the real `herald serve` under publish, consume, nack, dead-letter and replay load.
//! Lost 0 and unexpected 0; duplicates are allowed (at-least-once) and printed.

#[path = "../examples/soak/harness.rs"]
mod harness;

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_kill_cycles_lose_nothing_and_invent_nothing() {
    let mut opts = harness::Options::new(env!("CARGO_BIN_EXE_herald").into());
    opts.cycles = 3;
    opts.rate = 200;
    opts.drain_timeout = Duration::from_secs(30);
    opts.verbose = true;
    let summary = harness::run(opts).await.unwrap_or_else(|e| panic!("the soak could not run: {e}"));
    println!("{}", summary.json());
    assert!(summary.ok(), "{}\n{}", summary.json(), summary.details);
    assert_eq!(summary.cycles, 3);
    assert!(summary.acknowledged >= 1000, "too little load to mean anything: {}", summary.json());
    assert!(
        summary.dead_lettered > 0 && summary.replayed > 0,
        "no dead letter went through a replay: {}",
        summary.json()
    );
}
