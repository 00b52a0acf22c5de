//! Polls and what can be done with them: rules, answers, reader bindings and
//! operator actions.
//!
//! Pure: no I/O, no clock. The one place that knows the action names and
//! how a binding is spelled and checked; config, the store, the web API and
//! the control socket all go through it.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::tap::TapKey;

/// How the taps of one person in one poll become votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// A person's first tap counts; later ones are kept but do not count.
    OnePerPerson,
    /// A person's latest tap counts: they can change their mind.
    LastWins,
    /// Every tap counts.
    Unlimited,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::OnePerPerson => "one-per-person",
            Rule::LastWins => "last-wins",
            Rule::Unlimited => "unlimited",
        })
    }
}

/// One answer of a poll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Answer {
    pub id: String,
    pub label: String,
}

/// The static definition of a poll (from the config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PollDef {
    pub id: String,
    pub question: String,
    pub rule: Rule,
    pub answers: Vec<Answer>,
    /// Whether the poll is open when the log holds no open/close action for it.
    pub open: bool,
    /// How the screens draw it.
    pub display: Display,
}

/// How a poll is drawn: bars (the default), or a word cloud for a poll
/// choosing from many keywords.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Display {
    #[default]
    Bars,
    Cloud,
}

impl PollDef {
    /// Index of an answer by id.
    #[must_use]
    pub fn answer_index(&self, answer: &str) -> Option<usize> {
        self.answers.iter().position(|a| a.id == answer)
    }

    /// The answer id for a slot letter (`A` is the first answer).
    #[must_use]
    pub fn answer_for_slot(&self, slot: char) -> Option<&Answer> {
        let idx = slot_index(slot)?;
        self.answers.get(idx)
    }

    /// Whether `other` keeps this poll's rule and answer ids (in order), so
    /// its tallies and logged taps still mean the same.
    #[must_use]
    pub fn same_shape(&self, other: &PollDef) -> bool {
        self.id == other.id
            && self.rule == other.rule
            && self.answers.len() == other.answers.len()
            && self
                .answers
                .iter()
                .zip(&other.answers)
                .all(|(a, b)| a.id == b.id)
    }
}

/// `A` → 0, `B` → 1, … (case-insensitive).
#[must_use]
pub fn slot_index(slot: char) -> Option<usize> {
    let up = slot.to_ascii_uppercase();
    up.is_ascii_uppercase().then(|| (up as u8 - b'A') as usize)
}

/// What a tap on a reader means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Binding {
    /// Always this answer of this poll.
    Fixed { poll: String, answer: String },
    /// Answer number `slot` (A = first) of whichever poll is active.
    Slot { slot: char },
}

/// Why a binding is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    #[error("give either a slot or both a poll and an answer, not both")]
    Both,
    #[error("slot {0:?} is not one answer letter (A, B, C, …)")]
    BadSlot(String),
    #[error("a poll is named but no answer")]
    PollWithoutAnswer,
    #[error("an answer is named but no poll")]
    AnswerWithoutPoll,
    #[error("give either a slot or both a poll and an answer")]
    Nothing,
    #[error("no poll {0:?} is configured")]
    UnknownPoll(String),
    #[error("poll {poll:?} has no answer {answer:?}")]
    UnknownAnswer { poll: String, answer: String },
}

/// Which part of a binding a [`BindingError`] is about (for line numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingPart {
    Reader,
    Poll,
    Answer,
    Slot,
}

impl BindingError {
    /// The part of the binding at fault.
    #[must_use]
    pub fn part(&self) -> BindingPart {
        match self {
            BindingError::Both | BindingError::BadSlot(_) => BindingPart::Slot,
            BindingError::PollWithoutAnswer | BindingError::UnknownPoll(_) => BindingPart::Poll,
            BindingError::AnswerWithoutPoll | BindingError::UnknownAnswer { .. } => {
                BindingPart::Answer
            }
            BindingError::Nothing => BindingPart::Reader,
        }
    }

    /// The message as the config file checker words it, about reader `id`.
    #[must_use]
    pub fn for_reader(&self, id: &str) -> String {
        match self {
            BindingError::Both => {
                format!("reader {id:?} has both a fixed poll/answer and a slot: choose one")
            }
            BindingError::BadSlot(s) => {
                format!("reader {id:?}: slot {s:?} is not one answer letter (A, B, C, …)")
            }
            BindingError::PollWithoutAnswer => format!("reader {id:?} names a poll but no answer"),
            BindingError::AnswerWithoutPoll => format!("reader {id:?} names an answer but no poll"),
            BindingError::Nothing => {
                format!("reader {id:?} is bound to nothing: give poll + answer, or slot")
            }
            BindingError::UnknownPoll(p) => {
                format!("reader {id:?} names poll {p:?}, which is not configured")
            }
            BindingError::UnknownAnswer { poll, answer } => {
                format!("reader {id:?} names answer {answer:?}, which poll {poll:?} does not have")
            }
        }
    }
}

