//! Who carries a tag: the local people file (`[identity] people`) and
//! Mediamatic's anyMeta (`identity.identify` over OAuth 1.0a).
//!
//! Never on the hot path: a tap is recorded and acknowledged first; the
//! Station then queues its tag for a lookup here (durably, with the tap).
//! This task resolves it — people file first, then anyMeta with a timeout,
//! bounded concurrency, retries with back-off and jitter, a circuit breaker,
//! and waiting while NetworkManager says offline — and hands the answer to
//! the Station as an identity record of its own, which is logged, may merge
//! two tags of one person (one vote per person), and names the voter.

pub mod anymeta;
pub mod oauth;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::IdentityConfig;
use crate::config::people::load as load_people;
use crate::domain::backoff::Backoff;
use crate::domain::{Person, TagUid};
use crate::station::{Command, IdentityState, NetState, StationHandle};
use crate::sys::secret::{SecretError, SecretSource};

/// Open the breaker after this many failures in a row (for
/// `[identity] breaker_open_s`; then one trial call decides).
const BREAKER_FAILURES: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How often the people file is checked for changes.
const PEOPLE_CHECK: Duration = Duration::from_secs(2);

/// Why anyMeta's credentials cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The message names the key, never the value.
    #[error("{path}: {message}")]
    Malformed { path: String, message: String },
}

/// anyMeta credentials: a TOML file with c_key, c_sec, t_key, t_sec, mode
/// 0600 (checked), or the systemd credential `pollstation-anymeta`.
pub fn load_credentials(path: Option<&Path>) -> Result<oauth::Credentials, CredentialsError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        c_key: String,
        c_sec: String,
        t_key: String,
        t_sec: String,
    }
    let source = SecretSource {
        what: "anyMeta credentials",
        setting: "[identity] credentials",
        credential: "pollstation-anymeta",
        file: path,
    };
    let text = source.read()?;
    let raw: Raw = toml::from_str(&text).map_err(|e| CredentialsError::Malformed {
        path: source
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        message: e.message().to_string(),
    })?;
    Ok(oauth::Credentials {
        consumer_key: raw.c_key,
        consumer_secret: raw.c_sec,
        token: raw.t_key,
        token_secret: raw.t_sec,
    })
}

/// The circuit breaker shared by all lookups.
#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

/// Tells the Station how identity is doing (once per change).
struct Status {
    station: StationHandle,
    last: Mutex<Option<(IdentityState, String)>>,
}

impl Status {
    async fn set(&self, state: IdentityState, detail: impl Into<String>) {
        let detail = detail.into();
        let mut last = self.last.lock().await;
        if last
            .as_ref()
            .is_some_and(|(s, d)| *s == state && *d == detail)
        {
            return;
        }
        if last.as_ref().is_none_or(|(s, _)| *s != state) {
            tracing::info!(state = ?state, detail, "identity");
        }
        *last = Some((state, detail.clone()));
        let _ = self
            .station
            .sender()
            .send(Command::IdentityStatus { state, detail })
            .await;
    }
}

