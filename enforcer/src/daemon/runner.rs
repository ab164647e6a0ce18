//! When to sync: a bounded-frequency runner, the schedule kube-proxy uses for
//! its proxier. A change after a quiet period is synced at once; changes
//! that arrive while a sync runs or within the minimum interval after one
//! started are folded into exactly one follow-up sync at the end of that
//! interval. So a change waits at most one interval plus one sync, a busy
//! stream of changes cannot push a sync further out, and the node sees at
//! most one sync per interval.
//!
//! The runner only decides; it never sleeps, reads a clock or syncs. Every
//! call takes the current [`Instant`], so tests drive it with a fake clock.

use std::time::{Duration, Instant};

/// Timing of the agent's syncs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoopConfig {
    /// least time between the starts of two syncs (changes within it are
    /// coalesced into one follow-up sync)
    pub min_sync_interval: Duration,
    /// full resync period
    pub resync: Duration,
    /// first retry delay after a failed sync (doubles up to `max_backoff`)
    pub backoff: Duration,
    /// longest retry delay
    pub max_backoff: Duration,
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            min_sync_interval: Duration::from_millis(100),
            resync: Duration::from_secs(300),
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// Changes waiting for a sync: what they were, when they arrived, how many.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change<T> {
    /// what changed (the caller's label)
    pub tag: T,
    /// when the change arrived
    pub arrived: Instant,
    /// how many changes arrived with this tag at this instant
    pub count: u64,
}

/// A sync the caller must run now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncStart {
    /// rewrite everything (periodic resync, or the retry of a failed one)
    pub full: bool,
    /// changes this sync covers
    pub events: u64,
    /// arrival of the oldest of them
    pub oldest: Option<Instant>,
}

/// How a sync ended, as the runner takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncEnd<T> {
    /// the rules in force now include these changes
    Applied(Vec<Change<T>>),
    /// nothing was applied; the changes wait for a retry no earlier than `retry_at`
    Failed {
        /// when the retry may start
        retry_at: Instant,
    },
}

/// Past this many distinct pending entries (a long backoff, or a kind that
/// never lists), a change is counted with the latest pending entry of its tag
/// instead of getting its own: memory stays bounded, and its wait is
/// measured from an earlier arrival, so it is overstated, never understated.
const MAX_PENDING_ENTRIES: usize = 1 << 16;

#[derive(Debug)]
struct InFlight<T> {
    changes: Vec<Change<T>>,
    full: bool,
}

/// The scheduling state. `T` labels a change (for metrics); the runner only
/// carries it from [`SyncRunner::changed`] to [`SyncEnd::Applied`].
#[derive(Debug)]
pub struct SyncRunner<T> {
    config: LoopConfig,
    ready: bool,
    pending: Vec<Change<T>>,
    full_pending: bool,
    in_flight: Option<InFlight<T>>,
    last_start: Option<Instant>,
    retry_at: Option<Instant>,
    backoff: Duration,
    next_resync: Instant,
}

impl<T: Copy + PartialEq> SyncRunner<T> {
    /// A runner that syncs nothing until [`SyncRunner::mark_ready`]; the first
    /// periodic resync is due one period after `now`.
    pub fn new(config: LoopConfig, now: Instant) -> Self {
        SyncRunner {
            config,
            ready: false,
            pending: Vec::new(),
            full_pending: false,
            in_flight: None,
            last_start: None,
            retry_at: None,
            backoff: config.backoff,
            next_resync: now + config.resync,
        }
    }

    /// Allows syncing (the caller's view of the cluster is complete).
    pub fn mark_ready(&mut self) {
        self.ready = true;
    }

    /// Whether syncing is allowed.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Records a change that arrived at `now`. Returns whether it was
    /// coalesced: folded into a sync that was already pending or running.
    pub fn changed(&mut self, now: Instant, tag: T) -> bool {
        let coalesced = self.in_flight.is_some() || self.has_work();
        if let Some(last) = self.pending.last_mut()
            && last.tag == tag
            && last.arrived == now
        {
            last.count += 1;
        } else if self.pending.len() < MAX_PENDING_ENTRIES {
            self.pending.push(Change {
                tag,
                arrived: now,
                count: 1,
            });
        } else if let Some(same) = self.pending.iter_mut().rev().find(|c| c.tag == tag) {
            same.count += 1;
        } else {
            self.pending.push(Change {
                tag,
                arrived: now,
                count: 1,
            });
        }
        coalesced
    }

    /// Changes not yet in a sync that started.
    pub fn pending_events(&self) -> u64 {
        self.pending.iter().map(|c| c.count).sum()
    }

