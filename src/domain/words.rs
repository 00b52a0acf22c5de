//! The words visitors and operators read on the screen and the pages, in
//! every language the station ships (English and Dutch): the one place
//! they live. The GTK screen reads them here, the pages from
//! `GET /api/v1/room`.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// A language the station speaks (`[station] language`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    #[default]
    En,
    Nl,
}

impl Language {
    pub const ALL: [Language; 2] = [Language::En, Language::Nl];

    #[must_use]
    pub fn code(self) -> &'static str {
        match self {
            Language::En => "en",
            Language::Nl => "nl",
        }
    }

    #[must_use]
    pub fn words(self) -> &'static Words {
        match self {
            Language::En => &EN,
            Language::Nl => &NL,
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A language code the station does not ship.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown language {0:?}: use \"en\" or \"nl\"")]
pub struct UnknownLanguage(pub String);

impl FromStr for Language {
    type Err = UnknownLanguage;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Language::ALL
            .into_iter()
            .find(|l| l.code() == s)
            .ok_or_else(|| UnknownLanguage(s.to_string()))
    }
}

/// Every text, by its use. Placeholders: none; the parts are joined by the
/// code that shows them ("Thank you, Anna!" is `thank_you_name` + name + `!`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Words {
    pub vote: &'static str,
    pub votes: &'static str,
    pub thank_you: &'static str,
    /// Before a first name: "Thank you, " + "Anna" + "!".
    pub thank_you_name: &'static str,
    pub already_voted: &'static str,
    pub open: &'static str,
    pub closed: &'static str,
    pub active: &'static str,
    pub not_active: &'static str,
    pub no_polls: &'static str,
    pub readers: &'static str,
    pub network: &'static str,
    pub live: &'static str,
    pub connecting: &'static str,
    pub reconnecting: &'static str,
    pub follow: &'static str,
    pub from: &'static str,
    pub over_time: &'static str,
    pub download_image: &'static str,
    pub store_failing: &'static str,
    pub footer: &'static str,
}

impl Words {
    /// "1 vote", "12 votes".
    #[must_use]
    pub fn count(&self, n: u64) -> String {
        format!("{n} {}", if n == 1 { self.vote } else { self.votes })
    }

    /// The banner after a counted tap: "Thank you, Anna! · Pizza".
    #[must_use]
    pub fn thanks(&self, first_name: Option<&str>, answer: Option<&str>) -> String {
        let mut s = match first_name {
            Some(n) => format!("{}{n}!", self.thank_you_name),
            None => self.thank_you.to_string(),
        };
        if let Some(a) = answer {
            s.push_str(" · ");
            s.push_str(a);
        }
        s
    }
}

static EN: Words = Words {
    vote: "vote",
    votes: "votes",
    thank_you: "Thank you!",
    thank_you_name: "Thank you, ",
    already_voted: "Already voted",
    open: "open",
    closed: "closed",
    active: "active",
    not_active: "not the active poll",
    no_polls: "No polls configured",
    readers: "readers",
    network: "network",
    live: "live",
    connecting: "connecting…",
    reconnecting: "reconnecting…",
    follow: "Follow the results on your phone",
    from: "from",
    over_time: "Votes over time",
    download_image: "Download image",
    store_failing: "VOTES ARE NOT BEING RECORDED",
    footer: "Tap your tag on the reader of your answer",
};

static NL: Words = Words {
    vote: "stem",
    votes: "stemmen",
    thank_you: "Dank je wel!",
    thank_you_name: "Dank je wel, ",
    already_voted: "Al gestemd",
    open: "open",
    closed: "gesloten",
    active: "actief",
    not_active: "niet de actieve vraag",
    no_polls: "Geen vragen ingesteld",
    readers: "lezers",
    network: "netwerk",
    live: "live",
    connecting: "verbinden…",
    reconnecting: "opnieuw verbinden…",
    follow: "Volg de uitslag op je telefoon",
    from: "van",
    over_time: "Stemmen in de tijd",
    download_image: "Afbeelding downloaden",
    store_failing: "STEMMEN WORDEN NIET OPGESLAGEN",
    footer: "Houd je tag bij de lezer van je antwoord",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_parse_and_count() {
        assert_eq!("nl".parse::<Language>().unwrap(), Language::Nl);
        assert!("de".parse::<Language>().is_err());
        assert_eq!(Language::En.words().count(1), "1 vote");
        assert_eq!(Language::Nl.words().count(3), "3 stemmen");
        assert_eq!(
            Language::En.words().thanks(Some("Anna"), Some("Pizza")),
            "Thank you, Anna! · Pizza"
        );
        assert_eq!(Language::Nl.words().thanks(None, None), "Dank je wel!");
    }
}