impl Binding {
    /// A binding from how it is written: a slot letter, or a poll and an
    /// answer. Says what is missing or doubled; does not look at the polls.
    pub fn from_parts(
        poll: Option<&str>,
        answer: Option<&str>,
        slot: Option<&str>,
    ) -> Result<Binding, BindingError> {
        match (poll, answer, slot) {
            (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => Err(BindingError::Both),
            (None, None, Some(s)) => {
                let mut chars = s.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) if c.is_ascii_alphabetic() => Ok(Binding::Slot {
                        slot: c.to_ascii_uppercase(),
                    }),
                    _ => Err(BindingError::BadSlot(s.to_string())),
                }
            }
            (Some(poll), Some(answer), None) => Ok(Binding::Fixed {
                poll: poll.to_string(),
                answer: answer.to_string(),
            }),
            (Some(_), None, None) => Err(BindingError::PollWithoutAnswer),
            (None, Some(_), None) => Err(BindingError::AnswerWithoutPoll),
            (None, None, None) => Err(BindingError::Nothing),
        }
    }

    /// Whether the binding names what the polls have.
    pub fn check(&self, polls: &[PollDef]) -> Result<(), BindingError> {
        match self {
            Binding::Slot { slot } if slot.is_ascii_uppercase() => Ok(()),
            Binding::Slot { slot } => Err(BindingError::BadSlot(slot.to_string())),
            Binding::Fixed { poll, answer } => match polls.iter().find(|p| &p.id == poll) {
                None => Err(BindingError::UnknownPoll(poll.clone())),
                Some(p) if p.answer_index(answer).is_none() => Err(BindingError::UnknownAnswer {
                    poll: poll.clone(),
                    answer: answer.clone(),
                }),
                Some(_) => Ok(()),
            },
        }
    }

    /// `lunch/pizza` or `slot B of the active poll`, for summaries.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Binding::Fixed { poll, answer } => format!("{poll}/{answer}"),
            Binding::Slot { slot } => format!("slot {slot} of the active poll"),
        }
    }
}

/// An operator action on a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActionKind {
    Open,
    Close,
    Reset,
    Activate,
}

/// An action name that is not one of [`ActionKind::NAMES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not one of open, close, reset, activate")]
pub struct UnknownAction(pub String);

impl ActionKind {
    /// Every action, as written in URLs, the log and the control socket.
    pub const NAMES: [&'static str; 4] = ["open", "close", "reset", "activate"];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Open => "open",
            ActionKind::Close => "close",
            ActionKind::Reset => "reset",
            ActionKind::Activate => "activate",
        }
    }
}

impl FromStr for ActionKind {
    type Err = UnknownAction;

    fn from_str(s: &str) -> Result<Self, UnknownAction> {
        Ok(match s {
            "open" => ActionKind::Open,
            "close" => ActionKind::Close,
            "reset" => ActionKind::Reset,
            "activate" => ActionKind::Activate,
            other => return Err(UnknownAction(other.to_string())),
        })
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ActionKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ActionKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An operator action on a poll, as logged and replicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    /// The station that took it, and its number there (gap-free per origin).
    pub origin: Arc<str>,
    pub oseq: u64,
    pub at: i64,
    pub kind: ActionKind,
    pub poll: String,
    /// Where it lies in the taps' total order: above every tap of the poll
    /// its station had seen. For a reset the cutoff, for open and close the
    /// gate, for activate the last-writer-wins order.
    pub key: TapKey,
}

impl Action {
    /// Its key in its origin's feed of actions.
    #[must_use]
    pub fn feed_key(&self) -> (&str, u64) {
        (&self.origin, self.oseq)
    }
}

/// The poll that is active: the config's choice until an operator
/// activates another. Of all `activate` actions (this station's and the
/// herd's, arriving in any order) the one with the highest key wins, so
/// every station ends on the same poll; one naming a poll not in the
/// config is passed over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivePoll {
    poll: Option<String>,
    /// The key of the activation that chose it; `None`: the config did.
    by: Option<TapKey>,
}

impl ActivePoll {
    /// Before any activation: the config's choice.
    #[must_use]
    pub fn configured(poll: Option<String>) -> Self {
        Self { poll, by: None }
    }

