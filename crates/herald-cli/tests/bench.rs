//! `herald bench` end to end: the real binary against the embedded broker (`mem://`, `file://`),
//! an in-process server (`--serve`) and a spawned redis-server (`--peer redis`); its JSON lines
//! are checked for consistency (what was published was consumed, percentiles in order), and bad
//! options must fail with a message naming the option.

use std::process::{Command, Output};

use serde_json::Value;

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("bench")
        .args(args)
        .env_remove("HERALD_URL")
        .output()
        .expect("the herald binary runs")
}

/// Runs a bench that must succeed; returns its JSON lines.
fn bench_json(args: &[&str]) -> Vec<Value> {
    let out = bench(&[args, &["--json"]].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench {args:?} failed: {}\nstdout: {stdout}\nstderr: {stderr}", out.status);
    stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))).collect()
}

fn u(v: &Value, path: &str) -> u64 {
    path.split('.')
        .fold(v, |v, k| match k.parse::<usize>() {
            Ok(i) => &v[i],
            Err(_) => &v[k],
        })
        .as_u64()
        .unwrap_or_else(|| panic!("{path} is not a count in {v}"))
}

/// Percentiles are present and ordered: p50 ≤ p99 ≤ p99.9 ≤ max, over at least one sample.
fn check_percentiles(r: &Value, which: &str) {
    let p = &r[which];
    let [samples, p50, p99, p99_9, max] = ["samples", "p50", "p99", "p99_9", "max"]
        .map(|k| p[k].as_u64().unwrap_or_else(|| panic!("{which}.{k} missing in {r}")));
    assert!(samples > 0, "{which}: no samples in {r}");
    assert!(p50 <= p99 && p99 <= p99_9 && p99_9 <= max, "{which} out of order: {p}");
}

/// Every group consumed exactly what was published, and the run reported no error.
fn check_complete(r: &Value, groups: usize) {
    let published = u(r, "published.total");
    assert!(published > 0, "nothing published: {r}");
    assert!(u(r, "published.events") > 0, "nothing published inside the window: {r}");
    assert_eq!(r["groups"].as_array().map(Vec::len), Some(groups), "{r}");
    for g in 0..groups {
        assert_eq!(u(r, &format!("groups.{g}.total")), published, "group {g} did not consume everything: {r}");
        assert!(u(r, &format!("groups.{g}.events")) > 0, "group {g} consumed nothing inside the window: {r}");
    }
    assert_eq!(r["drained"], true, "{r}");
    if cfg!(target_os = "linux") {
        assert!(u(r, "peak_memory_bytes") > 1 << 20, "{r}");
    }
    assert_eq!(u(r, "errors"), 0, "{r}");
    check_percentiles(r, "publish_latency_us");
    if groups > 0 {
        check_percentiles(r, "e2e_latency_us");
    } else {
        assert!(r["e2e_latency_us"].is_null(), "{r}");
    }
}

#[test]
fn mem_at_max_rate_consumes_everything_it_publishes() {
    let lines = bench_json(&["--url", "mem://", "--duration", "2s", "--warmup", "0s", "--producers", "2"]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let r = &lines[0];
    assert_eq!(r["system"], "herald");
    assert_eq!(r["target"], "mem://");
    assert_eq!(r["durability"], "always");
    assert_eq!(u(r, "workload.partitions"), 8);
    assert_eq!(u(r, "workload.payload_bytes"), 100);
    check_complete(r, 1);
    // MB/s is payload bytes over the window.
    let events_per_s = r["published"]["events_per_s"].as_f64().unwrap();
    let mb_per_s = r["published"]["mb_per_s"].as_f64().unwrap();
    assert!((mb_per_s - events_per_s * 100.0 / 1e6).abs() < 0.01, "{r}");
}

#[test]
fn a_fixed_rate_is_not_exceeded_and_every_group_gets_everything() {
    let lines = bench_json(&[
        "--url",
        "mem://",
        "--duration",
        "2s",
        "--warmup",
        "0s",
        "--rate",
        "2000",
        "--batch",
        "20",
        "--groups",
        "2",
        "--consumers-per-group",
        "2",
        "--payload-bytes",
        "1024",
        "--durability",
        "interval",
    ]);
    let r = &lines[0];
    assert_eq!(r["durability"], "interval(100 ms)");
    check_complete(r, 2);
    // Paced producers cannot publish more than the rate asks for (a batch of slack per producer).
    let published = u(r, "published.total");
    assert!(published <= 2000 * 2 + 4 * 20, "published {published} at 2000/s over 2 s: {r}");
}

#[test]
fn file_urls_work_and_the_run_leaves_no_topic_behind() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let lines = bench_json(&[
        "--url",
        &url,
        "--duration",
        "1s",
        "--warmup",
        "0s",
        "--topics",
        "2",
        "--partitions",
        "1",
        "--keys",
        "0",
        "--durability",
        "os",
    ]);
    check_complete(&lines[0], 1);
    let topics = dir.path().join("topics");
    let left: Vec<_> =
        std::fs::read_dir(&topics).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "bench topics left in {}: {left:?}", topics.display());
}

#[test]
fn publish_only_with_no_groups() {
    let lines = bench_json(&["--url", "mem://", "--duration", "1s", "--warmup", "0s", "--groups", "0"]);
    check_complete(&lines[0], 0);
}

