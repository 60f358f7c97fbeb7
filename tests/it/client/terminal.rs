//! The client at a terminal (a pseudo-terminal driven by `pty_run.py`): the password prompt
//! without echo, the progress bar of `--wait`, and Ctrl-C detaching from a video (which goes
//! on to complete) or, with `--cancel-on-interrupt`, cancelling it (credits back).

use framegate_commands::testing::TestDatabase;

use super::{assert_playable, settled_credits, wait_for, Client, Step, PASSWORD};
use crate::common::Dev;

const CTRL_C: &str = "\\x03";
/// The bar once the video runs (its status, padded, then the bar).
const RUNNING_BAR: &str = "running    [";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_a_terminal_the_wait_draws_a_progress_bar_and_ctrl_c_detaches_or_cancels() {
    let db = TestDatabase::unmigrated(2).await;
    // Long enough for Ctrl-C to land while the video runs.
    let dev = Dev::start(
        &db,
        &[("FRAMEGATE_SIMULATOR_LATENCY_MS", "4000".to_owned())],
    );
    dev.wait_ready(&reqwest::Client::new()).await;
    let email = "person@example.com";
    dev.register(&reqwest::Client::new(), email).await;
    let client = Client::new(&dev);

    // The password is typed at a prompt and not echoed.
    let (code, screen) = client.in_terminal(
        &[Step::Secret(
            &format!("Password for {email}: "),
            &format!("{PASSWORD}\\n"),
        )],
        &["login", "--email", email],
    );
    assert_eq!(code, Some(0), "{screen}");
    assert!(screen.contains("Logged in"), "{screen}");
    assert!(
        !screen.contains(PASSWORD),
        "the password was echoed: {screen}"
    );

    // --wait draws a bar (escape codes, status, percent) and ends with the MP4.
    let (code, screen) = client.in_terminal(
        &[],
        &[
            "videos",
            "create",
            "--prompt",
            "a lighthouse",
            "--provider",
            "simulator",
            "--duration",
            "2",
            "--wait",
            "--output",
            "lighthouse.mp4",
        ],
    );
    assert_eq!(code, Some(0), "{screen}");
    assert!(
        screen.contains("\u{1b}["),
        "no escape codes: the bar was not drawn: {screen:?}"
    );
    assert!(screen.contains("running"), "{screen}");
    assert!(screen.contains("100%"), "{screen}");
    assert!(screen.contains("lighthouse.mp4"), "{screen}");
    assert_playable(&client.path("lighthouse.mp4"), 2).await;

    // Ctrl-C while it runs: the client detaches, says so, and the video completes anyway.
    let (code, screen) = client.in_terminal(
        &[Step::Type(RUNNING_BAR, CTRL_C)],
        &[
            "videos",
            "create",
            "--prompt",
            "a harbour",
            "--provider",
            "simulator",
            "--duration",
            "2",
            "--wait",
            "--output",
            "harbour.mp4",
        ],
    );
    assert_eq!(code, Some(130), "{screen}");
    assert!(screen.contains("keeps running on the server"), "{screen}");
    assert!(!client.path("harbour.mp4").exists());
    let listed = client.json(&["videos", "list"]);
    let harbour = listed["items"][0]["id"].as_str().expect("id").to_owned();
    assert_eq!(listed["items"][0]["prompt"], "a harbour");
    let completed = wait_for(&client, &harbour, |v| {
        !matches!(
            v["status"].as_str(),
            Some("queued" | "submitted" | "running")
        )
    });
    assert_eq!(completed["status"], "completed", "{completed}");
    assert!(
        screen.contains(&format!("framegate client videos get {harbour} --wait")),
        "{screen}"
    );

    // With --cancel-on-interrupt, Ctrl-C cancels it and the reserved credits come back.
    let before = settled_credits(&client);
    let (code, screen) = client.in_terminal(
        &[Step::Type(RUNNING_BAR, CTRL_C)],
        &[
            "videos",
            "create",
            "--prompt",
            "a storm",
            "--provider",
            "simulator",
            "--duration",
            "5",
            "--wait",
            "--cancel-on-interrupt",
        ],
    );
    assert_eq!(code, Some(130), "{screen}");
    let storm = client.json(&["videos", "list"])["items"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert!(
        screen.contains(&format!("Interrupted: video {storm} cancel")),
        "{screen}"
    );
    let cancelled = wait_for(&client, &storm, |v| {
        !matches!(
            v["status"].as_str(),
            Some("queued" | "submitted" | "running")
        )
    });
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    let after = settled_credits(&client);
    assert_eq!(
        after["available"], before["available"],
        "the cancellation was free"
    );
}
