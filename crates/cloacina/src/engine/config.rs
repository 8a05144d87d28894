//! Runner configuration. Every field has a documented default.

use std::time::Duration;

use super::EngineError;

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Most task bodies running at once in this runner. Default 32.
    pub concurrency: usize,
    /// Tasks claimed beyond `concurrency`, waiting for a free slot. Recording a result takes
    /// a commit; with prefetched work a slot runs the next task meanwhile instead of idling.
    /// Keep it small when tasks are long and several runners share the work (a prefetched
    /// task waits here while another runner may be idle). Default: `concurrency`.
    pub prefetch: Option<usize>,
    /// How long a claim is valid without renewal. A runner that dies loses its tasks to
    /// recovery after at most this long. Default 30 s.
    pub lease: Duration,
    /// How often held leases are renewed. Default: a third of `lease`.
    pub heartbeat: Option<Duration>,
    /// How often expired leases are looked for (and once at start-up, at once). Default 10 s.
    pub recovery_interval: Duration,
    /// How many times a task may be recovered after a lost lease before it fails. Default 3.
    pub max_recoveries: u32,
    /// Safety-net poll for ready work; normal dispatch is event-driven. Default 1 s.
    pub poll_interval: Duration,
    /// How long `shutdown` waits for running tasks before releasing their leases. Default 30 s.
    pub shutdown_timeout: Duration,
    /// Name recorded as the lease owner. Default `runner-<pid>-<random>`.
    pub runner_id: Option<String>,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            concurrency: 32,
            prefetch: None,
            lease: Duration::from_secs(30),
            heartbeat: None,
            recovery_interval: Duration::from_secs(10),
            max_recoveries: 3,
            poll_interval: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(30),
            runner_id: None,
        }
    }
}

impl RunnerConfig {
    pub fn validate(&self) -> Result<(), EngineError> {
        let bad = |m: &str| Err(EngineError::Config(m.to_string()));
        if self.concurrency == 0 {
            return bad("concurrency must be at least 1");
        }
        if self.lease < Duration::from_millis(100) {
            return bad("lease must be at least 100 ms");
        }
        if let Some(h) = self.heartbeat
            && (h.is_zero() || h >= self.lease)
        {
            return bad("heartbeat must be greater than zero and shorter than the lease");
        }
        if self.recovery_interval.is_zero() || self.poll_interval.is_zero() {
            return bad("recovery_interval and poll_interval must be greater than zero");
        }
        if self.max_recoveries > i32::MAX as u32 {
            return bad("max_recoveries is too large");
        }
        Ok(())
    }

    /// Most tasks held at once: running plus prefetched.
    pub(crate) fn held_max(&self) -> usize {
        self.concurrency
            .saturating_add(self.prefetch.unwrap_or(self.concurrency))
    }

    pub(crate) fn heartbeat_interval(&self) -> Duration {
        self.heartbeat.unwrap_or(self.lease / 3)
    }

    pub(crate) fn owner(&self) -> String {
        self.runner_id.clone().unwrap_or_else(|| {
            let id = uuid::Uuid::new_v4().simple().to_string();
            format!("runner-{}-{}", std::process::id(), &id[..8])
        })
    }
}
