//! Log catch-up and replay benchmark, over personal fields in plaintext and sealed (run:
//! `cargo bench --bench replay`): the read models built from a million events, printing
//! events/s against the 50,000 replay target and the sealed log's rate as a share of the
//! plaintext one's, measured in the same run (issue 15.4: target >= 0.8).
//!
//! The events are real ones multiplied: one customer's story (registration, API key, credits
//! granted, reserved and captured, a video through its whole pipeline, an image upload; the
//! user's own requests with their client's IP and agent) is written through the command path
//! and read back opened (`story`). The same log is then built twice, in two databases
//! (`seed`): the plaintext one holds the rows as they were stored before encryption, copied
//! in SQL with fresh ids, emails and key hashes until it holds FRAMEGATE_BENCH_EVENTS
//! (1000000) events; the sealed one is built the same way and then sealed in place by
//! `framegate events seal`'s pass, so every copied user has a data key of their own and every
//! personal field (emails, prompts, client IPs and agents) sits in an AES-256-GCM envelope
//! bound to its row. On each, twice, in the order plaintext, sealed, sealed, plaintext, each
//! log's rate the mean of its two (`measure`): every live read model catches up on the whole
//! log from an empty checkpoint (`catch_up_all`); then, in the same order, `replay --all`
//! rebuilds every model beside, compares it with the caught-up tables (they must be
//! identical) and swaps.
//! The run fails if any read model row reads `[erased]` or lacks a user's email or prompt.
//! FRAMEGATE_BENCH_BATCH (5000) is the replay's batch size.

use framegate_commands::testing::TestDatabase;
use framegate_projections::read_models::READ_MODELS;
use framegate_projections::replay::ReplayReport;
use std::time::Instant;

/// The allocator the `framegate` binary ships with (ADR 0046): the catch-up and the replay
/// run in that binary's projector and `replay` roles, so they are measured with it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "replay/measure.rs"]
mod measure;
#[path = "replay/seed.rs"]
mod seed;
#[path = "replay/story.rs"]
mod story;

#[tokio::main]
async fn main() {
    let events: i64 = setting("FRAMEGATE_BENCH_EVENTS", 1_000_000);
    let batch: i64 = setting("FRAMEGATE_BENCH_BATCH", 5000);

    println!("== log catch-up and replay of all read models: {events} events, personal fields in plaintext and sealed ==");
    let template = story::template().await;
    println!("template story: {} events", template.rows.len());
    let plaintext = TestDatabase::with_pool_size(16).await;
    let sealed = TestDatabase::with_pool_size(16).await;
    let mut log = None;
    for (name, db) in [("plaintext", &plaintext), ("sealed", &sealed)] {
        let started = Instant::now();
        let built = seed::plaintext(&db.pool, &template, events).await;
        println!(
            "{name:<9} log: {} events of {} users copied in {:.1} s",
            built.events,
            built.stories,
            started.elapsed().as_secs_f64()
        );
        log = Some(built);
    }
    let log = log.expect("a log");
    seed::seal(&sealed.pool, log).await;

    // Each log is measured twice, in the order plaintext, sealed, sealed, plaintext, and its
    // two rates averaged: measured once each, the log measured second ran in what the first
    // left behind (autovacuum, dirty pages), and single runs spread more than the gap measured.
    let logs = [("plaintext", &plaintext), ("sealed", &sealed)];
    let order = [0, 1, 1, 0];
    let mut catch_ups = [Vec::new(), Vec::new()];
    for (turn, &which) in order.iter().enumerate() {
        let (name, db) = logs[which];
        if turn > 0 && catch_ups[which].len() == 1 {
            measure::reset_read_models(&db.pool).await;
        }
        let started = Instant::now();
        let rate = measure::catch_up(&db.pool, log).await;
        let elapsed = started.elapsed();
        measure::check_opened(&db.pool, log, name).await;
        println!(
            "{name:<9} catch-up: all {} live read models from empty checkpoints over {} events in {:.2} s: {rate:>8.0} events/s",
            READ_MODELS.len(),
            log.events,
            elapsed.as_secs_f64()
        );
        catch_ups[which].push(rate);
    }
    let mut replays = [Vec::new(), Vec::new()];
    for &which in &order {
        let (name, db) = logs[which];
        let report: ReplayReport = measure::replay(&db.pool, batch).await;
        measure::check_opened(&db.pool, log, name).await;
        if replays[which].is_empty() {
            for model in &report.models {
                let rows: i64 = model.tables.iter().map(|t| t.rebuilt_rows).sum();
                println!("{name:<9} {:<16} {:>9} rows", model.name, rows);
            }
        }
        println!(
            "{name:<9} replay: rebuilt all {} read models from {} events in {:.2} s (build, compare, swap): {:>8.0} events/s   (target >= 50000)",
            report.models.len(),
            report.events_read,
            report.elapsed.as_secs_f64(),
            report.events_per_second()
        );
        replays[which].push(report.events_per_second());
    }

    println!(
        "== sealed vs plaintext, same run ({} events; each the mean of two runs, in the order plaintext, sealed, sealed, plaintext) ==",
        log.events
    );
    println!(
        "{:<14} {:>16} {:>16} {:>9}   (target >= 0.80)",
        "", "plaintext ev/s", "sealed ev/s", "ratio"
    );
    let mean = |rates: &[f64]| rates.iter().sum::<f64>() / rates.len() as f64;
    for (what, rates) in [("catch-up", &catch_ups), ("replay --all", &replays)] {
        let (plain, sealed) = (mean(&rates[0]), mean(&rates[1]));
        println!(
            "{what:<14} {plain:>16.0} {sealed:>16.0} {:>9.2}   (pairs: {:.2} first, {:.2} second)",
            sealed / plain,
            rates[1][0] / rates[0][0],
            rates[1][1] / rates[0][1]
        );
    }
}

fn setting(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
