//! A station played over a real XMPP connection, for herds larger than
//! this machine runs as processes: it does what a station's herd session
//! does on the wire — its PEP node `herd/<herd>/<id>` (persistent, a
//! whitelist of the herd), a subscription to every other station's node,
//! one batch item per tap (`pollstation::xmpp::herd::encode`, the same
//! bytes), taps held back while its server is away published as one batch
//! when it is back — but keeps nothing: it times each tap it is notified of.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use pollstation::domain::herd::{Feed, HerdEvent};
use pollstation::domain::{TagUid, Tap};
use pollstation::xmpp::herd::{Batch, decode, encode, item_id, node};
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::pubsub::{self, NodeName, PubSub};
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Client, Event, IqRequest, IqResponse, Stanza};

use super::Seen;

pub const HERD: &str = "bench-herd";
const NS: &str = "http://jabber.org/protocol/pubsub";
const NS_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
const NS_EVENT: &str = "http://jabber.org/protocol/pubsub#event";

/// What the bench asks of the players, and what they say back.
pub struct Control {
    /// Taps per second per player (0: none).
    pub rate: tokio::sync::watch::Receiver<f64>,
    /// Players with every other node subscribed (each adds one, once).
    pub ready: Arc<AtomicUsize>,
}

/// The connection, and what came on it that is not an answer.
struct Conn {
    client: Client,
    seen: Arc<Mutex<Seen>>,
    /// Set when the connection was (re-)established: the session restarts.
    online: Option<Jid>,
}

impl Conn {
    /// Until the client is online (again).
    async fn online(&mut self) -> Option<Jid> {
        if let Some(j) = self.online.take() {
            return Some(j);
        }
        loop {
            match self.client.next().await? {
                Event::Online { bound_jid, .. } => return Some(bound_jid),
                Event::Stanza(Stanza::Message(m)) => notified(&m, &self.seen),
                _ => {}
            }
        }
    }

    /// Handle one event; false when the session is over.
    fn event(&mut self, ev: Option<Event>) -> bool {
        match ev {
            Some(Event::Stanza(Stanza::Message(m))) => {
                notified(&m, &self.seen);
                true
            }
            Some(Event::Stanza(_)) => true,
            Some(Event::Online { bound_jid, .. }) => {
                self.online = Some(bound_jid);
                false
            }
            _ => false,
        }
    }

    /// An IQ: Some(true) answered, Some(false) refused, None the session is
    /// over. Notifications are taken meanwhile (tokio-xmpp's worker holds
    /// only a few events; unread, it would stop reading the answer too).
    async fn iq(&mut self, to: &Jid, req: IqRequest) -> Option<bool> {
        let token = self.client.send_iq(Some(to.clone()), req).await;
        let deadline = tokio::time::sleep(Duration::from_secs(30));
        tokio::pin!(token, deadline);
        loop {
            tokio::select! {
                r = &mut token => return match r {
                    Ok(IqResponse::Result(_)) => Some(true),
                    Ok(IqResponse::Error(_)) => Some(false),
                    Err(_) => None,
                },
                () = &mut deadline => return None,
                ev = self.client.next() => if !self.event(ev) { return None },
            }
        }
    }
}

fn set(xml: String) -> IqRequest {
    IqRequest::Set(xml.parse::<Element>().expect("request XML"))
}

/// Time the taps a notification carries.
fn notified(m: &tokio_xmpp::parsers::message::Message, seen: &Mutex<Seen>) {
    let now = Instant::now();
    let taps: Vec<(String, u64)> = m
        .payloads
        .iter()
        .filter(|e| e.is("event", NS_EVENT))
        .flat_map(|e| e.children().filter(|c| c.is("items", NS_EVENT)))
        .flat_map(|items| items.children().filter(|i| i.is("item", NS_EVENT)))
        .filter_map(|i| i.children().find_map(decode))
        .flat_map(|b| b.events)
        .filter_map(|e| match e {
            HerdEvent::Tap(t) => Some((t.station.to_string(), t.seq)),
            _ => None,
        })
        .collect();
    let mut s = seen.lock().unwrap();
    for key in taps {
        s.arrived(key, now);
    }
}

