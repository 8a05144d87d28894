//! Cron schedules: stored in the database, evaluated in their IANA time zone, each instant
//! fired exactly once across processes, missed instants handled by the catch-up policy.
//!
//! **Cursor.** A schedule row's `next_run_at` is its cursor: the earliest instant neither fired
//! nor skipped. It only moves forward, and only in two ways, both compare-and-set in one
//! transaction: a *fire* (instant `i` is claimed only while the cursor is at or before `i`; the
//! same transaction moves the cursor past `i`, records `(schedule, i)` in `cron_fires` and
//! creates the execution), or an *advance* past instants the policy drops (only from the exact
//! cursor value the scheduler read). Two schedulers racing for one instant serialize on the
//! schedule row; the loser's claim finds the cursor past the instant and creates nothing.
//!
//! **Crash window.** There is none between "claimed" and "started": the claim, the fire record
//! and the execution (its tasks, input and first events) commit together or not at all. A
//! scheduler that dies before its commit leaves the cursor where it was, and the next pass of
//! any live scheduler handles the instant by the policy (fires it if it is still on time, or
//! under `run_all`; drops it under `skip` once it is late).
//!
//! **Policies** ([`CatchUp`]). An instant is *on time* while it is at most
//! [`CronConfig::misfire_grace`] old; older ones are *missed*.
//! - `skip`: only the latest due instant fires, and only if it is on time; every missed
//!   instant is dropped and the cursor moves to the next future instant.
//! - `run_all { max }`: every due instant fires, oldest first, but at most `cap` of them — the
//!   most recent, so catch-up runs join up with the future ones — where `cap` is `max`
//!   lowered to [`CronConfig::max_catchup`] when set (never below 1). Older ones are dropped.
//!
//! Dropped instants are counted in the row's `missed_count` and logged once per pass.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;
use futures::StreamExt;
use serde_json::json;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::{Clock, Notes, ScheduleError, SystemClock};
use crate::engine::Runner;
use crate::store::{
    CronClaim, CronScheduleFilter, CronScheduleRecord, Millis, NewCronSchedule, Store,
    SubmitOptions, SubmitOutcome,
};
use crate::workflow::package::CronDescription;
use crate::workflow::{CatchUp, Context};

/// Most instants one pass counts when it only needs a number (dropped instants after a very
/// long gap of a per-second schedule); the count saturates there.
const COUNT_LIMIT: usize = 100_000;
/// Most instants one pass fires per schedule; a longer catch-up continues in the next pass.
const FIRES_PER_PASS: usize = 1_000;
/// Most due schedules one pass looks at; more are handled by the following passes at once.
const SCHEDULES_PER_PASS: i64 = 1_000;
/// Due schedules handled at once in a pass.
const PARALLEL_SCHEDULES: usize = 16;
/// Fire records kept per schedule (history for `trigger inspect`; exactly-once does not need
/// them).
const FIRE_HISTORY_KEEP: i64 = 1_000;
/// How far ahead the next instant is looked for (rare dates such as 29 February).
const SEARCH_YEARS: i64 = 9;

// ---------------------------------------------------------------------------------------------
// Expressions
// ---------------------------------------------------------------------------------------------

/// A parsed cron expression in its time zone.
///
/// Five fields (minute precision) or six (seconds first), plus nicknames such as `@hourly`;
/// `L`, `#` and `W` as croner supports them. Instants are computed on the wall clock of the
/// time zone: a fixed-time schedule whose wall-clock time falls into a spring-forward gap runs
/// at the first instant after the gap; one that falls into a fall-back overlap runs once, at
/// the earlier instant; interval schedules (`*/15 * * * *`) run on both passes of an overlap.
#[derive(Debug, Clone)]
pub struct CronExpr {
    cron: croner::Cron,
    tz: Tz,
}

impl CronExpr {
    /// Parses `expression` for time zone `timezone` (an IANA name such as `Europe/Amsterdam`).
    pub fn parse(expression: &str, timezone: &str) -> Result<Self, String> {
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(expression)
            .map_err(|e| format!("expression '{expression}' is not valid: {e}"))?;
        let tz = timezone.parse::<Tz>().map_err(|_| {
            format!(
                "time zone '{timezone}' is not an IANA time zone name (like 'UTC' or 'Europe/Amsterdam')"
            )
        })?;
        Ok(Self { cron, tz })
    }

    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// `t` (Unix ms) in the schedule's zone, truncated to the second (cron's precision).
    fn at(&self, t: Millis) -> Option<DateTime<Tz>> {
        let secs = t.div_euclid(1000);
        Utc.timestamp_opt(secs, 0)
            .single()
            .map(|d| d.with_timezone(&self.tz))
    }

    /// The first instant strictly after `t`, or `None` when there is none within nine years.
    pub fn next_after(&self, t: Millis) -> Option<Millis> {
        let mut from = self.at(t)?;
        for _ in 0..SEARCH_YEARS {
            match self.cron.find_next_occurrence(&from, false) {
                Ok(d) => return Some(d.timestamp_millis()),
                Err(croner::errors::CronError::TimeSearchLimitExceeded) => {
                    from = self.at(from.timestamp_millis() + 365 * 86_400_000)?;
                }
                Err(_) => return None,
            }
        }
        None
    }

    /// The first instant at or after `t`.
    pub fn at_or_after(&self, t: Millis) -> Option<Millis> {
        self.next_after(t.saturating_sub(1))
            .filter(|&i| i >= t)
            .or_else(|| self.next_after(t))
    }

    /// The last instant at or before `t`, or `None` when there is none within nine years.
    pub fn latest_at_or_before(&self, t: Millis) -> Option<Millis> {
        self.previous(t, true)
    }

    /// The last instant strictly before `t`.
    pub fn previous_before(&self, t: Millis) -> Option<Millis> {
        // Whole seconds: an instant is always on a second, so "before t" is "at or before
        // the last whole second before t".
        self.previous(t.saturating_sub(1), true)
    }

