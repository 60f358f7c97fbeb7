//! Given/when/then tests of the `Video` aggregate's lifecycle state machine.

use chrono::DateTime;
use cqrs_es::test::TestFramework;
use cqrs_es::Aggregate;
use framegate_domain::{
    Credits, FixedClock, ImageId, ProviderKind, ProviderPreference, StoredArtifact, UserId, Video,
    VideoCommand, VideoError, VideoEvent, VideoFailure, VideoId, VideoSpec, VideoStatus,
};
use uuid::Uuid;

const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn framework() -> TestFramework<Video> {
    let now = DateTime::from_timestamp(1_767_225_600, 0).expect("a valid timestamp");
    TestFramework::with(FixedClock(now).shared())
}

fn video_id() -> VideoId {
    VideoId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_2001))
}

fn spec() -> VideoSpec {
    VideoSpec {
        owner: UserId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001)),
        prompt: "a heron lifting off a misty lake at dawn".to_string(),
        negative_prompt: Some("text, watermark".to_string()),
        provider: ProviderPreference::Auto,
        model: None,
        duration_seconds: 8,
        aspect_ratio: "16:9".to_string(),
        resolution: "1080p".to_string(),
        image_id: Some(ImageId::from_uuid(Uuid::from_u128(
            0x0190_0000_0000_7000_8000_0000_0000_3001,
        ))),
        seed: Some(42),
        estimated_cost: Credits::new(80),
        generate_audio: false,
        external_id: Some("client-ref-1".to_string()),
        webhook: None,
    }
}

fn requested() -> VideoEvent {
    VideoEvent::VideoRequested {
        video_id: video_id(),
        spec: spec(),
    }
}

fn submission_started(attempt: u32) -> VideoEvent {
    VideoEvent::SubmissionStarted {
        attempt,
        provider: ProviderKind::Veo,
        model: "veo-3".to_string(),
    }
}

fn submitted() -> VideoEvent {
    VideoEvent::VideoSubmitted {
        provider_job_id: "job-1".to_string(),
    }
}

fn progressed(percent: u8) -> VideoEvent {
    VideoEvent::VideoProgressed { percent }
}

fn stored() -> VideoEvent {
    VideoEvent::VideoStored {
        blob_key: "videos/2001.mp4".to_string(),
        bytes: 1_048_576,
        sha256: SHA.to_string(),
        duration_ms: 8_000,
        width: 1920,
        height: 1080,
    }
}

fn cancel_requested() -> VideoEvent {
    VideoEvent::CancelRequested {
        reason: "user asked".to_string(),
    }
}

fn failed() -> VideoEvent {
    VideoEvent::VideoFailed {
        code: "provider_error".to_string(),
        message: "the provider rejected the prompt".to_string(),
        retryable: false,
        charged: false,
    }
}

/// The events that bring a video to `status` by the most ordinary route.
fn history(status: VideoStatus) -> Vec<VideoEvent> {
    let happy_path = [
        (VideoStatus::Queued, requested()),
        (VideoStatus::Submitting, submission_started(1)),
        (VideoStatus::Submitted, submitted()),
        (VideoStatus::Running, progressed(40)),
        (VideoStatus::Generated, VideoEvent::VideoGenerated {}),
        (VideoStatus::Stored, stored()),
        (
            VideoStatus::Completed,
            VideoEvent::VideoCompleted {
                final_cost: Credits::new(80),
            },
        ),
    ];
    let mut events = Vec::new();
    for (reached, event) in happy_path {
        events.push(event);
        if reached == status {
            return events;
        }
    }
    let mut events = history(VideoStatus::Running);
    match status {
        VideoStatus::Failed => events.push(failed()),
        VideoStatus::CancelRequested => events.push(cancel_requested()),
        VideoStatus::Cancelled => {
            events.push(cancel_requested());
            events.push(VideoEvent::VideoCancelled { charged: false });
        }
        _ => unreachable!("covered by the happy path"),
    }
    events
}

