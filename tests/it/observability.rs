//! Metrics end to end (docs/adr/0035-metrics.md): `framegate dev` driven over HTTP, its
//! `/metrics` read back and checked by `promtool check metrics`, then scraped by a real
//! Prometheus server; the projector role serving its own `FRAMEGATE_METRICS_ADDR`; the alert
//! rules and scrape config in `deploy/` checked and unit-tested by promtool; and every metric
//! the dashboard and the rules name is one the exposition has.
//!
//! promtool and prometheus come from `scripts/install-prometheus.sh` (which `scripts/test.sh`
//! runs), found on PATH or at `FRAMEGATE_TEST_PROMTOOL` / `FRAMEGATE_TEST_PROMETHEUS`.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Dev, PATIENCE};
use framegate_commands::testing::TestDatabase;
use reqwest::StatusCode;
use serde_json::{json, Value};

const TOKEN: &str = "a-metrics-token-for-the-test-scraper";

fn tool(variable: &str, name: &str) -> PathBuf {
    let path = std::env::var_os(variable).map_or_else(|| PathBuf::from(name), PathBuf::from);
    let runs = Command::new(&path)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    assert!(
        runs,
        "{name} cannot be run: run scripts/install-prometheus.sh or set {variable}"
    );
    path
}

fn promtool() -> PathBuf {
    tool("FRAMEGATE_TEST_PROMTOOL", "promtool")
}

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port()
}

/// Runs promtool with `args` (and `stdin`), asserting success with its output in the message.
fn promtool_ok(args: &[&OsStr], stdin: Option<&str>) {
    let mut child = Command::new(promtool())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The samples of an exposition: series name, labels, value.
fn samples(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let mut found = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let value: f64 = value.parse().expect("sample value");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let mut map = BTreeMap::new();
        let mut rest = labels;
        while let Some((key, after)) = rest.split_once("=\"") {
            // Label values here hold no escaped quotes (templates, names, codes).
            let (value, after) = after.split_once('"').expect("closing quote");
            map.insert(key.trim_start_matches(',').to_owned(), value.to_owned());
            rest = after;
        }
        found.push((name.to_owned(), map, value));
    }
    found
}

/// The value of the one sample of `name` whose labels include `labels`, if any.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(text)
        .into_iter()
        .filter(|(n, map, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| map.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, value)| value)
        .reduce(|a, b| a + b)
}

