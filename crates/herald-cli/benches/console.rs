//! How long the Console's pages take to load with 1,000 topics and 100 groups, in headless
//! Chromium against a spawned `herald serve` (release build: `cargo bench -p herald-cli --bench
//! console`). Each load is a fresh navigation; the time is the browser's own, from the start of
//! the navigation to the page's `herald-ready` mark (data fetched and rendered). Prints the
//! median and the range of `LOADS` loads per page. The target (issue #12) is under 300 ms.
//! `CONSOLE_BENCH_DEBUG=1` also prints each load's navigation and resource timings.

#[path = "../tests/browser/mod.rs"]
mod browser;

use browser::{Browser, Herald};
use serde_json::json;

const TOPICS: usize = 1_000;
const GROUPS: usize = 100;
const LOADS: usize = 9;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let server = Herald::start(&[]);
    let http = reqwest::Client::new();
    let base = server.http.clone();
    for i in 0..TOPICS {
        let r = http
            .post(format!("{base}/v1/topics"))
            .json(&json!({ "name": format!("topic-{i:04}"), "partitions": 1 + (i % 4) }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "creating topic {i}: {}", r.status());
    }
    // A group is made by its first subscription (closed at once: the group stays).
    for i in 0..GROUPS {
        let url = format!("{base}/v1/groups/group-{i:03}/subscribe?topic=topic-{:04}&from=earliest", i * 7 % TOPICS);
        let r = http.get(url).send().await.unwrap();
        assert!(r.status().is_success(), "creating group {i}: {}", r.status());
        drop(r);
    }
    let b = Browser::start(1280).await;
    println!(
        "console page load, {TOPICS} topics and {GROUPS} groups, {LOADS} loads each (ms from navigation start to rendered)"
    );
    for (hash, page) in
        [("overview", "overview"), ("topics", "topics"), ("groups", "groups"), ("groups/group-050", "group")]
    {
        let mut ms = Vec::new();
        for _ in 0..LOADS {
            b.c.goto("about:blank").await.unwrap();
            b.open(&format!("{base}/#/{hash}"), page).await;
            let v = b
                .c
                .execute(&format!("return performance.getEntriesByName('herald-ready-{page}')[0].startTime"), vec![])
                .await
                .unwrap();
            let took = v.as_f64().expect("the page's herald-ready mark");
            if std::env::var_os("CONSOLE_BENCH_DEBUG").is_some() {
                let r = b
                    .c
                    .execute(
                        "const n = performance.getEntriesByType('navigation')[0]; return ['redirectStart','fetchStart','domainLookupStart','connectStart','connectEnd','requestStart','responseStart','responseEnd','unloadEventStart'].map(k => k + '=' + Math.round(n[k])).join(' ') + ' | ' + performance.getEntriesByType('resource').map(e => e.name.replace(location.origin, '') + ' ' + Math.round(e.startTime) + '+' + Math.round(e.duration)).join('; ')",
                        vec![],
                    )
                    .await
                    .unwrap();
                println!("    {page} {took:.1} ms: {}", r.as_str().unwrap_or_default());
            }
            ms.push(took);
        }
        if page == "topics" {
            assert_eq!(b.count("tr[data-topic]").await, TOPICS, "every topic rendered");
        }
        ms.sort_by(f64::total_cmp);
        println!("  {page:<9} median {:>6.1} ms   min {:>6.1}   max {:>6.1}", ms[LOADS / 2], ms[0], ms[LOADS - 1]);
    }
}