/// Resolve queued tags for as long as the station runs.
pub async fn run(
    cfg: IdentityConfig,
    station: StationHandle,
    mut lookups: mpsc::UnboundedReceiver<TagUid>,
    shutdown: CancellationToken,
) {
    let status = Arc::new(Status {
        station: station.clone(),
        last: Mutex::new(None),
    });
    let mut people: HashMap<TagUid, Person> = HashMap::new();
    let mut people_mtime = None;
    // Re-read the people file if it changed: `Ok(None)` when it did not,
    // else the tags whose entry was added, changed or removed.
    let reload_people = |people: &mut HashMap<TagUid, Person>,
                         mtime: &mut Option<std::time::SystemTime>| {
        let Some(path) = &cfg.people else {
            return Ok(None);
        };
        let m = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if m.is_some() && m == *mtime {
            return Ok(None);
        }
        *mtime = m;
        match load_people(path) {
            Ok(p) => {
                tracing::info!(people = p.len(), file = %path.display(), "people file loaded");
                let mut changed: Vec<TagUid> = p
                    .iter()
                    .filter(|(tag, person)| people.get(*tag) != Some(*person))
                    .map(|(tag, _)| tag.clone())
                    .collect();
                changed.extend(people.keys().filter(|t| !p.contains_key(*t)).cloned());
                *people = p;
                Ok(Some(changed))
            }
            // Keep what was loaded before; say what is wrong.
            Err(e) => Err(e),
        }
    };
    let client = match &cfg.anymeta {
        None => None,
        Some(url) => match load_credentials(cfg.credentials.as_deref())
            .map_err(|e| e.to_string())
            .and_then(|c| {
                anymeta::Client::new(url, c, cfg.signature, cfg.timeout).map_err(|e| e.to_string())
            }) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!("identity: {e}");
                status.set(IdentityState::Degraded, e).await;
                None
            }
        },
    };
    let mut people_broken = false;
    if let Err(e) = reload_people(&mut people, &mut people_mtime) {
        tracing::error!("identity: people file: {e}");
        status
            .set(IdentityState::Degraded, format!("people file: {e}"))
            .await;
        people_broken = true;
    }
    if let Some(c) = &client {
        match c.user_info().await {
            Ok(()) => status.set(IdentityState::Ok, "anyMeta answers").await,
            Err(e) => {
                status
                    .set(
                        IdentityState::Degraded,
                        format!("anyMeta health check: {e}"),
                    )
                    .await
            }
        }
    } else if cfg.people.is_some() {
        status
            .set(
                IdentityState::Ok,
                format!("people file, {} people", people.len()),
            )
            .await;
    }
    let breaker = Arc::new(Mutex::new(Breaker::default()));
    let permits = Arc::new(Semaphore::new(cfg.concurrency));
    // An edited people file applies without a restart: checked every few
    // seconds (editors replace files, which a watch on the old one misses)
    // and at once on SIGHUP.
    let mut people_check = tokio::time::interval(PEOPLE_CHECK);
    people_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        // Tags to resolve now: a lookup asked for, or changed in the file.
        let mut tags = Vec::new();
        tokio::select! {
            () = shutdown.cancelled() => return,
            t = lookups.recv() => match t {
                Some(t) => tags.push(t),
                None => return,
            },
            _ = people_check.tick(), if cfg.people.is_some() => {}
            Some(()) = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => {}
        }
        // Every wake-up (a lookup too) notices a changed file.
        match reload_people(&mut people, &mut people_mtime) {
            Ok(None) => {}
            Ok(Some(changed)) => {
                tags.extend(changed);
                if std::mem::take(&mut people_broken) {
                    status
                        .set(
                            IdentityState::Ok,
                            format!("people file, {} people", people.len()),
                        )
                        .await;
                }
            }
            Err(e) => {
                tracing::error!("identity: people file: {e} (the previous version stays in use)");
                status
                    .set(IdentityState::Degraded, format!("people file: {e}"))
                    .await;
                people_broken = true;
            }
        }
        for tag in tags {
            if let Some(p) = people.get(&tag) {
                let _ = station
                    .sender()
                    .send(Command::Identity {
                        tag,
                        person: Some(p.clone()),
                        source: "people".into(),
                    })
                    .await;
                continue;
            }
            let Some(client) = client.clone() else {
                // Only a people file: not in it is unknown.
                let _ = station
                    .sender()
                    .send(Command::Identity {
                        tag,
                        person: None,
                        source: "people".into(),
                    })
                    .await;
                continue;
            };
            let (station, status, breaker, permits, shutdown) = (
                station.clone(),
                status.clone(),
                breaker.clone(),
                permits.clone(),
                shutdown.clone(),
            );
            let open_for = cfg.breaker_open;
            tokio::spawn(async move {
                let Ok(_permit) = permits.acquire_owned().await else {
                    return;
                };
                let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
                loop {
                    if shutdown.is_cancelled() {
                        return;
                    }
                    // Offline: wait for the network instead of failing.
                    let mut w = station.watch();
                    while w.borrow_and_update().network.state == NetState::Offline {
                        status
                            .set(IdentityState::Offline, "network offline: lookups wait")
                            .await;
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            r = w.changed() => if r.is_err() { return },
                        }
                    }
                    // An open breaker: wait for its trial time.
                    let wait = breaker
                        .lock()
                        .await
                        .open_until
                        .map(|t| t.saturating_duration_since(Instant::now()));
                    if let Some(d) = wait.filter(|d| !d.is_zero()) {
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(d) => {}
                        }
                    }
                    match client.identify(tag.as_str()).await {
                        Ok(person) => {
                            let closed = {
                                let mut b = breaker.lock().await;
                                let was_open = b.open_until.is_some();
                                *b = Breaker::default();
                                was_open
                            };
                            if closed {
                                tracing::info!(
                                    "identity: anyMeta answers again; circuit breaker closed"
                                );
                            }
                            status.set(IdentityState::Ok, "anyMeta answers").await;
                            let _ = station
                                .sender()
                                .send(Command::Identity {
                                    tag,
                                    person,
                                    source: "anymeta".into(),
                                })
                                .await;
                            return;
                        }
                        Err(e) => {
                            let opened = {
                                let mut b = breaker.lock().await;
                                b.failures += 1;
                                if b.failures >= BREAKER_FAILURES {
                                    let first = b.open_until.is_none();
                                    b.open_until = Some(Instant::now() + open_for);
                                    first
                                } else {
                                    false
                                }
                            };
                            if opened {
                                tracing::warn!(error = %e, "identity: anyMeta keeps failing; circuit breaker open for {} s", open_for.as_secs());
                            }
                            let state = if breaker.lock().await.open_until.is_some() {
                                IdentityState::Offline
                            } else {
                                IdentityState::Degraded
                            };
                            status.set(state, e.to_string()).await;
                            let jitter = Duration::from_millis(rand::random::<u64>() % 250);
                            tokio::select! {
                                () = shutdown.cancelled() => return,
                                () = tokio::time::sleep(backoff.fail() + jitter) => {}
                            }
                        }
                    }
                }
            });
        }
    }
}