const LIVE: [VideoStatus; 7] = [
    VideoStatus::Queued,
    VideoStatus::Submitting,
    VideoStatus::Submitted,
    VideoStatus::Running,
    VideoStatus::Generated,
    VideoStatus::Stored,
    VideoStatus::CancelRequested,
];

const TERMINAL: [VideoStatus; 3] = [
    VideoStatus::Completed,
    VideoStatus::Failed,
    VideoStatus::Cancelled,
];

fn fail_command() -> VideoCommand {
    VideoCommand::Fail {
        code: "provider_error".to_string(),
        message: "the provider rejected the prompt".to_string(),
        retryable: false,
        charged: false,
    }
}

fn store_command(sha256: &str) -> VideoCommand {
    VideoCommand::RecordStored {
        blob_key: "videos/2001.mp4".to_string(),
        bytes: 1_048_576,
        sha256: sha256.to_string(),
        duration_ms: 8_000,
        width: 1920,
        height: 1080,
    }
}

/// One of every command but `Request`.
fn lifecycle_commands() -> Vec<VideoCommand> {
    vec![
        VideoCommand::StartSubmission {
            attempt: 1,
            provider: ProviderKind::Veo,
            model: "veo-3".to_string(),
        },
        VideoCommand::MarkSubmitted {
            provider_job_id: "job-1".to_string(),
        },
        VideoCommand::RecordProgress { percent: 50 },
        VideoCommand::MarkGenerated,
        store_command(SHA),
        VideoCommand::Complete {
            final_cost: Credits::new(80),
        },
        fail_command(),
        VideoCommand::RequestCancel {
            reason: "user asked".to_string(),
        },
        VideoCommand::Cancel { charged: false },
        deliver_command(SHA),
    ]
}

fn deliver_command(sha256: &str) -> VideoCommand {
    VideoCommand::Deliver {
        blob_key: "videos/2001.mp4".to_string(),
        bytes: 1_048_576,
        sha256: sha256.to_string(),
        duration_ms: 8_000,
        width: 1920,
        height: 1080,
        final_cost: Credits::new(60),
    }
}

fn invalid(from: VideoStatus, command: &'static str) -> VideoError {
    VideoError::InvalidTransition { from, command }
}

#[test]
fn the_test_histories_reach_the_status_they_are_named_after() {
    for status in LIVE.into_iter().chain(TERMINAL) {
        let mut video = Video::default();
        history(status).into_iter().for_each(|e| video.apply(e));
        assert_eq!(video.status(), Some(status));
    }
}

#[test]
fn requesting_a_video_queues_it() {
    framework()
        .given_no_previous_events()
        .when(VideoCommand::Request {
            video_id: video_id(),
            spec: spec(),
        })
        .then_expect_events(vec![requested()]);
}

#[test]
fn requesting_a_video_twice_is_rejected() {
    framework()
        .given(vec![requested()])
        .when(VideoCommand::Request {
            video_id: video_id(),
            spec: spec(),
        })
        .then_expect_error(VideoError::AlreadyRequested);
}

#[test]
fn requesting_with_an_empty_prompt_is_rejected() {
    for prompt in ["", "  \n "] {
        framework()
            .given_no_previous_events()
            .when(VideoCommand::Request {
                video_id: video_id(),
                spec: VideoSpec {
                    prompt: prompt.to_string(),
                    ..spec()
                },
            })
            .then_expect_error(VideoError::EmptyPrompt);
    }
}

#[test]
fn requesting_with_a_prompt_over_4000_characters_is_rejected() {
    framework()
        .given_no_previous_events()
        .when(VideoCommand::Request {
            video_id: video_id(),
            spec: VideoSpec {
                prompt: "a".repeat(4001),
                ..spec()
            },
        })
        .then_expect_error(VideoError::PromptTooLong);
}

