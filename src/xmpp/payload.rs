//! The ikPoll vote payload, as Mediamatic's ikDisplay reads it from a
//! `vote/<question id>` node: `<rsp>` with `<vote>`, `<person>` and
//! `<question>` (answers with count and percentage, total_votes). Built
//! here for publishing and parsed here for listening; pure, no I/O.
//!
//! Every text is made XML-safe where it enters an element ([`text`]): a
//! character XML 1.0 forbids becomes U+FFFD, and writing never fails on
//! content ([`to_xml`] returns an error instead of panicking).

use tokio_xmpp::minidom::Element;

use crate::domain::PollDef;
use crate::domain::tally::TallyView;
use crate::domain::text::xml_safe;

/// The namespace of `<rsp>` and its children. anyMeta's `<rsp>` had none;
/// an XMPP payload must have one, and readers of the ikPoll schema
/// (ikDisplay, [`parse`]) go by element names, so any will do: ours.
pub const NS: &str = "urn:pollstation:vote:0";

/// What one published vote says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vote {
    pub station: String,
    pub seq: u64,
    pub reader: String,
    /// Only when `publish_tags = true`.
    pub tag: Option<String>,
    pub poll: String,
    pub answer: String,
    /// ms since the epoch.
    pub at: i64,
    pub person_title: Option<String>,
    pub person_image: Option<String>,
    pub person_id: Option<String>,
}

/// A poll's question and counts as carried in a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub id: String,
    pub title: String,
    /// (answer id, title, count, percentage)
    pub answers: Vec<(String, String, u64, u64)>,
    pub total: u64,
}

/// A parsed vote item (ours or ikPoll's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedVote {
    pub answer: String,
    pub person_title: Option<String>,
    pub timestamp: Option<String>,
    pub source: Option<String>,
    pub question: Question,
}

fn text(name: &str, value: impl Into<String>) -> Element {
    let value = value.into();
    let safe = match xml_safe(&value) {
        std::borrow::Cow::Borrowed(_) => value,
        std::borrow::Cow::Owned(s) => s,
    };
    Element::builder(name, NS).append(safe).build()
}

/// Why an element could not be written as XML.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the item as XML: {0}")]
pub struct XmlError(String);

/// The element as XML text. (minidom's `String::from(&Element)` panics
/// when writing fails; this says so instead.)
pub fn to_xml(e: &Element) -> Result<String, XmlError> {
    let mut out = Vec::new();
    e.write_to(&mut out).map_err(|e| XmlError(e.to_string()))?;
    String::from_utf8(out).map_err(|e| XmlError(e.to_string()))
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, as ikPoll wrote timestamps.
#[must_use]
pub fn timestamp(at_ms: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000)
        .ok()
        .and_then(|d| d.format(&fmt).ok())
        .unwrap_or_default()
}

/// The question part, from the poll and its tally.
#[must_use]
pub fn question(def: &PollDef, tally: &TallyView) -> Question {
    let total = tally.total;
    Question {
        id: def.id.clone(),
        title: def.question.clone(),
        answers: tally
            .answers
            .iter()
            .map(|a| {
                let pct = (a.count * 100 + total / 2).checked_div(total).unwrap_or(0);
                (a.id.clone(), a.label.clone(), a.count, pct)
            })
            .collect(),
        total,
    }
}

/// The item id of a vote: the same on every republish.
#[must_use]
pub fn item_id(station: &str, seq: u64) -> String {
    format!("{station}-{seq}")
}

/// The `<rsp>` document of one vote.
#[must_use]
pub fn build(v: &Vote, q: &Question) -> Element {
    let mut vote = Element::builder("vote", NS)
        .append(text("id", item_id(&v.station, v.seq)))
        .append(text("reader_serial", v.reader.clone()))
        .append(text("reader_id_ref", v.reader.clone()));
    if let Some(tag) = &v.tag {
        vote = vote.append(text("rfid_tag", tag.clone()));
    }
    let vote = vote
        .append(text("user_id_ref", v.person_id.clone().unwrap_or_default()))
        .append(text("answer_id_ref", v.answer.clone()))
        .append(text("question_id_ref", v.poll.clone()))
        .append(text("timestamp", timestamp(v.at)))
        .append(text("source", format!("pollstation:{}", v.station)))
        .build();
    let person = Element::builder("person", NS)
        .append(text("title", v.person_title.clone().unwrap_or_default()))
        .append(text("image", v.person_image.clone().unwrap_or_default()))
        .build();
    let answers = Element::builder("answers", NS)
        .append_all(q.answers.iter().map(|(id, title, count, pct)| {
            Element::builder("item", NS)
                .append(text("answer_id", id.clone()))
                .append(text("title", title.clone()))
                .append(text("count", count.to_string()))
                .append(text("percentage", pct.to_string()))
                .build()
        }))
        .build();
    let question = Element::builder("question", NS)
        .append(text("title", q.title.clone()))
        .append(text("id", q.id.clone()))
        .append(answers)
        .append(text("total_votes", q.total.to_string()))
        .build();
    Element::builder("rsp", NS)
        .append(vote)
        .append(person)
        .append(question)
        .build()
}