    fn previous(&self, t: Millis, inclusive: bool) -> Option<Millis> {
        let mut from = self.at(t)?;
        for _ in 0..SEARCH_YEARS {
            match self.cron.find_previous_occurrence(&from, inclusive) {
                Ok(d) => return Some(d.timestamp_millis()),
                Err(croner::errors::CronError::TimeSearchLimitExceeded) => {
                    from = self.at(from.timestamp_millis() - 365 * 86_400_000)?;
                }
                Err(_) => return None,
            }
        }
        None
    }

    /// Instants in `[from, until)`, oldest first, at most `limit` of them.
    pub fn instants_between(&self, from: Millis, until: Millis, limit: usize) -> Vec<Millis> {
        let mut out = Vec::new();
        let mut next = self.at_or_after(from);
        while let Some(i) = next {
            if i >= until || out.len() >= limit {
                break;
            }
            out.push(i);
            next = self.next_after(i);
        }
        out
    }

    /// RFC 3339 in UTC (`2026-11-23T01:00:00Z`) and on the zone's wall clock
    /// (`2026-11-23T02:00:00+01:00`).
    pub fn rfc3339(&self, t: Millis) -> (String, String) {
        match self.at(t) {
            Some(local) => (
                local
                    .with_timezone(&Utc)
                    .to_rfc3339_opts(SecondsFormat::Secs, true),
                local.to_rfc3339_opts(SecondsFormat::Secs, false),
            ),
            None => (t.to_string(), t.to_string()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Planning one schedule's due instants (pure, unit-tested)
// ---------------------------------------------------------------------------------------------

/// One instant to fire: the claim moves the cursor to `next` and counts `missed` dropped
/// instants before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PlannedFire {
    pub instant: Millis,
    pub next: Millis,
    pub missed: i64,
}

/// What to do with one schedule at `now`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Instants to fire, oldest first.
    pub fires: Vec<PlannedFire>,
    /// When nothing fires: move the cursor to `.0`, counting `.1` dropped instants.
    pub advance: Option<(Millis, i64)>,
}

/// The effective run_all cap: the schedule's own, lowered to the configured one, at least 1.
pub(crate) fn effective_cap(policy: CatchUp, config_cap: Option<u32>) -> Option<usize> {
    match policy {
        CatchUp::Skip => None,
        CatchUp::RunAll { max } => {
            let cap = config_cap.map_or(max, |c| c.min(max));
            Some(cap.max(1) as usize)
        }
    }
}

/// Plans schedule `cursor` (its `next_run_at`) at `now`. `never` is the cursor used when the
/// expression has no future instant.
pub(crate) fn plan(
    expr: &CronExpr,
    policy: CatchUp,
    config_cap: Option<u32>,
    cursor: Millis,
    now: Millis,
    grace: Duration,
) -> Plan {
    if cursor > now {
        return Plan::default();
    }
    let future = expr.next_after(now).unwrap_or(Millis::MAX);
    let latest = match expr.latest_at_or_before(now) {
        Some(l) if l >= cursor => l,
        // The cursor is not an instant of the expression (edited by hand?) and nothing is
        // due: just move it on.
        _ => {
            return Plan {
                fires: Vec::new(),
                advance: Some((future, 0)),
            };
        }
    };
    let grace_ms = grace.as_millis().min(i64::MAX as u128) as i64;
    let count = |from: Millis, until: Millis| -> i64 {
        expr.instants_between(from, until, COUNT_LIMIT).len() as i64
    };
    match effective_cap(policy, config_cap) {
        None => {
            let missed_before = count(cursor, latest);
            if now - latest <= grace_ms {
                Plan {
                    fires: vec![PlannedFire {
                        instant: latest,
                        next: future,
                        missed: missed_before,
                    }],
                    advance: None,
                }
            } else {
                Plan {
                    fires: Vec::new(),
                    advance: Some((future, missed_before + 1)),
                }
            }
        }
        Some(cap) => {
            // The last `cap` instants in [cursor, now], found walking back from the latest.
            let mut window = vec![latest];
            while window.len() < cap {
                match window.last().and_then(|&w| expr.previous_before(w)) {
                    Some(p) if p >= cursor => window.push(p),
                    _ => break,
                }
            }
            window.reverse();
            let dropped = match window.first() {
                Some(&first) if window.len() == cap && first > cursor => count(cursor, first),
                _ => 0,
            };
            let take = window.len().min(FIRES_PER_PASS);
            let fires = (0..take)
                .map(|i| PlannedFire {
                    instant: window[i],
                    next: window.get(i + 1).copied().unwrap_or(future),
                    missed: if i == 0 { dropped } else { 0 },
                })
                .collect();
            Plan {
                fires,
                advance: None,
            }
        }
    }
}

/// Where the sweeper puts a lost schedule's cursor (see [`CronScheduler::sweep_once`]):
/// `skip` drops everything due; `run_all` keeps only the last `cap` due instants.
pub(crate) fn repair(
    expr: &CronExpr,
    policy: CatchUp,
    config_cap: Option<u32>,
    cursor: Millis,
    now: Millis,
) -> Option<(Millis, i64)> {
    match effective_cap(policy, config_cap) {
        None => {
            let to = expr.next_after(now).unwrap_or(Millis::MAX);
            Some((
                to,
                expr.instants_between(cursor, now + 1, COUNT_LIMIT).len() as i64,
            ))
        }
        Some(cap) => {
            let mut start = expr.latest_at_or_before(now).filter(|&l| l >= cursor)?;
            for _ in 1..cap {
                match expr.previous_before(start) {
                    Some(p) if p >= cursor => start = p,
                    _ => return None,
                }
            }
            (start > cursor).then(|| {
                (
                    start,
                    expr.instants_between(cursor, start, COUNT_LIMIT).len() as i64,
                )
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The scheduler
// ---------------------------------------------------------------------------------------------

/// Cron scheduler settings (the daemon's `[daemon]` keys `cron_max_catchup`,
/// `cron_recovery_interval_s`, `cron_lost_threshold_min`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronConfig {
    /// Upper bound on a `run_all` schedule's catch-up (its own `max` still applies); `None` =
    /// only the schedule's own cap.
    pub max_catchup: Option<u32>,
    /// How often the recovery sweep runs (and once at start). Default 300 s.
    pub recovery_interval: Duration,
    /// A schedule whose cursor is older than this is *lost* (no live scheduler could fire it:
    /// its workflow is served nowhere, or every attempt failed); the sweep repairs it by its
    /// policy and warns once. Default 10 min.
    pub lost_threshold: Duration,
    /// Longest the loop sleeps between looks at the schedules (it sleeps until the earliest
    /// cursor, bounded by this, and wakes at once when schedules are written). Default 1 s.
    pub tick: Duration,
    /// How late an instant may be and still count as on time (`skip` fires it; older ones are
    /// missed). Default 5 s.
    pub misfire_grace: Duration,
}

impl Default for CronConfig {
    fn default() -> Self {
        Self {
            max_catchup: None,
            recovery_interval: Duration::from_secs(300),
            lost_threshold: Duration::from_secs(600),
            tick: Duration::from_secs(1),
            misfire_grace: Duration::from_secs(5),
        }
    }
}

impl CronConfig {
    /// The settings from the daemon's configuration file.
    pub fn from_daemon(d: &crate::config::DaemonConfig) -> Self {
        Self {
            max_catchup: d.cron_max_catchup,
            recovery_interval: d.cron_recovery_interval(),
            lost_threshold: d.cron_lost_threshold(),
            ..Self::default()
        }
    }
}

/// What one pass of the scheduler did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// `(schedule name, instant, execution)` for each run started, oldest first per schedule.
    pub fired: Vec<(String, Millis, Uuid)>,
    /// Instants another scheduler fired (or dropped) first.
    pub duplicates: usize,
    /// Instants dropped by the catch-up policy.
    pub missed: i64,
    /// Due schedules whose workflow this runner does not serve (left for a runner that does;
    /// the sweep repairs them once they are lost).
    pub waiting: Vec<String>,
    /// Schedules that could not be handled, with the reason.
    pub errors: Vec<(String, String)>,
}

/// What one recovery sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// `(schedule name, new cursor, dropped instants)` for each lost schedule repaired.
    pub repaired: Vec<(String, Millis, i64)>,
    /// Fire records pruned from the history.
    pub pruned: usize,
}

#[derive(Debug, Default)]
struct CronStats {
    fired: AtomicU64,
    duplicates: AtomicU64,
    missed: AtomicU64,
    passes: AtomicU64,
}

struct CronInner {
    store: Store,
    runner: Runner,
    /// Replaced by [`CronScheduler::set_config`] (a daemon reload); read afresh by each pass.
    config: std::sync::RwLock<CronConfig>,
    clock: Arc<dyn Clock>,
    wake: Notify,
    stop: watch::Sender<bool>,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
    notes: Notes<Uuid>,
    stats: CronStats,
    /// Set by [`CronScheduler::set_config`]: the loop reschedules its next sweep by the new
    /// recovery interval.
    reset_sweep: std::sync::atomic::AtomicBool,
}

impl CronInner {
    fn config(&self) -> CronConfig {
        crate::sync::read(&self.config).clone()
    }
}

/// Fires the stored cron schedules through a runner. Clone it freely; clones share one
/// scheduler. Several schedulers (processes, replicas) may run on one database at once.
#[derive(Clone)]
pub struct CronScheduler {
    inner: Arc<CronInner>,
}

impl std::fmt::Debug for CronScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CronScheduler")
            .field("config", &self.config())
            .field("running", &self.is_running())
            .finish()
    }
}

/// Cumulative counters of a scheduler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CronCounters {
    pub fired: u64,
    pub duplicates: u64,
    pub missed: u64,
    pub passes: u64,
}

impl CronScheduler {
    pub fn new(store: Store, runner: Runner, config: CronConfig) -> Self {
        Self::with_clock(store, runner, config, Arc::new(SystemClock))
    }

