//! The herd carried by the XMPP server (`[herd] carrier = "xmpp"` or
//! `"both"`): the same feeds as the direct links, over publish-subscribe.
//!
//! Each station publishes its own feeds to one node of its own account's
//! PEP service, `herd/<herd id>/<station id>` at its bare JID: only the
//! account publishes there (PEP), and the node's access model is a
//! whitelist of the herd's other stations (made members), so only they
//! read it. An item is a batch of up to [`BATCH`] consecutive events of one
//! feed, its id `<feed>-<first seq>`: a republish after a crash (the server
//! did not answer) replaces it. What was published is read back from the
//! node at each login, so the log itself is the durable outbox.
//!
//! It subscribes to the other stations' nodes; a notification is applied
//! when it continues what this station holds, and a gap (a batch that
//! starts beyond it) fetches the node's items (XEP-0060 retrieve-items).
//! At login and every [`RESYNC_EVERY`] the newest items are fetched too, so
//! a lost notification is never a silent hole. Duplicates (from direct
//! links too, with `both`) are dropped by key by the Station. Each peer is
//! reported as a link `xmpp:<jid>` with the feeds its node holds, so the
//! herd view shows its lag and carrier.
//!
//! One connection of its own (the vote publisher keeps its own): a backlog
//! of herd events never holds up the votes' items, and the other way round.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::{Event, IqRequest, Stanza};

use super::{Ended, PING_EVERY, client, login, password};
use crate::config::{HerdConfig, XmppConfig};
use crate::domain::backoff::Backoff;
use crate::domain::herd::{Feed, Heads, HerdEvent};

mod batch;
mod link;
mod requests;

use super::requests::subscribe;
use crate::station::{Command, HerdReport, LinkState, PeerView, StationHandle};
use crate::sys::clock::now_ms;
pub use batch::{Batch, NS, decode, encode, item_id, node};
use link::{Failed, Link, Watch, lost};
use requests::{iq, items, publish};

/// Events in one item at most.
pub const BATCH: usize = 256;
/// Items a herd node keeps (the server's own cap may be lower: Prosody's
/// `pep_max_items`, ejabberd's `max_items_node`): 10,000 × 256 events.
pub const MAX_ITEMS: u32 = 10_000;
/// How often a peer whose heads moved is reported to the Station.
const REPORT_EVERY: Duration = Duration::from_millis(500);
/// Back-off between sessions: short, so a station is back within about a
/// second of its server (the herd converges soon after); jittered.
const REDIAL_FIRST: Duration = Duration::from_millis(250);
const REDIAL_MAX: Duration = Duration::from_secs(2);
/// Newest items fetched from every peer now and then.
const RESYNC_EVERY: Duration = Duration::from_secs(30);
const RESYNC_ITEMS: u32 = 8;
/// A peer whose node cannot be read yet (not published, or this station
/// not yet its member) is tried again this often.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// Another station of the herd, as its node shows it.
struct Peer {
    id: Arc<str>,
    jid: Jid,
    node: String,
    subscribed: bool,
    /// What its node holds, per feed (from the items seen).
    held: Heads,
    since: i64,
    received: u64,
    /// Heads or counts moved since the last report (reported with the next
    /// [`REPORT_EVERY`] tick, not per notification).
    dirty: bool,
}

impl Peer {
    fn new(id: &str, jid: Jid, node: String) -> Peer {
        Peer {
            id: id.into(),
            jid,
            node,
            subscribed: false,
            held: Heads::default(),
            since: now_ms(),
            received: 0,
            dirty: false,
        }
    }

    fn view(&self, state: LinkState, error: Option<String>) -> PeerView {
        PeerView {
            address: format!("xmpp:{}", self.jid),
            station: Some(self.id.to_string()),
            state,
            since: self.since,
            rtt_ms: None,
            clock_offset_ms: None,
            skewed: false,
            error,
            sent: 0,
            received: self.received,
            we_lack: 0,
            it_lacks: 0,
        }
    }

    async fn report(&self, station: &StationHandle, state: LinkState, error: Option<String>) {
        let _ = station
            .sender()
            .send(Command::HerdStatus(HerdReport::Peer {
                view: self.view(state, error),
                heads: Some(Arc::new(self.held.clone())),
            }))
            .await;
    }
}

