//! The outbox encoding: each counted vote becomes one item on
//! `<node_prefix><poll>` with the ikPoll payload and the deterministic id
//! `<station>-<seq>`. `app` hands this to the Station as its
//! [`OutboxEncoder`], so the Station never builds XML.
//!
//! Invariant: encoding never panics and never stops the Station; a vote
//! that cannot be written is logged and left out.

use std::collections::HashMap;

use super::payload::{self, Question};
use crate::config::XmppConfig;
use crate::station::{OutboxEncoder, OutboxItem, Vote};

/// Encodes votes as this station's `[xmpp]` says.
#[derive(Debug, Clone)]
pub struct Encoder {
    node_prefix: String,
    publish_tags: bool,
}

impl Encoder {
    #[must_use]
    pub fn new(cfg: &XmppConfig) -> Self {
        Self {
            node_prefix: cfg.node_prefix.clone(),
            publish_tags: cfg.publish_tags,
        }
    }
}

impl OutboxEncoder for Encoder {
    fn encode(&self, votes: &[Vote<'_>]) -> Vec<OutboxItem> {
        let mut questions: HashMap<&str, Question> = HashMap::new();
        let mut items = Vec::with_capacity(votes.len());
        for v in votes {
            let q = questions
                .entry(&v.poll.id)
                .or_insert_with(|| payload::question(v.poll, v.tally));
            let tap = v.tap;
            let vote = payload::Vote {
                station: tap.station.to_string(),
                seq: tap.seq,
                reader: tap.reader.to_string(),
                tag: self.publish_tags.then(|| tap.tag.as_str().to_string()),
                poll: tap.poll.to_string(),
                answer: tap.answer.to_string(),
                at: tap.at,
                person_title: v.person.map(|p| p.name.clone()),
                person_image: None,
                person_id: v.person.map(|p| p.id.clone()),
            };
            match payload::to_xml(&payload::build(&vote, q)) {
                Ok(xml) => items.push(OutboxItem {
                    id: 0,
                    seq: tap.seq,
                    node: format!("{}{}", self.node_prefix, tap.poll),
                    item_id: payload::item_id(&tap.station, tap.seq),
                    payload: xml,
                    at: tap.at,
                }),
                Err(e) => tracing::error!(
                    station = %tap.station, seq = tap.seq, error = %e,
                    "vote not published: its item cannot be written (the tap is kept and counted)"
                ),
            }
        }
        items
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::tally::Tallies;
    use crate::domain::{Answer, Person, PollDef, Rule, TagUid, Tap};

    #[test]
    fn a_label_or_name_with_a_control_character_still_publishes() {
        let poll = PollDef {
            id: "lunch".into(),
            question: "Lunch\u{1}?".into(),
            rule: Rule::Unlimited,
            answers: vec![Answer {
                id: "pizza".into(),
                label: "Piz\u{1}za".into(),
            }],
            open: true,
            display: crate::domain::Display::Bars,
        };
        let mut tallies = Tallies::new(std::slice::from_ref(&poll));
        let tap = Tap {
            station: "hall-a".into(),
            seq: 7,
            reader: "post-1".into(),
            tag: TagUid::parse("01020304").unwrap(),
            at: 0,
            poll: "lunch".into(),
            answer: "pizza".into(),
        };
        tallies.apply(&tap);
        let tally = tallies.view("lunch").unwrap();
        let person = Person {
            id: "local:x".into(),
            name: "An\u{1}na".into(),
            first: "An\u{1}na".into(),
        };
        let enc = Encoder {
            node_prefix: "vote/".into(),
            publish_tags: false,
        };
        let items = enc.encode(&[Vote {
            tap: &tap,
            poll: &poll,
            tally: &tally,
            person: Some(&person),
        }]);
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].item_id, "hall-a-7");
        assert_eq!(items[0].node, "vote/lunch");
        assert!(!items[0].payload.contains('\u{1}'));
        assert!(items[0].payload.contains("Piz\u{FFFD}za"));
    }
}
