//! A 3-node JetStream cluster on loopback, streams with 3 replicas: publish and consume under
//! load, SIGKILL the stream leader, keep going, restart it. Every acknowledged publish is
//! consumed (lost = 0); the consumer runtime rides through the reconnects; duplicates are
//! counted and printed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald::{CancellationToken, Event, HandlerError, ProducerConfig, SubscribeOptions, TopicConfig};

use crate::server::{Node, free_port, note, wait_for_jetstream};

struct Cluster {
    _dir: tempfile::TempDir,
    nodes: Vec<Node>,
}

impl Cluster {
    async fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<u16> = ports.iter().map(|p| p.1).collect();
        let mut nodes: Vec<Node> = ports
            .iter()
            .enumerate()
            .map(|(i, (p, c))| Node::new(dir.path(), &format!("n{}", i + 1), *p, *c, &routes))
            .collect();
        for n in &mut nodes {
            n.start();
        }
        for n in &nodes {
            wait_for_jetstream(&n.url()).await;
        }
        Cluster { _dir: dir, nodes }
    }

    fn url(&self, query: &str) -> String {
        let hosts: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        format!("nats://{}?{query}", hosts.join(","))
    }

    fn node(&mut self, name: &str) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.name == name).unwrap_or_else(|| panic!("no node {name}"))
    }
}

/// The current leader of a stream, by server name (asked of any node that answers).
async fn stream_leader(cluster: &Cluster, stream: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for n in &cluster.nodes {
            let Ok(client) = async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_secs(1))
                .connect(format!("127.0.0.1:{}", n.port))
                .await
            else {
                continue;
            };
            let js = async_nats::jetstream::new(client);
            if let Ok(mut s) = js.get_stream(stream).await
                && let Ok(info) = s.info().await
                && let Some(leader) = info.cluster.as_ref().and_then(|c| c.leader.clone())
            {
                assert_eq!(info.config.num_replicas, 3, "the stream has 3 replicas");
                return leader;
            }
        }
        assert!(Instant::now() < deadline, "no leader for {stream} within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_leader_killed_under_load_loses_no_acknowledged_event() {
    const BATCH: u64 = 20;
    let mut cluster = Cluster::start().await;
    let client = herald::connect(&cluster.url("replicas=3")).await.unwrap();
    client.ensure_topic("load", TopicConfig::with_partitions(4)).await.unwrap();

    // The group is created with a short ack timeout and session (settings are the group's):
    // what a killed node was delivering comes back within seconds.
    let setup = client
        .backend()
        .subscribe(
            "g",
            SubscribeOptions {
                topics: vec!["load".into()],
                ack_timeout: Duration::from_secs(3),
                session_timeout: Duration::from_secs(4),
                ..SubscribeOptions::default()
            },
        )
        .await
        .unwrap();
    setup.close().await.unwrap();

    // The consumer: counts every handling of every event.
    let handled: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let stop = CancellationToken::new();
    let consumer = client.consumer("g").subscribe(["load"]).concurrency(8).handler({
        let handled = handled.clone();
        move |e: Event| {
            let handled = handled.clone();
            async move {
                let n: u64 = std::str::from_utf8(e.data()).unwrap().parse().unwrap();
                *handled.lock().unwrap().entry(n).or_insert(0) += 1;
                Ok::<(), HandlerError>(())
            }
        }
    });
    let run = tokio::spawn(consumer.run(stop.clone()));

    // The producer: batches of 20 with keys, one every few ms, until told to stop; what was
    // acknowledged is remembered.
    let acked: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let failed = Arc::new(AtomicU64::new(0));
    let stop_publishing = CancellationToken::new();
    let producer = client.producer_with(ProducerConfig { retry_for: Duration::from_secs(20), ..Default::default() });
    let publishing = tokio::spawn({
        let (acked, failed, stop_publishing) = (acked.clone(), failed.clone(), stop_publishing.clone());
        async move {
            let mut b = 0;
            while !stop_publishing.is_cancelled() {
                let events: Vec<Event> = (b * BATCH..(b + 1) * BATCH)
                    .map(|n| {
                        Event::builder("load.test")
                            .key(format!("k{}", n % 50))
                            .data(n.to_string().into_bytes(), "text/plain")
                            .build()
                            .unwrap()
                    })
                    .collect();
                match producer.publish_all("load", events).await {
                    Ok(_) => acked.lock().unwrap().extend(b * BATCH..(b + 1) * BATCH),
                    Err(e) => {
                        note(&format!("batch {b} not acknowledged: {e}"));
                        failed.fetch_add(BATCH, Ordering::Relaxed);
                    }
                }
                b += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            b * BATCH
        }
    });

    let started = Instant::now();
    // More acknowledged publishes than now, within 30 s.
    let progress = |more: usize| {
        let acked = acked.clone();
        async move {
            let n = acked.lock().unwrap().len() + more;
            let deadline = Instant::now() + Duration::from_secs(30);
            while acked.lock().unwrap().len() < n {
                assert!(Instant::now() < deadline, "publishing stalled below {n}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    progress(500).await;
    let leader = stream_leader(&cluster, "HERALD_load").await;
    note(&format!("killing the stream leader {leader} (SIGKILL) after {:?}", started.elapsed()));
    cluster.node(&leader).kill();
    let new_leader = stream_leader(&cluster, "HERALD_load").await;
    note(&format!("new stream leader {new_leader} after {:?}", started.elapsed()));
    assert_ne!(new_leader, leader);
    progress(500).await;
    note(&format!("restarting {leader} after {:?}", started.elapsed()));
    cluster.node(&leader).start();
    progress(500).await;
    stop_publishing.cancel();
    let published = publishing.await.unwrap();
    note(&format!("publishing done after {:?}", started.elapsed()));

    let acked: HashSet<u64> = acked.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let missing = {
            let h = handled.lock().unwrap();
            acked.iter().filter(|n| !h.contains_key(n)).count()
        };
        if missing == 0 {
            break;
        }
        if Instant::now() > deadline {
            let lag = client.backend().group_lag("g").await;
            panic!("lost: {missing} acknowledged events were never consumed; lag {lag:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    let report = run.await.unwrap().unwrap();
    let h = handled.lock().unwrap();
    let duplicates: u64 = h.values().map(|c| u64::from(c - 1)).sum();
    note(&format!(
        "acknowledged {} (not acknowledged {}), consumed {} distinct, lost 0, duplicates {duplicates}, \
         runtime report {report:?}, {:?}",
        acked.len(),
        failed.load(Ordering::Relaxed),
        h.len(),
        started.elapsed()
    ));
    assert_eq!(acked.len() as u64 + failed.load(Ordering::Relaxed), published);
    assert!(acked.len() >= 1500);
}