#[test]
fn a_prompt_of_4000_multibyte_characters_is_accepted() {
    let long = VideoSpec {
        prompt: "鷺".repeat(4000),
        ..spec()
    };
    framework()
        .given_no_previous_events()
        .when(VideoCommand::Request {
            video_id: video_id(),
            spec: long.clone(),
        })
        .then_expect_events(vec![VideoEvent::VideoRequested {
            video_id: video_id(),
            spec: long,
        }]);
}

#[test]
fn requesting_a_zero_second_video_is_rejected() {
    framework()
        .given_no_previous_events()
        .when(VideoCommand::Request {
            video_id: video_id(),
            spec: VideoSpec {
                duration_seconds: 0,
                ..spec()
            },
        })
        .then_expect_error(VideoError::InvalidDuration);
}

#[test]
fn requesting_with_a_negative_estimate_is_rejected() {
    framework()
        .given_no_previous_events()
        .when(VideoCommand::Request {
            video_id: video_id(),
            spec: VideoSpec {
                estimated_cost: Credits::new(-1),
                ..spec()
            },
        })
        .then_expect_error(VideoError::NegativeCost);
}

#[test]
fn a_free_video_may_be_requested() {
    let free = VideoSpec {
        estimated_cost: Credits::ZERO,
        ..spec()
    };
    framework()
        .given_no_previous_events()
        .when(VideoCommand::Request {
            video_id: video_id(),
            spec: free.clone(),
        })
        .then_expect_events(vec![VideoEvent::VideoRequested {
            video_id: video_id(),
            spec: free,
        }]);
}

#[test]
fn commands_before_the_request_are_rejected() {
    for command in lifecycle_commands() {
        framework()
            .given_no_previous_events()
            .when(command)
            .then_expect_error(VideoError::NotRequested);
    }
}

#[test]
fn commands_after_a_terminal_status_are_rejected() {
    for status in TERMINAL {
        for command in lifecycle_commands() {
            framework()
                .given(history(status))
                .when(command)
                .then_expect_error(VideoError::AlreadyTerminal { status });
        }
    }
}

#[test]
fn starting_submission_of_a_queued_video_records_the_attempt() {
    framework()
        .given(history(VideoStatus::Queued))
        .when(VideoCommand::StartSubmission {
            attempt: 1,
            provider: ProviderKind::Veo,
            model: "veo-3".to_string(),
        })
        .then_expect_events(vec![submission_started(1)]);
}

#[test]
fn retrying_a_submission_with_a_later_attempt_is_accepted() {
    framework()
        .given(history(VideoStatus::Submitting))
        .when(VideoCommand::StartSubmission {
            attempt: 2,
            provider: ProviderKind::Kling,
            model: "kling-2".to_string(),
        })
        .then_expect_events(vec![VideoEvent::SubmissionStarted {
            attempt: 2,
            provider: ProviderKind::Kling,
            model: "kling-2".to_string(),
        }]);
}

fn retry_at() -> chrono::DateTime<chrono::Utc> {
    DateTime::from_timestamp(1_767_225_660, 0).expect("a valid timestamp")
}