fn child<'a>(e: &'a Element, name: &str) -> Option<&'a Element> {
    e.children().find(|c| c.name() == name)
}

fn child_text(e: &Element, name: &str) -> Option<String> {
    child(e, name).map(Element::text).filter(|t| !t.is_empty())
}

/// Read a vote item; `None` if it is not an `<rsp>` with a `<vote>` and a
/// `<question>`. Namespaces are ignored, as ikDisplay did.
#[must_use]
pub fn parse(rsp: &Element) -> Option<ParsedVote> {
    if rsp.name() != "rsp" {
        return None;
    }
    let vote = child(rsp, "vote")?;
    let q = child(rsp, "question")?;
    let answers = child(q, "answers")
        .map(|a| {
            a.children()
                .filter(|i| i.name() == "item")
                .map(|i| {
                    let num = |n| {
                        child_text(i, n)
                            .and_then(|t| t.trim().parse().ok())
                            .unwrap_or(0)
                    };
                    (
                        child_text(i, "answer_id").unwrap_or_default(),
                        child_text(i, "title").unwrap_or_default(),
                        num("count"),
                        num("percentage"),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Some(ParsedVote {
        answer: child_text(vote, "answer_id_ref")?,
        person_title: child(rsp, "person").and_then(|p| child_text(p, "title")),
        timestamp: child_text(vote, "timestamp"),
        source: child_text(vote, "source"),
        question: Question {
            id: child_text(q, "id").or_else(|| child_text(vote, "question_id_ref"))?,
            title: child_text(q, "title").unwrap_or_default(),
            answers,
            total: child_text(q, "total_votes")
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Vote, Question) {
        (
            Vote {
                station: "hall-a".into(),
                seq: 17,
                reader: "post-1".into(),
                tag: None,
                poll: "lunch".into(),
                answer: "pizza".into(),
                at: 1_284_045_689_000, // 2010-09-09 15:21:29 UTC
                person_title: None,
                person_image: None,
                person_id: None,
            },
            Question {
                id: "lunch".into(),
                title: "Lunch: pizza & sushi?".into(),
                answers: vec![
                    ("pizza".into(), "Pizza".into(), 3, 60),
                    ("sushi".into(), "Sushi <raw>".into(), 2, 40),
                ],
                total: 5,
            },
        )
    }

    #[test]
    fn round_trips_and_escapes() {
        let (v, q) = sample();
        let xml = to_xml(&build(&v, &q)).unwrap();
        assert!(
            xml.contains("&amp;") && xml.contains("&lt;raw&gt;"),
            "{xml}"
        );
        assert!(!xml.contains("rfid_tag"), "no tag unless publish_tags");
        let e: Element = xml.parse().unwrap();
        let p = parse(&e).unwrap();
        assert_eq!(p.answer, "pizza");
        assert_eq!(p.question, q);
        assert_eq!(p.timestamp.as_deref(), Some("2010-09-09 15:21:29"));
        assert_eq!(p.person_title, None);
    }

    #[test]
    fn control_characters_never_stop_an_item() {
        let (mut v, mut q) = sample();
        v.person_title = Some("An\u{1}na".into());
        q.title = "Lunch\u{1b}?".into();
        q.answers[0].1 = "Piz\u{0}za".into();
        let xml = to_xml(&build(&v, &q)).unwrap();
        assert!(!xml.contains('\u{1}') && !xml.contains('\u{0}'), "{xml}");
        let p = parse(&xml.parse().unwrap()).unwrap();
        assert_eq!(p.person_title.as_deref(), Some("An\u{FFFD}na"));
        assert_eq!(p.question.answers[0].1, "Piz\u{FFFD}za");
    }

    #[test]
    fn reads_ikpolls_own_items() {
        // The shape of ikDisplay's test fixture (2010-09-09).
        let xml = "<rsp xmlns='jabber:client'><vote><id>1</id><reader_serial>A3S280TD</reader_serial>\
            <reader_id_ref>82984</reader_id_ref><rfid_tag>urn:rfid:7E6FD7A0</rfid_tag>\
            <user_id_ref>124445</user_id_ref><answer_id_ref>160252</answer_id_ref>\
            <question_id_ref>160225</question_id_ref><timestamp>2010-09-09 15:21:29</timestamp>\
            </vote><person><title>Arjan</title><image>http://x/y.jpg</image></person>\
            <question><title>Koffie?</title><id>160225</id><answers>\
            <item><answer_id>160252</answer_id><title>Ja</title><count>7</count><percentage>70</percentage></item>\
            <item><answer_id>160253</answer_id><title>Nee</title><count>3</count><percentage>30</percentage></item>\
            </answers><total_votes>10</total_votes></question></rsp>";
        let p = parse(&xml.parse().unwrap()).unwrap();
        assert_eq!(p.answer, "160252");
        assert_eq!(p.person_title.as_deref(), Some("Arjan"));
        assert_eq!(p.question.id, "160225");
        assert_eq!(p.question.total, 10);
        assert_eq!(
            p.question.answers[1],
            ("160253".into(), "Nee".into(), 3, 30)
        );
    }
}