/// Of `batches` of `origin`, the events that continue what this station
/// holds (`have`), in feed order; true when one starts beyond it (a gap:
/// fetch all). `held` learns what the origin's node holds.
fn plan(
    have: &Heads,
    origin: &Arc<str>,
    held: &mut Heads,
    mut batches: Vec<Batch>,
) -> (bool, Vec<HerdEvent>) {
    batches.sort_by_key(|b| (b.feed, b.first));
    let mut have: BTreeMap<Feed, u64> = Feed::ALL
        .into_iter()
        .map(|f| (f, have.get(origin, f)))
        .collect();
    let (mut gap, mut out) = (false, Vec::new());
    for b in batches {
        if *b.origin != **origin {
            tracing::warn!(node_of = %origin, origin = b.origin, "herd over xmpp: a node carries another origin's events; ignored");
            continue;
        }
        let seen = held.get(origin, b.feed).max(b.last);
        held.set(origin.clone(), b.feed, seen);
        let h = have.entry(b.feed).or_default();
        if b.last <= *h {
            continue;
        }
        if b.first > *h + 1 {
            gap = true;
            continue;
        }
        let from = *h;
        out.extend(b.events.into_iter().filter(|e| e.position().2 > from));
        *h = b.last;
    }
    (gap, out)
}

/// Store `events` (one commit). True when the Station found a gap in them.
async fn apply(station: &StationHandle, events: Vec<HerdEvent>) -> Result<bool, Failed> {
    if events.is_empty() {
        return Ok(false);
    }
    let applied = station
        .herd_events(events)
        .await
        .map_err(|e| Failed(format!("cannot store the herd's events: {e}")))?;
    Ok(applied.gaps > 0)
}

/// [`plan`] and [`apply`] for one origin: true on a gap, and the events taken.
async fn take(
    station: &StationHandle,
    origin: &Arc<str>,
    held: &mut Heads,
    batches: Vec<Batch>,
) -> Result<(bool, u64), Failed> {
    let (gap, events) = plan(&station.heads().borrow(), origin, held, batches);
    let taken = events.len() as u64;
    let gap_stored = apply(station, events).await?;
    Ok((gap || gap_stored, taken))
}