/// Play station `id` of the herd `all` on the server at `server`.
pub async fn play(
    id: String,
    all: Vec<String>,
    server: String,
    control: Control,
    seen: Arc<Mutex<Seen>>,
) {
    let jid: BareJid = format!("{id}@localhost").parse().unwrap();
    let own = Jid::from(jid.clone());
    let client = Client::new_plaintext(
        own.clone(),
        crate::rig::prosody::PASSWORD,
        DnsConfig::addr(&server),
        Timeouts::default(),
    );
    let mut conn = Conn {
        client,
        seen: seen.clone(),
        online: None,
    };
    let my_node = node(HERD, &id);
    let others: Vec<&String> = all.iter().filter(|o| **o != id).collect();
    let mut rate = control.rate;
    let (mut next_seq, mut published, mut told_ready) = (0u64, 0u64, false);
    // A session per connection: tokio-xmpp reconnects by itself (a killed
    // node); each time the node is made sure of and every subscription
    // made again (they are per resource).
    while let Some(bound) = conn.online().await {
        let create = format!(
            "<pubsub xmlns='{NS}'><create node='{my_node}'/><configure><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field>\
             <field var='pubsub#persist_items'><value>1</value></field>\
             <field var='pubsub#max_items'><value>10000</value></field>\
             <field var='pubsub#access_model'><value>whitelist</value></field>\
             <field var='pubsub#publish_model'><value>publishers</value></field>\
             <field var='pubsub#send_last_published_item'><value>never</value></field>\
             <field var='pubsub#presence_based_delivery'><value>0</value></field>\
             </x></configure></pubsub>"
        );
        if conn.iq(&own, set(create)).await.is_none() {
            continue;
        }
        let members: String = others
            .iter()
            .map(|o| format!("<affiliation jid='{o}@localhost' affiliation='member'/>"))
            .collect();
        let affiliate = format!(
            "<pubsub xmlns='{NS_OWNER}'><affiliations node='{my_node}'>{members}</affiliations></pubsub>"
        );
        if conn.iq(&own, set(affiliate)).await != Some(true) {
            continue;
        }
        // Taps held while the server was away, first.
        if published < next_seq {
            match publish(&mut conn, &own, &my_node, &id, published, next_seq).await {
                Some(true) => published = next_seq,
                Some(false) => {}
                None => continue,
            }
        }
        let mut unsubscribed: Vec<&String> = others.clone();
        let mut retry = tokio::time::interval(Duration::from_secs(1));
        let mut tick: Option<tokio::time::Interval> = None;
        'session: loop {
            let r = *rate.borrow_and_update();
            if r > 0.0 && tick.is_none() {
                let period = Duration::from_secs_f64(1.0 / r);
                // Spread the players' ticks over the period.
                let offset = period.mul_f64(rand::random_range(0.0..1.0));
                tick = Some(tokio::time::interval_at(
                    tokio::time::Instant::now() + offset,
                    period,
                ));
            } else if r <= 0.0 {
                tick = None;
            }
            tokio::select! {
                r = rate.changed() => {
                    if r.is_err() {
                        return;
                    }
                    tick = None;
                }
                _ = retry.tick(), if !unsubscribed.is_empty() => {
                    let mut still = Vec::new();
                    for o in unsubscribed {
                        let sub = format!(
                            "<pubsub xmlns='{NS}'><subscribe node='{}' jid='{bound}'/></pubsub>",
                            node(HERD, o)
                        );
                        let to: Jid = format!("{o}@localhost").parse().unwrap();
                        match conn.iq(&to, set(sub)).await {
                            Some(true) => {}
                            Some(false) => still.push(o),
                            None => break 'session,
                        }
                    }
                    unsubscribed = still;
                    if unsubscribed.is_empty() && !told_ready {
                        told_ready = true;
                        control.ready.fetch_add(1, Ordering::SeqCst);
                    }
                }
                _ = async { tick.as_mut().expect("ticking").tick().await }, if tick.is_some() => {
                    next_seq += 1;
                    seen.lock().unwrap().posted.insert((id.clone(), next_seq), Instant::now());
                    match publish(&mut conn, &own, &my_node, &id, published, next_seq).await {
                        Some(true) => published = next_seq,
                        Some(false) => {}
                        None => break 'session,
                    }
                }
                ev = conn.client.next() => if !conn.event(ev) { break 'session },
            }
        }
    }
}

/// Publish taps `after + 1 ..= last` as one batch: Some(true) when the
/// server took it, Some(false) refused, None the session is over.
async fn publish(
    conn: &mut Conn,
    own: &Jid,
    my_node: &str,
    id: &str,
    after: u64,
    last: u64,
) -> Option<bool> {
    let events: Vec<HerdEvent> = (after + 1..=last)
        .map(|seq| {
            HerdEvent::Tap(Tap {
                station: id.into(),
                seq,
                reader: "all-a".into(),
                tag: TagUid::parse(&format!("{:08X}", 0x6000_0000u64 + seq)).expect("a tag"),
                at: pollstation::sys::clock::now_ms(),
                poll: "all".into(),
                answer: "a".into(),
            })
        })
        .collect();
    let b = Batch {
        origin: id.to_string(),
        feed: Feed::Taps,
        first: after + 1,
        last,
        events,
    };
    let req = PubSub::Publish {
        publish: pubsub::pubsub::Publish {
            node: NodeName(my_node.to_string()),
            items: vec![pubsub::pubsub::Item {
                id: Some(pubsub::ItemId(item_id(b.feed, b.first))),
                publisher: None,
                payload: Some(encode(&b)),
            }],
        },
        publish_options: None,
    };
    conn.iq(own, IqRequest::Set(req.into())).await
}
