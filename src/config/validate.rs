//! From the file as written to the typed [`Config`]: one function per
//! section, each adding what is wrong to one list of [`Problem`]s (every
//! mistake at once, each with its span).

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{
    RawConfig, RawHotplug, RawIdentity, RawNetwork, RawPoll, RawReader, RawStation, RawXmpp,
};
use super::{
    Config, HotplugConfig, IdentityConfig, NetworkConfig, Problem, ReaderConfig, Signature,
    StationConfig, XmppConfig, XmppTls, parse_node_uri, valid_id,
};
use crate::domain::poll::BindingPart;
use crate::domain::{Answer, Binding, PollDef, text};

mod herd;
mod http;
mod room;
use http::http;

const ID_RULE: &str = "use 1–64 letters, digits, '-', '_' or '.'";

/// The problems found so far.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, span: Range<usize>, message: String) {
        self.0.push(Problem {
            span: Some(span),
            message,
        });
    }

    /// A text people read (a question, a label) that must be one printable
    /// line: XML forbids most control characters, and every vote published
    /// over XMPP carries these texts.
    fn printable(&mut self, span: Range<usize>, what: &str, value: &str) {
        if let Some(c) = text::unprintable(value) {
            self.add(
                span,
                format!(
                    "{what} contains the control character {}: remove it (texts are shown and published)",
                    text::code_point(c)
                ),
            );
        }
    }
}

pub(super) fn config(raw: RawConfig, base: &Path) -> Result<Config, Vec<Problem>> {
    let mut p = Problems::default();
    let station = station(&raw.station, base, &mut p);
    let http = http(&raw.http, base, &mut p);
    let polls = polls(&raw.polls, &mut p);
    let screen = room::screen(&raw.screen, &mut p);
    let language = room::language(&raw.station, &mut p);
    let active_poll = raw.station.active_poll.as_ref().and_then(|a| {
        if polls.iter().any(|d| d.id == *a.get_ref()) {
            Some(a.get_ref().clone())
        } else {
            p.add(
                a.span(),
                format!("active_poll {:?} is not a configured poll", a.get_ref()),
            );
            None
        }
    });
    let readers = readers(&raw.readers, &polls, base, &mut p);
    let (network, hotplug) = network_hotplug(&raw.network, &raw.hotplug, &mut p);
    let xmpp = raw.xmpp.as_ref().map(|x| xmpp(x, base, &mut p));
    let identity = raw.identity.as_ref().map(|i| identity(i, base, &mut p));
    let herd = raw
        .herd
        .as_ref()
        .map(|h| herd::herd(h, &station.id, raw.xmpp.is_some(), base, &mut p));
    if !p.0.is_empty() {
        return Err(p.0);
    }
    Ok(Config {
        station: StationConfig {
            active_poll,
            language,
            ..station
        },
        http,
        polls,
        readers,
        screen,
        network,
        hotplug,
        xmpp,
        identity,
        herd,
    })
}

fn station(raw: &RawStation, base: &Path, p: &mut Problems) -> StationConfig {
    if !valid_id(raw.id.get_ref()) {
        p.add(
            raw.id.span(),
            format!(
                "station id {:?} is not a valid id: {ID_RULE}",
                raw.id.get_ref()
            ),
        );
    }
    if raw.data_dir.get_ref().is_empty() {
        p.add(raw.data_dir.span(), "data_dir is empty".into());
    }
    StationConfig {
        id: raw.id.get_ref().clone(),
        data_dir: absolute(base, raw.data_dir.get_ref()),
        debounce: Duration::from_millis(raw.debounce_ms),
        active_poll: None,
        language: crate::domain::Language::En,
    }
}

