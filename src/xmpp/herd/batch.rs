//! The herd's items on the server: a batch of consecutive events of one
//! origin's feed, as namespaced XML (a summary people can read, the events
//! in postcard inside base64), its item id and its node's name.

use base64::Engine;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::minidom::rxml::xml_ncname;

use crate::domain::herd::{Feed, HerdEvent};

/// The payload's namespace.
pub const NS: &str = "urn:pollstation:herd:0";

/// One item: consecutive events of one origin's feed.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub origin: String,
    pub feed: Feed,
    pub first: u64,
    pub last: u64,
    pub events: Vec<HerdEvent>,
}

fn feed_of(s: &str) -> Option<Feed> {
    Feed::ALL.into_iter().find(|f| f.as_str() == s)
}

/// `taps-000000000001`: replaced, not added, when published again.
#[must_use]
pub fn item_id(feed: Feed, first: u64) -> String {
    format!("{}-{first:012}", feed.as_str())
}

/// The node of a station's feeds.
#[must_use]
pub fn node(herd: &str, station: &str) -> String {
    format!("herd/{herd}/{station}")
}

/// `<batch xmlns=… origin feed first last>` with a line people can read
/// and the events (postcard, base64).
#[must_use]
pub fn encode(b: &Batch) -> Element {
    let data = postcard::to_stdvec(&b.events).unwrap_or_default();
    Element::builder("batch", NS)
        .attr(xml_ncname!("origin").into(), b.origin.as_str())
        .attr(xml_ncname!("feed").into(), b.feed.as_str())
        .attr(xml_ncname!("first").into(), b.first.to_string())
        .attr(xml_ncname!("last").into(), b.last.to_string())
        .append(
            Element::builder("summary", NS)
                .append(format!(
                    "{} {} {}–{} of {}",
                    b.events.len(),
                    b.feed,
                    b.first,
                    b.last,
                    b.origin
                ))
                .build(),
        )
        .append(
            Element::builder("data", NS)
                .append(base64::engine::general_purpose::STANDARD.encode(data))
                .build(),
        )
        .build()
}

/// A batch from an item's payload; `None` for anything else, or one whose
/// events are not what its header says.
#[must_use]
pub fn decode(e: &Element) -> Option<Batch> {
    if !e.is("batch", NS) {
        return None;
    }
    let origin = e.attr("origin")?.to_string();
    let feed = feed_of(e.attr("feed")?)?;
    let first: u64 = e.attr("first")?.parse().ok()?;
    let last: u64 = e.attr("last")?.parse().ok()?;
    let data = e.get_child("data", NS)?.text();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .ok()?;
    let events: Vec<HerdEvent> = postcard::from_bytes(&bytes).ok()?;
    let consistent = !events.is_empty()
        && events.iter().enumerate().all(|(i, ev)| {
            let (o, f, n) = ev.position();
            **o == *origin && f == feed && n == first + i as u64
        })
        && last == first + events.len() as u64 - 1;
    consistent.then_some(Batch {
        origin,
        feed,
        first,
        last,
        events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Action, ActionKind, TapKey};

    fn action(oseq: u64) -> HerdEvent {
        HerdEvent::Action(Action {
            origin: "hall-a".into(),
            oseq,
            at: 1000 + oseq as i64,
            kind: ActionKind::Reset,
            poll: "p".into(),
            key: TapKey {
                at: 1000,
                station: "hall-a".into(),
                seq: 3,
            },
        })
    }

    #[test]
    fn a_batch_round_trips_and_a_lying_header_is_refused() {
        let b = Batch {
            origin: "hall-a".into(),
            feed: Feed::Actions,
            first: 4,
            last: 5,
            events: vec![action(4), action(5)],
        };
        let xml = encode(&b);
        assert_eq!(decode(&xml), Some(b.clone()));
        assert_eq!(
            xml.get_child("summary", NS).unwrap().text(),
            "2 actions 4–5 of hall-a"
        );
        let mut lying = b;
        lying.first = 3;
        assert_eq!(decode(&encode(&lying)), None);
        assert_eq!(item_id(Feed::Taps, 1), "taps-000000000001");
    }
}
