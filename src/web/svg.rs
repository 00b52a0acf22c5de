//! Charts as SVG, drawn on the station: a poll's results as a bar chart
//! for slides and reports, and its votes over time for the pages. Plain
//! SVG 1.1 text, no script, readable by any viewer.

use std::fmt::Write;

use crate::domain::Words;
use crate::domain::tally::TallyView;
use crate::station::timeline::Timeline;

/// Colours of the timeline's series (distinct on the pages' dark ground and
/// for the common colour-vision deficiencies: the Okabe–Ito palette, its
/// black made light grey).
const SERIES: &[&str] = &[
    "#56B4E9", "#E69F00", "#009E73", "#CC79A7", "#0072B2", "#D55E00", "#F0E442", "#BBBBBB",
];

/// Text for XML: `&`, `<`, `>` and quotes escaped; characters XML forbids
/// dropped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in crate::domain::text::xml_safe(s).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// `ms` since the epoch in UTC, as `fmt` says.
fn utc(ms: i64, fmt: &[time::format_description::BorrowedFormatItem<'_>]) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(fmt).ok())
        .unwrap_or_default()
}

/// `2026-12-02 18:40 UTC`.
fn when(ms: i64) -> String {
    utc(
        ms,
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC"),
    )
}

/// `18:40:05`.
fn clock(ms: i64) -> String {
    utc(
        ms,
        time::macros::format_description!("[hour]:[minute]:[second]"),
    )
}

/// A poll's results: question, one bar per answer with its count and
/// share, the total and when it was drawn.
pub fn tally(question: &str, tally: &TallyView, words: &Words, now_ms: i64) -> String {
    const W: i64 = 1200;
    const ROW: i64 = 64;
    const TOP: i64 = 150;
    let n = tally.answers.len() as i64;
    let h = TOP + n * ROW + 40;
    let total = tally.total;
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="DejaVu Sans, Verdana, sans-serif">
<title>{q}</title>
<rect width="100%" height="100%" fill="#ffffff"/>
<text class="question" x="40" y="62" font-size="36" font-weight="bold" fill="#111418">{q}</text>
<text class="total" x="40" y="108" font-size="22" fill="#4a525a">{count} · {at}</text>
"##,
        q = escape(question),
        count = escape(&words.count(total)),
        at = when(now_ms),
    );
    for (i, a) in tally.answers.iter().enumerate() {
        let y = TOP + i as i64 * ROW;
        let share = if total > 0 {
            a.count as f64 / total as f64
        } else {
            0.0
        };
        let bar = (share * 600.0).round() as i64;
        let _ = write!(
            s,
            r##"<g class="answer" data-answer="{id}">
<text class="label" x="40" y="{ty}" font-size="26" fill="#111418">{label}</text>
<rect x="380" y="{y}" width="600" height="40" rx="6" fill="#e4e8ec"/>
<rect class="bar" x="380" y="{y}" width="{bar}" height="40" rx="6" fill="#0072B2"/>
<text class="count" x="1160" y="{ty}" font-size="26" text-anchor="end" fill="#111418">{count} · {pct:.0}%</text>
</g>
"##,
            id = escape(&a.id),
            label = escape(&a.label),
            ty = y + 29,
            count = a.count,
            pct = share * 100.0,
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Votes over time: one line per answer (cumulative counts at each
/// bucket's end), a legend, the time axis from the first bucket to now;
/// drawn for the pages' dark ground.
pub fn timeline(t: &Timeline, words: &Words) -> String {
    const W: f64 = 900.0;
    const H: f64 = 320.0;
    const L: f64 = 56.0;
    const R: f64 = 16.0;
    const T: f64 = 20.0;
    const B: f64 = 96.0;
    let max = t
        .buckets
        .iter()
        .flat_map(|b| b.counts.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1);
    let n = t.buckets.len().max(2) as f64 - 1.0;
    let x = |i: usize| L + (W - L - R) * (i as f64 / n);
    let y = |v: u64| T + (H - T - B) * (1.0 - v as f64 / max as f64);
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="timeline-chart" viewBox="0 0 {W} {H}" role="img" font-family="DejaVu Sans, Verdana, sans-serif" font-size="14">
<title>{title}</title>
<line x1="{L}" y1="{yb}" x2="{xr}" y2="{yb}" stroke="#6b7580"/>
<line x1="{L}" y1="{T}" x2="{L}" y2="{yb}" stroke="#6b7580"/>
<text x="{lx}" y="{ty}" text-anchor="end" fill="#c9d1d9">{max}</text>
<text x="{lx}" y="{yb}" text-anchor="end" fill="#c9d1d9">0</text>
"##,
        title = escape(words.over_time),
        yb = H - B,
        xr = W - R,
        lx = L - 6.0,
        ty = T + 10.0,
    );
    if let (Some(first), Some(last)) = (t.buckets.first(), t.buckets.last()) {
        let _ = write!(
            s,
            r##"<text x="{L}" y="{ya}" fill="#c9d1d9">{a}</text>
<text x="{xr}" y="{ya}" text-anchor="end" fill="#c9d1d9">{b}</text>
"##,
            ya = H - B + 20.0,
            xr = W - R,
            a = clock(first.start),
            b = clock(last.end),
        );
    }
    for (a, (id, label)) in t.answers.iter().zip(&t.labels).enumerate() {
        let colour = SERIES[a % SERIES.len()];
        let points: Vec<String> = t
            .buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                format!(
                    "{:.1},{:.1}",
                    x(i),
                    y(b.counts.get(a).copied().unwrap_or(0))
                )
            })
            .collect();
        let last = t
            .buckets
            .last()
            .and_then(|b| b.counts.get(a))
            .copied()
            .unwrap_or(0);
        let _ = writeln!(
            s,
            r#"<polyline class="series" data-answer="{id}" fill="none" stroke="{colour}" stroke-width="3" points="{pts}"><title>{label}: {last}</title></polyline>"#,
            id = escape(id),
            label = escape(label),
            pts = points.join(" "),
        );
        // The legend: up to four a line.
        let (col, row) = ((a % 4) as f64, (a / 4) as f64);
        let (lx, ly) = (L + col * 210.0, H - B + 44.0 + row * 22.0);
        let _ = writeln!(
            s,
            r##"<rect x="{lx}" y="{ry}" width="14" height="14" fill="{colour}"/><text class="legend" x="{tx}" y="{ly}" fill="#c9d1d9">{label} ({last})</text>"##,
            ry = ly - 12.0,
            tx = lx + 20.0,
            label = escape(label),
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn text_is_escaped() {
        assert_eq!(
            super::escape("<a & \"b\">\u{1}"),
            "&lt;a &amp; &quot;b&quot;&gt;\u{FFFD}"
        );
    }
}
