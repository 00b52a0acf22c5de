//! What `pollstation ctl` prints: the station's JSON as tables and lines.
//!
//! Invariant: nothing the station sends reaches the terminal raw — labels,
//! errors and ids have their control characters escaped ([`clean`]), so a
//! label with an ANSI escape cannot change the operator's terminal.

use serde_json::Value;

/// `text` with control characters shown as `\u{1b}` escapes.
#[must_use]
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

pub(super) fn s(v: &Value) -> String {
    match v {
        Value::String(s) => clean(s),
        Value::Null => "-".into(),
        other => clean(&other.to_string()),
    }
}

/// A text field, empty when absent.
pub(super) fn text(v: &Value) -> String {
    v.as_str().map(clean).unwrap_or_default()
}

/// Left-aligned columns.
pub(super) fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(head.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

/// `ctl readers` as a table.
#[must_use]
pub fn readers_table(readers: &Value) -> String {
    let rows: Vec<Vec<String>> = readers
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    let binding = if r["binding"]["slot"].is_string() {
                        format!("slot {}", s(&r["binding"]["slot"]))
                    } else {
                        format!(
                            "{}/{}",
                            s(&r["binding"]["poll"]),
                            s(&r["binding"]["answer"])
                        )
                    };
                    vec![
                        s(&r["id"]),
                        s(&r["status"]),
                        binding,
                        s(&r["protocol"]),
                        s(&r["device"]),
                        s(&r["taps"]),
                        s(&r["frames_ok"]),
                        s(&r["frames_bad"]),
                        text(&r["last_error"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(
        &[
            "READER",
            "STATUS",
            "BINDING",
            "PROTOCOL",
            "DEVICE",
            "TAPS",
            "FRAMES",
            "BAD",
            "LAST ERROR",
        ],
        &rows,
    )
}

/// `ctl tally` as a table per poll.
#[must_use]
pub fn tally_table(tallies: &Value) -> String {
    let mut out = String::new();
    for t in tallies.as_array().into_iter().flatten() {
        let total = t["total"].as_u64().unwrap_or(0);
        let votes = if total == 1 { "vote" } else { "votes" };
        out.push_str(&format!("{} — {total} {votes}\n", s(&t["poll"])));
        let rows: Vec<Vec<String>> = t["answers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                let n = a["count"].as_u64().unwrap_or(0);
                let pct = if total == 0 {
                    0.0
                } else {
                    n as f64 * 100.0 / total as f64
                };
                vec![
                    s(&a["id"]),
                    s(&a["label"]),
                    n.to_string(),
                    format!("{pct:.1}%"),
                ]
            })
            .collect();
        out.push_str(&table(&["ANSWER", "LABEL", "VOTES", "SHARE"], &rows));
        out.push('\n');
    }
    out
}

/// One tap as a line.
#[must_use]
pub fn tap_line(t: &Value) -> String {
    let counted = match t["counted"].as_bool() {
        Some(true) => " counted",
        Some(false) => " not counted",
        None => "",
    };
    let at = t["at"]
        .as_i64()
        .and_then(|ms| {
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
        })
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| s(&t["at"]));
    format!(
        "{}:{}  {}  {}  {}  {}/{}{}",
        s(&t["station"]),
        s(&t["seq"]),
        at,
        s(&t["reader"]),
        s(&t["tag"]),
        s(&t["poll"]),
        s(&t["answer"]),
        counted
    )
}

/// `ctl status`: one screen.
#[must_use]
pub fn status_text(v: &Value) -> String {
    let mut out = String::new();
    let up = v["uptime_s"].as_i64().unwrap_or(0);
    out.push_str(&format!(
        "station {}   up {}h{:02}m{:02}s   health {}\n\n",
        s(&v["station"]),
        up / 3600,
        up / 60 % 60,
        up % 60,
        s(&v["health"]["level"])
    ));
    let polls: Vec<Vec<String>> = v["polls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            vec![
                s(&p["id"]),
                if p["open"] == true { "open" } else { "closed" }.into(),
                if p["active"] == true { "active" } else { "" }.into(),
                s(&p["rule"]),
                s(&p["total"]),
                s(&p["question"]),
            ]
        })
        .collect();
    out.push_str(&table(
        &["POLL", "STATE", "", "RULE", "VOTES", "QUESTION"],
        &polls,
    ));
    out.push('\n');
    out.push_str(&readers_table(&v["readers"]));
    out.push('\n');
    let store = &v["store"];
    let xmpp_state = format!("{} {}", s(&v["xmpp"]["state"]), text(&v["xmpp"]["detail"]));
    out.push_str(&format!(
        "network   {} ({})\nhotplug   {} ({}) {}\nidentity  {}\nxmpp      {} (outbox {})\nstore     {} taps, {:.1} MiB, {}\n\n",
        s(&v["network"]["state"]),
        s(&v["network"]["detail"]),
        s(&v["hotplug"]["state"]),
        s(&v["hotplug"]["detail"]),
        v["hotplug"]["unbound"].as_array().filter(|u| !u.is_empty()).map_or(String::new(), |u| format!("(unbound: {})", u.iter().map(s).collect::<Vec<_>>().join(", "))),
        s(&v["identity"]["state"]),
        xmpp_state,
        s(&v["xmpp"]["outbox"]),
        s(&store["taps"]),
        store["size_bytes"].as_f64().unwrap_or(0.0) / 1_048_576.0,
        if store["writable"] == true { "writable".to_string() } else { format!("NOT WRITABLE: {}", s(&store["error"])) },
    ));
    let rows: Vec<Vec<String>> = v["health"]["components"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            vec![
                s(&c["level"]),
                s(&c["component"]),
                s(&c["message"]),
                c["fix"]
                    .as_str()
                    .map_or(String::new(), |f| format!("→ {}", clean(f))),
            ]
        })
        .collect();
    out.push_str(&table(
        &["LEVEL", "COMPONENT", "STATE", "WHAT TO DO"],
        &rows,
    ));
    out
}

