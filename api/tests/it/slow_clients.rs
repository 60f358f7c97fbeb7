//! Slow clients against the real server (`framegate_api::serve`): headers trickled a byte a
//! second, bodies trickled past the body timeout (JSON and an image upload), keep-alive
//! connections left idle, hundreds of silent connections, and the connection cap.
//!
//! Timeouts are set to a couple of seconds so every test ends well under fifteen; the
//! clients are raw TCP sockets, since an HTTP client would never be this slow on purpose.

use crate::common;

use std::io::Cursor;
use std::net::SocketAddr;
use std::time::Duration;

use common::{TestApp, PASSWORD};
use image::{DynamicImage, RgbImage};
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};

const SHORT: Duration = Duration::from_secs(2);
/// Scheduling slack on top of a timeout before a test calls it missed.
const SLACK: Duration = Duration::from_millis(1500);

/// Reads one response with a Content-Length body; `None` if the connection ends first.
async fn read_response(stream: &mut TcpStream) -> Option<String> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&received);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())
                        .flatten()
                })
                .unwrap_or(0);
            if received.len() >= end + 4 + length {
                return Some(text.into_owned());
            }
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// Waits up to `limit` for the server to close `stream`; how long it took, if it did.
/// Anything the server sends meanwhile is a failure: it was meant to stay silent.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    match timeout(limit, stream.read(&mut buf)).await {
        Err(_) => None,
        Ok(Ok(0)) | Ok(Err(_)) => Some(started.elapsed()),
        Ok(Ok(n)) => panic!(
            "unexpected bytes from the server: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
    }
}

/// Sends `head` and the first `fast` bytes of `body` at once, then the rest a byte every
/// `gap`; returns what the server answered (until it closed) and when its first byte came.
async fn send_body_slowly(
    addr: SocketAddr,
    head: String,
    body: Vec<u8>,
    fast: usize,
    gap: Duration,
) -> (String, Duration) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        writer.write_all(&body[..fast]).await?;
        for byte in &body[fast..] {
            tokio::time::sleep(gap).await;
            writer.write_all(&[*byte]).await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut received = Vec::new();
    let mut first_byte = None;
    let mut buf = [0u8; 4096];
    let give_up = started + Duration::from_secs(10);
    loop {
        match timeout_at(give_up, reader.read(&mut buf)).await {
            Err(_) => panic!("no answer and no close within 10 s"),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                first_byte.get_or_insert_with(|| started.elapsed());
                received.extend_from_slice(&buf[..n]);
            }
        }
    }
    trickle.abort();
    let answered = first_byte.unwrap_or_else(|| started.elapsed());
    (String::from_utf8_lossy(&received).into_owned(), answered)
}

fn assert_timely_408(response: &str, answered: Duration) {
    assert!(
        response.starts_with("HTTP/1.1 408"),
        "expected a 408, got {response:?}"
    );
    assert!(response.contains("request_timeout"), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("connection: close"),
        "{response}"
    );
    assert!(
        answered >= SHORT - Duration::from_millis(200) && answered <= SHORT + SLACK,
        "answered after {answered:?}, the body timeout is {SHORT:?}"
    );
}

/// Sends a whole request at once on a new connection; the answer.
async fn send_at_once(addr: SocketAddr, head: &str, body: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(body).await.expect("body");
    timeout(Duration::from_secs(5), read_response(&mut stream))
        .await
        .expect("answered in time")
        .expect("a response")
}

