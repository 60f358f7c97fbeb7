//! Two `framegate worker` processes in one Kafka consumer group share the video jobs; one is
//! killed with SIGKILL while it holds jobs, and the other finishes them: every video completes
//! once and is submitted upstream (to the simulator) once.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use framegate_commands::testing::TestDatabase;
use framegate_commands::videos::request_video;
use framegate_commands::{Actor, CommandMetadata, EventStore};
use framegate_domain::{CreditCommand, Credits, UserId, VideoId};
use framegate_workers::kafka::relay::{self, RelayHealth};
use framegate_workers::kafka::KafkaConfig;
use uuid::Uuid;

use crate::kafka::support::{brokers, unique_prefix};

const JOBS: i64 = 16;

/// A worker process whose log lines are kept, to see when it has joined the group.
struct Worker {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Worker {
    fn start(db: &TestDatabase, blobs: &std::path::Path, id: &str, prefix: &str) -> Worker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_framegate"))
            .arg("worker")
            .env("DATABASE_URL", db.url())
            .env("FRAMEGATE_BLOB_DIR", blobs)
            .env(
                "FRAMEGATE_BLOB_SIGNING_KEY",
                "0123456789abcdef0123456789abcdef",
            )
            .env("FRAMEGATE_SIMULATOR_LATENCY_MS", "2500")
            .env("FRAMEGATE_KAFKA_BROKERS", brokers())
            .env("FRAMEGATE_KAFKA_TOPIC_PREFIX", prefix)
            .env("FRAMEGATE_KAFKA_PARTITIONS", "4")
            .env("FRAMEGATE_KAFKA_PROP_SESSION_TIMEOUT_MS", "6000")
            .env("FRAMEGATE_WORKER_ID", id)
            .env("FRAMEGATE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start framegate worker");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().expect("log").push(line);
            }
        });
        Worker { child, log }
    }

    /// How often partitions were assigned to it; panics with its log if it has exited.
    fn assigned(&mut self) -> usize {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "the worker exited ({status}):\n{}",
                self.log.lock().expect("log").join("\n")
            );
        }
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter(|line| line.contains("partitions assigned"))
            .count()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn count(db: &TestDatabase, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&db.pool)
        .await
        .expect("count")
}

