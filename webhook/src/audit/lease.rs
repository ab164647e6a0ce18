//! Leader election over a `coordination.k8s.io/v1` Lease, so that one
//! replica writes the policy reports while every replica audits and answers
//! admissions. The scheme is client-go's: the holder renews `renewTime`
//! every few seconds; another replica takes the Lease over once the record
//! has not changed for `leaseDurationSeconds` as timed by its own clock (so
//! clock skew between nodes does not matter), or at once when the holder
//! released it (empty `holderIdentity`) on shutdown. Writes carry the
//! resourceVersion read, so of two replicas racing for it one wins.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// The Lease's name (in the webhook's namespace).
pub const LEASE_NAME: &str = "tierguard-webhook-audit";

/// How the election runs.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// the Lease's namespace
    pub namespace: String,
    /// the Lease's name
    pub name: String,
    /// this replica's identity (its Pod name)
    pub identity: String,
    /// how long a Lease that is not renewed stays held
    pub lease_duration: Duration,
    /// how often the holder renews, and others look
    pub renew_interval: Duration,
}

impl LeaseConfig {
    /// The defaults: 15 s Lease, renewed every 2 s (client-go uses 15 s and 2 s).
    pub fn new(namespace: &str, identity: &str) -> LeaseConfig {
        LeaseConfig {
            namespace: namespace.to_string(),
            name: LEASE_NAME.to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(15),
            renew_interval: Duration::from_secs(2),
        }
    }
}

/// What identifies one write of the Lease: holder, renewTime, resourceVersion.
type Record = (Option<String>, Option<Timestamp>, Option<String>);

/// One replica's side of the election.
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    /// the last Lease record seen (holder, renewTime, resourceVersion) and
    /// when it was first seen, by this replica's clock
    observed: Option<(Record, Instant)>,
    /// when this replica last renewed successfully
    renewed: Option<Instant>,
}

impl std::fmt::Debug for Elector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elector")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

impl Elector {
    /// An elector over the Leases of `api` (namespaced to `config.namespace`).
    pub fn new(api: Api<Lease>, config: LeaseConfig) -> Elector {
        Elector {
            api,
            config,
            observed: None,
            renewed: None,
        }
    }

    /// Whether this replica led at its last successful renewal and the Lease
    /// has not run out since.
    pub fn is_leading(&self) -> bool {
        self.renewed.is_some_and(|t| t.elapsed() < self.config.lease_duration)
    }

    fn spec(&self, now: Timestamp, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(seconds(self.config.lease_duration)),
            acquire_time: Some(acquired.unwrap_or(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One round: creates the Lease, renews it, or takes it over when it
    /// ran out; returns whether this replica leads now.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let Some(lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now, None, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(self.won()),
                Err(e) if is_conflict(&e) => Ok(self.lost()),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let record = (
            holder.clone(),
            spec.renew_time.as_ref().map(|t| t.0),
            lease.metadata.resource_version.clone(),
        );
        let first_seen = match &self.observed {
            Some((seen, at)) if *seen == record => *at,
            _ => Instant::now(),
        };
        self.observed = Some((record, first_seen));
        let mine = holder.as_deref() == Some(self.config.identity.as_str());
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.config.lease_duration, Duration::from_secs);
        let expired = holder.is_none() || first_seen.elapsed() >= duration;
        if !mine && !expired {
            return Ok(self.lost());
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        let new_spec = if mine {
            self.spec(now, spec.acquire_time.clone(), transitions)
        } else {
            tracing::info!(
                previous = holder.as_deref().unwrap_or("(released)"),
                identity = %self.config.identity,
                "taking over the audit Lease"
            );
            self.spec(now, None, transitions.saturating_add(1))
        };
        let updated = Lease {
            metadata: lease.metadata.clone(),
            spec: Some(new_spec),
        };
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &updated)
            .await
        {
            Ok(_) => Ok(self.won()),
            Err(e) if is_conflict(&e) => Ok(self.lost()),
            Err(e) => Err(e),
        }
    }

    fn won(&mut self) -> bool {
        self.renewed = Some(Instant::now());
        true
    }

    fn lost(&mut self) -> bool {
        self.renewed = None;
        false
    }

    /// Gives the Lease up when this replica holds it, so another takes over
    /// at once rather than after the Lease duration.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        if self.renewed.take().is_none() {
            return Ok(());
        }
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }
}

/// A running election.
#[derive(Debug)]
pub struct Election {
    /// whether this replica leads
    pub leading: watch::Receiver<bool>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Election {
    /// Runs `elector` until [`Election::stop`].
    pub fn spawn(mut elector: Elector) -> Election {
        let (tx, leading) = watch::channel(false);
        let (stop, mut stopped) = oneshot::channel::<()>();
        let every = elector.config.renew_interval;
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut stopped => break,
                }
                let leads = match elector.try_acquire_or_renew().await {
                    Ok(leads) => leads,
                    Err(e) => {
                        tracing::warn!(error = %e, "audit Lease: could not read or renew it");
                        // Keep leading only while the last renewal still holds.
                        elector.is_leading()
                    }
                };
                tx.send_if_modified(|was| {
                    if *was != leads {
                        tracing::info!(leading = leads, identity = %elector.config.identity, "audit Lease");
                        *was = leads;
                        true
                    } else {
                        false
                    }
                });
            }
            tx.send_replace(false);
            if let Err(e) = elector.release().await {
                tracing::warn!(error = %e, "audit Lease: could not release it; another replica takes over when it runs out");
            }
        });
        Election { leading, stop, task }
    }

    /// Stops renewing and releases the Lease if held.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "audit Lease task failed");
        }
    }
}