#[test]
fn a_submission_the_provider_never_accepted_puts_the_video_back_in_the_queue() {
    let failure = || VideoCommand::RecordSubmissionFailure {
        code: "rate_limited".to_string(),
        message: "try again in a minute".to_string(),
        retry_at: retry_at(),
    };
    let failed = VideoEvent::SubmissionFailed {
        attempt: 1,
        provider: ProviderKind::Veo,
        code: "rate_limited".to_string(),
        message: "try again in a minute".to_string(),
        retry_at: retry_at(),
    };
    framework()
        .given(history(VideoStatus::Submitting))
        .when(failure())
        .then_expect_events(vec![failed.clone()]);

    // Queued again, remembering the attempt, its provider and when to retry.
    let mut video = Video::default();
    for event in history(VideoStatus::Submitting)
        .into_iter()
        .chain([failed.clone()])
    {
        video.apply(event);
    }
    assert_eq!(video.status(), Some(VideoStatus::Queued));
    assert_eq!(video.attempt(), 1);
    assert_eq!(video.retry_at(), Some(retry_at()));
    assert_eq!(video.failed_attempts().len(), 1);
    assert_eq!(video.failed_attempts()[0].provider, ProviderKind::Veo);
    assert_eq!(video.provider_job_id(), None);

    // The next attempt must count up.
    let mut retried = history(VideoStatus::Submitting);
    retried.push(failed);
    framework()
        .given(retried)
        .when(VideoCommand::StartSubmission {
            attempt: 2,
            provider: ProviderKind::Kling,
            model: "kling-v2-6".to_string(),
        })
        .then_expect_events(vec![VideoEvent::SubmissionStarted {
            attempt: 2,
            provider: ProviderKind::Kling,
            model: "kling-v2-6".to_string(),
        }]);

    // Only a submission in progress can fail to be accepted.
    for status in [
        VideoStatus::Queued,
        VideoStatus::Submitted,
        VideoStatus::Completed,
    ] {
        let error = framework()
            .given(history(status))
            .when(failure())
            .inspect_result()
            .expect_err("refused");
        assert!(
            matches!(
                error,
                VideoError::InvalidTransition { .. } | VideoError::AlreadyTerminal { .. }
            ),
            "{status}: {error:?}"
        );
    }
}

#[test]
fn a_submission_attempt_that_does_not_increase_is_rejected() {
    framework()
        .given(history(VideoStatus::Submitting))
        .when(VideoCommand::StartSubmission {
            attempt: 1,
            provider: ProviderKind::Veo,
            model: "veo-3".to_string(),
        })
        .then_expect_error(VideoError::AttemptNotIncreasing {
            current: 1,
            requested: 1,
        });
    framework()
        .given(history(VideoStatus::Queued))
        .when(VideoCommand::StartSubmission {
            attempt: 0,
            provider: ProviderKind::Veo,
            model: "veo-3".to_string(),
        })
        .then_expect_error(VideoError::AttemptNotIncreasing {
            current: 0,
            requested: 0,
        });
}

#[test]
fn starting_submission_after_the_provider_accepted_the_job_is_rejected() {
    framework()
        .given(history(VideoStatus::Submitted))
        .when(VideoCommand::StartSubmission {
            attempt: 2,
            provider: ProviderKind::Veo,
            model: "veo-3".to_string(),
        })
        .then_expect_error(invalid(VideoStatus::Submitted, "start_submission"));
}

#[test]
fn marking_submitted_records_the_provider_job() {
    framework()
        .given(history(VideoStatus::Submitting))
        .when(VideoCommand::MarkSubmitted {
            provider_job_id: "job-1".to_string(),
        })
        .then_expect_events(vec![submitted()]);
}

#[test]
fn marking_submitted_outside_a_submission_is_rejected() {
    for status in [VideoStatus::Queued, VideoStatus::Submitted] {
        framework()
            .given(history(status))
            .when(VideoCommand::MarkSubmitted {
                provider_job_id: "job-1".to_string(),
            })
            .then_expect_error(invalid(status, "mark_submitted"));
    }
}

#[test]
fn the_first_progress_report_moves_the_video_to_running() {
    framework()
        .given(history(VideoStatus::Submitted))
        .when(VideoCommand::RecordProgress { percent: 0 })
        .then_expect_events(vec![progressed(0)]);
}

#[test]
fn progress_that_increases_is_recorded() {
    framework()
        .given(history(VideoStatus::Running))
        .when(VideoCommand::RecordProgress { percent: 100 })
        .then_expect_events(vec![progressed(100)]);
}