#[test]
fn serve_benchmarks_a_server_in_this_process() {
    let lines = bench_json(&["--serve", "--duration", "1s", "--warmup", "0s", "--producers", "2"]);
    let r = &lines[0];
    let target = r["target"].as_str().unwrap();
    assert!(target.starts_with("herald://127.0.0.1:") && target.ends_with("(--serve)"), "{r}");
    check_complete(r, 1);
}

#[test]
fn schema_runs_the_workload_without_then_with_validation() {
    for format in ["json", "protobuf"] {
        let lines = bench_json(&["--url", "mem://", "--duration", "1s", "--warmup", "0s", "--schema", format]);
        assert_eq!(lines.len(), 2, "{lines:?}");
        let systems: Vec<&str> = lines.iter().map(|r| r["system"].as_str().unwrap()).collect();
        assert!(systems[0].contains("no schema") && systems[1].contains("validated"), "{systems:?}");
        for r in &lines {
            check_complete(r, 1);
        }
    }
    let args = ["--url", "mem://", "--duration", "1s", "--warmup", "0s", "--schema", "json", "--validated-first"];
    let lines = bench_json(&args);
    let systems: Vec<&str> = lines.iter().map(|r| r["system"].as_str().unwrap()).collect();
    assert!(systems.len() == 2 && systems[0].contains("validated") && systems[1].contains("no schema"), "{systems:?}");
}

#[test]
fn bad_options_fail_with_a_message_naming_them() {
    for (args, needle) in [
        (&["--url", "mem://", "--payload-bytes", "0"][..], "--payload-bytes is 0"),
        (&["--url", "mem://", "--schema", "json", "--payload-bytes", "50"], "a json record takes at least"),
        (&["--url", "mem://", "--partitions", "0"], "--partitions is 0"),
        (&["--url", "mem://", "--validated-first"], "--schema"),
        (&["--url", "mem://", "--batch", "10001"], "--batch is 10001"),
        (&["--url", "ftp://example"], "unknown scheme \"ftp\""),
        (&["--url", "mem://", "--durability", "sometimes"], "invalid value 'sometimes' for '--durability"),
        (&["--url", "mem://", "--duration", "ten"], "is not a duration"),
        (&["--url", "mem://", "--redis-url", "redis://127.0.0.1:1"], "--peer"),
        (
            &["--url", "mem://", "--peer", "redis", "--redis-url", "redis://x:1", "--redis-appendfsync", "always"],
            "cannot be used with",
        ),
    ] {
        let out = bench(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "bench {args:?} succeeded");
        assert!(stderr.contains(needle), "bench {args:?}: expected {needle:?} in: {stderr}");
        assert!(!stderr.contains("panicked"), "bench {args:?} panicked: {stderr}");
    }
}

fn redis_server_on_path() -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|d| d.join("redis-server").is_file())
}

/// The port of a `redis://127.0.0.1:PORT (…)` target.
fn port_of(target: &str) -> u16 {
    let rest = target.strip_prefix("redis://127.0.0.1:").unwrap_or_else(|| panic!("unexpected target {target}"));
    rest.split(' ').next().unwrap().parse().unwrap()
}

fn assert_stopped(port: u16) {
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the redis-server bench started on port {port} still answers"
    );
}

#[test]
fn redis_peer_runs_the_same_workload() {
    if !redis_server_on_path() {
        eprintln!("skipped: redis-server is not on PATH (Debian: apt-get install redis-server)");
        return;
    }
    let lines = bench_json(&["--url", "mem://", "--duration", "1s", "--warmup", "0s", "--peer", "redis"]);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["system"], "herald");
    let r = &lines[1];
    assert_eq!(r["system"], "redis");
    assert_eq!(r["durability"], "none (appendonly no)");
    assert!(r["durability_note"].as_str().unwrap().contains("does no fsync"), "{r}");
    assert_eq!(r["workload"], lines[0]["workload"]);
    check_complete(r, 1);
    assert_stopped(port_of(r["target"].as_str().unwrap()));
}

#[test]
fn redis_peer_durability_can_be_matched() {
    if !redis_server_on_path() {
        eprintln!("skipped: redis-server is not on PATH (Debian: apt-get install redis-server)");
        return;
    }
    let lines = bench_json(&[
        "--url",
        "mem://",
        "--duration",
        "1s",
        "--warmup",
        "0s",
        "--groups",
        "0",
        "--peer",
        "redis",
        "--redis-appendfsync",
        "always",
    ]);
    let r = &lines[1];
    assert_eq!(r["durability"], "appendfsync always", "{r}");
    check_complete(r, 0);
    assert_stopped(port_of(r["target"].as_str().unwrap()));
}

#[test]
fn table_output_names_both_systems_and_the_redis_durability() {
    if !redis_server_on_path() {
        eprintln!("skipped: redis-server is not on PATH (Debian: apt-get install redis-server)");
        return;
    }
    let out = bench(&["--url", "mem://", "--duration", "500ms", "--warmup", "0s", "--peer", "redis"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let header = stdout.lines().find(|l| l.trim_start().starts_with("herald") && l.contains("redis")).unwrap_or("");
    assert!(!header.is_empty(), "no column header for both systems:\n{stdout}");
    for row in ["published events/s", "end-to-end latency p99.9 ms", "events consumed, group 0", "drained"] {
        assert!(stdout.lines().any(|l| l.starts_with(row)), "no row {row:?}:\n{stdout}");
    }
    assert!(stdout.contains("does no fsync"), "{stdout}");
}