    /// When [`SyncRunner::poll`] will start the next sync (never before
    /// `now`); `None` while not ready or while a sync runs (its end decides).
    pub fn next_sync_at(&self, now: Instant) -> Option<Instant> {
        if !self.ready || self.in_flight.is_some() {
            return None;
        }
        let wanted = if self.has_work() {
            now
        } else {
            self.next_resync.max(now)
        };
        let not_before = [
            self.last_start.map(|t| t + self.config.min_sync_interval),
            self.retry_at,
        ];
        Some(not_before.into_iter().flatten().fold(wanted, Instant::max))
    }

    /// Starts a sync if one is due at `now`; the caller runs it and then
    /// calls [`SyncRunner::finished`].
    pub fn poll(&mut self, now: Instant) -> Option<SyncStart> {
        if self.next_sync_at(now)? > now {
            return None;
        }
        if now >= self.next_resync {
            self.full_pending = true;
            self.next_resync = now + self.config.resync;
        }
        let changes = std::mem::take(&mut self.pending);
        let start = SyncStart {
            full: self.full_pending,
            events: changes.iter().map(|c| c.count).sum(),
            oldest: changes.iter().map(|c| c.arrived).min(),
        };
        self.in_flight = Some(InFlight {
            changes,
            full: self.full_pending,
        });
        self.full_pending = false;
        self.last_start = Some(now);
        Some(start)
    }

    /// Ends the running sync at `now`. A failure keeps its changes (and its
    /// fullness) pending behind a backoff that doubles up to the maximum and
    /// that later changes do not shorten; a success resets the backoff.
    pub fn finished(&mut self, now: Instant, ok: bool) -> SyncEnd<T> {
        let Some(flight) = self.in_flight.take() else {
            return SyncEnd::Applied(Vec::new());
        };
        if ok {
            self.retry_at = None;
            self.backoff = self.config.backoff;
            return SyncEnd::Applied(flight.changes);
        }
        let retry_at = now + self.backoff;
        self.retry_at = Some(retry_at);
        self.backoff = (self.backoff * 2).min(self.config.max_backoff);
        self.full_pending |= flight.full;
        let mut changes = flight.changes;
        changes.append(&mut self.pending);
        self.pending = changes;
        SyncEnd::Failed { retry_at }
    }