fn polls(raw: &[RawPoll], p: &mut Problems) -> Vec<PollDef> {
    let mut polls = Vec::new();
    let mut ids = HashSet::new();
    for poll in raw {
        let id = poll.id.get_ref();
        if !valid_id(id) {
            p.add(
                poll.id.span(),
                format!("poll id {id:?} is not a valid id: {ID_RULE}"),
            );
        } else if !ids.insert(id.clone()) {
            p.add(poll.id.span(), format!("duplicate poll id {id:?}"));
        }
        if poll.question.get_ref().trim().is_empty() {
            p.add(
                poll.question.span(),
                format!("poll {id:?} has an empty question"),
            );
        }
        p.printable(
            poll.question.span(),
            &format!("the question of poll {id:?}"),
            poll.question.get_ref(),
        );
        if poll.answers.get_ref().is_empty() {
            p.add(poll.answers.span(), format!("poll {id:?} has no answers"));
        }
        let mut answer_ids = HashSet::new();
        for a in poll.answers.get_ref() {
            let aid = a.id.get_ref();
            if !valid_id(aid) {
                p.add(
                    a.id.span(),
                    format!("answer id {aid:?} in poll {id:?} is not a valid id: {ID_RULE}"),
                );
            } else if !answer_ids.insert(aid.clone()) {
                p.add(
                    a.id.span(),
                    format!("duplicate answer id {aid:?} in poll {id:?}"),
                );
            }
            p.printable(
                a.label.span(),
                &format!("the label of answer {aid:?} in poll {id:?}"),
                a.label.get_ref(),
            );
        }
        polls.push(PollDef {
            id: id.clone(),
            question: poll.question.get_ref().clone(),
            rule: poll.rule,
            answers: poll
                .answers
                .get_ref()
                .iter()
                .map(|a| Answer {
                    id: a.id.get_ref().clone(),
                    label: if a.label.get_ref().trim().is_empty() {
                        a.id.get_ref().clone()
                    } else {
                        a.label.get_ref().clone()
                    },
                })
                .collect(),
            open: poll.open,
            display: poll.display,
        });
    }
    polls
}

fn readers(
    raw: &[RawReader],
    polls: &[PollDef],
    base: &Path,
    p: &mut Problems,
) -> Vec<ReaderConfig> {
    let mut readers = Vec::new();
    let mut ids = HashSet::new();
    let mut devices = HashSet::new();
    for r in raw {
        let id = r.id.get_ref();
        if !valid_id(id) {
            p.add(
                r.id.span(),
                format!("reader id {id:?} is not a valid id: {ID_RULE}"),
            );
        } else if !ids.insert(id.clone()) {
            p.add(r.id.span(), format!("duplicate reader id {id:?}"));
        }
        let device = absolute(base, r.device.get_ref());
        if r.device.get_ref().is_empty() {
            p.add(
                r.device.span(),
                format!("reader {id:?} has an empty device"),
            );
        } else if !devices.insert(device.clone()) {
            p.add(
                r.device.span(),
                format!(
                    "reader {id:?} uses device {:?}, which another reader already uses",
                    r.device.get_ref()
                ),
            );
        }
        if let Some(b) = &r.baud
            && !matches!(
                b.get_ref(),
                1200 | 2400 | 4800 | 9600 | 19200 | 38400 | 57600 | 115_200 | 230_400
            )
        {
            p.add(
                b.span(),
                format!("reader {id:?}: baud {} is not a standard rate", b.get_ref()),
            );
        }
        fn get(s: &Option<toml::Spanned<String>>) -> Option<&str> {
            s.as_ref().map(|v| v.get_ref().as_str())
        }
        let binding = Binding::from_parts(get(&r.poll), get(&r.answer), get(&r.slot))
            .and_then(|b| b.check(polls).map(|()| b));
        let binding = match binding {
            Ok(b) => Some(b),
            Err(e) => {
                let span = |s: &Option<toml::Spanned<String>>| s.as_ref().map(toml::Spanned::span);
                let at = match e.part() {
                    BindingPart::Slot => span(&r.slot),
                    BindingPart::Poll => span(&r.poll),
                    BindingPart::Answer => span(&r.answer),
                    BindingPart::Reader => None,
                };
                p.add(at.unwrap_or_else(|| r.id.span()), e.for_reader(id));
                None
            }
        };
        if !(10..=5000).contains(r.poll_interval_ms.get_ref()) {
            p.add(
                r.poll_interval_ms.span(),
                format!("reader {id:?}: poll_interval_ms must be between 10 and 5000"),
            );
        }
        let line = |s: &str| (!s.is_empty()).then(|| s.to_string());
        if let Some(binding) = binding {
            readers.push(ReaderConfig {
                id: id.clone(),
                device,
                protocol: r.protocol,
                baud: r.baud.as_ref().map(|b| *b.get_ref()),
                binding,
                uid_order: r.uid_order,
                absence: Duration::from_millis(r.absence_ms),
                poll_interval: Duration::from_millis(*r.poll_interval_ms.get_ref()),
                feedback_counted: line(&r.feedback_counted),
                feedback_refused: line(&r.feedback_refused),
                pulse: Duration::from_millis(r.pulse_ms),
            });
        }
    }
    readers
}

