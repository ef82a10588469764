//! The Grafana dashboard `docs/grafana/herald.json`: it has the shape Grafana imports (the JSON
//! model with a `DS_PROMETHEUS` datasource input), and every metric its queries name is served by
//! a real `herald serve`'s `GET /metrics` once a producer and a consumer runtime (over herald://)
//! have published, acked, retried and dead-lettered events.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald::{CancellationToken, Event, HandlerError, RetryPolicy, TopicConfig};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_herald");
const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/grafana/herald.json");
const DATASOURCE: &str = "${DS_PROMETHEUS}";
const PANEL_TYPES: &[&str] = &["timeseries", "stat", "gauge", "table", "bargauge", "row"];
const GRID_WIDTH: u64 = 24;

fn dashboard() -> Value {
    let text = std::fs::read_to_string(DASHBOARD).unwrap_or_else(|e| panic!("reading {DASHBOARD}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"))
}

/// Every panel, those inside (collapsed) rows included.
fn all_panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// The query of a template variable: a string, or the Prometheus editor's `{query: ...}`.
fn variable_query(v: &Value) -> Option<&str> {
    v["query"].as_str().or_else(|| v["query"]["query"].as_str())
}

/// Every PromQL text of the dashboard: the panels' targets and the template variables' queries.
fn exprs(d: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for p in all_panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                out.push(e.to_owned());
            }
        }
    }
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query"
            && let Some(q) = variable_query(v)
        {
            out.push(q.to_owned());
        }
    }
    out
}