    fn has_work(&self) -> bool {
        self.full_pending || !self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn config() -> LoopConfig {
        LoopConfig {
            min_sync_interval: 100 * MS,
            resync: Duration::from_secs(300),
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(8),
        }
    }

    /// A fake clock and a fake syncer around a runner: `advance` moves time
    /// in 1 ms steps, starting every sync that falls due and finishing it
    /// `sync_time` later with the outcome `fail` says.
    struct Sim {
        t0: Instant,
        now: Instant,
        runner: SyncRunner<u32>,
        sync_time: Duration,
        fail: bool,
        running: Option<(Instant, SyncStart)>,
        /// (start, end, start info, outcome) of every sync
        syncs: Vec<(Instant, Instant, SyncStart, SyncEnd<u32>)>,
        coalesced: u64,
    }

    impl Sim {
        fn new(config: LoopConfig, sync_time: Duration) -> Sim {
            let t0 = Instant::now();
            let mut runner = SyncRunner::new(config, t0);
            runner.mark_ready();
            Sim {
                t0,
                now: t0,
                runner,
                sync_time,
                fail: false,
                running: None,
                syncs: Vec::new(),
                coalesced: 0,
            }
        }

        fn step(&mut self) {
            if let Some((started, start)) = self.running
                && self.now >= started + self.sync_time
            {
                let end = self.runner.finished(self.now, !self.fail);
                self.syncs.push((started, self.now, start, end));
                self.running = None;
            }
            if self.running.is_none()
                && let Some(start) = self.runner.poll(self.now)
            {
                self.running = Some((self.now, start));
                if self.sync_time.is_zero() {
                    self.step();
                }
            }
        }

        fn event(&mut self, tag: u32) {
            if self.runner.changed(self.now, tag) {
                self.coalesced += 1;
            }
            self.step();
        }

        fn advance(&mut self, by: Duration) {
            let end = self.now + by;
            while self.now < end {
                self.now += MS;
                self.step();
            }
        }

        fn at(&self, t: Instant) -> Duration {
            t - self.t0
        }

        /// Every applied change with the time it waited.
        fn waits(&self) -> Vec<(u32, Duration)> {
            self.syncs
                .iter()
                .flat_map(|(_, end, _, outcome)| match outcome {
                    SyncEnd::Applied(changes) => changes
                        .iter()
                        .flat_map(|c| std::iter::repeat_n((c.tag, *end - c.arrived), c.count as usize))
                        .collect(),
                    SyncEnd::Failed { .. } => Vec::new(),
                })
                .collect()
        }
    }

    #[test]
    fn a_lone_event_syncs_at_once() {
        let mut sim = Sim::new(config(), Duration::ZERO);
        sim.advance(Duration::from_secs(5));
        assert!(sim.syncs.is_empty());
        sim.event(1);
        assert_eq!(sim.syncs.len(), 1);
        let (start, _, info, _) = sim.syncs[0];
        assert_eq!(sim.at(start), Duration::from_secs(5));
        assert_eq!(info.events, 1);
        assert!(!info.full);
        assert_eq!(sim.waits(), vec![(1, Duration::ZERO)]);
        assert_eq!(sim.coalesced, 0);
    }

    #[test]
    fn a_hundred_events_in_fifty_ms_make_two_syncs() {
        let mut sim = Sim::new(config(), 5 * MS);
        for i in 0..100 {
            sim.event(i);
            if i % 2 == 1 {
                sim.advance(MS);
            }
        }
        sim.advance(Duration::from_secs(1));
        assert_eq!(sim.syncs.len(), 2, "{:?}", sim.syncs);
        assert_eq!(sim.syncs[0].2.events, 1);
        assert_eq!(sim.syncs[1].2.events, 99);
        assert_eq!(sim.at(sim.syncs[1].0), 100 * MS, "the follow-up waits out the interval");
        assert_eq!(sim.coalesced, 99);
        let mut tags: Vec<u32> = sim.waits().into_iter().map(|(tag, _)| tag).collect();
        tags.sort_unstable();
        assert_eq!(tags, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn a_steady_stream_syncs_every_interval_and_never_starves() {
        let sync_time = 7 * MS;
        let mut sim = Sim::new(config(), sync_time);
        for i in 0..200 {
            sim.event(i);
            sim.advance(10 * MS);
        }
        sim.advance(Duration::from_secs(1));
        // 2 s of changes at one sync per 100 ms, plus the one for the tail.
        assert!((20..=21).contains(&sim.syncs.len()), "{} syncs", sim.syncs.len());
        for pair in sim.syncs.windows(2) {
            assert!(pair[1].0 - pair[0].0 >= 100 * MS, "{:?}", pair);
        }
        let waits = sim.waits();
        assert_eq!(waits.len(), 200, "every change applied once");
        let longest = waits.iter().map(|(_, w)| *w).max().unwrap();
        assert!(
            longest <= 100 * MS + sync_time,
            "a change waited {longest:?}, more than one interval plus one sync"
        );
    }

    #[test]
    fn an_event_during_a_sync_goes_into_exactly_one_follow_up() {
        let mut sim = Sim::new(config(), 30 * MS);
        sim.event(1);
        sim.advance(10 * MS);
        sim.event(2);
        sim.event(3);
        sim.advance(Duration::from_secs(1));
        assert_eq!(sim.syncs.len(), 2);
        assert_eq!(
            sim.syncs[0].3,
            SyncEnd::Applied(vec![Change {
                tag: 1,
                arrived: sim.t0,
                count: 1
            }])
        );
        let arrived = sim.t0 + 10 * MS;
        assert_eq!(
            sim.syncs[1].3,
            SyncEnd::Applied(vec![
                Change {
                    tag: 2,
                    arrived,
                    count: 1
                },
                Change {
                    tag: 3,
                    arrived,
                    count: 1
                }
            ])
        );
        assert_eq!(sim.at(sim.syncs[1].0), 100 * MS);
        assert_eq!(sim.coalesced, 2);
    }

    #[test]
    fn a_sync_longer_than_the_interval_is_followed_at_once() {
        let mut sim = Sim::new(config(), 250 * MS);
        sim.event(1);
        sim.advance(50 * MS);
        sim.event(2);
        sim.advance(Duration::from_secs(1));
        assert_eq!(sim.syncs.len(), 2);
        assert_eq!(sim.at(sim.syncs[1].0), 250 * MS);
        assert_eq!(sim.waits()[1], (2, 450 * MS));
    }

    #[test]
    fn nothing_syncs_before_ready_and_then_everything_at_once() {
        let t0 = Instant::now();
        let mut runner = SyncRunner::new(config(), t0);
        assert!(!runner.changed(t0, 1));
        assert!(runner.changed(t0 + MS, 2));
        let late = t0 + Duration::from_secs(600);
        assert_eq!(runner.next_sync_at(late), None);
        assert_eq!(runner.poll(late), None);
        runner.mark_ready();
        assert_eq!(runner.next_sync_at(late), Some(late));
        let start = runner.poll(late).unwrap();
        assert_eq!(start.events, 2);
        assert_eq!(start.oldest, Some(t0));
        assert!(start.full, "the resync period passed while waiting");
    }

    #[test]
    fn failure_backs_off_and_changes_do_not_defeat_it() {
        let mut sim = Sim::new(config(), Duration::ZERO);
        sim.fail = true;
        sim.event(1);
        assert!(matches!(sim.syncs[0].3, SyncEnd::Failed { .. }));
        // Changes during the backoff wait for it.
        sim.advance(200 * MS);
        sim.event(2);
        sim.advance(700 * MS);
        assert_eq!(sim.syncs.len(), 1, "{:?}", sim.syncs);
        sim.advance(100 * MS);
        assert_eq!(sim.syncs.len(), 2);
        assert_eq!(sim.at(sim.syncs[1].0), Duration::from_secs(1));
        // The backoff doubles: 2 s, then 4 s.
        sim.advance(Duration::from_secs(2));
        assert_eq!(sim.syncs.len(), 3);
        assert_eq!(sim.at(sim.syncs[2].0), Duration::from_secs(3));
        sim.fail = false;
        sim.advance(Duration::from_secs(4));
        assert_eq!(sim.syncs.len(), 4);
        assert_eq!(sim.at(sim.syncs[3].0), Duration::from_secs(7));
        assert_eq!(sim.syncs[3].2.events, 2, "the failed syncs' changes are kept");
        let waits = sim.waits();
        assert_eq!(
            waits,
            vec![(1, Duration::from_secs(7)), (2, Duration::from_millis(6800))]
        );
        // Success resets the backoff: the next failure retries after 1 s.
        sim.fail = true;
        sim.advance(Duration::from_secs(1));
        sim.event(3);
        sim.advance(Duration::from_secs(1));
        assert_eq!(sim.syncs.len(), 6);
        assert_eq!(sim.syncs[5].0 - sim.syncs[4].0, Duration::from_secs(1));
    }

    #[test]
    fn backoff_is_capped() {
        let mut sim = Sim::new(config(), Duration::ZERO);
        sim.fail = true;
        sim.event(1);
        sim.advance(Duration::from_secs(60));
        let gaps: Vec<Duration> = sim.syncs.windows(2).map(|p| p[1].0 - p[0].0).collect();
        let secs = Duration::from_secs;
        assert_eq!(gaps[..5], [secs(1), secs(2), secs(4), secs(8), secs(8)]);
    }

    #[test]
    fn periodic_resync_is_full_and_a_failed_one_is_retried_full() {
        let config = LoopConfig {
            resync: Duration::from_secs(10),
            ..config()
        };
        let mut sim = Sim::new(config, Duration::ZERO);
        sim.advance(Duration::from_secs(10));
        assert_eq!(sim.syncs.len(), 1);
        assert!(sim.syncs[0].2.full);
        assert_eq!(sim.syncs[0].2.events, 0);
        sim.fail = true;
        sim.advance(Duration::from_secs(10));
        assert_eq!(sim.syncs.len(), 2);
        sim.fail = false;
        sim.event(1);
        assert_eq!(sim.syncs.len(), 2, "the change waits for the backoff");
        sim.advance(Duration::from_secs(1));
        assert_eq!(sim.syncs.len(), 3);
        assert!(sim.syncs[2].2.full, "the retry of a failed resync is full");
        assert_eq!(sim.syncs[2].2.events, 1);
        sim.event(2);
        sim.advance(100 * MS);
        assert_eq!(sim.syncs.len(), 4);
        assert!(!sim.syncs[3].2.full, "one full sync is enough");
    }

    #[test]
    fn pending_entries_stay_bounded() {
        let t0 = Instant::now();
        let mut runner = SyncRunner::new(config(), t0);
        let n = MAX_PENDING_ENTRIES as u64 + 1000;
        for i in 0..n {
            runner.changed(t0 + Duration::from_micros(i), (i % 3) as u32);
        }
        assert_eq!(runner.pending_events(), n);
        assert!(runner.pending.len() <= MAX_PENDING_ENTRIES + 3);
        runner.mark_ready();
        let now = t0 + Duration::from_secs(1);
        let start = runner.poll(now).unwrap();
        assert_eq!(start.events, n);
        let SyncEnd::Applied(changes) = runner.finished(now, true) else {
            panic!("failed")
        };
        let per_tag = |tag| changes.iter().filter(|c| c.tag == tag).map(|c| c.count).sum::<u64>();
        assert_eq!(per_tag(0) + per_tag(1) + per_tag(2), n);
        assert_eq!(per_tag(1), n / 3 + u64::from(n % 3 > 1));
    }
}