fn network_hotplug(
    network: &RawNetwork,
    hotplug: &RawHotplug,
    p: &mut Problems,
) -> (NetworkConfig, HotplugConfig) {
    if *network.debounce_ms.get_ref() > 60_000 {
        p.add(
            network.debounce_ms.span(),
            "network debounce_ms must be at most 60000".into(),
        );
    }
    if !hotplug.pattern.get_ref().ends_with(".device") {
        p.add(
            hotplug.pattern.span(),
            format!(
                "hotplug pattern {:?} must match device units (end in \".device\")",
                hotplug.pattern.get_ref()
            ),
        );
    }
    (
        NetworkConfig {
            watch: network.watch,
            debounce: Duration::from_millis(*network.debounce_ms.get_ref()),
        },
        HotplugConfig {
            enabled: hotplug.enabled,
            pattern: hotplug.pattern.get_ref().clone(),
        },
    )
}

/// Whether `host` (of host:port) is this machine: where plain TCP is
/// acceptable.
fn loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A secret file named in the config, if it exists already: it must not be
/// open to other users (the station refuses it at start too).
fn private_file(span: Range<usize>, path: &Path, p: &mut Problems) {
    if path.exists()
        && let Err(e) = crate::sys::secret::check_private(path)
    {
        p.add(span, e.to_string());
    }
}

fn xmpp(x: &RawXmpp, base: &Path, p: &mut Problems) -> XmppConfig {
    let jid = x.jid.get_ref();
    let at = jid.find('@');
    if at.is_none_or(|i| i == 0 || i + 1 == jid.len()) || jid.contains(' ') {
        p.add(x.jid.span(), format!("xmpp jid {jid:?} is not user@domain"));
    }
    let mut host = at.map(|i| jid[i + 1..].to_string());
    if let Some(server) = &x.server {
        match server.get_ref().rsplit_once(':') {
            Some((h, port)) if !h.is_empty() && port.parse::<u16>().is_ok() => {
                host = Some(h.to_string());
            }
            _ => p.add(
                server.span(),
                format!("xmpp server {:?} is not host:port", server.get_ref()),
            ),
        }
    }
    if x.tls.get_ref() == &XmppTls::None && !host.as_deref().is_some_and(loopback) {
        p.add(
            x.tls.span(),
            format!(
                "tls = \"none\" sends the password and every vote in clear: only for a server on this machine (127.0.0.1, ::1, localhost), not {:?}",
                host.unwrap_or_default()
            ),
        );
    }
    if x.pubsub.get_ref().trim().is_empty() || x.pubsub.get_ref().contains(['@', '/', ' ']) {
        p.add(
            x.pubsub.span(),
            format!(
                "xmpp pubsub {:?} is not a service JID like pubsub.example.org",
                x.pubsub.get_ref()
            ),
        );
    }
    let mut subscribe = Vec::new();
    for s in &x.subscribe {
        match parse_node_uri(s.get_ref()) {
            Some(n) => subscribe.push(n),
            None => p.add(
                s.span(),
                format!(
                    "{:?} is not a node URI like \"xmpp:pubsub.example.org?;node=vote/lunch\"",
                    s.get_ref()
                ),
            ),
        }
    }
    let password_file = x
        .password_file
        .as_ref()
        .map(|f| absolute(base, f.get_ref()));
    if let (Some(f), Some(raw)) = (&password_file, &x.password_file) {
        private_file(raw.span(), f, p);
    }
    XmppConfig {
        jid: jid.clone(),
        password_file,
        server: x.server.as_ref().map(|s| s.get_ref().clone()),
        tls: *x.tls.get_ref(),
        pubsub: x.pubsub.get_ref().clone(),
        node_prefix: x.node_prefix.clone(),
        publish_tags: x.publish_tags,
        subscribe,
        max_items: x.max_items.max(1),
    }
}