#[test]
fn progress_that_does_not_increase_records_nothing() {
    for percent in [40, 10] {
        framework()
            .given(history(VideoStatus::Running))
            .when(VideoCommand::RecordProgress { percent })
            .then_expect_events(vec![]);
    }
}

#[test]
fn progress_over_100_percent_is_rejected() {
    framework()
        .given(history(VideoStatus::Running))
        .when(VideoCommand::RecordProgress { percent: 101 })
        .then_expect_error(VideoError::ProgressOutOfRange { percent: 101 });
}

#[test]
fn progress_outside_generation_is_rejected() {
    for status in [
        VideoStatus::Queued,
        VideoStatus::Submitting,
        VideoStatus::Generated,
        VideoStatus::Stored,
        VideoStatus::CancelRequested,
    ] {
        framework()
            .given(history(status))
            .when(VideoCommand::RecordProgress { percent: 50 })
            .then_expect_error(invalid(status, "record_progress"));
    }
}

#[test]
fn progress_after_completion_is_rejected() {
    framework()
        .given(history(VideoStatus::Completed))
        .when(VideoCommand::RecordProgress { percent: 100 })
        .then_expect_error(VideoError::AlreadyTerminal {
            status: VideoStatus::Completed,
        });
}

#[test]
fn marking_generated_records_it_with_or_without_progress_reports() {
    for status in [VideoStatus::Submitted, VideoStatus::Running] {
        framework()
            .given(history(status))
            .when(VideoCommand::MarkGenerated)
            .then_expect_events(vec![VideoEvent::VideoGenerated {}]);
    }
}

#[test]
fn marking_generated_before_submission_or_twice_is_rejected() {
    for status in [
        VideoStatus::Queued,
        VideoStatus::Submitting,
        VideoStatus::Generated,
    ] {
        framework()
            .given(history(status))
            .when(VideoCommand::MarkGenerated)
            .then_expect_error(invalid(status, "mark_generated"));
    }
}

#[test]
fn recording_the_stored_file_records_it_with_a_lowercase_checksum() {
    framework()
        .given(history(VideoStatus::Generated))
        .when(store_command(&SHA.to_uppercase()))
        .then_expect_events(vec![stored()]);
}

#[test]
fn recording_storage_before_generation_is_rejected() {
    framework()
        .given(history(VideoStatus::Running))
        .when(store_command(SHA))
        .then_expect_error(invalid(VideoStatus::Running, "record_stored"));
}

#[test]
fn recording_storage_without_a_blob_key_is_rejected() {
    framework()
        .given(history(VideoStatus::Generated))
        .when(VideoCommand::RecordStored {
            blob_key: " ".to_string(),
            bytes: 1,
            sha256: SHA.to_string(),
            duration_ms: 1,
            width: 1,
            height: 1,
        })
        .then_expect_error(VideoError::EmptyBlobKey);
}

#[test]
fn recording_storage_with_a_malformed_checksum_is_rejected() {
    let not_hex = format!("{}zz", &SHA[..62]);
    for sha256 in ["", &SHA[..63], not_hex.as_str()] {
        framework()
            .given(history(VideoStatus::Generated))
            .when(store_command(sha256))
            .then_expect_error(VideoError::InvalidSha256);
    }
}

#[test]
fn completing_a_stored_video_records_the_final_cost() {
    framework()
        .given(history(VideoStatus::Stored))
        .when(VideoCommand::Complete {
            final_cost: Credits::new(60),
        })
        .then_expect_events(vec![VideoEvent::VideoCompleted {
            final_cost: Credits::new(60),
        }]);
}

#[test]
fn completing_above_the_estimate_is_left_to_the_credits_side() {
    framework()
        .given(history(VideoStatus::Stored))
        .when(VideoCommand::Complete {
            final_cost: Credits::new(1_000),
        })
        .then_expect_events(vec![VideoEvent::VideoCompleted {
            final_cost: Credits::new(1_000),
        }]);
}