/// Which worker started each video's submission (its FRAMEGATE_WORKER_ID, recorded as the
/// command's user agent), and when.
async fn submitted_by(db: &TestDatabase) -> HashMap<String, (String, DateTime<Utc>)> {
    let rows: Vec<(String, Option<String>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT aggregate_id, metadata->>'user_agent', recorded_at FROM events
          WHERE event_type = 'SubmissionStarted'",
    )
    .fetch_all(&db.pool)
    .await
    .expect("submissions");
    rows.into_iter()
        .map(|(video, worker, at)| (video, (worker.unwrap_or_default(), at)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_in_one_group_share_jobs_and_a_killed_ones_jobs_finish_on_the_other() {
    let db = TestDatabase::with_pool_size(20).await;
    let blobs = tempfile::tempdir().expect("blobs");
    let store = EventStore::new(db.pool.clone());
    let prefix = unique_prefix();

    // The relay and the read models run in this process; the workers are processes.
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    framegate_projections::read_models::spawn_all(db.pool.clone(), stopped.clone());
    let vars: HashMap<String, String> = HashMap::from([
        ("FRAMEGATE_KAFKA_BROKERS".into(), brokers()),
        ("FRAMEGATE_KAFKA_TOPIC_PREFIX".into(), prefix.clone()),
        ("FRAMEGATE_KAFKA_PARTITIONS".into(), "4".into()),
    ]);
    let config = KafkaConfig::from_lookup(|n| vars.get(n).cloned(), vars.clone())
        .expect("valid")
        .expect("on");
    tokio::spawn(relay::run(
        db.pool.clone(),
        config,
        RelayHealth::default(),
        None,
        stopped,
    ));

    let mut a = Worker::start(&db, blobs.path(), "worker-a", &prefix);
    let deadline = Instant::now() + Duration::from_secs(60);
    while a.assigned() == 0 {
        assert!(Instant::now() < deadline, "worker a never joined the group");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut b = Worker::start(&db, blobs.path(), "worker-b", &prefix);
    // B joining moves partitions: A is assigned again, B for the first time.
    while a.assigned() < 2 || b.assigned() == 0 {
        assert!(
            Instant::now() < deadline,
            "the group never rebalanced to both workers"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let owner = UserId::from_uuid(Uuid::now_v7());
    let meta = CommandMetadata::new_request(Actor::System);
    let grant = CreditCommand::Grant {
        amount: Credits::new(1000),
        reason: "test".into(),
        granted_by: "system".into(),
    };
    store
        .credits()
        .execute(&owner.to_string(), grant, &meta)
        .await
        .expect("grant");
    for n in 0..JOBS {
        let spec = crate::common::simulator_job(owner, n);
        request_video(
            &store,
            VideoId::from_uuid(Uuid::now_v7()),
            spec,
            &meta,
            None,
        )
        .await
        .expect("request");
    }

    // Kill A as soon as it has taken a job; its jobs are still rendering (2.5 s latency).
    while !submitted_by(&db)
        .await
        .values()
        .any(|(w, _)| w == "worker-a")
    {
        assert!(Instant::now() < deadline, "worker a took no job");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.child.kill().expect("SIGKILL");
    a.child.wait().expect("reaped");
    let killed_at = Utc::now();

    let completed = "SELECT count(*) FROM events WHERE event_type = 'VideoCompleted'";
    let deadline = Instant::now() + Duration::from_secs(150);
    while count(&db, completed).await < JOBS {
        if Instant::now() > deadline {
            let stuck: Vec<(String, String, Option<String>)> = sqlx::query_as(
                "SELECT e.aggregate_id, string_agg(e.event_type, ',' ORDER BY e.sequence),
                        (SELECT v.status FROM videos v WHERE v.id::text = e.aggregate_id)
                   FROM events e WHERE e.aggregate_type = 'Video'
                  GROUP BY e.aggregate_id
                 HAVING NOT bool_or(e.event_type = 'VideoCompleted')",
            )
            .fetch_all(&db.pool)
            .await
            .expect("stuck");
            panic!(
                "{} of {JOBS} videos completed; unfinished: {stuck:?}\nworker b:\n{}",
                count(&db, completed).await,
                b.log.lock().expect("log").join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every video: one terminal event, one simulator submission.
    let terminal: Vec<(String, i64)> = sqlx::query_as(
        "SELECT aggregate_id, count(*) FILTER (WHERE event_type IN ('VideoCompleted', 'VideoFailed', 'VideoCancelled'))
           FROM events WHERE aggregate_type = 'Video' GROUP BY aggregate_id",
    )
    .fetch_all(&db.pool)
    .await
    .expect("terminal");
    assert_eq!(terminal.len() as i64, JOBS);
    assert!(terminal.iter().all(|(_, n)| *n == 1), "{terminal:?}");
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM simulator_jobs WHERE submit_attempts = 1"
        )
        .await,
        JOBS,
        "each job submitted upstream once"
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM simulator_jobs").await,
        JOBS
    );

    // Both workers took jobs; a job A started finished after A was dead.
    let by = submitted_by(&db).await;
    let workers: HashSet<&str> = by.values().map(|(w, _)| w.as_str()).collect();
    assert!(
        workers.contains("worker-a") && workers.contains("worker-b"),
        "{by:?}"
    );
    let finished: HashMap<String, DateTime<Utc>> = sqlx::query_as(
        "SELECT aggregate_id, recorded_at FROM events WHERE event_type = 'VideoCompleted'",
    )
    .fetch_all(&db.pool)
    .await
    .expect("completions")
    .into_iter()
    .collect();
    assert!(
        by.iter()
            .any(|(video, (w, _))| w == "worker-a" && finished[video] > killed_at),
        "no job of the killed worker was finished by the other"
    );
    drop(b);
}
