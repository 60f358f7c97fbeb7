//! A role's long-running tasks under one supervisor.
//!
//! Every task of a role (a projector, the dispatcher, the poller, the API server) is meant to
//! run until shutdown. One that ends before it, with an error, a panic or even `Ok`, leaves
//! the process half working: [`Tasks::supervise`] then logs which task ended and why, stops
//! the others and returns an error, so the process exits non-zero and its supervisor
//! (systemd, Kubernetes, compose's `restart:`) starts it again.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use anyhow::anyhow;
use tokio::sync::watch;
use tokio::task::{Id, JoinError, JoinSet};

/// How long the tasks get to stop once the role is stopping.
const GRACE: Duration = Duration::from_secs(20);

pub struct Tasks {
    stop: watch::Sender<bool>,
    set: JoinSet<anyhow::Result<()>>,
    names: HashMap<Id, &'static str>,
}

impl Tasks {
    /// Tasks that stop when the role does (they wait on [`Tasks::stopped`]).
    pub fn new() -> Self {
        Self {
            stop: watch::Sender::new(false),
            set: JoinSet::new(),
            names: HashMap::new(),
        }
    }

    /// A receiver that turns true when the role stops.
    pub fn stopped(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    pub fn spawn(
        &mut self,
        name: &'static str,
        task: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        let handle = self.set.spawn(task);
        self.names.insert(handle.id(), name);
    }

    /// Runs until `shutdown` resolves or a task ends, whichever is first; then stops every
    /// task and waits for them (up to a grace period). An early end is an error naming the
    /// task; so is any task's error while stopping.
    pub async fn supervise(mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let early = tokio::select! {
            () = shutdown => None,
            Some(joined) = self.set.join_next_with_id() => Some(joined),
        };
        self.stop.send_replace(true);
        let mut failure = None;
        if let Some(joined) = early {
            let (name, outcome) = self.outcome(joined);
            let error = match outcome {
                Ok(()) => anyhow!("task {name} ended unexpectedly"),
                Err(error) => error.context(format!("task {name} failed")),
            };
            tracing::error!(
                task = name,
                error = format!("{error:#}"),
                "stopping the role"
            );
            failure = Some(error);
        }
        let rest = async {
            while let Some(joined) = self.set.join_next_with_id().await {
                let (name, outcome) = self.outcome(joined);
                if let Err(error) = outcome {
                    let error = error.context(format!("task {name} failed while stopping"));
                    tracing::error!(task = name, error = format!("{error:#}"), "task failed");
                    failure.get_or_insert(error);
                }
            }
        };
        if tokio::time::timeout(GRACE, rest).await.is_err() {
            let waiting: Vec<&str> = self.names.values().copied().collect();
            tracing::warn!(tasks = ?waiting, "tasks did not stop in time; aborting them");
            self.set.abort_all();
        }
        failure.map_or(Ok(()), Err)
    }

    fn outcome(
        &mut self,
        joined: Result<(Id, anyhow::Result<()>), JoinError>,
    ) -> (&'static str, anyhow::Result<()>) {
        match joined {
            Ok((id, outcome)) => (self.names.remove(&id).unwrap_or("?"), outcome),
            Err(error) => {
                let name = self.names.remove(&error.id()).unwrap_or("?");
                let reason = if error.is_panic() {
                    "panicked"
                } else {
                    "was cancelled"
                };
                (name, Err(anyhow!("the task {reason}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_ends_early_fails_the_role_and_stops_the_others() {
        let mut tasks = Tasks::new();
        let mut stopped = tasks.stopped();
        tasks.spawn("steady", async move {
            let _ = stopped.wait_for(|stop| *stop).await;
            Ok(())
        });
        tasks.spawn("fragile", async { Err(anyhow!("lost its footing")) });
        let error = tasks
            .supervise(std::future::pending())
            .await
            .expect_err("the role fails");
        let text = format!("{error:#}");
        assert!(text.contains("task fragile failed"), "{text}");
        assert!(text.contains("lost its footing"), "{text}");
    }

    #[tokio::test]
    async fn a_panic_or_a_quiet_exit_is_named_too() {
        let mut tasks = Tasks::new();
        tasks.spawn("quiet", async { Ok(()) });
        let error = tasks
            .supervise(std::future::pending())
            .await
            .expect_err("the role fails");
        assert!(format!("{error:#}").contains("task quiet ended unexpectedly"));

        let mut tasks = Tasks::new();
        tasks.spawn("broken", async { panic!("boom") });
        let error = tasks
            .supervise(std::future::pending())
            .await
            .expect_err("the role fails");
        let text = format!("{error:#}");
        assert!(
            text.contains("task broken failed") && text.contains("panicked"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn shutdown_stops_every_task_and_succeeds() {
        let mut tasks = Tasks::new();
        for name in ["one", "two"] {
            let mut stopped = tasks.stopped();
            tasks.spawn(name, async move {
                let _ = stopped.wait_for(|stop| *stop).await;
                Ok(())
            });
        }
        tasks
            .supervise(tokio::time::sleep(Duration::from_millis(10)))
            .await
            .expect("clean stop");
    }
}