#[test]
fn completing_with_a_negative_cost_is_rejected() {
    framework()
        .given(history(VideoStatus::Stored))
        .when(VideoCommand::Complete {
            final_cost: Credits::new(-1),
        })
        .then_expect_error(VideoError::NegativeCost);
}

#[test]
fn completing_before_storage_is_rejected() {
    framework()
        .given(history(VideoStatus::Generated))
        .when(VideoCommand::Complete {
            final_cost: Credits::new(60),
        })
        .then_expect_error(invalid(VideoStatus::Generated, "complete"));
}

#[test]
fn completing_twice_is_rejected() {
    framework()
        .given(history(VideoStatus::Completed))
        .when(VideoCommand::Complete {
            final_cost: Credits::new(60),
        })
        .then_expect_error(VideoError::AlreadyTerminal {
            status: VideoStatus::Completed,
        });
}

#[test]
fn failing_is_accepted_from_every_live_status() {
    for status in LIVE {
        framework()
            .given(history(status))
            .when(fail_command())
            .then_expect_events(vec![failed()]);
    }
}

#[test]
fn failing_a_finished_video_is_rejected() {
    for status in TERMINAL {
        framework()
            .given(history(status))
            .when(fail_command())
            .then_expect_error(VideoError::AlreadyTerminal { status });
    }
}

#[test]
fn requesting_cancellation_is_accepted_from_every_live_status_a_provider_may_be_working_in() {
    for status in LIVE
        .into_iter()
        .filter(|s| !matches!(s, VideoStatus::CancelRequested | VideoStatus::Queued))
    {
        framework()
            .given(history(status))
            .when(VideoCommand::RequestCancel {
                reason: "user asked".to_string(),
            })
            .then_expect_events(vec![cancel_requested()]);
    }
}

#[test]
fn cancelling_a_queued_video_cancels_it_at_once() {
    framework()
        .given(history(VideoStatus::Queued))
        .when(VideoCommand::RequestCancel {
            reason: "user asked".to_string(),
        })
        .then_expect_events(vec![
            cancel_requested(),
            VideoEvent::VideoCancelled { charged: false },
        ]);
}

#[test]
fn cancelling_a_video_whose_provider_refused_it_cancels_it_at_once() {
    // Submitted once, refused, waiting for its next attempt: queued again, no provider has it.
    let mut events = history(VideoStatus::Submitting);
    events.push(VideoEvent::SubmissionFailed {
        attempt: 1,
        provider: ProviderKind::Veo,
        code: "provider_unavailable".to_string(),
        message: "503".to_string(),
        retry_at: chrono::Utc::now(),
    });
    framework()
        .given(events)
        .when(VideoCommand::RequestCancel {
            reason: "user asked".to_string(),
        })
        .then_expect_events(vec![
            cancel_requested(),
            VideoEvent::VideoCancelled { charged: false },
        ]);
}

#[test]
fn requesting_cancellation_twice_is_rejected() {
    framework()
        .given(history(VideoStatus::CancelRequested))
        .when(VideoCommand::RequestCancel {
            reason: "again".to_string(),
        })
        .then_expect_error(VideoError::AlreadyCancelRequested);
}

#[test]
fn requesting_cancellation_after_completion_is_rejected() {
    framework()
        .given(history(VideoStatus::Completed))
        .when(VideoCommand::RequestCancel {
            reason: "too late".to_string(),
        })
        .then_expect_error(VideoError::AlreadyTerminal {
            status: VideoStatus::Completed,
        });
}

#[test]
fn cancelling_after_a_cancel_request_is_accepted() {
    framework()
        .given(history(VideoStatus::CancelRequested))
        .when(VideoCommand::Cancel { charged: false })
        .then_expect_events(vec![VideoEvent::VideoCancelled { charged: false }]);
}