async fn scrape(client: &reqwest::Client, url: &str) -> String {
    let response = client
        .get(url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    response.text().await.expect("text")
}

/// Scrapes until `ready` holds for the text, or panics with the last one.
async fn scrape_until(
    client: &reqwest::Client,
    url: &str,
    what: &str,
    ready: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = scrape(client, url).await;
        if ready(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{what} never showed:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A child process killed when the test ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_moves_the_series_by_route_template_and_a_real_prometheus_scrapes_them() {
    let db = TestDatabase::unmigrated(2).await;
    let dev = Dev::start(
        &db,
        &[
            ("FRAMEGATE_SIMULATOR_LATENCY_MS", "300".to_owned()),
            ("FRAMEGATE_METRICS_TOKEN", TOKEN.to_owned()),
        ],
    );
    let client = reqwest::Client::new();
    dev.wait_ready(&client).await;
    let metrics_url = dev.url("/metrics");

    // The token is asked for.
    let anonymous = client.get(&metrics_url).send().await.expect("scrape");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let wrong = client
        .get(&metrics_url)
        .bearer_auth("not-the-token")
        .send()
        .await
        .expect("scrape");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    // A user requests a video and reads it; someone asks for a path that does not exist.
    let token = dev.sign_up(&client, "metrics@example.com").await;
    let requested = client
        .post(dev.url("/v1/videos"))
        .bearer_auth(&token)
        .json(&json!({
            "prompt": "a lighthouse at dusk",
            "provider": "simulator",
            "duration_seconds": 1,
            "aspect_ratio": "16:9",
            "resolution": "480p",
        }))
        .send()
        .await
        .expect("request video");
    assert_eq!(requested.status(), StatusCode::CREATED);
    let video: Value = requested.json().await.expect("json");
    let video_id = video["id"].as_str().expect("video id").to_owned();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let got: Value = client
            .get(dev.url(&format!("/v1/videos/{video_id}")))
            .bearer_auth(&token)
            .send()
            .await
            .expect("get video")
            .json()
            .await
            .expect("json");
        if got["status"] == "completed" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the video never completed: {got}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stray = uuid::Uuid::now_v7();
    let missing = client
        .get(dev.url(&format!("/nowhere/{stray}")))
        .send()
        .await
        .expect("missing");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    // Settlement captures the reservation after completion; its subscription then has
    // nothing left to handle.
    let text = scrape_until(&client, &metrics_url, "the capture", |text| {
        value(text, "framegate_credits_total", &[("movement", "captured")]) > Some(0.0)
            && value(
                text,
                "framegate_subscription_lag_events",
                &[("subscription", "process.credit_settlement")],
            ) == Some(0.0)
    })
    .await;

    // Requests by route template, never by path: no id of this test is in any label.
    let get_video = [
        ("route", "/v1/videos/{id}"),
        ("method", "GET"),
        ("status", "200"),
    ];
    assert!(
        value(
            &text,
            "framegate_http_request_duration_seconds_count",
            &get_video
        ) >= Some(1.0),
        "{text}"
    );
    assert!(
        value(
            &text,
            "framegate_http_request_duration_seconds_count",
            &[("route", "unmatched"), ("status", "404")]
        ) >= Some(1.0)
    );
    for id in [video_id.as_str(), &stray.to_string()] {
        assert!(!text.contains(id), "a raw id reached the exposition: {id}");
    }
    // The request, its command, its credits, its provider calls and its job.
    let checks: [(&str, &[(&str, &str)]); 7] = [
        (
            "framegate_commands_total",
            &[("aggregate", "CreditAccount+Video"), ("outcome", "ok")],
        ),
        ("framegate_credits_total", &[("movement", "reserved")]),
        ("framegate_credits_total", &[("movement", "granted")]),
        (
            "framegate_provider_calls_total",
            &[
                ("provider", "simulator"),
                ("operation", "submit"),
                ("outcome", "ok"),
            ],
        ),
        ("framegate_jobs_finished_total", &[("status", "completed")]),
        (
            "framegate_job_duration_seconds_count",
            &[("status", "completed")],
        ),
        (
            "framegate_job_queue_wait_seconds_count",
            &[("provider", "simulator")],
        ),
    ];
    for (name, labels) in checks {
        assert!(
            value(&text, name, labels) >= Some(1.0),
            "{name} {labels:?}:\n{text}"
        );
    }
    // Store-wide figures: every subscription's position, the jobs left in flight.
    assert_eq!(value(&text, "framegate_store_scrape_ok", &[]), Some(1.0));
    assert!(
        value(
            &text,
            "framegate_subscription_position",
            &[("subscription", "process.credit_settlement")]
        ) > Some(0.0)
    );
    assert_eq!(
        value(&text, "framegate_jobs_in_flight", &[("status", "queued")]),
        Some(0.0)
    );
    assert!(
        value(
            &text,
            "framegate_subscription_events_handled_total",
            &[("subscription", "process.credit_settlement")]
        ) >= Some(1.0)
    );

    // The exposition is one Prometheus accepts without lint findings.
    promtool_ok(&[OsStr::new("check"), OsStr::new("metrics")], Some(&text));

    // A real Prometheus scrapes it, with the token.
    let dir = tempfile::tempdir().expect("prometheus dir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).expect("token file");
    let target = dev.base.trim_start_matches("http://");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: framegate\n    \
             authorization:\n      type: Bearer\n      credentials_file: {}\n    \
             static_configs:\n      - targets: [\"{target}\"]\n",
            token_file.display()
        ),
    )
    .expect("config");
    promtool_ok(
        &[
            OsStr::new("check"),
            OsStr::new("config"),
            config.as_os_str(),
        ],
        None,
    );
    let port = free_port();
    let _prometheus = Killed(
        Command::new(tool("FRAMEGATE_TEST_PROMETHEUS", "prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    let query = |promql: &'static str| {
        let client = client.clone();
        async move {
            let response = client
                .get(format!("http://127.0.0.1:{port}/api/v1/query"))
                .query(&[("query", promql)])
                .send()
                .await
                .ok()?;
            let body: Value = response.json().await.ok()?;
            body["data"]["result"].as_array().cloned()
        }
    };
    let deadline = Instant::now() + PATIENCE;
    loop {
        let up = query("up{job=\"framegate\"}").await.unwrap_or_default();
        let completed = query("framegate_jobs_finished_total{status=\"completed\"}")
            .await
            .unwrap_or_default();
        if up.first().map(|s| s["value"][1].clone()) == Some(json!("1")) && !completed.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never saw the target up with its series: up={up:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projector_role_serves_metrics_on_its_own_address() {
    let db = TestDatabase::unmigrated(2).await;
    let port = free_port();
    let _projector = Killed(
        Command::new(env!("CARGO_BIN_EXE_framegate"))
            .arg("projector")
            .env("DATABASE_URL", db.url())
            .env("FRAMEGATE_METRICS_ADDR", format!("127.0.0.1:{port}"))
            .env("FRAMEGATE_METRICS_TOKEN", TOKEN)
            .env("FRAMEGATE_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start the projector"),
    );
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = Instant::now() + PATIENCE;
    while client.get(&url).bearer_auth(TOKEN).send().await.is_err() {
        assert!(Instant::now() < deadline, "the projector never listened");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let anonymous = client.get(&url).send().await.expect("scrape");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    // Its subscriptions register their checkpoints as they start.
    let text = scrape_until(&client, &url, "the projectors' checkpoints", |text| {
        samples(text).iter().any(|(name, labels, _)| {
            name == "framegate_subscription_position"
                && labels
                    .get("subscription")
                    .is_some_and(|s| s.starts_with("read_model."))
        })
    })
    .await;
    assert_eq!(value(&text, "framegate_store_scrape_ok", &[]), Some(1.0));
    promtool_ok(&[OsStr::new("check"), OsStr::new("metrics")], Some(&text));
}

#[test]
fn the_alert_rules_and_the_scrape_config_pass_promtool_and_their_own_tests() {
    promtool_ok(
        &[
            OsStr::new("check"),
            OsStr::new("config"),
            deploy("prometheus/prometheus.yml").as_os_str(),
        ],
        None,
    );
    promtool_ok(
        &[
            OsStr::new("check"),
            OsStr::new("rules"),
            deploy("prometheus/alerts.yml").as_os_str(),
        ],
        None,
    );
    promtool_ok(
        &[
            OsStr::new("test"),
            OsStr::new("rules"),
            deploy("prometheus/alerts.test.yml").as_os_str(),
        ],
        None,
    );
}

/// The series names an exposition can have: `# TYPE` lines, with a histogram's parts.
fn exposed_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').expect("TYPE line");
        if kind == "histogram" {
            for part in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{part}"));
            }
        } else {
            names.insert(name.to_owned());
        }
    }
    names
}

/// Every `framegate_...` identifier in `text`.
fn referenced_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("framegate_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        // Not part of a longer identifier (a path such as `deploy/framegate_x`, a label).
        let before = rest[..start].chars().last();
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

#[test]
fn every_metric_the_dashboard_and_the_alerts_name_is_one_the_exposition_has() {
    // A family is in the text only once it has a series: the registry's list of names is the
    // full set, and it must agree with what a text shows.
    let exposed: BTreeSet<String> = framegate_commands::metrics::names()
        .iter()
        .cloned()
        .collect();
    assert!(exposed.contains("framegate_subscription_lag_seconds"));
    framegate_commands::metrics::http_request("/probe", "GET", 200, Duration::from_millis(1));
    let shown = exposed_names(&framegate_commands::metrics::encode());
    assert!(shown.contains("framegate_http_request_duration_seconds_bucket"));
    assert!(
        shown.is_subset(&exposed),
        "{:?}",
        shown.difference(&exposed)
    );

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(deploy("grafana/dashboards/framegate.json")).expect("dashboard"),
    )
    .expect("dashboard JSON");
    let datasource =
        std::fs::read_to_string(deploy("grafana/provisioning/datasources/prometheus.yml"))
            .expect("datasource");
    let mut exprs = String::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            continue;
        }
        let uid = panel["datasource"]["uid"]
            .as_str()
            .expect("panel datasource");
        assert!(
            datasource.contains(&format!("uid: {uid}")),
            "panel {} uses a datasource the provisioning does not define",
            panel["title"]
        );
        for target in panel["targets"].as_array().expect("targets") {
            exprs.push_str(target["expr"].as_str().expect("expr"));
            exprs.push('\n');
        }
    }
    let alerts = std::fs::read_to_string(deploy("prometheus/alerts.yml")).expect("alerts");
    for (source, text) in [("dashboard", exprs.as_str()), ("alerts.yml", &alerts)] {
        let referenced = referenced_names(text);
        assert!(referenced.len() >= 5, "{source} names too few metrics");
        let unknown: Vec<&String> = referenced.difference(&exposed).collect();
        assert!(
            unknown.is_empty(),
            "{source} names metrics the exposition lacks: {unknown:?}"
        );
    }
    // What the issue asks the dashboard to show is there.
    for wanted in [
        "framegate_http_request_duration_seconds_bucket",
        "framegate_subscription_lag_seconds",
        "framegate_subscription_parked",
        "framegate_provider_calls_total",
        "framegate_provider_circuit_open",
        "framegate_jobs_finished_total",
        "framegate_credits_total",
        "framegate_kafka_messages_acked_total",
        "framegate_webhook_attempts_total",
    ] {
        assert!(exprs.contains(wanted), "the dashboard lacks {wanted}");
    }
}