    /// A scheduler reading the time from `clock` (tests use a [`super::ManualClock`]).
    pub fn with_clock(
        store: Store,
        runner: Runner,
        config: CronConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let (stop, _) = watch::channel(false);
        Self {
            inner: Arc::new(CronInner {
                store,
                runner,
                config: std::sync::RwLock::new(config),
                clock,
                wake: Notify::new(),
                stop,
                task: std::sync::Mutex::new(None),
                notes: Notes::default(),
                stats: CronStats::default(),
                reset_sweep: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// The settings in force.
    pub fn config(&self) -> CronConfig {
        self.inner.config()
    }

    /// Replaces the settings while the scheduler runs (a daemon reload): the next pass and
    /// sweep use them, and the loop wakes at once so a shorter recovery interval or tick takes
    /// effect now.
    pub fn set_config(&self, config: CronConfig) {
        *crate::sync::write(&self.inner.config) = config;
        self.inner.reset_sweep.store(true, Ordering::SeqCst);
        self.inner.wake.notify_one();
    }

    pub fn counters(&self) -> CronCounters {
        let s = &self.inner.stats;
        CronCounters {
            fired: s.fired.load(Ordering::Relaxed),
            duplicates: s.duplicates.load(Ordering::Relaxed),
            missed: s.missed.load(Ordering::Relaxed),
            passes: s.passes.load(Ordering::Relaxed),
        }
    }

    /// Whether the background loop runs.
    pub fn is_running(&self) -> bool {
        crate::sync::lock(&self.inner.task)
            .as_ref()
            .is_some_and(|h| !h.is_finished())
    }

    /// Spawns the background loop on the current tokio runtime: a recovery sweep at once (so
    /// windows missed while the process was down are handled on start-up), then passes at each
    /// due instant. Calling it again while it runs does nothing.
    pub fn start(&self) {
        let mut task = crate::sync::lock(&self.inner.task);
        if task.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!("the cron scheduler needs a tokio runtime to start; not started");
            return;
        };
        self.inner.stop.send_replace(false);
        // The loop holds the scheduler weakly: dropping every handle ends it too.
        let weak = Arc::downgrade(&self.inner);
        let stop = self.inner.stop.subscribe();
        *task = Some(runtime.spawn(run_loop(weak, stop)));
    }

    /// Stops the background loop and waits for it (a pass in progress finishes its current
    /// fire). Safe to call when it never started, and more than once.
    pub async fn stop(&self) {
        self.inner.stop.send_replace(true);
        self.inner.wake.notify_one();
        let handle = crate::sync::lock(&self.inner.task).take();
        if let Some(mut handle) = handle
            && tokio::time::timeout(Duration::from_secs(10), &mut handle)
                .await
                .is_err()
        {
            handle.abort();
        }
    }

    /// Reconciler load step 1: stores the package's schedules (one row per name, keyed by
    /// `(package_id, name)`) and deletes the package's rows not in `crons`. A new or changed
    /// (expression or time zone) schedule starts at its next instant after now; an unchanged
    /// one keeps its cursor, so instants missed while the process was down are caught up by
    /// the policy. Idempotent. Validates every schedule before writing any.
    pub async fn schedules_write(
        &self,
        package_id: &str,
        tenant: &str,
        crons: &[CronDescription],
    ) -> Result<(), ScheduleError> {
        let now = self.inner.clock.now_ms();
        let mut specs = Vec::with_capacity(crons.len());
        let mut seen = std::collections::HashSet::new();
        for c in crons {
            let invalid = |reason: String| ScheduleError::InvalidSchedule {
                schedule: c.name.clone(),
                reason,
            };
            if !seen.insert(c.name.as_str()) {
                return Err(ScheduleError::DuplicateName {
                    what: "cron schedule",
                    name: c.name.clone(),
                });
            }
            if let CatchUp::RunAll { max: 0 } = c.catch_up {
                return Err(invalid(
                    "catch-up run_all needs a cap of at least 1 (max = 0)".to_string(),
                ));
            }
            let expr = CronExpr::parse(&c.expression, &c.timezone).map_err(invalid)?;
            let next = expr.next_after(now).ok_or_else(|| {
                invalid(format!(
                    "expression '{}' has no instant in the next {SEARCH_YEARS} years in time zone '{}'",
                    c.expression, c.timezone
                ))
            })?;
            specs.push(NewCronSchedule {
                name: c.name.clone(),
                workflow: c.workflow.clone(),
                expression: c.expression.clone(),
                timezone: c.timezone.clone(),
                catch_up: c.catch_up,
                next_run_at: next,
            });
        }
        let rows = self
            .inner
            .store
            .cron_schedule_write(package_id, tenant, specs)
            .await?;
        tracing::debug!(
            package_id,
            tenant,
            schedules = rows.len(),
            "cron schedules written"
        );
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Reconciler unload step 6: deletes the package's schedule rows (and their fire history).
    /// No rows is success. Returns how many were deleted.
    pub async fn schedules_delete(&self, package_id: &str) -> Result<usize, ScheduleError> {
        let n = self.inner.store.cron_schedule_delete(package_id).await?;
        tracing::debug!(package_id, deleted = n, "cron schedules deleted");
        Ok(n)
    }

    /// Every stored schedule (of every package), earliest cursor first.
    pub async fn schedules_list(&self) -> Result<Vec<CronScheduleRecord>, ScheduleError> {
        Ok(self
            .inner
            .store
            .cron_schedule_list(CronScheduleFilter::default())
            .await?)
    }

    /// One pass: fires what is due now by each schedule's policy. The background loop calls
    /// this; tools and tests may too.
    pub async fn run_once(&self) -> Result<PassReport, ScheduleError> {
        let inner = &self.inner;
        inner.stats.passes.fetch_add(1, Ordering::Relaxed);
        let now = inner.clock.now_ms();
        let due = inner
            .store
            .cron_schedule_list(CronScheduleFilter {
                due_at: Some(now),
                limit: Some(SCHEDULES_PER_PASS),
                ..CronScheduleFilter::default()
            })
            .await?;
        // Schedules are handled concurrently (their fires share group commits); each one's
        // instants fire in order. Lateness is measured against `now`, the start of the pass,
        // so a long pass never turns on-time instants into missed ones.
        let partials: Vec<PassReport> = futures::stream::iter(due)
            .map(|s| async move {
                let mut report = PassReport::default();
                self.handle_due(&s, now, &mut report).await;
                report
            })
            .buffered(PARALLEL_SCHEDULES)
            .collect()
            .await;
        let mut report = PassReport::default();
        for p in partials {
            report.fired.extend(p.fired);
            report.duplicates += p.duplicates;
            report.missed += p.missed;
            report.waiting.extend(p.waiting);
            report.errors.extend(p.errors);
        }
        Ok(report)
    }

    async fn handle_due(&self, s: &CronScheduleRecord, now: Millis, report: &mut PassReport) {
        let inner = &self.inner;
        if *inner.stop.borrow() {
            return;
        }
        if inner.runner.workflow(&s.workflow).is_none() {
            let msg = format!(
                "waiting: workflow '{}' is not registered on this runner",
                s.workflow
            );
            if inner.notes.note(s.id, &msg) {
                tracing::debug!(schedule = %s.name, package_id = %s.package_id, "{msg}");
            }
            report.waiting.push(s.name.clone());
            return;
        }
        match self.fire_due(s, now, report).await {
            Ok(()) => {
                if inner
                    .notes
                    .clear(&s.id)
                    .is_some_and(|m| !m.starts_with("waiting"))
                {
                    tracing::info!(schedule = %s.name, package_id = %s.package_id, "cron schedule fires again");
                }
            }
            Err(e) => {
                let msg = e.to_string();
                if inner.notes.note(s.id, &msg) {
                    tracing::warn!(
                        schedule = %s.name, package_id = %s.package_id, workflow = %s.workflow, error = %msg,
                        "cron schedule could not fire; retrying at every tick (this message is not repeated while the error stays the same)"
                    );
                }
                report.errors.push((s.name.clone(), msg));
            }
        }
    }

    async fn fire_due(
        &self,
        s: &CronScheduleRecord,
        now: Millis,
        report: &mut PassReport,
    ) -> Result<(), ScheduleError> {
        let inner = &self.inner;
        let config = inner.config();
        let expr = CronExpr::parse(&s.expression, &s.timezone).map_err(|reason| {
            ScheduleError::InvalidSchedule {
                schedule: s.name.clone(),
                reason,
            }
        })?;
        let plan = plan(
            &expr,
            s.catch_up,
            config.max_catchup,
            s.next_run_at,
            now,
            config.misfire_grace,
        );
        if let Some((to, missed)) = plan.advance
            && inner
                .store
                .cron_schedule_advance(s.id, s.next_run_at, to, missed)
                .await?
        {
            self.count_missed(s, missed, report);
        }
        let grace = config.misfire_grace.as_millis() as i64;
        for f in plan.fires {
            let (instant, local) = expr.rfc3339(f.instant);
            let context = Context::from_value(json!({
                "cron": {
                    "schedule": s.name,
                    "instant": instant,
                    "local": local,
                    "timezone": s.timezone,
                    "catch_up": now - f.instant > grace,
                    "package_id": s.package_id,
                }
            }))
            .map_err(|e| ScheduleError::InvalidSchedule {
                schedule: s.name.clone(),
                reason: format!("cannot build the run's context: {e}"),
            })?;
            let options = SubmitOptions {
                dedup_key: None,
                cron: Some(CronClaim {
                    schedule_id: s.id,
                    instant: f.instant,
                    next_run_at: f.next,
                    missed: f.missed,
                }),
            };
            let submitted = inner
                .runner
                .submit_with(&s.workflow, context, options)
                .await;
            if let Err(crate::engine::EngineError::WorkflowPaused(_)) = submitted {
                // A paused workflow's instants are skipped, not queued: its cursor moves on.
                if inner
                    .store
                    .cron_schedule_advance(s.id, f.instant, f.next, 1)
                    .await?
                {
                    self.count_missed(s, 1, report);
                    tracing::debug!(schedule = %s.name, %instant, "cron instant skipped: the workflow is paused");
                }
                continue;
            }
            match submitted? {
                SubmitOutcome::Started(id) => {
                    inner.stats.fired.fetch_add(1, Ordering::Relaxed);
                    self.count_missed(s, f.missed, report);
                    tracing::debug!(schedule = %s.name, package_id = %s.package_id, %instant, execution = %id, "cron schedule fired");
                    report.fired.push((s.name.clone(), f.instant, id));
                }
                SubmitOutcome::Duplicate { .. } => {
                    inner.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                    report.duplicates += 1;
                }
            }
        }
        Ok(())
    }

    fn count_missed(&self, s: &CronScheduleRecord, missed: i64, report: &mut PassReport) {
        if missed <= 0 {
            return;
        }
        report.missed += missed;
        self.inner
            .stats
            .missed
            .fetch_add(missed as u64, Ordering::Relaxed);
        let policy = match s.catch_up {
            CatchUp::Skip => "skip".to_string(),
            CatchUp::RunAll { max } => format!("run_all (max {max})"),
        };
        tracing::info!(
            schedule = %s.name, package_id = %s.package_id, missed, policy = %policy,
            "cron schedule missed instants; dropped by its catch-up policy"
        );
    }

    /// The recovery sweep: repairs *lost* schedules — those whose cursor is older than
    /// [`CronConfig::lost_threshold`], which no live scheduler could fire (their workflow is
    /// served nowhere, or every attempt failed) — by their policy (`skip`: the cursor moves to
    /// the next future instant; `run_all`: only the last `cap` due instants are kept), warning
    /// once per schedule; and prunes the fire history. Runs at start-up and every
    /// [`CronConfig::recovery_interval`].
    pub async fn sweep_once(&self) -> Result<SweepReport, ScheduleError> {
        let inner = &self.inner;
        let config = inner.config();
        let now = inner.clock.now_ms();
        let threshold = config.lost_threshold.as_millis().min(i64::MAX as u128) as i64;
        let lost = inner
            .store
            .cron_schedule_list(CronScheduleFilter {
                due_at: Some(now.saturating_sub(threshold)),
                limit: Some(SCHEDULES_PER_PASS),
                ..CronScheduleFilter::default()
            })
            .await?;
        let mut report = SweepReport::default();
        for s in lost {
            let Ok(expr) = CronExpr::parse(&s.expression, &s.timezone) else {
                continue;
            };
            let Some((to, dropped)) =
                repair(&expr, s.catch_up, config.max_catchup, s.next_run_at, now)
            else {
                continue;
            };
            if inner
                .store
                .cron_schedule_advance(s.id, s.next_run_at, to, dropped)
                .await?
            {
                inner
                    .stats
                    .missed
                    .fetch_add(dropped.max(0) as u64, Ordering::Relaxed);
                let behind_min = (now - s.next_run_at) / 60_000;
                let served = if inner.runner.workflow(&s.workflow).is_some() {
                    "is registered here, but firing kept failing"
                } else {
                    "is not registered on this runner"
                };
                tracing::warn!(
                    schedule = %s.name, package_id = %s.package_id, workflow = %s.workflow,
                    behind_min, dropped,
                    "cron schedule was lost (its workflow {served}); repaired by its catch-up policy"
                );
                report.repaired.push((s.name.clone(), to, dropped));
            }
        }
        report.pruned = inner.store.cron_fire_prune(FIRE_HISTORY_KEEP).await?;
        Ok(report)
    }
}

/// The background loop: a sweep at start-up and every `recovery_interval`; a pass whenever
/// something may be due; in between, sleep until the earliest cursor (at most `tick`), waking
/// early when schedules are written or the scheduler stops.
async fn run_loop(weak: std::sync::Weak<CronInner>, mut stop: watch::Receiver<bool>) {
    let mut next_sweep = Millis::MIN;
    loop {
        if *stop.borrow() {
            return;
        }
        let Some(inner) = weak.upgrade() else {
            return;
        };
        let this = CronScheduler { inner };
        let inner = &this.inner;
        let config = inner.config();
        let recovery = config
            .recovery_interval
            .as_millis()
            .clamp(1, i64::MAX as u128) as i64;
        let tick = config.tick.max(Duration::from_millis(1));
        let now = inner.clock.now_ms();
        if inner.reset_sweep.swap(false, Ordering::SeqCst) && next_sweep != Millis::MIN {
            // New settings: the next sweep is one (new) recovery interval from now.
            next_sweep = now.saturating_add(recovery);
        }
        if now >= next_sweep {
            next_sweep = now.saturating_add(recovery);
            match this.sweep_once().await {
                Ok(_) => {
                    inner.notes.clear(&Uuid::nil());
                }
                Err(e) => {
                    if inner.notes.note(Uuid::nil(), &e.to_string()) {
                        tracing::warn!(error = %e, "cron recovery sweep failed; will retry");
                    }
                }
            }
        }
        let mut busy = false;
        match this.run_once().await {
            Ok(r) => {
                busy = !r.fired.is_empty() || r.missed > 0;
                if inner.notes.clear(&Uuid::max()).is_some() {
                    tracing::info!("cron scheduler passes succeed again");
                }
            }
            Err(e) => {
                if inner.notes.note(Uuid::max(), &e.to_string()) {
                    tracing::warn!(error = %e, "cron scheduler pass failed; retrying at every tick (not logged again while the error stays the same)");
                }
            }
        }
        // Sleep until the earliest cursor, bounded by the tick.
        let wait = match inner.store.cron_schedule_next().await {
            Ok(Some(next)) => {
                let now = inner.clock.now_ms();
                if next > now {
                    Duration::from_millis((next - now) as u64).min(tick)
                } else if busy {
                    Duration::ZERO
                } else {
                    tick
                }
            }
            _ => tick,
        };
        if wait.is_zero() {
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = inner.wake.notified() => {}
            changed = stop.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(rfc3339: &str) -> Millis {
        DateTime::parse_from_rfc3339(rfc3339)
            .map(|d| d.timestamp_millis())
            .unwrap_or_else(|e| panic!("bad test time {rfc3339}: {e}"))
    }

    fn utc(t: Millis) -> String {
        CronExpr::parse("* * * * *", "UTC")
            .map(|e| e.rfc3339(t).0)
            .unwrap_or_default()
    }

    fn expr(e: &str, tz: &str) -> CronExpr {
        CronExpr::parse(e, tz).unwrap_or_else(|err| panic!("{err}"))
    }

    #[test]
    fn parses_five_and_six_fields_and_rejects_garbage() {
        assert!(CronExpr::parse("0 2 * * *", "UTC").is_ok());
        assert!(CronExpr::parse("*/1 * * * * *", "UTC").is_ok());
        assert!(CronExpr::parse("@hourly", "Europe/Amsterdam").is_ok());
        let bad = CronExpr::parse("61 * * * *", "UTC").expect_err("bad minute");
        assert!(
            bad.contains("expression '61 * * * *' is not valid"),
            "{bad}"
        );
        let bad = CronExpr::parse("0 2 * * *", "Mars/Olympus").expect_err("bad zone");
        assert!(bad.contains("not an IANA time zone name"), "{bad}");
    }

    #[test]
    fn next_is_strictly_after_and_seconds_work() {
        let e = expr("*/1 * * * * *", "UTC");
        let t = ms("2026-01-01T00:00:00Z");
        assert_eq!(e.next_after(t), Some(t + 1000));
        assert_eq!(e.next_after(t + 500), Some(t + 1000));
        assert_eq!(e.latest_at_or_before(t + 500), Some(t));
        assert_eq!(e.latest_at_or_before(t), Some(t));
        assert_eq!(e.previous_before(t), Some(t - 1000));
        assert_eq!(e.at_or_after(t), Some(t));
        assert_eq!(e.at_or_after(t + 1), Some(t + 1000));
        assert_eq!(
            e.instants_between(t, t + 3000, 100),
            vec![t, t + 1000, t + 2000]
        );
    }

    #[test]
    fn time_zones_shift_wall_clock_instants() {
        let t = ms("2026-06-01T12:00:00Z");
        // 02:00 in Amsterdam (CEST, +2) is 00:00 UTC; in New York (EDT, -4) 06:00 UTC; in
        // Kolkata (+5:30) 20:30 UTC the day before.
        let n = |tz| expr("0 2 * * *", tz).next_after(t).map(utc);
        assert_eq!(
            n("Europe/Amsterdam").as_deref(),
            Some("2026-06-02T00:00:00Z")
        );
        assert_eq!(
            n("America/New_York").as_deref(),
            Some("2026-06-02T06:00:00Z")
        );
        assert_eq!(n("Asia/Kolkata").as_deref(), Some("2026-06-01T20:30:00Z"));
        assert_eq!(n("UTC").as_deref(), Some("2026-06-02T02:00:00Z"));
        let (u, local) = expr("0 2 * * *", "Europe/Amsterdam").rfc3339(ms("2026-06-02T00:00:00Z"));
        assert_eq!(
            (u.as_str(), local.as_str()),
            ("2026-06-02T00:00:00Z", "2026-06-02T02:00:00+02:00")
        );
    }

    #[test]
    fn winter_and_summer_time_keep_the_wall_clock() {
        let e = expr("0 2 * * *", "Europe/Amsterdam");
        // Winter (CET, +1): 01:00 UTC. Summer (CEST, +2): 00:00 UTC.
        assert_eq!(
            e.next_after(ms("2026-01-10T12:00:00Z")).map(utc).as_deref(),
            Some("2026-01-11T01:00:00Z")
        );
        assert_eq!(
            e.next_after(ms("2026-07-10T12:00:00Z")).map(utc).as_deref(),
            Some("2026-07-11T00:00:00Z")
        );
    }

    #[test]
    fn spring_forward_gap_runs_a_fixed_time_job_once_after_the_gap() {
        // 2026-03-29: Amsterdam clocks jump from 02:00 to 03:00 (01:00 UTC). 02:30 does not
        // exist that day; the job runs at the first instant after the gap, 03:00 CEST.
        let e = expr("30 2 * * *", "Europe/Amsterdam");
        let from = ms("2026-03-28T12:00:00Z");
        let got: Vec<String> = e
            .instants_between(from, ms("2026-03-31T00:00:00Z"), 10)
            .into_iter()
            .map(utc)
            .collect();
        assert_eq!(got, vec!["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]);
    }

    #[test]
    fn fall_back_overlap_runs_a_fixed_time_job_once_and_interval_jobs_twice() {
        // 2026-10-25: Amsterdam clocks go back from 03:00 CEST to 02:00 CET; 02:30 happens
        // twice (00:30 and 01:30 UTC).
        let fixed = expr("30 2 * * *", "Europe/Amsterdam");
        let from = ms("2026-10-24T12:00:00Z");
        let until = ms("2026-10-26T12:00:00Z");
        let got: Vec<String> = fixed
            .instants_between(from, until, 10)
            .into_iter()
            .map(utc)
            .collect();
        assert_eq!(got, vec!["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]);
        let every_half_hour = expr("*/30 * * * *", "Europe/Amsterdam");
        let got: Vec<String> = every_half_hour
            .instants_between(ms("2026-10-25T00:00:00Z"), ms("2026-10-25T02:00:00Z"), 10)
            .into_iter()
            .map(utc)
            .collect();
        // Wall clock 02:00, 02:30 (CEST), 02:00, 02:30 (CET): four real instants, 30 min apart.
        assert_eq!(
            got,
            vec![
                "2026-10-25T00:00:00Z",
                "2026-10-25T00:30:00Z",
                "2026-10-25T01:00:00Z",
                "2026-10-25T01:30:00Z"
            ]
        );
    }

    #[test]
    fn new_york_dst_and_rare_dates() {
        // 2026-03-08: New York jumps from 02:00 EST to 03:00 EDT.
        let e = expr("0 12 * * *", "America/New_York");
        assert_eq!(
            e.next_after(ms("2026-03-07T18:00:00Z")).map(utc).as_deref(),
            Some("2026-03-08T16:00:00Z")
        );
        assert_eq!(
            e.previous_before(ms("2026-03-08T16:00:00Z"))
                .map(utc)
                .as_deref(),
            Some("2026-03-07T17:00:00Z")
        );
        // 29 February: the next one after late 2026 is in 2028.
        let leap = expr("0 0 29 2 *", "UTC");
        assert_eq!(
            leap.next_after(ms("2026-11-23T00:00:00Z"))
                .map(utc)
                .as_deref(),
            Some("2028-02-29T00:00:00Z")
        );
        // 30 February never happens.
        assert_eq!(
            expr("0 0 30 2 *", "UTC").next_after(ms("2026-11-23T00:00:00Z")),
            None
        );
    }

    #[test]
    fn dialect_as_documented() {
        for e in [
            "@yearly",
            "@monthly",
            "@weekly",
            "@daily",
            "@hourly",
            "0 0 L * *",
            "0 0 * * 5L",
            "0 0 * * 1#2",
            "0 0 15W * *",
            "0 9-17/2 * JAN-MAR MON-FRI",
        ] {
            assert!(CronExpr::parse(e, "UTC").is_ok(), "{e}");
        }
        let thu = ms("2026-01-01T12:00:00Z"); // a Thursday
        // Sunday is 0 and 7.
        assert_eq!(
            expr("0 0 * * 7", "UTC").next_after(thu).map(utc).as_deref(),
            Some("2026-01-04T00:00:00Z")
        );
        assert_eq!(
            expr("0 0 * * 0", "UTC").next_after(thu).map(utc).as_deref(),
            Some("2026-01-04T00:00:00Z")
        );
        // Day-of-month and day-of-week both restricted: either matches (the 13th or a Friday).
        assert_eq!(
            expr("0 0 13 * 5", "UTC")
                .next_after(thu)
                .map(utc)
                .as_deref(),
            Some("2026-01-02T00:00:00Z")
        );
    }

    const MIN: i64 = 60_000;

    #[test]
    fn skip_fires_an_on_time_instant_and_drops_missed_ones() {
        let e = expr("0 * * * * *", "UTC"); // every minute
        let t0 = ms("2026-01-01T10:00:00Z");
        let grace = Duration::from_secs(5);
        // On time: the cursor instant itself, 300 ms late.
        let p = plan(&e, CatchUp::Skip, None, t0, t0 + 300, grace);
        assert_eq!(
            p.fires,
            vec![PlannedFire {
                instant: t0,
                next: t0 + MIN,
                missed: 0
            }]
        );
        assert_eq!(p.advance, None);
        // After an hour's gap: nothing fires; the cursor moves to the next future instant and
        // all 61 instants (10:00 .. 11:00) count as missed.
        let p = plan(&e, CatchUp::Skip, None, t0, t0 + 60 * MIN + 30_000, grace);
        assert!(p.fires.is_empty());
        assert_eq!(p.advance, Some((t0 + 61 * MIN, 61)));
        // A gap that ends right on an instant: the missed ones drop, the on-time one fires.
        let p = plan(&e, CatchUp::Skip, None, t0, t0 + 60 * MIN + 1_000, grace);
        assert_eq!(
            p.fires,
            vec![PlannedFire {
                instant: t0 + 60 * MIN,
                next: t0 + 61 * MIN,
                missed: 60
            }]
        );
        // Not due yet.
        assert_eq!(
            plan(&e, CatchUp::Skip, None, t0, t0 - 1, grace),
            Plan::default()
        );
    }

    #[test]
    fn run_all_fires_the_most_recent_instants_up_to_the_cap_oldest_first() {
        let e = expr("0 * * * * *", "UTC");
        let t0 = ms("2026-01-01T10:00:00Z");
        let grace = Duration::from_secs(5);
        let now = t0 + 9 * MIN + 30_000; // instants 10:00 .. 10:09 are due (10 of them)
        let p = plan(&e, CatchUp::RunAll { max: 3 }, None, t0, now, grace);
        let instants: Vec<Millis> = p.fires.iter().map(|f| f.instant).collect();
        assert_eq!(instants, vec![t0 + 7 * MIN, t0 + 8 * MIN, t0 + 9 * MIN]);
        assert_eq!(p.fires[0].missed, 7);
        assert_eq!(p.fires[0].next, t0 + 8 * MIN);
        assert_eq!(p.fires[2].next, t0 + 10 * MIN);
        assert!(p.fires[1..].iter().all(|f| f.missed == 0));
        // The configured cap lowers the schedule's own.
        let p = plan(&e, CatchUp::RunAll { max: 3 }, Some(2), t0, now, grace);
        assert_eq!(p.fires.len(), 2);
        assert_eq!(p.fires[0].missed, 8);
        // ... but never raises it, and never goes below 1.
        assert_eq!(
            plan(&e, CatchUp::RunAll { max: 3 }, Some(50), t0, now, grace)
                .fires
                .len(),
            3
        );
        assert_eq!(
            plan(&e, CatchUp::RunAll { max: 3 }, Some(0), t0, now, grace)
                .fires
                .len(),
            1
        );
        // Fewer due than the cap: all of them, nothing missed.
        let p = plan(&e, CatchUp::RunAll { max: 100 }, None, t0, now, grace);
        assert_eq!(p.fires.len(), 10);
        assert!(p.fires.iter().all(|f| f.missed == 0));
    }

    #[test]
    fn repair_moves_lost_cursors_by_policy() {
        let e = expr("0 * * * * *", "UTC");
        let t0 = ms("2026-01-01T10:00:00Z");
        let now = t0 + 30 * MIN + 10_000;
        assert_eq!(
            repair(&e, CatchUp::Skip, None, t0, now),
            Some((t0 + 31 * MIN, 31))
        );
        assert_eq!(
            repair(&e, CatchUp::RunAll { max: 3 }, None, t0, now),
            Some((t0 + 28 * MIN, 28))
        );
        // Already within the cap: nothing to repair.
        assert_eq!(
            repair(&e, CatchUp::RunAll { max: 100 }, None, t0, now),
            None
        );
    }

    proptest! {
        #[test]
        fn next_after_is_strictly_later_matches_and_skips_nothing(
            pattern in prop::sample::select(vec![
                "*/7 * * * *", "0 2 * * *", "30 2 * * *", "15 */3 * * 1-5", "*/20 * * * * *",
                "0 0 1 * *", "0 12 * * 0", "45 23 L * *", "0 9-17 * * *",
            ]),
            zone in prop::sample::select(vec![
                "UTC", "Europe/Amsterdam", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe",
                "America/Sao_Paulo", "Pacific/Chatham",
            ]),
            t in 1_600_000_000_000i64..2_000_000_000_000i64,
        ) {
            let e = expr(pattern, zone);
            let next = e.next_after(t).expect("these patterns always recur");
            prop_assert!(next > t);
            prop_assert_eq!(next % 1000, 0);
            // Nothing in between: the latest instant before `next` is at or before `t`.
            if let Some(prev) = e.previous_before(next) {
                prop_assert!(prev <= t, "{pattern} {zone}: {prev} lies between {t} and {next}");
            }
            // The iteration never repeats or goes back.
            let three = e.instants_between(t, next + 400 * 86_400_000, 3);
            prop_assert!(three.windows(2).all(|w| w[0] < w[1]));
            prop_assert_eq!(three.first().copied(), e.at_or_after(t));
        }

        #[test]
        fn plans_never_fire_twice_or_out_of_order(
            cap in 1u32..20,
            config_cap in prop::option::of(0u32..20),
            gap_min in 0i64..500,
            skip in any::<bool>(),
        ) {
            let e = expr("0 */5 * * * *", "Europe/Amsterdam");
            let cursor = 1_767_225_600_000; // 2026-01-01T00:00:00Z, an instant
            let now = cursor + gap_min * MIN + 1_234;
            let policy = if skip { CatchUp::Skip } else { CatchUp::RunAll { max: cap } };
            let p = plan(&e, policy, config_cap, cursor, now, Duration::from_secs(5));
            let due = e.instants_between(cursor, now + 1, 10_000);
            prop_assert!(!due.is_empty());
            let fired: Vec<Millis> = p.fires.iter().map(|f| f.instant).collect();
            prop_assert!(fired.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(fired.iter().all(|i| due.contains(i)));
            // Each claim leaves the cursor past its instant; the last one past now.
            prop_assert!(p.fires.iter().all(|f| f.next > f.instant));
            if let Some(last) = p.fires.last() {
                prop_assert!(last.next > now);
            }
            // Every due instant is either fired or counted missed.
            let missed: i64 = p.fires.iter().map(|f| f.missed).sum::<i64>() + p.advance.map_or(0, |a| a.1);
            prop_assert_eq!(fired.len() as i64 + missed, due.len() as i64);
            if let Some(cap) = effective_cap(policy, config_cap) {
                prop_assert_eq!(fired.len(), due.len().min(cap));
                prop_assert_eq!(fired.last().copied(), due.last().copied());
            } else {
                prop_assert!(fired.len() <= 1);
            }
        }
    }
}