#[test]
fn cancelling_without_a_cancel_request_is_rejected() {
    for status in LIVE
        .into_iter()
        .filter(|s| *s != VideoStatus::CancelRequested)
    {
        framework()
            .given(history(status))
            .when(VideoCommand::Cancel { charged: false })
            .then_expect_error(invalid(status, "cancel"));
    }
}

#[test]
fn cancelling_after_completion_is_rejected() {
    framework()
        .given(history(VideoStatus::Completed))
        .when(VideoCommand::Cancel { charged: false })
        .then_expect_error(VideoError::AlreadyTerminal {
            status: VideoStatus::Completed,
        });
}

#[test]
fn the_video_state_follows_its_events() {
    let mut video = Video::default();
    assert_eq!(video.status(), None);
    assert!(!video.is_requested());

    let mut events = history(VideoStatus::Running);
    events.push(progressed(70));
    events.into_iter().for_each(|e| video.apply(e));
    assert_eq!(video.video_id(), Some(video_id()));
    assert_eq!(video.spec(), Some(&spec()));
    assert_eq!(video.owner(), Some(spec().owner));
    assert_eq!(video.status(), Some(VideoStatus::Running));
    assert_eq!(video.provider(), Some(ProviderKind::Veo));
    assert_eq!(video.model(), Some("veo-3"));
    assert_eq!(video.attempt(), 1);
    assert_eq!(video.provider_job_id(), Some("job-1"));
    assert_eq!(video.progress(), 70);

    video.apply(VideoEvent::VideoGenerated {});
    assert_eq!(video.progress(), 100);
    video.apply(stored());
    assert_eq!(
        video.artifact(),
        Some(&StoredArtifact {
            blob_key: "videos/2001.mp4".to_string(),
            bytes: 1_048_576,
            sha256: SHA.to_string(),
            duration_ms: 8_000,
            width: 1920,
            height: 1080,
        })
    );
    video.apply(VideoEvent::VideoCompleted {
        final_cost: Credits::new(75),
    });
    assert_eq!(video.final_cost(), Some(Credits::new(75)));
    assert!(video.status().is_some_and(VideoStatus::is_terminal));
}

#[test]
fn a_retried_submission_forgets_the_previous_attempt() {
    let mut video = Video::default();
    for event in [requested(), submission_started(1), submission_started(2)] {
        video.apply(event);
    }
    assert_eq!(video.attempt(), 2);
    assert_eq!(video.provider_job_id(), None);
    assert_eq!(video.progress(), 0);
}

#[test]
fn a_failed_or_cancelled_video_remembers_why() {
    let mut video = Video::default();
    history(VideoStatus::Failed)
        .into_iter()
        .for_each(|e| video.apply(e));
    assert_eq!(
        video.failure(),
        Some(&VideoFailure {
            code: "provider_error".to_string(),
            message: "the provider rejected the prompt".to_string(),
            retryable: false,
            charged: false,
        })
    );

    let mut video = Video::default();
    history(VideoStatus::Cancelled)
        .into_iter()
        .for_each(|e| video.apply(e));
    assert_eq!(video.cancel_reason(), Some("user asked"));
}

#[test]
fn delivering_records_what_is_left_of_generated_stored_completed_in_one_step() {
    let completed = VideoEvent::VideoCompleted {
        final_cost: Credits::new(60),
    };
    for (from, expected) in [
        (
            VideoStatus::Submitted,
            vec![VideoEvent::VideoGenerated {}, stored(), completed.clone()],
        ),
        (
            VideoStatus::Running,
            vec![VideoEvent::VideoGenerated {}, stored(), completed.clone()],
        ),
        (VideoStatus::Generated, vec![stored(), completed.clone()]),
        (VideoStatus::Stored, vec![completed.clone()]),
    ] {
        framework()
            .given(history(from))
            .when(deliver_command(&SHA.to_ascii_uppercase()))
            .then_expect_events(expected);
    }
}

