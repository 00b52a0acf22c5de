//! The `[herd]` section: its name, its carrier (direct links, the XMPP
//! server, or both), the direct links' addresses and certificates, and the
//! stations a server-carried herd reads.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::super::raw::RawHerd;
use super::super::{Carrier, HerdConfig, HerdStation, valid_id};
use super::{ID_RULE, Problems, absolute, host_port, private_file};

pub(super) fn herd(
    h: &RawHerd,
    station: &str,
    has_xmpp: bool,
    base: &Path,
    p: &mut Problems,
) -> HerdConfig {
    if !crate::domain::herd::certifiable(station) {
        p.add(
            h.id.span(),
            format!("station id {station:?} cannot name a herd certificate: use letters, digits, '-' and '.' (no '_')"),
        );
    }
    if !valid_id(h.id.get_ref()) {
        p.add(
            h.id.span(),
            format!("herd id {:?} is not a valid id: {ID_RULE}", h.id.get_ref()),
        );
    }
    let carrier = match h.carrier.get_ref().as_str() {
        "direct" => Carrier::Direct,
        "xmpp" => Carrier::Xmpp,
        "both" => Carrier::Both,
        other => {
            p.add(
                h.carrier.span(),
                format!("herd carrier {other:?} is not \"direct\", \"xmpp\" or \"both\""),
            );
            Carrier::Direct
        }
    };
    let listen = h
        .listen
        .as_ref()
        .and_then(|l| match l.get_ref().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                p.add(
                    l.span(),
                    format!(
                        "herd listen address {:?} is not IP:PORT (e.g. \"0.0.0.0:7420\")",
                        l.get_ref()
                    ),
                );
                None
            }
        });
    for peer in &h.peers {
        if !host_port(peer.get_ref()) {
            p.add(
                peer.span(),
                format!("herd peer {:?} is not host:port", peer.get_ref()),
            );
        }
    }
    let mut files = [&h.ca, &h.cert, &h.key].map(|f| {
        f.as_ref()
            .map_or_else(PathBuf::new, |f| absolute(base, f.get_ref()))
    });
    if carrier != Carrier::Xmpp {
        if listen.is_none() && h.peers.is_empty() {
            p.add(
                h.id.span(),
                format!(
                    "herd {:?} has no listen address and no peers: station {station:?} would be alone",
                    h.id.get_ref()
                ),
            );
        }
        for (f, name) in [(&h.ca, "ca"), (&h.cert, "cert"), (&h.key, "key")] {
            if f.is_none() {
                p.add(
                    h.id.span(),
                    format!(
                        "herd links need {name} (the herd's certificates: `pollstation herd init`)"
                    ),
                );
            }
        }
        if let Some(k) = &h.key {
            private_file(k.span(), &files[2], p);
        }
    } else {
        files = [PathBuf::new(), PathBuf::new(), PathBuf::new()];
    }
    let mut stations = Vec::new();
    for s in &h.stations {
        let (id, jid) = (s.get_ref().id.clone(), s.get_ref().jid.clone());
        if !valid_id(&id) {
            p.add(
                s.span(),
                format!("herd station id {id:?} is not a valid id: {ID_RULE}"),
            );
        }
        if jid
            .split_once('@')
            .is_none_or(|(l, d)| l.is_empty() || d.is_empty() || d.contains('/'))
        {
            p.add(
                s.span(),
                format!("herd station {id:?}: jid {jid:?} is not user@domain"),
            );
        }
        stations.push(HerdStation { id, jid });
    }
    if carrier != Carrier::Direct {
        if !has_xmpp {
            p.add(
                h.carrier.span(),
                "a herd carried by the XMPP server needs an [xmpp] section (its account and pubsub service)".into(),
            );
        }
        if stations.iter().all(|s| s.id == station) {
            p.add(
                h.carrier.span(),
                "a herd carried by the XMPP server needs its other stations: stations = [{ id = \"hall-b\", jid = \"hall-b@xmpp.example\" }, …]".into(),
            );
        }
    }
    if *h.max_skew_ms.get_ref() > 600_000 {
        p.add(
            h.max_skew_ms.span(),
            "herd max_skew_ms must be at most 600000 (10 minutes)".into(),
        );
    }
    let [ca, cert, key] = files;
    HerdConfig {
        id: h.id.get_ref().clone(),
        carrier,
        listen,
        peers: h.peers.iter().map(|s| s.get_ref().clone()).collect(),
        ca,
        cert,
        key,
        stations,
        max_skew: Duration::from_millis(*h.max_skew_ms.get_ref()),
    }
}