    #[must_use]
    pub fn get(&self) -> Option<&str> {
        self.poll.as_deref()
    }

    /// Take an activation of `poll` at `key` into account (`polls`: the
    /// configured ones); whether it won.
    pub fn activate(&mut self, poll: &str, key: &TapKey, polls: &[PollDef]) -> bool {
        if self.by.as_ref().is_some_and(|k| k >= key) || !polls.iter().any(|p| p.id == poll) {
            return false;
        }
        self.poll = Some(poll.to_string());
        self.by = Some(key.clone());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_activation_wins_in_any_order() {
        let key = |at, seq| TapKey {
            at,
            station: "s".into(),
            seq,
        };
        let polls: Vec<PollDef> = ["first", "second", "third"]
            .into_iter()
            .map(|id| PollDef {
                id: id.into(),
                ..poll()
            })
            .collect();
        let mut a = ActivePoll::configured(Some("first".into()));
        let mut b = a.clone();
        let acts = [
            ("second", key(10, 1)),
            ("third", key(20, 2)),
            ("second", key(15, 3)),
        ];
        for (p, k) in &acts {
            a.activate(p, k, &polls);
        }
        for (p, k) in acts.iter().rev() {
            b.activate(p, k, &polls);
        }
        assert_eq!((a.get(), b.get()), (Some("third"), Some("third")));
        assert!(
            !a.activate("gone", &key(30, 4), &polls),
            "not in the config"
        );
        assert_eq!(a.get(), Some("third"));
        assert!(a.activate("second", &key(30, 4), &polls));
        assert_eq!(a.get(), Some("second"));
    }

    #[test]
    fn slots_map_to_answers() {
        assert_eq!(slot_index('A'), Some(0));
        assert_eq!(slot_index('c'), Some(2));
        assert_eq!(slot_index('1'), None);
    }

    #[test]
    fn action_names_round_trip_in_every_spelling() {
        for name in ActionKind::NAMES {
            let k: ActionKind = name.parse().unwrap();
            assert_eq!(k.to_string(), name);
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<ActionKind>(&json).unwrap(), k);
        }
        let e = "wipe".parse::<ActionKind>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"wipe\" is not one of open, close, reset, activate"
        );
        assert!(serde_json::from_str::<ActionKind>("\"Open\"").is_err());
    }

    fn poll() -> PollDef {
        PollDef {
            id: "lunch".into(),
            question: "Lunch?".into(),
            rule: Rule::OnePerPerson,
            answers: vec![Answer {
                id: "pizza".into(),
                label: "Pizza".into(),
            }],
            open: true,
            display: crate::domain::Display::Bars,
        }
    }

    #[test]
    fn bindings_are_spelled_and_checked_in_one_place() {
        let b = |p, a, s| Binding::from_parts(p, a, s);
        assert_eq!(b(None, None, Some("b")), Ok(Binding::Slot { slot: 'B' }));
        assert_eq!(
            b(Some("lunch"), Some("pizza"), None),
            Ok(Binding::Fixed {
                poll: "lunch".into(),
                answer: "pizza".into()
            })
        );
        assert_eq!(b(Some("x"), None, Some("a")), Err(BindingError::Both));
        assert_eq!(
            b(None, None, Some("AB")),
            Err(BindingError::BadSlot("AB".into()))
        );
        assert_eq!(
            b(None, None, Some("1")),
            Err(BindingError::BadSlot("1".into()))
        );
        assert_eq!(
            b(Some("x"), None, None),
            Err(BindingError::PollWithoutAnswer)
        );
        assert_eq!(
            b(None, Some("x"), None),
            Err(BindingError::AnswerWithoutPoll)
        );
        assert_eq!(b(None, None, None), Err(BindingError::Nothing));

        let polls = [poll()];
        assert!(Binding::Slot { slot: 'Z' }.check(&polls).is_ok());
        let fixed = |p: &str, a: &str| Binding::Fixed {
            poll: p.into(),
            answer: a.into(),
        };
        assert!(fixed("lunch", "pizza").check(&polls).is_ok());
        let e = fixed("tea", "x").check(&polls).unwrap_err();
        assert_eq!(e.part(), BindingPart::Poll);
        assert_eq!(
            e.for_reader("post-1"),
            "reader \"post-1\" names poll \"tea\", which is not configured"
        );
        let e = fixed("lunch", "pasta").check(&polls).unwrap_err();
        assert_eq!(e.to_string(), "poll \"lunch\" has no answer \"pasta\"");
        assert_eq!(e.part(), BindingPart::Answer);
    }
}