#[test]
fn delivering_is_refused_before_submission_after_a_cancel_request_and_with_bad_output() {
    for from in [
        VideoStatus::Queued,
        VideoStatus::Submitting,
        VideoStatus::CancelRequested,
    ] {
        framework()
            .given(history(from))
            .when(deliver_command(SHA))
            .then_expect_error(invalid(from, "deliver"));
    }
    framework()
        .given(history(VideoStatus::Running))
        .when(deliver_command(&SHA[..63]))
        .then_expect_error(VideoError::InvalidSha256);
}

fn cancelled_while_submitting() -> Vec<VideoEvent> {
    let mut events = history(VideoStatus::Submitting);
    events.push(cancel_requested());
    events
}

#[test]
fn a_cancel_after_the_provider_accepted_the_job_may_be_charged() {
    framework()
        .given(history(VideoStatus::CancelRequested))
        .when(VideoCommand::Cancel { charged: true })
        .then_expect_events(vec![VideoEvent::VideoCancelled { charged: true }]);
}

#[test]
fn a_job_accepted_while_its_cancel_was_requested_is_recorded_and_stays_cancelling() {
    framework()
        .given(cancelled_while_submitting())
        .when(VideoCommand::MarkSubmitted {
            provider_job_id: "job-1".to_string(),
        })
        .then_expect_events(vec![submitted(), cancel_requested()]);
    // Then the cancellation can bill it: the provider has it.
    let mut events = cancelled_while_submitting();
    events.extend([submitted(), cancel_requested()]);
    framework()
        .given(events)
        .when(VideoCommand::Cancel { charged: true })
        .then_expect_events(vec![VideoEvent::VideoCancelled { charged: true }]);
}

#[test]
fn a_submission_that_failed_after_its_cancel_was_requested_ends_the_video_free() {
    framework()
        .given(cancelled_while_submitting())
        .when(VideoCommand::RecordSubmissionFailure {
            code: "upstream_unavailable".to_string(),
            message: "503".to_string(),
            retry_at: retry_at(),
        })
        .then_expect_events(vec![VideoEvent::VideoCancelled { charged: false }]);
    // No provider job: a charge asked for is not made.
    framework()
        .given(cancelled_while_submitting())
        .when(VideoCommand::Cancel { charged: true })
        .then_expect_events(vec![VideoEvent::VideoCancelled { charged: false }]);
}

#[test]
fn a_finished_video_can_be_deleted_once() {
    for status in TERMINAL {
        framework()
            .given(history(status))
            .when(VideoCommand::Delete)
            .then_expect_events(vec![VideoEvent::VideoDeleted {}]);
        let mut deleted = history(status);
        deleted.push(VideoEvent::VideoDeleted {});
        framework()
            .given(deleted)
            .when(VideoCommand::Delete)
            .then_expect_error(VideoError::AlreadyDeleted);
    }
}

#[test]
fn a_video_that_has_not_finished_cannot_be_deleted() {
    for status in LIVE {
        framework()
            .given(history(status))
            .when(VideoCommand::Delete)
            .then_expect_error(VideoError::NotFinished { status });
    }
    framework()
        .given_no_previous_events()
        .when(VideoCommand::Delete)
        .then_expect_error(VideoError::NotRequested);
}

#[test]
fn a_deleted_video_keeps_its_final_status_and_takes_no_other_command() {
    let mut events = history(VideoStatus::Completed);
    events.push(VideoEvent::VideoDeleted {});
    let mut video = Video::default();
    for event in events.clone() {
        video.apply(event);
    }
    assert!(video.is_deleted());
    assert_eq!(video.status(), Some(VideoStatus::Completed));
    framework()
        .given(events)
        .when(VideoCommand::RequestCancel {
            reason: "too late".to_string(),
        })
        .then_expect_error(VideoError::AlreadyTerminal {
            status: VideoStatus::Completed,
        });
}