/// A one-line answer for `poll`.
pub(super) fn poll_line(v: &Value) -> String {
    format!(
        "poll {}: {}{}\n",
        text(&v["id"]),
        if v["open"] == true { "open" } else { "closed" },
        if v["active"] == true { ", active" } else { "" }
    )
}

/// A one-line answer for `tap`.
pub(super) fn tapped_line(v: &Value) -> String {
    format!(
        "tap {} on {}: {}/{} {}{}\n",
        v["seq"],
        text(&v["reader"]),
        text(&v["poll"]),
        text(&v["answer"]),
        if v["counted"] == true {
            "counted"
        } else {
            "not counted"
        },
        if v["repeat"] == true { " (repeat)" } else { "" }
    )
}

/// What a reload did, a line each.
pub(super) fn reload_lines(v: &Value) -> String {
    let mut s = String::new();
    for a in v["applied"].as_array().into_iter().flatten() {
        s.push_str(&format!("applied: {}\n", text(a)));
    }
    for a in v["needs_restart"].as_array().into_iter().flatten() {
        s.push_str(&format!("needs a restart: {}\n", text(a)));
    }
    if s.is_empty() {
        s.push_str("no changes\n");
    }
    s
}

/// `ctl herd`: the links, then the feeds held per origin.
#[must_use]
pub fn herd_text(v: &Value) -> String {
    let mut out = format!(
        "herd {}   polls {}{}\n\n",
        s(&v["id"]),
        s(&v["polls_hash"]),
        if v["restoring"] == true {
            "   RESTORING this station's log: taps wait"
        } else {
            ""
        }
    );
    let peers: Vec<Vec<String>> = v["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            vec![
                s(&p["station"]),
                s(&p["address"]),
                s(&p["state"]),
                p["rtt_ms"]
                    .as_u64()
                    .map_or("-".into(), |r| format!("{r} ms")),
                p["clock_offset_ms"].as_i64().map_or("-".into(), |o| {
                    format!("{o:+} ms{}", if p["skewed"] == true { " (!)" } else { "" })
                }),
                s(&p["we_lack"]),
                s(&p["it_lacks"]),
                text(&p["error"]),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "PEER",
            "ADDRESS",
            "LINK",
            "RTT",
            "CLOCK",
            "WE LACK",
            "IT LACKS",
            "LAST ERROR",
        ],
        &peers,
    ));
    out.push('\n');
    let origins: Vec<Vec<String>> = v["origins"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            vec![
                s(&o["origin"]),
                s(&o["taps"]),
                s(&o["actions"]),
                s(&o["identities"]),
                s(&o["lag"]),
            ]
        })
        .collect();
    out.push_str(&table(
        &["ORIGIN", "TAPS", "ACTIONS", "IDENTITIES", "LAG"],
        &origins,
    ));
    let refused = v["refused"].as_array().map_or(0, Vec::len);
    if refused > 0 {
        out.push_str(&format!("\nrefused ({} in all):\n", s(&v["refused_total"])));
        for r in v["refused"].as_array().into_iter().flatten() {
            out.push_str(&format!("  {}  {}\n", s(&r["address"]), text(&r["reason"])));
        }
    }
    for f in v["forked"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "FORKED origin {}: two different events under one key\n",
            s(f)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_not_sent_to_the_terminal() {
        assert_eq!(clean("Pizza"), "Pizza");
        assert_eq!(clean("red\u{1b}[31malert"), "red\\u{1b}[31malert");
        assert_eq!(clean("a\nb\u{7}"), "a\\u{a}b\\u{7}");
    }
}