#[tokio::test]
async fn a_client_sending_its_headers_a_byte_a_second_is_cut_off_after_the_header_timeout() {
    let app = TestApp::with_config(|config| config.http.header_timeout = SHORT).await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    let request = b"GET /health/live HTTP/1.1\r\nHost: framegate\r\nUser-Agent: slow\r\n\r\n";
    let started = Instant::now();
    let mut closed_after = None;
    for byte in request {
        if stream.write_all(&[*byte]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        // A second for the server to answer or hang up before the next byte.
        if let Some(_waited) = closed_within(&mut stream, Duration::from_secs(1)).await {
            closed_after = Some(started.elapsed());
            break;
        }
        assert!(
            started.elapsed() < SHORT + SLACK + Duration::from_secs(1),
            "still connected after {:?}",
            started.elapsed()
        );
    }
    let closed_after = closed_after.expect("the server waited for the whole trickled head");
    assert!(
        closed_after >= SHORT - Duration::from_millis(200) && closed_after <= SHORT + SLACK,
        "closed after {closed_after:?}, the header timeout is {SHORT:?}"
    );
    // Others are served all along.
    let response = app.get("/health/live", None).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn five_hundred_idle_connections_do_not_stop_a_normal_request_from_being_served() {
    // Room for exactly the idle ones and one more.
    let app = TestApp::with_config(|config| config.http.max_connections = 501).await;
    let mut idle = Vec::with_capacity(500);
    for _ in 0..500 {
        idle.push(TcpStream::connect(app.addr).await.expect("connect"));
    }
    // Give the server time to accept them all: from then on each holds a slot.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    let response = app
        .client
        .get(app.url("/health/live"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("served");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    // They were held, not turned away (the header timeout, 10 s, has not run out).
    let mut buf = [0u8; 1];
    for stream in &idle {
        let still_open = matches!(stream.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        assert!(still_open, "an idle connection was closed early");
    }
}

#[tokio::test]
async fn at_the_connection_cap_a_new_client_waits_until_the_header_timeout_frees_a_slot() {
    let app = TestApp::with_config(|config| {
        config.http.max_connections = 8;
        config.http.header_timeout = SHORT;
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(TcpStream::connect(app.addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let response = app
        .client
        .get(app.url("/health/live"))
        .timeout(Duration::from_secs(8))
        .send()
        .await
        .expect("served once a slot was free");
    assert_eq!(response.status(), StatusCode::OK);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1200) && waited <= SHORT + SLACK,
        "served after {waited:?}: it should wait for the silent ones' header timeout"
    );
    for stream in &mut silent {
        assert!(
            closed_within(stream, Duration::from_secs(1))
                .await
                .is_some(),
            "a silent connection outlived the header timeout"
        );
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let app = TestApp::with_config(|config| {
        // Far longer than the idle timeout: the close below is the idle timeout's.
        config.http.header_timeout = Duration::from_secs(30);
        config.http.idle_timeout = SHORT;
    })
    .await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    let request = b"GET /health/live HTTP/1.1\r\nHost: framegate\r\n\r\n";
    stream.write_all(request).await.expect("first request");
    let first = read_response(&mut stream).await.expect("first response");
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");

    // Within the idle timeout the connection is reused, and its clock starts over.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stream.write_all(request).await.expect("second request");
    let second = read_response(&mut stream).await.expect("second response");
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");

    let closed_after = closed_within(&mut stream, SHORT + SLACK + Duration::from_secs(1))
        .await
        .expect("the idle connection was kept open");
    assert!(
        closed_after >= SHORT - Duration::from_millis(200) && closed_after <= SHORT + SLACK,
        "closed after {closed_after:?}, the idle timeout is {SHORT:?}"
    );
}

#[tokio::test]
async fn a_json_body_trickled_past_the_body_timeout_gets_408_and_creates_nothing() {
    let app = TestApp::with_config(|config| config.http.body_timeout = SHORT).await;
    let email = "slow-body@example.com";
    let body = json!({"email": email, "password": PASSWORD}).to_string();
    let head = format!(
        "POST /v1/auth/register HTTP/1.1\r\nHost: framegate\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    // A byte every 200 ms: never silent for long, only slow overall.
    let (response, answered) = send_body_slowly(
        app.addr,
        head.clone(),
        body.clone().into_bytes(),
        10,
        Duration::from_millis(200),
    )
    .await;
    assert_timely_408(&response, answered);

    // The same request sent at once registers the address: the slow one had not.
    let answer = send_at_once(app.addr, &head, body.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
}

#[tokio::test]
async fn an_image_upload_trickled_past_the_body_timeout_gets_408_and_stores_nothing() {
    let app = TestApp::with_config(|config| config.http.body_timeout = SHORT).await;
    let (_, token, _) = app.signed_in_user("slow-upload@example.com").await;
    let mut png = Vec::new();
    // The smallest sides an upload may have.
    DynamicImage::ImageRgb8(RgbImage::from_pixel(256, 256, image::Rgb([200, 30, 60])))
        .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("png");
    let boundary = "framegate-slow-upload";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow.png\"\r\nContent-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&png);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let head = format!(
        "POST /v1/images HTTP/1.1\r\nHost: framegate\r\nAuthorization: Bearer {token}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    // Most of the file at once, then the tail a byte every 100 ms.
    let fast = body.len() - 40;
    let (response, answered) = send_body_slowly(
        app.addr,
        head.clone(),
        body.clone(),
        fast,
        Duration::from_millis(100),
    )
    .await;
    assert_timely_408(&response, answered);

    let images: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'Image'")
            .fetch_one(&app.db.pool)
            .await
            .expect("count");
    assert_eq!(images, 0, "the slow upload stored an image");
    // The same upload sent at once is accepted: only its pace was wrong.
    let answer = send_at_once(app.addr, &head, &body).await;
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
}

#[tokio::test]
async fn a_small_body_that_stalls_gets_408_after_seconds_not_the_whole_body_timeout() {
    // The default minute for bodies, which an upload may need: a few bytes of JSON get less.
    let app =
        TestApp::with_config(|config| config.http.body_timeout = Duration::from_secs(60)).await;
    let body = json!({"email": "stalled@example.com", "password": PASSWORD}).to_string();
    let head = format!(
        "POST /v1/auth/register HTTP/1.1\r\nHost: framegate\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let (response, answered) = send_body_slowly(
        app.addr,
        head,
        body.into_bytes(),
        1,
        Duration::from_secs(30),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 408"), "{response:?}");
    let grace = framegate_api::body_deadline::BODY_GRACE;
    assert!(
        answered >= grace - Duration::from_millis(200) && answered <= grace + SLACK,
        "answered after {answered:?}, the grace is {grace:?}"
    );
}
