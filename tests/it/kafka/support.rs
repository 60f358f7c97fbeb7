//! Kafka for the tests: the broker scripts/services.sh started, a broker of a test's own
//! behind a proxy it can cut, and readers that take a topic from its start without a group.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The shared broker (scripts/services.sh): `FRAMEGATE_TEST_KAFKA_BROKERS`.
pub fn brokers() -> String {
    std::env::var("FRAMEGATE_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A topic prefix no other test uses.
pub fn unique_prefix() -> String {
    format!("fgtest{}", uuid::Uuid::now_v7().simple())
}

/// One message as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub value: Vec<u8>,
    pub headers: HashMap<String, String>,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

/// Reads `topics` from their beginning (all partitions, no consumer group) until `expect`
/// messages arrived or `patience` ran out; returns what arrived.
pub fn read_all(
    brokers: &str,
    topics: &[String],
    expect: usize,
    patience: Duration,
) -> Vec<Received> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "framegate-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let mut assignment = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("topic metadata");
        for t in metadata.topics() {
            for p in t.partitions() {
                assignment
                    .add_partition_offset(topic, p.id(), Offset::Beginning)
                    .expect("partition");
            }
        }
    }
    consumer.assign(&assignment).expect("assign");
    let deadline = Instant::now() + patience;
    let mut received = Vec::new();
    while received.len() < expect && Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let Ok(message) = message else {
            continue;
        };
        let mut headers = HashMap::new();
        if let Some(h) = message.headers() {
            for header in h.iter() {
                let value = header
                    .value
                    .map(|v| String::from_utf8_lossy(v).into_owned());
                headers.insert(header.key.to_owned(), value.unwrap_or_default());
            }
        }
        received.push(Received {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default(),
            value: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers,
        });
    }
    received
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A tansu broker of one test's own, reached only through a proxy the test can cut: while
/// cut, connections are refused and open ones dropped, as with a broker that went away; the
/// broker keeps its data, so nothing is lost to the outage itself.
pub struct OwnBroker {
    broker: Child,
    /// What clients use (the proxy; also what the broker advertises).
    pub address: String,
    proxy: JoinHandle<()>,
    up: Arc<AtomicBool>,
}

impl OwnBroker {
    pub async fn start() -> OwnBroker {
        let binary = std::env::var("FRAMEGATE_TEST_TANSU").unwrap_or_else(|_| "tansu".into());
        let inner = free_port();
        let outer = free_port();
        let broker = Command::new(&binary)
            .arg("broker")
            .arg("--listener-url")
            .arg(format!("tcp://127.0.0.1:{inner}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://127.0.0.1:{outer}"))
            .arg("--storage-engine")
            .arg("memory://tansu/")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {binary} (FRAMEGATE_TEST_TANSU): {e}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", inner)).await.is_err() {
            assert!(Instant::now() < deadline, "tansu did not start on {inner}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let up = Arc::new(AtomicBool::new(true));
        let proxy = tokio::spawn(proxy(outer, inner, up.clone()));
        OwnBroker {
            broker,
            address: format!("127.0.0.1:{outer}"),
            proxy,
            up,
        }
    }

    /// Refuses new connections and drops open ones until `restore`.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.proxy.abort();
        let _ = self.broker.kill();
        let _ = self.broker.wait();
    }
}

async fn proxy(outer: u16, inner: u16, up: Arc<AtomicBool>) {
    let mut listener = Some(
        TcpListener::bind(("127.0.0.1", outer))
            .await
            .expect("proxy port"),
    );
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    loop {
        if !up.load(Ordering::SeqCst) {
            // Down: close the listening socket (connections are refused) and every open one.
            listener = None;
            for connection in connections.drain(..) {
                connection.abort();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let Some(active) = listener.as_ref() else {
            listener = TcpListener::bind(("127.0.0.1", outer)).await.ok();
            continue;
        };
        let accepted = tokio::time::timeout(Duration::from_millis(20), active.accept()).await;
        if let Ok(Ok((mut client, _))) = accepted {
            connections.retain(|c| !c.is_finished());
            connections.push(tokio::spawn(async move {
                if let Ok(mut server) = TcpStream::connect(("127.0.0.1", inner)).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            }));
        }
    }
}
