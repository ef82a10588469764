//! The Console in a real browser: headless Chromium driven over WebDriver against a spawned
//! `herald serve` holding data the test made (a topic with JSON and binary events, a consumer
//! group with dead letters of two reasons). Every page must render with no error in the
//! browser's console, show the numbers the JSON API answers, label its inputs and fit a narrow
//! window; a dead letter replayed from the UI must reach its group; the live tail must show a
//! new event within 2 s; a read-only principal logs in with its token and sees no control it
//! may not use. Screenshots of every page go to `target/tmp/console-screenshots/`.

mod browser;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use browser::{Browser, Herald};
use fantoccini::Locator;
use fantoccini::key::Key;
use herald::{Event, HandlerError, TopicConfig};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots")
}

/// `GET path`: the JSON body of a 2xx answer, or `None`.
async fn try_api(base: &str, token: Option<&str>, path: &str) -> Option<Value> {
    let mut req = reqwest::Client::new().get(format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.expect("an API request");
    if !res.status().is_success() {
        return None;
    }
    Some(res.json().await.expect("JSON"))
}

async fn api(base: &str, token: Option<&str>, path: &str) -> Value {
    try_api(base, token, path).await.unwrap_or_else(|| panic!("GET {path} failed"))
}

/// Fails on any error the browser logged, naming the page.
async fn no_console_errors(b: &Browser, page: &str) {
    let errors = b.console_errors().await;
    assert!(errors.is_empty(), "{page}: the browser logged errors: {errors:#?}");
}

/// Every input, select and textarea has a label; every button has a name.
async fn labelled(b: &Browser, page: &str) {
    let unlabelled =
        b.c.execute(
            "return [...document.querySelectorAll('input:not([type=hidden]),select,textarea')]
                .filter(i => !(i.labels && i.labels.length) && !i.getAttribute('aria-label'))
                .map(i => i.outerHTML)
                .concat([...document.querySelectorAll('button')]
                    .filter(x => !(x.textContent.trim() || x.getAttribute('aria-label')))
                    .map(x => x.outerHTML));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(unlabelled, Value::Array(vec![]), "{page}: controls without a label");
}

/// The page does not scroll sideways in a 360 px window (tables may scroll in their box).
async fn fits_narrow(b: &Browser, page: &str) {
    let overflow =
        b.c.execute("return document.documentElement.scrollWidth - document.documentElement.clientWidth;", vec![])
            .await
            .unwrap();
    assert!(overflow.as_i64().unwrap_or(1) <= 0, "{page}: wider than a 360 px window by {overflow}px");
}

/// Checks a page after it rendered: no console errors, labelled controls; then a screenshot.
async fn check_page(b: &Browser, page: &str) {
    no_console_errors(b, page).await;
    labelled(b, page).await;
    b.screenshot(&shots(), page).await;
}

async fn click(b: &Browser, css: &str) {
    b.find(css).await.click().await.unwrap_or_else(|e| panic!("clicking {css}: {e}"));
}

/// Confirms the open dialog.
async fn confirm(b: &Browser) {
    click(b, "dialog[open] [data-action=confirm]").await;
}

fn order(n: u64, ty: &str) -> Event {
    Event::builder(ty)
        .key(format!("customer-{}", n % 4))
        .json(&serde_json::json!({ "order": n, "amount": n * 10, "items": ["a", "b"] }))
        .build()
        .unwrap()
}

/// `billing` on `orders`: `order.declined` fails with "card declined", `order.invalid` with
/// "address invalid", while `failing` is set. Counts deliveries by event id.
fn billing(
    client: &herald::Client,
    failing: Arc<AtomicBool>,
    seen: Arc<Mutex<HashMap<String, u32>>>,
) -> herald::Consumer {
    client.consumer("billing").subscribe(["orders"]).handler(move |e: Event| {
        let (failing, seen) = (failing.clone(), seen.clone());
        async move {
            *seen.lock().unwrap().entry(e.id().to_owned()).or_default() += 1;
            if failing.load(Ordering::SeqCst) {
                match e.ty() {
                    "order.declined" => return Err(HandlerError::permanent("card declined")),
                    "order.invalid" => return Err(HandlerError::permanent("address invalid")),
                    _ => {}
                }
            }
            Ok::<(), HandlerError>(())
        }
    })
}

/// Waits (up to 20 s) until `f` holds.
async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Data for the pages: `orders` (3 partitions: 24 orders, 3 declined, 1 invalid), `blobs` (one
/// binary event), group `billing` with 4 dead letters of 2 reasons, its consumer running.
struct Data {
    client: herald::Client,
    failing: Arc<AtomicBool>,
    seen: Arc<Mutex<HashMap<String, u32>>>,
    stop: CancellationToken,
    declined: Vec<String>,
}

async fn make_data(server: &Herald, token: Option<&str>) -> Data {
    let client = herald::connect_with(
        &server.url,
        herald::ConnectOptions { token: token.map(str::to_owned), ..Default::default() },
    )
    .await
    .unwrap();
    client.ensure_topic("orders", TopicConfig::with_partitions(3)).await.unwrap();
    client.ensure_topic("blobs", TopicConfig::with_partitions(1)).await.unwrap();
    let mut events: Vec<Event> = (0..20).map(|n| order(n, "order.placed")).collect();
    let declined: Vec<Event> = (20..23).map(|n| order(n, "order.declined")).collect();
    let ids = declined.iter().map(|e| e.id().to_owned()).collect();
    events.extend(declined);
    events.push(order(23, "order.invalid"));
    client.producer().publish_all("orders", events).await.unwrap();
    let blob = Event::builder("blob.stored")
        .data([0u8, 1, 2, 3, 0xff, 0xfe, 0x80].repeat(5), "application/octet-stream")
        .build()
        .unwrap();
    client.producer().publish_all("blobs", vec![blob]).await.unwrap();
    let (failing, seen) = (Arc::new(AtomicBool::new(true)), Arc::<Mutex<HashMap<String, u32>>>::default());
    let stop = CancellationToken::new();
    tokio::spawn(billing(&client, failing.clone(), seen.clone()).run(stop.clone()));
    let base = server.http.clone();
    until("4 dead letters and no lag", async || {
        let r = try_api(&base, token, "/v1/groups/billing/dlq/reasons").await;
        let g = try_api(&base, token, "/v1/groups/billing").await;
        r.is_some_and(|r| r["total"] == 4) && g.is_some_and(|g| g["lag"] == 0)
    })
    .await;
    Data { client, failing, seen, stop, declined: ids }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_shows_what_the_api_says() {
    let server = Herald::start(&[]);
    let data = make_data(&server, None).await;
    let base = &server.http;
    let b = Browser::start(1280).await;
    // The check of the browser's log can fail: an error made on purpose is seen.
    b.c.goto(&format!("{base}/")).await.unwrap();
    b.c.execute("console.error('on purpose')", vec![]).await.unwrap();
    assert!(b.console_errors().await.iter().any(|e| e.contains("on purpose")), "console errors are not read");

    // Overview: the totals the API gives.
    b.open(&format!("{base}/#/overview"), "overview").await;
    let o = api(base, None, "/v1/console/overview").await;
    assert_eq!(b.text("[data-testid=topic-count]").await, o["totals"]["topics"].to_string());
    assert_eq!(b.text("[data-testid=group-count]").await, o["totals"]["groups"].to_string());
    assert_eq!(b.text("[data-testid=dead-letters]").await, "4");
    assert_eq!(b.text("[data-testid=total-lag]").await, "0");
    assert_eq!(b.text("[data-testid=status]").await, "ready");
    check_page(&b, "overview").await;

    // Topics: one row per topic, with its partitions and events.
    b.open(&format!("{base}/#/topics"), "topics").await;
    let row = b.text("tr[data-topic=orders]").await;
    assert!(row.contains("orders") && row.contains("24"), "{row}");
    assert_eq!(b.count("tr[data-topic]").await, 2, "orders and blobs (internal topics hidden)");
    assert_eq!(b.count("[data-action=delete-topic]").await, 2);
    check_page(&b, "topics").await;
    // Create one from the form, then delete it with the confirmation.
    let form = b.find("[data-testid=create-topic]").await;
    form.find(Locator::Css("input[name=name]")).await.unwrap().send_keys("scratch").await.unwrap();
    let parts = form.find(Locator::Css("input[name=partitions]")).await.unwrap();
    parts.clear().await.unwrap();
    parts.send_keys("2").await.unwrap();
    form.find(Locator::Css("button[type=submit]")).await.unwrap().click().await.unwrap();
    b.find("tr[data-topic=scratch]").await;
    assert_eq!(api(base, None, "/v1/topics/scratch").await["partitions"].as_array().unwrap().len(), 2);
    click(&b, "tr[data-topic=scratch] [data-action=delete-topic]").await;
    b.find("dialog[open] input").await.send_keys("scratch").await.unwrap();
    confirm(&b).await;
    until("scratch deleted", async || {
        let res = reqwest::get(format!("{base}/v1/topics/scratch")).await.unwrap();
        res.status() == 404
    })
    .await;
    b.until_js("the row gone", "return !document.querySelector('tr[data-topic=scratch]')", Duration::from_secs(5))
        .await;
    no_console_errors(&b, "topics after create and delete").await;

    // Browse: partition 0's events, one opened: JSON pretty-printed.
    b.open(&format!("{base}/#/topics/orders"), "browse").await;
    let p0 = api(base, None, "/v1/topics/orders/events?partition=0").await;
    let stored = p0["events"].as_array().unwrap();
    assert_eq!(b.count("[data-testid=events] tr[data-offset]").await, stored.len());
    click(&b, "[data-testid=events] tr[data-offset]").await;
    let shown = b.text("[data-testid=event-data]").await;
    let first = &stored[0]["event"]["data"];
    assert!(shown.contains(&format!("\"order\": {}", first["order"])), "{shown}");
    check_page(&b, "browse").await;
    // A binary event as hex.
    b.open(&format!("{base}/#/topics/blobs"), "browse").await;
    click(&b, "[data-testid=events] tr[data-offset]").await;
    let hex = b.text("[data-testid=event-data]").await.to_lowercase();
    assert!(hex.contains("00 01 02 03 ff fe 80"), "{hex}");
    no_console_errors(&b, "browse binary").await;

    // Event history of a dead-lettered event.
    let declined = &data.declined[0];
    let h = api(base, None, &format!("/v1/topics/orders/history?id={declined}")).await;
    let (p, off) = (h["partition"].as_u64().unwrap(), h["offset"].as_u64().unwrap());
    b.open(&format!("{base}/#/history/orders/{p}/{off}"), "history").await;
    b.find("section[data-group=billing] li[data-kind=delivered]").await;
    b.find("section[data-group=billing] li[data-kind=rejected]").await;
    b.find("section[data-group=billing] li[data-kind=dead_lettered]").await;
    assert_eq!(
        b.text("section[data-group=billing] [data-testid=state]").await,
        h["states"]["billing"].as_str().unwrap()
    );
    check_page(&b, "history").await;

    // Groups and one group: lag and offsets per partition as the API says.
    b.open(&format!("{base}/#/groups"), "groups").await;
    let row = b.text("tr[data-group=billing]").await;
    assert!(row.contains("billing") && row.contains('4'), "{row}");
    check_page(&b, "groups").await;
    b.open(&format!("{base}/#/groups/billing"), "group").await;
    let g = api(base, None, "/v1/groups/billing").await;
    for part in g["partitions"].as_array().unwrap() {
        let css =
            format!("tr[data-topic={}][data-partition=\"{}\"]", part["topic"].as_str().unwrap(), part["partition"]);
        for cell in ["committed", "latest", "lag"] {
            let shown = b.text(&format!("{css} [data-testid={cell}]")).await.replace(',', "");
            assert_eq!(shown, part[cell].to_string(), "{css} {cell}");
        }
    }
    b.find("svg[data-testid=lag-chart]").await;
    check_page(&b, "group").await;

    // Dead letters by reason; replay one reason from the UI: the group gets them again.
    b.open(&format!("{base}/#/dlq/billing"), "dlq").await;
    assert_eq!(b.text("tr[data-reason=\"card declined\"] [data-testid=count]").await, "3");
    assert_eq!(b.text("tr[data-reason=\"address invalid\"] [data-testid=count]").await, "1");
    b.until_js(
        "all 4 letters listed",
        "return document.querySelectorAll('tr[data-dlq-offset]').length === 4",
        Duration::from_secs(5),
    )
    .await;
    check_page(&b, "dlq").await;
    data.failing.store(false, Ordering::SeqCst);
    click(&b, "tr[data-reason=\"card declined\"] [data-action=replay-reason]").await;
    confirm(&b).await;
    let result = b.text("[data-testid=result]").await;
    assert!(result.contains('3'), "{result}");
    until("the replayed letters handled by billing", async || {
        let seen = data.seen.lock().unwrap();
        data.declined.iter().all(|id| seen.get(id).copied().unwrap_or(0) >= 2)
    })
    .await;
    let r = api(base, None, "/v1/groups/billing/dlq/reasons").await;
    assert_eq!(r["total"], 1, "{r}");
    no_console_errors(&b, "dlq after replay").await;

    // Live tail: an event published now shows within 2 s; a type filter hides others.
    b.open(&format!("{base}/#/tail/orders"), "tail").await;
    b.until_js(
        "the tail live",
        "const s = document.querySelector('[data-testid=tail-status]'); return !!s && s.textContent.includes('live')",
        Duration::from_secs(10),
    )
    .await;
    let fresh = order(100, "order.placed");
    let id = fresh.id().to_owned();
    data.client.producer().publish_all("orders", vec![fresh]).await.unwrap();
    let published = Instant::now();
    let js = format!("return document.querySelector('[data-testid=tail]').textContent.includes('{id}')");
    b.until_js("the new event in the tail", &js, Duration::from_secs(5)).await;
    let took = published.elapsed();
    assert!(took < Duration::from_secs(2), "the live tail showed the event after {took:?}");
    check_page(&b, "tail").await;
    b.find("#filter-type").await.send_keys(&format!("order.special{}", Key::Enter)).await.unwrap();
    b.until_js(
        "the filtered tail live",
        "const s = document.querySelector('[data-testid=tail-status]'); return s.textContent.includes('live')",
        Duration::from_secs(10),
    )
    .await;
    let (plain, special) = (order(101, "order.placed"), order(102, "order.special"));
    let (plain_id, special_id) = (plain.id().to_owned(), special.id().to_owned());
    data.client.producer().publish_all("orders", vec![plain, special]).await.unwrap();
    let js = format!("return document.querySelector('[data-testid=tail]').textContent.includes('{special_id}')");
    b.until_js("the matching event", &js, Duration::from_secs(5)).await;
    let text = b.text("[data-testid=tail]").await;
    assert!(!text.contains(&plain_id), "the type filter let order.placed through");
    no_console_errors(&b, "tail filtered").await;

    // A narrow window: nothing scrolls sideways.
    b.c.set_window_size(360, 800).await.unwrap();
    for (hash, page) in
        [("overview", "overview"), ("topics", "topics"), ("groups/billing", "group"), ("dlq/billing", "dlq")]
    {
        b.open(&format!("{base}/#/{hash}"), page).await;
        fits_narrow(&b, page).await;
        b.screenshot(&shots(), &format!("{page}-narrow")).await;
    }
    no_console_errors(&b, "narrow").await;
    data.stop.cancel();
}

/// What only a principal allowed to change things may see.
const MUTATING: &str = "[data-action=delete-topic], [data-testid=create-topic], [data-action=reset-group], \
                        [data-action=replay-all], [data-action=purge-all], [data-action=replay-reason], \
                        [data-action=purge-reason], [data-action=replay-selected], [data-action=purge-selected], \
                        [data-action=delete-schema], [data-testid=schema-form], [data-testid=schema-policy-form]";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_principal_logs_in_and_sees_no_mutating_controls() {
    let dir = tempfile::tempdir().unwrap();
    let admin = browser::token(dir.path(), "admin", &["*:*"]);
    let reader = browser::token(dir.path(), "reader", &["consume:*"]);
    let server = Herald::start_in(dir, &["--auth", "token"]);
    let data = make_data(&server, Some(&admin)).await;
    let base = &server.http;
    let b = Browser::start(1280).await;

    // No token: the login page. A wrong token is refused with the server's message.
    b.open(&format!("{base}/#/topics"), "login").await;
    b.find("#token").await.send_keys("not-a-token").await.unwrap();
    click(&b, "main[data-page=login] button[type=submit]").await;
    let alert = b.text("[role=alert]").await;
    assert!(!alert.is_empty(), "no message for a bad token");
    check_page(&b, "login").await;
    let field = b.find("#token").await;
    field.clear().await.unwrap();
    field.send_keys(&reader).await.unwrap();
    click(&b, "main[data-page=login] button[type=submit]").await;
    b.ready("topics").await;

    // The reader sees the topics and groups, and no control that would be refused.
    assert_eq!(b.count("tr[data-topic]").await, 2);
    assert_eq!(b.count(MUTATING).await, 0, "topics page");
    no_console_errors(&b, "topics as reader").await;
    b.screenshot(&shots(), "topics-read-only").await;
    b.open(&format!("{base}/#/groups/billing"), "group").await;
    assert_eq!(b.count(MUTATING).await, 0, "group page");
    b.open(&format!("{base}/#/dlq/billing"), "dlq").await;
    assert_eq!(b.count(MUTATING).await, 0, "dead letters page");
    b.open(&format!("{base}/#/topics/orders/schemas"), "schemas").await;
    assert_eq!(b.count(MUTATING).await, 0, "schemas page");
    assert_eq!(b.count("tr[data-dlq-offset]").await, 0, "the reader may not see dead letters");
    no_console_errors(&b, "group and dlq as reader").await;

    // The same pages as admin do show them (the check above can fail).
    b.c.execute("sessionStorage.clear()", vec![]).await.unwrap();
    b.open(&format!("{base}/#/topics"), "login").await;
    b.find("#token").await.send_keys(&admin).await.unwrap();
    click(&b, "main[data-page=login] button[type=submit]").await;
    b.ready("topics").await;
    assert!(b.count(MUTATING).await > 0, "admin sees the controls");
    b.open(&format!("{base}/#/dlq/billing"), "dlq").await;
    assert!(b.count("[data-action=replay-all]").await == 1);
    no_console_errors(&b, "as admin").await;
    data.stop.cancel();
}

/// POSTs `body` to `path`; the status and the answer.
async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let res = reqwest::Client::new().post(format!("{base}{path}")).json(&body).send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_are_shown_checked_and_registered_from_the_console() {
    let server = Herald::start(&[]);
    let base = &server.http;
    assert_eq!(post(base, "/v1/topics", serde_json::json!({ "name": "orders", "partitions": 1 })).await.0, 201);
    let v1 = serde_json::json!({ "type": "object", "properties": { "id": { "type": "string" } }, "required": ["id"] });
    let (s, _) =
        post(base, "/v1/topics/orders/schemas", serde_json::json!({ "type": "order.placed", "schema": v1 })).await;
    assert_eq!(s, 200);
    let b = Browser::start(1280).await;
    b.open(&format!("{base}/#/topics/orders/schemas"), "schemas").await;
    assert_eq!(b.text("tr[data-type='order.placed'] [data-testid=version]").await, "1");
    assert!(b.text("[data-testid=policy-unknown]").await.contains("allowed"));
    // The document, as the server renders it.
    click(&b, "tr[data-type='order.placed'] button[data-action=show-schema]").await;
    b.until_js(
        "the document",
        "return document.querySelector('pre[data-testid=schema-text]').dataset.version === '1'",
        Duration::from_secs(5),
    )
    .await;
    assert!(b.text("pre[data-testid=schema-text]").await.contains("\"required\""));
    check_page(&b, "schemas").await;

    // An incompatible version: check shows the rule and the path, and nothing is registered.
    let ty = b.find("#schema-type").await;
    ty.clear().await.unwrap();
    ty.send_keys("order.placed").await.unwrap();
    let json = b.find("#schema-json").await;
    json.clear().await.unwrap();
    json.send_keys(r#"{"type": "object", "properties": {"id": {"type": "string"}, "coupon": {"type": "string"}}, "required": ["id", "coupon"]}"#).await.unwrap();
    click(&b, "button[data-action=check-schema]").await;
    b.find("table[data-testid=schema-problems] tbody tr[data-rule]").await;
    let problem = b.text("table[data-testid=schema-problems] tbody tr[data-rule]").await;
    assert!(problem.contains("BACKWARD") && problem.contains("/required"), "{problem}");
    click(&b, "button[data-action=register-schema]").await;
    b.find("[data-testid=schema-outcome] p[data-compatible=false]").await;
    assert_eq!(api(base, None, "/v1/topics/orders/schemas/order.placed").await["version"], 1);

    // A compatible one is registered: version 2 in the table and in the API.
    let json = b.find("#schema-json").await;
    json.clear().await.unwrap();
    json.send_keys(r#"{"type": "object", "properties": {"id": {"type": "string"}, "coupon": {"type": "string"}}, "required": ["id"]}"#).await.unwrap();
    click(&b, "button[data-action=register-schema]").await;
    b.find("[data-testid=schema-outcome] p[data-version='2']").await;
    b.until_js(
        "version 2 listed",
        "return document.querySelector(\"tr[data-type='order.placed'] [data-testid=version]\").textContent === '2'",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(api(base, None, "/v1/topics/orders/schemas/order.placed").await["version"], 2);
    no_console_errors(&b, "schemas after check and register").await;
    fits_narrow(&b, "schemas").await;
}