/// Carry the herd over the XMPP server for as long as the station runs.
pub async fn run(
    xcfg: XmppConfig,
    herd: HerdConfig,
    station: StationHandle,
    shutdown: CancellationToken,
) {
    let _ = tokio_xmpp::rustls::crypto::aws_lc_rs::default_provider().install_default();
    let me = station.snapshot().station.clone();
    let (jid, password) = match (xcfg.jid.parse::<BareJid>(), password(&xcfg)) {
        (Ok(j), Ok(p)) => (j, p),
        (Err(e), _) => return tracing::error!("herd over xmpp: jid {:?}: {e}", xcfg.jid),
        (_, Err(e)) => return tracing::error!("herd over xmpp: {e}"),
    };
    let mut peers: Vec<Peer> = herd
        .stations
        .iter()
        .filter(|s| s.id != me)
        .filter_map(|s| match s.jid.parse::<BareJid>() {
            Ok(jid) => Some(Peer::new(&s.id, Jid::from(jid), node(&herd.id, &s.id))),
            Err(e) => {
                tracing::error!(
                    station = s.id,
                    jid = s.jid,
                    "herd over xmpp: not a JID ({e}); this station is not followed"
                );
                None
            }
        })
        .collect();
    let mut backoff = Backoff::new(REDIAL_FIRST, REDIAL_MAX);
    loop {
        let c = match client(&xcfg, &jid, &password) {
            Ok(c) => c,
            Err(e) => return tracing::error!("herd over xmpp: {e}"),
        };
        let ctx = Ctx {
            herd: &herd,
            me: &me,
            station: &station,
            shutdown: &shutdown,
        };
        let ended = session(c, ctx, &mut peers, &mut backoff).await;
        let why = match ended {
            Ended::Shutdown => return,
            Ended::Offline => "network offline".to_string(),
            Ended::Failed(e) => e,
        };
        // Jittered: the stations of a herd that lost one server (or a
        // cluster node) do not all come back in the same instant.
        let wait = backoff.fail().mul_f64(rand::random_range(0.5..=1.0));
        tracing::warn!(error = %why, retry_in_ms = wait.as_millis(), "herd over xmpp: session ended");
        for p in &mut peers {
            p.subscribed = false;
            p.since = now_ms();
            p.report(&station, LinkState::Down, Some(why.clone())).await;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// What a session works for: the herd, this station, and when to stop.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    herd: &'a HerdConfig,
    me: &'a str,
    station: &'a StationHandle,
    shutdown: &'a CancellationToken,
}

async fn session(
    client: tokio_xmpp::Client,
    ctx: Ctx<'_>,
    peers: &mut [Peer],
    backoff: &mut Backoff,
) -> Ended {
    let shutdown = ctx.shutdown;
    let (sender, mut events) = client.split();
    let bound = match login(&mut events, shutdown).await {
        Ok(j) => j,
        Err(e) => return e,
    };
    let mut link = Link {
        sender,
        watch: Watch {
            events,
            backlog: VecDeque::new(),
        },
        bound,
    };
    let ended = serve(&mut link, ctx, peers, backoff).await;
    let client = tokio_xmpp::Client::reunite(link.sender, link.watch.events);
    let _ = tokio::time::timeout(Duration::from_secs(2), client.send_end()).await;
    match ended {
        Ok(e) => e,
        Err(Failed(e)) => Ended::Failed(e),
    }
}

/// What woke the session.
enum Woken {
    Shutdown,
    /// This station's heads moved, or nothing to do.
    Heads,
    Retry,
    Resync,
    Ping,
    Report,
    Notified(Box<tokio_xmpp::parsers::message::Message>),
    Lost(Failed),
}

async fn serve(
    link: &mut Link,
    ctx: Ctx<'_>,
    peers: &mut [Peer],
    backoff: &mut Backoff,
) -> Result<Ended, Failed> {
    let Ctx {
        herd,
        me,
        station,
        shutdown,
    } = ctx;
    let own_jid = Jid::from(link.bound.to_bare());
    let own_node = node(&herd.id, me);
    let members: Vec<BareJid> = peers.iter().map(|p| p.jid.to_bare()).collect();
    link.watch
        .during(requests::own_node(&link.sender, &own_jid, &own_node, &members))
        .await
        .map_err(|Failed(e)| {
            Failed(format!(
                "{e} (the herd's node lives on this account's PEP service: does the server have PEP with persistent items?)"
            ))
        })?;
    // What the node holds of this station's feeds: published already
    // (and, for a station restoring an empty log, its own feed back).
    let mut own = Peer::new(me, own_jid.clone(), own_node.clone());
    let held = link
        .watch
        .during(items(&link.sender, &own_jid, &own_node, None))
        .await?
        .unwrap_or_default();
    take(station, &own.id, &mut own.held, held).await?;
    own.report(station, LinkState::Up, None).await;
    let (mine, mut published) = (own.id, own.held);
    for p in peers.iter_mut() {
        resync(link, p, station, None).await?;
    }
    backoff.reset();
    tracing::info!(jid = %link.bound, node = own_node, peers = peers.len(), "herd over xmpp: online");
    let mut heads = station.heads();
    let mut resync_every = tokio::time::interval_at(Instant::now() + RESYNC_EVERY, RESYNC_EVERY);
    let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
    let mut retry = tokio::time::interval_at(Instant::now() + RETRY_EVERY, RETRY_EVERY);
    let mut report = tokio::time::interval_at(Instant::now() + REPORT_EVERY, REPORT_EVERY);
    loop {
        // Notifications that came while a request was in flight.
        if !link.watch.backlog.is_empty() {
            let waiting: Vec<_> = link.watch.backlog.drain(..).collect();
            notified(link, peers, station, waiting).await?;
        }
        // Publish what this station holds beyond what its node holds,
        // a batch at a time (notifications are read in between).
        let mut pending = false;
        // What this station holds now, read once: a head that moves while
        // a batch is being published wakes the loop again (`changed`).
        let holds = {
            let h = heads.borrow_and_update();
            Feed::ALL.map(|f| (f, h.get(me, f)))
        };
        for (feed, held) in holds {
            let done = published.get(me, feed);
            if held <= done {
                continue;
            }
            let events = station
                .feed_after(mine.clone(), feed, done, BATCH)
                .await
                .map_err(|e| Failed(format!("cannot read this station's feed: {e}")))?;
            let (Some(first), Some(last)) = (events.first(), events.last()) else {
                continue;
            };
            let b = Batch {
                origin: me.to_string(),
                feed,
                first: first.position().2,
                last: last.position().2,
                events,
            };
            link.watch
                .during(publish(&link.sender, &own_jid, &own_node, &b))
                .await?;
            tracing::debug!(feed = %feed, first = b.first, last = b.last, "herd over xmpp: published");
            published.set(mine.clone(), feed, b.last);
            pending |= b.last < held;
        }
        if pending || !link.watch.backlog.is_empty() {
            continue;
        }
        let woken = tokio::select! {
            () = shutdown.cancelled() => Woken::Shutdown,
            r = heads.changed() => if r.is_err() { Woken::Shutdown } else { Woken::Heads },
            _ = retry.tick(), if peers.iter().any(|p| !p.subscribed) => Woken::Retry,
            _ = resync_every.tick() => Woken::Resync,
            _ = ping.tick() => Woken::Ping,
            _ = report.tick(), if peers.iter().any(|p| p.dirty) => Woken::Report,
            ev = link.watch.events.next() => match ev {
                Some(Event::Stanza(Stanza::Message(m))) => Woken::Notified(Box::new(m)),
                Some(Event::Stanza(_)) => Woken::Heads,
                other => Woken::Lost(lost(other)),
            },
        };
        match woken {
            Woken::Shutdown => return Ok(Ended::Shutdown),
            Woken::Heads => {}
            Woken::Retry => {
                for p in peers.iter_mut().filter(|p| !p.subscribed) {
                    resync(link, p, station, None).await?;
                }
            }
            Woken::Resync => {
                for p in peers.iter_mut() {
                    resync(link, p, station, Some(RESYNC_ITEMS)).await?;
                }
            }
            Woken::Ping => {
                let ping = tokio_xmpp::parsers::ping::Ping;
                let to = Jid::from(link.bound.domain().to_owned());
                let req = iq(&link.sender, &to, IqRequest::Get(ping.into()), "ping");
                link.watch.during(req).await?;
            }
            Woken::Report => {
                for p in peers.iter_mut().filter(|p| p.dirty) {
                    p.dirty = false;
                    p.report(station, LinkState::Up, None).await;
                }
            }
            Woken::Notified(m) => {
                // With every other notification already here: one commit.
                let mut all = vec![*m];
                all.extend(link.watch.ready()?);
                notified(link, peers, station, all).await?;
            }
            Woken::Lost(why) => return Err(why),
        }
    }
}

/// Subscribe to a peer's node if not yet, and fetch its items (the newest
/// `max`, or all; all again if those show a gap).
async fn resync(
    link: &mut Link,
    p: &mut Peer,
    station: &StationHandle,
    max: Option<u32>,
) -> Result<(), Failed> {
    if !p.subscribed {
        let what = (p.jid.to_string(), p.node.clone());
        p.subscribed = link
            .watch
            .during(subscribe(&link.sender, &link.bound, &what))
            .await?;
        if !p.subscribed {
            p.report(
                station,
                LinkState::Connecting,
                Some(format!(
                    "cannot subscribe to {} yet (not published, or not a member)",
                    p.node
                )),
            )
            .await;
            return Ok(());
        }
        p.since = now_ms();
    }
    let Some(got) = link
        .watch
        .during(items(&link.sender, &p.jid, &p.node, max))
        .await?
    else {
        // Subscribed, yet its items are refused (membership taken away?):
        // say so, and subscribe again next time.
        p.subscribed = false;
        let why = format!("the server refuses to let this station read {}", p.node);
        p.report(station, LinkState::Down, Some(why)).await;
        return Ok(());
    };
    let (gap, taken) = take(station, &p.id, &mut p.held, got).await?;
    p.received += taken;
    if gap && max.is_some() {
        let all = link
            .watch
            .during(items(&link.sender, &p.jid, &p.node, None))
            .await?
            .unwrap_or_default();
        let (_, taken) = take(station, &p.id, &mut p.held, all).await?;
        p.received += taken;
    }
    p.report(station, LinkState::Up, None).await;
    Ok(())
}

/// Notifications: the batches of the peers' nodes, applied in one commit;
/// a gap fetches that node's items.
async fn notified(
    link: &mut Link,
    peers: &mut [Peer],
    station: &StationHandle,
    messages: Vec<tokio_xmpp::parsers::message::Message>,
) -> Result<(), Failed> {
    // Read by hand (servers add elements xmpp-parsers' strict types refuse).
    const NS_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
    let mut by_peer: BTreeMap<usize, Vec<Batch>> = BTreeMap::new();
    for m in &messages {
        let Some(from) = m.from.as_ref().map(Jid::to_bare) else {
            continue;
        };
        let found = m
            .payloads
            .iter()
            .filter(|e| e.is("event", NS_EVENT))
            .flat_map(|e| e.children().filter(|c| c.is("items", NS_EVENT)));
        for items in found {
            let Some(node) = items.attr("node") else {
                continue;
            };
            let Some(i) = peers
                .iter()
                .position(|p| p.jid.to_bare() == from && p.node == node)
            else {
                continue;
            };
            let batches = items
                .children()
                .filter(|i| i.is("item", NS_EVENT))
                .filter_map(|i| i.children().find_map(decode));
            by_peer.entry(i).or_default().extend(batches);
        }
    }
    let (mut gaps, mut events) = (Vec::new(), Vec::new());
    {
        let heads = station.heads();
        let have = heads.borrow();
        for (&i, batches) in &mut by_peer {
            let p = &mut peers[i];
            let (gap, evs) = plan(&have, &p.id, &mut p.held, std::mem::take(batches));
            p.received += evs.len() as u64;
            p.dirty = true;
            if gap {
                gaps.push(i);
            }
            events.extend(evs);
        }
    }
    if apply(station, events).await? {
        // The Station found a hole: fetch every node these came from.
        gaps = by_peer.keys().copied().collect();
    }
    for i in gaps {
        let p = &mut peers[i];
        tracing::info!(
            node = p.node,
            "herd over xmpp: a gap in the notifications; fetching the node"
        );
        resync(link, p, station, None).await?;
    }
    Ok(())
}
