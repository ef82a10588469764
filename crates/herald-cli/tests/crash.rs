//! `herald serve` killed under load: the real binary is SIGKILLed while SDK producers publish to
//! it over `herald://` and a consumer group reads, then started again on the same port and data
//! directory, several times. Afterwards every publish the server acknowledged must be consumed,
//! by the group that ran through the crashes and by a new group that reads everything: lost = 0.
//! Duplicates (redeliveries after a crash) are allowed, counted and printed.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald::{CancellationToken, Client, Event, HandlerError, ProducerConfig, TopicConfig};

const PRODUCERS: usize = 4;
const BATCH: usize = 20;
const CYCLES: usize = 3;
const TOPIC: &str = "crash";

/// A `herald serve` child process; killed when dropped.
struct ServerProcess {
    child: Child,
}

impl ServerProcess {
    /// Starts the binary on `port` and waits for its "herald listening" line.
    fn start(data_dir: &Path, port: u16, log: &Path) -> ServerProcess {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let log_file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
            let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
                .args(["serve", "--data-dir"])
                .arg(data_dir)
                .args(["--http", "127.0.0.1:0", "--grpc", &format!("127.0.0.1:{port}")])
                .env("HERALD_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::from(log_file))
                .spawn()
                .expect("spawn herald serve");
            let stdout = child.stdout.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            // Reads the first line, then drains stdout until the process ends.
            std::thread::spawn(move || {
                let mut lines = BufReader::new(stdout).lines();
                let _ = tx.send(lines.next());
                for _ in lines {}
            });
            match rx.recv_timeout(Duration::from_secs(15)) {
                Ok(Some(Ok(line))) if line.starts_with("herald listening:") => {
                    assert!(line.contains(&format!("grpc://127.0.0.1:{port}")), "{line}");
                    return ServerProcess { child };
                }
                other => {
                    // Most likely the port is not free again yet: try once more shortly.
                    let _ = child.kill();
                    let _ = child.wait();
                    assert!(
                        Instant::now() < deadline,
                        "herald serve did not start on port {port}: {other:?}; its log:\n{}",
                        std::fs::read_to_string(log).unwrap_or_default()
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }

    /// SIGKILL: no shutdown, no flush.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn event(producer: usize, n: usize) -> Event {
    let id = format!("p{producer}-{n}");
    Event::builder("crash.event")
        .source(format!("/crash/producer-{producer}"))
        .id(id.clone())
        .key(format!("k{}", n % 16))
        .data(id.into_bytes(), "text/plain")
        .build()
        .unwrap()
}

type Counts = Arc<Mutex<HashMap<String, u32>>>;

/// Runs a consumer in `group` that counts every event it handles by id.
fn count_consumer(
    client: &Client,
    group: &str,
) -> (Counts, CancellationToken, tokio::task::JoinHandle<herald::Result<herald::RunReport>>) {
    let counts: Counts = Arc::default();
    let stop = CancellationToken::new();
    let consumer = client.consumer(group).subscribe([TOPIC]).concurrency(8).handler({
        let counts = counts.clone();
        move |e: Event| {
            let counts = counts.clone();
            async move {
                *counts.lock().unwrap().entry(e.id().to_owned()).or_insert(0) += 1;
                Ok::<(), HandlerError>(())
            }
        }
    });
    let handle = tokio::spawn(consumer.run(stop.clone()));
    (counts, stop, handle)
}

/// Waits until `counts` holds every acknowledged id; returns the ids still missing at the deadline.
async fn wait_for_all(counts: &Counts, acked: &HashSet<String>, wait: Duration) -> Vec<String> {
    let deadline = Instant::now() + wait;
    loop {
        let missing: Vec<String> = {
            let c = counts.lock().unwrap();
            acked.iter().filter(|id| !c.contains_key(*id)).cloned().collect()
        };
        if missing.is_empty() || Instant::now() >= deadline {
            return missing;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn duplicates(counts: &Counts) -> u64 {
    counts.lock().unwrap().values().map(|n| u64::from(n - 1)).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_server_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let data: PathBuf = dir.path().join("data");
    let log = dir.path().join("server.log");
    let port = free_port();
    let url = format!("herald://127.0.0.1:{port}");
    let mut server = Some(ServerProcess::start(&data, port, &log));

    let admin = herald::connect(&url).await.unwrap();
    admin.ensure_topic(TOPIC, TopicConfig::with_partitions(4)).await.unwrap();

    // Producers, each with its own connection, publishing unique ids in batches and recording
    // which publishes the server acknowledged.
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let failed = Arc::new(Mutex::new(0u64));
    let stop_producers = CancellationToken::new();
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let client = herald::connect(&url).await.unwrap();
        let producer =
            client.producer_with(ProducerConfig { retry_for: Duration::from_secs(15), ..ProducerConfig::default() });
        let (acked, failed, stop) = (acked.clone(), failed.clone(), stop_producers.clone());
        producers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.is_cancelled() {
                let batch: Vec<usize> = (n..n + BATCH).collect();
                n += BATCH;
                let results =
                    futures::future::join_all(batch.iter().map(|&i| producer.publish(TOPIC, event(p, i)))).await;
                for (i, r) in batch.into_iter().zip(results) {
                    match r {
                        Ok(_) => {
                            acked.lock().unwrap().insert(format!("p{p}-{i}"));
                        }
                        Err(e) => {
                            assert!(e.is_retryable(), "publish failed for good: {e}");
                            *failed.lock().unwrap() += 1;
                        }
                    }
                }
            }
        }));
    }

    // A consumer group that runs through the crashes.
    let consumer_client = herald::connect(&url).await.unwrap();
    let (live, stop_live, live_run) = count_consumer(&consumer_client, "live");

    let acked_now = || acked.lock().unwrap().len();
    let progress = |what: String, from: usize| {
        let acked = acked.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(15);
            while acked.lock().unwrap().len() < from + 200 {
                assert!(Instant::now() < deadline, "no progress {what}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    for cycle in 1..=CYCLES {
        // Under load: the producers made progress since the (re)start.
        progress(format!("before kill {cycle}"), acked_now()).await;
        server.take().unwrap().kill();
        let at_kill = acked_now();
        server = Some(ServerProcess::start(&data, port, &log));
        progress(format!("after restart {cycle}"), at_kill).await;
    }
    stop_producers.cancel();
    for p in producers {
        p.await.unwrap();
    }
    let acked: HashSet<String> = acked.lock().unwrap().clone();
    let failed = *failed.lock().unwrap();

    // Every acknowledged event reaches the group that lived through the crashes…
    let missing_live = wait_for_all(&live, &acked, Duration::from_secs(20)).await;
    stop_live.cancel();
    live_run.await.unwrap().unwrap();
    // …and a group that starts after them and reads everything.
    let (drain, stop_drain, drain_run) = count_consumer(&consumer_client, "drain");
    let missing_drain = wait_for_all(&drain, &acked, Duration::from_secs(20)).await;
    stop_drain.cancel();
    drain_run.await.unwrap().unwrap();

    println!(
        "crash: {CYCLES} SIGKILLs; {} publishes acknowledged, {failed} failed; group live: lost {}, duplicates {}; \
         group drain: lost {}, duplicates {}",
        acked.len(),
        missing_live.len(),
        duplicates(&live),
        missing_drain.len(),
        duplicates(&drain),
    );
    let sample = |m: &[String]| m.iter().take(10).cloned().collect::<Vec<_>>();
    assert!(
        missing_live.is_empty(),
        "group live lost {} acknowledged events, e.g. {:?}",
        missing_live.len(),
        sample(&missing_live)
    );
    assert!(
        missing_drain.is_empty(),
        "group drain lost {} acknowledged events, e.g. {:?}",
        missing_drain.len(),
        sample(&missing_drain)
    );
    assert!(acked.len() >= CYCLES * 400, "too little load to mean anything: {}", acked.len());
}
