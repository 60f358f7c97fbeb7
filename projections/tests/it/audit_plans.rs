//! Audit queries stay index reads on a large log: 200,000 synthetic events, and each
//! filter's plan (EXPLAIN ANALYZE) has no sequential scan and touches a few hundred rows.

use chrono::{DateTime, TimeZone as _, Utc};
use framegate_commands::testing::TestDatabase;
use framegate_projections::audit::{self, AuditFilter};
use serde_json::Value;
use uuid::Uuid;

const EVENTS: i64 = 200_000;

/// Fills `events` the way production would look: four aggregate types, ten events per
/// aggregate, 10,000 users plus the system as actors, four events per correlation, ten
/// event types and one event every five seconds from 2026-01-01.
const SEED: &str = "
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                    payload, metadata, recorded_at)
SELECT (ARRAY['User','CreditAccount','Video','Image'])[1 + (i % 20000) % 4],
       md5((i % 20000)::text)::uuid::text,
       i / 20000,
       (ARRAY['VideoRequested','CreditsReserved','VideoDispatched','VideoProgressed',
              'VideoCompleted','CreditsSettled','ImageUploaded','UserLoggedIn',
              'ApiKeyIssued','VideoFailed'])[1 + (i / 7) % 10],
       '1.0',
       jsonb_build_object('Synthetic', jsonb_build_object('n', i)),
       jsonb_build_object(
           'actor', CASE WHEN i % 5 = 0 THEN 'system'
                         ELSE 'user:' || md5(((i / 3) % 10000)::text)::uuid END,
           'request_id', md5('r' || i)::uuid,
           'correlation_id', md5('c' || (i / 4))::uuid,
           'causation_id', 'request:' || md5('r' || i)::uuid,
           'client_ip', '10.0.' || (i % 250) || '.1'),
       timestamptz '2026-01-01 00:00:00+00' + i * interval '5 seconds'
  FROM generate_series(1, $1) AS i";

/// Rows the plan's scans produced or threw away: what the query actually read.
fn rows_read(plan: &Value, scans: &mut Vec<String>) -> i64 {
    let node_type = plan["Node Type"].as_str().unwrap_or_default();
    let mut read = 0;
    if node_type.contains("Scan") {
        scans.push(format!(
            "{node_type} {}",
            plan["Index Name"].as_str().unwrap_or_default()
        ));
        read += [
            "Actual Rows",
            "Rows Removed by Filter",
            "Rows Removed by Index Recheck",
        ]
        .iter()
        .map(|k| plan[*k].as_i64().unwrap_or(0))
        .sum::<i64>()
            * plan["Actual Loops"].as_i64().unwrap_or(1);
    }
    if let Some(children) = plan["Plans"].as_array() {
        read += children.iter().map(|c| rows_read(c, scans)).sum::<i64>();
    }
    read
}

fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, day, hour, 0, 0)
        .single()
        .expect("valid time")
}

#[tokio::test]
async fn every_audit_filter_reads_an_index_range_not_the_log() {
    let db = TestDatabase::new().await;
    sqlx::query(SEED)
        .bind(EVENTS)
        .execute(&db.pool)
        .await
        .expect("seed");
    sqlx::query("ANALYZE events")
        .execute(&db.pool)
        .await
        .expect("analyze");
    let scalar = |sql: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(sql)
                .fetch_one(&pool)
                .await
                .expect("value")
        }
    };
    let user = scalar("SELECT 'user:' || md5('777')::uuid").await;
    let aggregate_id = scalar("SELECT md5('12346')::uuid::text").await;
    let correlation: Uuid = scalar("SELECT md5('c' || 30000)::uuid::text")
        .await
        .parse()
        .expect("uuid");

    let base = AuditFilter::default();
    let filters = [
        ("everything", base.clone()),
        (
            "aggregate",
            AuditFilter {
                aggregate: Some(("Video".into(), aggregate_id)),
                ..base.clone()
            },
        ),
        (
            "actor",
            AuditFilter {
                actor: Some(user.clone()),
                ..base.clone()
            },
        ),
        (
            "system actor",
            AuditFilter {
                actor: Some("system".into()),
                ..base.clone()
            },
        ),
        (
            "event type",
            AuditFilter {
                event_type: Some("VideoCompleted".into()),
                ..base.clone()
            },
        ),
        (
            "correlation",
            AuditFilter {
                correlation_id: Some(correlation),
                ..base.clone()
            },
        ),
        (
            "late time range",
            AuditFilter {
                from: Some(at(11, 0)),
                to: Some(at(11, 6)),
                ..base.clone()
            },
        ),
        (
            "actor in a time range",
            AuditFilter {
                actor: Some(user),
                from: Some(at(10, 0)),
                to: Some(at(12, 0)),
                ..base.clone()
            },
        ),
    ];
    for (name, filter) in &filters {
        for cursor in [None, Some(EVENTS * 3 / 4)] {
            let explain = audit::explain(&db.pool, filter, cursor, 51)
                .await
                .expect("explain");
            let plan = &explain[0]["Plan"];
            let mut scans = Vec::new();
            let read = rows_read(plan, &mut scans);
            assert!(
                !scans.iter().any(|s| s.starts_with("Seq Scan")),
                "{name} ({cursor:?}) scans the table: {scans:?}"
            );
            assert!(
                scans.iter().any(|s| s.contains("Index")),
                "{name} ({cursor:?}) uses no index: {scans:?}"
            );
            // A page is 51 rows; reading a few hundred is index work, reading thousands
            // would mean a filter walked the log.
            assert!(
                read < 1_000,
                "{name} ({cursor:?}) read {read} rows: {scans:?} {plan}"
            );
        }
    }

    // The queries behind the plans return what they promise.
    let page = audit::query(&db.pool, &filters[6].1, None, 51)
        .await
        .expect("query");
    assert_eq!(page.len(), 51);
    assert!(page.windows(2).all(
        |w| (w[0].recorded_at, w[0].global_position) < (w[1].recorded_at, w[1].global_position)
    ));
    assert!(page.iter().all(|e| e.recorded_at >= at(11, 0)));
}