fn identity(i: &RawIdentity, base: &Path, p: &mut Problems) -> IdentityConfig {
    if let Some(url) = &i.anymeta
        && !(url.get_ref().starts_with("https://") || url.get_ref().starts_with("http://"))
    {
        p.add(
            url.span(),
            format!(
                "anymeta {:?} is not an http(s) URL like https://www.example.org/services/rest/",
                url.get_ref()
            ),
        );
    }
    let signature = match i.signature.get_ref().as_str() {
        "hmac-sha1" => Signature::HmacSha1,
        "plaintext" => Signature::Plaintext,
        other => {
            p.add(
                i.signature.span(),
                format!("signature {other:?} is not hmac-sha1 or plaintext"),
            );
            Signature::HmacSha1
        }
    };
    if signature == Signature::Plaintext
        && let Some(url) = &i.anymeta
        && url.get_ref().starts_with("http://")
    {
        p.add(
            i.signature.span(),
            format!(
                "signature = \"plaintext\" sends the anyMeta secrets as they are: only over https://, not {:?} (use hmac-sha1, or https)",
                url.get_ref()
            ),
        );
    }
    if !(100..=60_000).contains(i.timeout_ms.get_ref()) {
        p.add(
            i.timeout_ms.span(),
            "identity timeout_ms must be between 100 and 60000".into(),
        );
    }
    if !(1..=64).contains(i.concurrency.get_ref()) {
        p.add(
            i.concurrency.span(),
            "identity concurrency must be between 1 and 64".into(),
        );
    }
    let people = i.people.as_ref().map(|f| absolute(base, f.get_ref()));
    if let (Some(path), Some(raw)) = (&people, &i.people)
        && let Err(e) = super::people::load(path)
    {
        p.add(raw.span(), format!("people file: {e}"));
    }
    let credentials = i.credentials.as_ref().map(|c| absolute(base, c.get_ref()));
    if let (Some(f), Some(raw)) = (&credentials, &i.credentials) {
        private_file(raw.span(), f, p);
    }
    if i.anymeta.is_none() && people.is_none() {
        p.add(
            0..0,
            "[identity] needs anymeta or people (or leave the section out)".into(),
        );
    }
    IdentityConfig {
        anymeta: i.anymeta.as_ref().map(|u| u.get_ref().clone()),
        credentials,
        signature,
        people,
        show_names: i.show_names,
        ttl: Duration::from_secs(i.ttl_s),
        negative_ttl: Duration::from_secs(i.negative_ttl_s),
        timeout: Duration::from_millis(*i.timeout_ms.get_ref()),
        concurrency: *i.concurrency.get_ref(),
        breaker_open: Duration::from_secs(i.breaker_open_s.max(1)),
    }
}

/// Whether `s` is host:port with a port number.
fn host_port(s: &str) -> bool {
    s.rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
}

fn absolute(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}