/// A datasource given as the import input `${DS_PROMETHEUS}` of type prometheus.
fn is_our_datasource(ds: &Value) -> bool {
    ds["type"] == "prometheus" && ds["uid"] == DATASOURCE
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The expression without its string literals (each replaced by `""`, an unterminated one by a
/// lone `"`), so that label values are not taken for metric names.
fn without_strings(expr: &str) -> String {
    let mut out = String::new();
    let mut chars = expr.chars();
    while let Some(c) = chars.next() {
        if c == '"' || c == '\'' || c == '`' {
            out.push('"');
            while let Some(d) = chars.next() {
                if d == '\\' && c != '`' {
                    chars.next();
                } else if d == c {
                    out.push('"');
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Metric names (`herald_[a-z0-9_]+`, whole identifiers outside string literals) in a query.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let code = without_strings(expr);
    let mut names = BTreeSet::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("herald_").map(|i| from + i) {
        let before = code[..at].chars().next_back();
        let len = code[at..]
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(code.len() - at);
        let after = code[at + len..].chars().next();
        if !before.is_some_and(|c| is_ident(c) || c == ':' || c == '$')
            && !after.is_some_and(|c| is_ident(c) || c == ':')
        {
            names.insert(code[at..at + len].to_owned());
        }
        from = at + len;
    }
    names
}

/// Template variables a query refers to (`$name`, `${name}`, `${name:format}`, `[[name]]`),
/// Grafana's built-ins (`$__rate_interval`, ...) left out.
fn variables(expr: &str) -> BTreeSet<String> {
    let mut vars = BTreeSet::new();
    let take = |s: &str| s.chars().take_while(|&c| is_ident(c)).collect::<String>();
    for (i, _) in expr.match_indices('$') {
        let rest = &expr[i + 1..];
        let name = match rest.strip_prefix('{') {
            Some(inner) => take(inner),
            None => take(rest),
        };
        if !name.is_empty() && !name.starts_with("__") {
            vars.insert(name);
        }
    }
    for (i, _) in expr.match_indices("[[") {
        let name = take(&expr[i + 2..]);
        if !name.is_empty() && !name.starts_with("__") {
            vars.insert(name);
        }
    }
    vars
}

/// Brackets and quotes that do not pair up (a sure sign of broken PromQL), if any.
fn unbalanced(expr: &str) -> Option<String> {
    let code = without_strings(expr);
    if !code.matches('"').count().is_multiple_of(2) {
        return Some("an unterminated string".into());
    }
    let mut open = Vec::new();
    for c in code.chars() {
        match c {
            '(' | '[' | '{' => open.push(c),
            ')' | ']' | '}' => {
                let want = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                if open.pop() != Some(want) {
                    return Some(format!("a stray {c:?}"));
                }
            }
            _ => {}
        }
    }
    open.last().map(|c| format!("an unclosed {c:?}"))
}

/// A label matcher of a selector: label, operator, value (unquoted).
#[derive(Debug)]
struct Matcher {
    label: String,
    op: String,
    value: String,
}

/// The `name{matchers}` selectors of the metrics a query names.
fn selectors(expr: &str) -> Vec<(String, Vec<Matcher>)> {
    let mut out = Vec::new();
    for name in metric_names(expr) {
        for (at, _) in expr.match_indices(name.as_str()) {
            let before = expr[..at].chars().next_back();
            let Some(rest) = expr[at + name.len()..].strip_prefix('{') else { continue };
            if before.is_some_and(|c| is_ident(c) || c == ':') {
                continue;
            }
            out.push((name.clone(), matchers(rest)));
        }
    }
    out
}

/// Parses `label op "value", ...}` up to the closing brace.
fn matchers(s: &str) -> Vec<Matcher> {
    let mut out = Vec::new();
    let mut rest = s.trim_start();
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        if rest.is_empty() || rest.starts_with('}') {
            return out;
        }
        let label: String = rest.chars().take_while(|&c| is_ident(c)).collect();
        rest = rest[label.len()..].trim_start();
        let op = ["=~", "!~", "!=", "="].into_iter().find(|op| rest.starts_with(op)).unwrap_or_default();
        rest = rest[op.len()..].trim_start();
        let Some(quote) = rest.chars().next().filter(|c| matches!(c, '"' | '\'' | '`')) else { return out };
        let mut value = String::new();
        let mut chars = rest[1..].char_indices();
        let mut end = rest.len();
        while let Some((i, c)) = chars.next() {
            if c == '\\' && quote != '`' {
                value.extend(chars.next().map(|(_, c)| c));
            } else if c == quote {
                end = i + 2;
                break;
            } else {
                value.push(c);
            }
        }
        out.push(Matcher { label, op: op.to_owned(), value });
        rest = &rest[end.min(rest.len())..];
    }
}

/// What is wrong with the dashboard for a Grafana import; empty if nothing.
fn shape_problems(d: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut fail = |p: String| problems.push(p);

    for key in ["title", "uid"] {
        if d[key].as_str().is_none_or(|s| s.is_empty()) {
            fail(format!("`{key}` is not a non-empty string"));
        }
    }
    if !d["schemaVersion"].is_number() {
        fail("`schemaVersion` is not a number".into());
    }
    if d["panels"].as_array().is_none_or(|p| p.is_empty()) {
        fail("`panels` is not a non-empty array".into());
    }
    if !d["templating"]["list"].is_array() {
        fail("`templating.list` is not an array".into());
    }
    if !(d["time"]["from"].is_string() && d["time"]["to"].is_string()) {
        fail("`time` has no `from` and `to`".into());
    }
    let inputs: Vec<&Value> = d["__inputs"].as_array().into_iter().flatten().collect();
    let datasource_inputs: HashSet<&str> = inputs
        .iter()
        .filter(|i| i["type"] == "datasource" && i["pluginId"] == "prometheus")
        .filter_map(|i| i["name"].as_str())
        .collect();
    if !datasource_inputs.contains("DS_PROMETHEUS") {
        fail("`__inputs` has no prometheus datasource input named DS_PROMETHEUS".into());
    }

    let defined: HashSet<String> = d["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .map(str::to_owned)
        .collect();
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap_or("?");
        if v["name"].as_str().is_none_or(str::is_empty) || !v["type"].is_string() {
            fail(format!("template variable {name:?} has no name or type"));
        }
        if v["type"] == "query" {
            if !is_our_datasource(&v["datasource"]) {
                fail(format!("template variable {name:?}: datasource is not {DATASOURCE}: {}", v["datasource"]));
            }
            if variable_query(v).is_none_or(str::is_empty) {
                fail(format!("template variable {name:?} has no query"));
            }
        }
    }

    let mut ids = HashSet::new();
    let mut boxes: Vec<(String, u64, u64, u64, u64)> = Vec::new();
    for p in all_panels(d) {
        let title = p["title"].as_str().unwrap_or_default();
        let what = format!("panel {} {title:?}", p["id"]);
        match p["id"].as_u64() {
            Some(id) if !ids.insert(id) => fail(format!("{what}: id {id} is used twice")),
            Some(_) => {}
            None => fail(format!("{what}: `id` is not a number")),
        }
        let ty = p["type"].as_str().unwrap_or_default();
        if !PANEL_TYPES.contains(&ty) {
            fail(format!("{what}: type {ty:?} is not one of {PANEL_TYPES:?}"));
        }
        if title.is_empty() {
            fail(format!("{what}: no title"));
        }
        let g = &p["gridPos"];
        match (g["x"].as_u64(), g["y"].as_u64(), g["w"].as_u64(), g["h"].as_u64()) {
            (Some(x), Some(y), Some(w), Some(h)) => {
                if w == 0 || h == 0 || x + w > GRID_WIDTH {
                    fail(format!("{what}: gridPos {g} does not fit the {GRID_WIDTH} columns"));
                }
                // Panels of collapsed rows are laid out when the row opens; only the visible ones share the grid.
                if p["collapsed"] != true {
                    for (other, ox, oy, ow, oh) in &boxes {
                        if x < ox + ow && *ox < x + w && y < oy + oh && *oy < y + h {
                            fail(format!("{what}: gridPos {g} overlaps {other}"));
                        }
                    }
                    boxes.push((what.clone(), x, y, w, h));
                }
            }
            _ => fail(format!("{what}: gridPos {g} lacks a numeric x, y, w or h")),
        }
        if ty == "row" {
            continue;
        }
        if !is_our_datasource(&p["datasource"]) {
            fail(format!("{what}: datasource is not {DATASOURCE}: {}", p["datasource"]));
        }
        if p["fieldConfig"]["defaults"]["unit"].as_str().is_none_or(|u| u.is_empty()) {
            fail(format!("{what}: no unit in fieldConfig.defaults"));
        }
        let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or_default();
        if targets.is_empty() {
            fail(format!("{what}: no targets"));
        }
        let mut ref_ids = HashSet::new();
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            let ref_id = t["refId"].as_str().unwrap_or_default();
            if expr.trim().is_empty() || ref_id.is_empty() {
                fail(format!("{what}: a target lacks an expr or a refId: {t}"));
            }
            if !ref_ids.insert(ref_id) {
                fail(format!("{what}: refId {ref_id:?} is used twice"));
            }
            if !is_our_datasource(&t["datasource"]) {
                fail(format!("{what}: target {ref_id}: datasource is not {DATASOURCE}: {}", t["datasource"]));
            }
        }
    }

    for e in exprs(d) {
        for v in variables(&e) {
            if !defined.contains(&v) {
                fail(format!("${v} is not defined in templating.list (in {e:?})"));
            }
        }
        if let Some(why) = unbalanced(&e) {
            fail(format!("{why} in {e:?}"));
        }
    }
    problems
}

#[test]
fn the_dashboard_has_the_shape_grafana_imports() {
    let d = dashboard();
    let problems = shape_problems(&d);
    assert!(problems.is_empty(), "{DASHBOARD}:\n  {}", problems.join("\n  "));
    assert_eq!(d["uid"], "herald-overview");
    assert_eq!(d["title"], "Herald");
    assert_eq!(d["time"]["from"], "now-1h");
    assert_eq!(d["refresh"], "10s");
    let vars: BTreeSet<&str> =
        d["templating"]["list"].as_array().unwrap().iter().filter_map(|v| v["name"].as_str()).collect();
    assert!(vars.contains("group") && vars.contains("topic"), "{vars:?}");
}

/// The checks above fail on the mistakes they are for.
/// One way to break a dashboard.
type Breakage = Box<dyn Fn(&mut Value)>;

#[test]
fn the_shape_check_catches_broken_dashboards() {
    let good = dashboard();
    let breakages: Vec<(&str, Breakage)> = vec![
        ("no title", Box::new(|d| d["title"] = json!(""))),
        ("schemaVersion a string", Box::new(|d| d["schemaVersion"] = json!("39"))),
        ("no datasource input", Box::new(|d| d["__inputs"] = json!([]))),
        ("a duplicate id", Box::new(|d| d["panels"][2]["id"] = d["panels"][1]["id"].clone())),
        ("an unknown type", Box::new(|d| d["panels"][1]["type"] = json!("graph3d"))),
        ("too wide", Box::new(|d| d["panels"][1]["gridPos"]["w"] = json!(30))),
        ("overlapping", Box::new(|d| d["panels"][2]["gridPos"] = d["panels"][1]["gridPos"].clone())),
        ("an empty expr", Box::new(|d| d["panels"][1]["targets"][0]["expr"] = json!(" "))),
        ("no targets", Box::new(|d| d["panels"][1]["targets"] = json!([]))),
        ("a fixed datasource", Box::new(|d| d["panels"][1]["datasource"]["uid"] = json!("P1809F7CD0C75ACF3"))),
        (
            "an undefined variable",
            Box::new(|d| d["panels"][1]["targets"][0]["expr"] = json!("herald_group_lag{group=~\"$grup\"}")),
        ),
        (
            "unbalanced PromQL",
            Box::new(|d| d["panels"][1]["targets"][0]["expr"] = json!("sum(rate(herald_topics[5m])")),
        ),
        (
            "an unterminated string",
            Box::new(|d| d["panels"][1]["targets"][0]["expr"] = json!("herald_group_lag{group=\"billing}")),
        ),
    ];
    for (what, breaks) in breakages {
        let mut d = good.clone();
        breaks(&mut d);
        assert!(!shape_problems(&d).is_empty(), "the shape check let {what} through");
    }
    assert_eq!(
        variables("x{a=~\"$group\", b=\"${topic:regex}\"}[$__rate_interval] [[g2]]"),
        ["g2", "group", "topic"].map(String::from).into()
    );
    assert_eq!(
        metric_names(r#"sum by (le) (rate(herald_a_bucket{job="herald_not_a_metric"}[5m])) / xherald_b + herald_c"#),
        ["herald_a_bucket", "herald_c"].map(String::from).into()
    );
}

/// One sample line of the Prometheus text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scrape of `/metrics`: the samples and the `# TYPE` of each family.
struct Scrape {
    samples: Vec<Sample>,
    types: HashMap<String, String>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut samples = Vec::new();
        let mut types = HashMap::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(t) = line.strip_prefix("# TYPE ") {
                let mut w = t.split_whitespace();
                if let (Some(name), Some(kind)) = (w.next(), w.next()) {
                    types.insert(name.to_owned(), kind.to_owned());
                }
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let name: String = line.chars().take_while(|&c| is_ident(c) || c == ':').collect();
            let mut rest = &line[name.len()..];
            let mut labels = BTreeMap::new();
            if let Some(inner) = rest.strip_prefix('{') {
                for m in matchers(inner) {
                    labels.insert(m.label, m.value);
                }
                rest = line.rfind('}').map_or("", |i| &line[i + 1..]);
            }
            let value = rest.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
            samples.push(Sample { name, labels, value });
        }
        Scrape { samples, types }
    }

    /// The family a series name belongs to: a histogram's `_bucket`, `_sum` and `_count` are
    /// the histogram's.
    fn family<'a>(&self, name: &'a str) -> &'a str {
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix)
                && self.types.get(base).is_some_and(|t| t == "histogram" || (t == "summary" && suffix != "_bucket"))
            {
                return base;
            }
        }
        name
    }

    /// Series names the dashboard uses that have no sample here. A series name, not just a
    /// family: a query over a histogram must name its `_bucket`, `_sum` or `_count` series.
    fn missing<'a>(&self, used: impl IntoIterator<Item = &'a String>) -> Vec<String> {
        let served: HashSet<&str> = self.samples.iter().map(|s| s.name.as_str()).collect();
        used.into_iter().filter(|n| !served.contains(n.as_str())).cloned().collect()
    }

    /// Label matchers no sample of their series satisfies in name (any matcher) or in value
    /// (a plain `label="value"`).
    fn unmatched(&self, selectors: &[(String, Vec<Matcher>)]) -> Vec<String> {
        let mut out = Vec::new();
        for (name, matchers) in selectors {
            let series: Vec<&Sample> = self.samples.iter().filter(|s| &s.name == name).collect();
            for m in matchers {
                let ok = if m.op == "=" && !m.value.contains('$') {
                    series.iter().any(|s| s.labels.get(&m.label) == Some(&m.value))
                } else {
                    series.iter().any(|s| s.labels.contains_key(&m.label))
                };
                if !ok {
                    out.push(format!("{name}{{{}{}{:?}}}", m.label, m.op, m.value));
                }
            }
        }
        out
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
            .map(|s| s.value)
            .sum()
    }
}

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `herald serve` (anonymous, loopback) on `dir`; returns it, its HTTP address and its herald:// URL.
fn serve(dir: &std::path::Path) -> (Serve, String, String) {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("HERALD_") || k.starts_with("OTEL_") {
            c.env_remove(k);
        }
    }
    let mut child = c
        .args(["serve", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("HERALD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning herald serve");
    let stdout = child.stdout.take().unwrap();
    let server = Serve(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(20)).expect("herald serve printed its listening line");
    let addr = |scheme: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(scheme))
            .unwrap_or_else(|| panic!("no {scheme} address in {line:?}"))
            .to_owned()
    };
    let (http, grpc) = (addr("http://"), addr("grpc://"));
    (server, http, format!("herald://{grpc}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_is_served() {
    let d = dashboard();
    let exprs = exprs(&d);
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    assert!(!used.is_empty(), "no herald_* metric name in the queries of {DASHBOARD}");
    let used_selectors: Vec<_> = exprs.iter().flat_map(|e| selectors(e)).collect();

    let dir = tempfile::tempdir().unwrap();
    let (_server, http, url) = serve(dir.path());

    // Traffic over herald://: three events published; two are acked, one always fails: a nack,
    // then (two attempts) a reject into the group's DLQ.
    let client = herald::connect(&url).await.unwrap();
    client.ensure_topic("orders", TopicConfig::with_partitions(2)).await.unwrap();
    let producer = client.producer();
    for id in ["good-1", "good-2", "poison"] {
        producer.publish("orders", Event::builder("order.created").key(id).id(id).build().unwrap()).await.unwrap();
    }
    let handled: Arc<Mutex<Vec<String>>> = Arc::default();
    let retry =
        RetryPolicy { max_attempts: 2, backoff_base_ms: 10, backoff_factor: 1.0, backoff_max_ms: 10, jitter: 0.0 };
    let stop = CancellationToken::new();
    let consumer = client.consumer("billing").subscribe(["orders"]).retry(retry).handler({
        let handled = handled.clone();
        move |e: Event| {
            let handled = handled.clone();
            async move {
                handled.lock().unwrap().push(e.id().to_owned());
                if e.id() == "poison" { Err(HandlerError::retryable("card declined")) } else { Ok(()) }
            }
        }
    });
    let run = tokio::spawn(consumer.run(stop.clone()));

    // Scrape until every name is served and the traffic shows (acks, a nack, a reject, the dead letter).
    let http_client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let metrics_url = format!("http://{http}/metrics");
    let deadline = Instant::now() + Duration::from_secs(20);
    let (scrape, missing, traffic) = loop {
        let text = match http_client.get(&metrics_url).send().await {
            Ok(r) if r.status().is_success() => r.text().await.unwrap_or_default(),
            Ok(r) => panic!("GET {metrics_url}: {}", r.status()),
            Err(_) => String::new(),
        };
        let scrape = Scrape::parse(&text);
        let missing = scrape.missing(&used);
        let settled = |kind| scrape.value("herald_server_settled_events_total", &[("kind", kind), ("code", "ok")]);
        let traffic = [
            ("acks", settled("ack") >= 2.0),
            ("a nack", settled("nack") >= 1.0),
            ("a reject", settled("reject") >= 1.0),
            ("a dead letter held", scrape.value("herald_group_dead_letters", &[("group", "billing")]) >= 1.0),
            ("handler durations", scrape.value("herald_server_handler_duration_seconds_count", &[]) >= 4.0),
        ];
        let traffic: Vec<&str> = traffic.iter().filter(|(_, seen)| !seen).map(|(what, _)| *what).collect();
        if (missing.is_empty() && traffic.is_empty()) || Instant::now() >= deadline {
            break (scrape, missing, traffic);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), run).await;

    let families: BTreeSet<&str> = used.iter().map(|n| scrape.family(n)).collect();
    println!("the dashboard queries {} metric families: {families:?}", families.len());
    assert!(
        traffic.is_empty(),
        "after 20 s, /metrics still does not show {traffic:?} (handled: {:?})",
        handled.lock().unwrap()
    );
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics herald serve does not serve: {missing:?} (served: {:?})",
        scrape.samples.iter().map(|s| s.name.as_str()).collect::<BTreeSet<_>>()
    );
    let unmatched = scrape.unmatched(&used_selectors);
    assert!(unmatched.is_empty(), "label matchers of the dashboard no served series has: {unmatched:?}");

    // The check fails on a misspelled name, a bare histogram family and a wrong label.
    let wrong: BTreeSet<String> =
        ["herald_group_lagg", "herald_server_handler_duration_seconds"].map(String::from).into();
    assert_eq!(scrape.missing(&wrong), Vec::from_iter(wrong.iter().cloned()));
    assert_eq!(
        scrape.unmatched(&selectors(r#"rate(herald_server_handler_duration_seconds_bucket{kind="ack"}[5m])"#)).len(),
        1
    );
}
