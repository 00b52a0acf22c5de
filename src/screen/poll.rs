//! The shown poll's answers: bars (up to 8 rows a column, the rows sharing
//! the screen's height) or, for `display = "cloud"` and polls with more
//! answers than bars can hold, a word cloud whose word sizes follow the
//! counts. A counted vote makes its answer pulse for about a second.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use gtk::prelude::*;
use gtk::{glib, pango};
use gtk4 as gtk;

use crate::domain::tally::TallyView;
use crate::domain::{Display, PollDef};

/// Rows a column of bars holds before the next column starts.
pub const ROWS_PER_COLUMN: usize = 8;
/// Above this many answers the screen draws a word cloud.
pub const MAX_BARS: usize = 24;
const PULSE: Duration = Duration::from_millis(1100);

struct Row {
    fill: gtk::ProgressBar,
    count: gtk::Label,
    target: Cell<f64>,
}

/// A cloud is one wrapping label: the words flow like text, each sized by
/// its count (Pango markup), so big and small words share lines.
struct Cloud {
    label: gtk::Label,
    words: Vec<String>,
    counts: RefCell<Vec<u64>>,
    /// Answers pulsing now.
    lit: RefCell<std::collections::BTreeSet<usize>>,
}

enum Shape {
    Bars(Vec<Row>),
    Cloud(Cloud),
}

/// The answers of one poll, as drawn.
pub struct Answers {
    /// Poll id and answer count the widgets were built for.
    key: RefCell<String>,
    shape: RefCell<Shape>,
    /// Answer id → its position.
    index: RefCell<HashMap<String, usize>>,
    /// Rows a column holds (for the sizes), 0 for a cloud.
    rows: Cell<usize>,
    area: gtk::Box,
    animating: Cell<bool>,
    /// Per answer, the generation of its last pulse (a newer one extends it).
    pulses: RefCell<HashMap<usize, u64>>,
    pulse_gen: Cell<u64>,
}

/// Whether a poll is drawn as a cloud.
#[must_use]
pub fn is_cloud(def: &PollDef) -> bool {
    def.display == Display::Cloud || def.answers.len() > MAX_BARS
}

impl Answers {
    pub fn new(area: gtk::Box) -> Rc<Self> {
        Rc::new(Self {
            key: RefCell::new(String::new()),
            shape: RefCell::new(Shape::Bars(Vec::new())),
            index: RefCell::new(HashMap::new()),
            rows: Cell::new(1),
            area,
            animating: Cell::new(false),
            pulses: RefCell::new(HashMap::new()),
            pulse_gen: Cell::new(0),
        })
    }

    /// Rows in the tallest column (0 for a cloud): the sizes follow it.
    pub fn rows(&self) -> usize {
        self.rows.get()
    }

    /// Keep `px` free below the answers (where the banner shows).
    pub fn reserve_below(&self, px: i32) {
        self.area.set_margin_bottom(px);
    }

    /// Build the widgets for `def` when it is not the poll drawn already.
    /// Returns whether they were rebuilt.
    pub fn layout(&self, def: &PollDef) -> bool {
        let cloud = is_cloud(def);
        let key = format!("{}:{}:{cloud}", def.id, def.answers.len());
        if *self.key.borrow() == key {
            return false;
        }
        while let Some(child) = self.area.first_child() {
            self.area.remove(&child);
        }
        self.pulses.borrow_mut().clear();
        *self.index.borrow_mut() = def
            .answers
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id.clone(), i))
            .collect();
        let shape = if cloud {
            self.rows.set(0);
            Shape::Cloud(self.cloud(def))
        } else {
            Shape::Bars(self.bars(def))
        };
        *self.shape.borrow_mut() = shape;
        *self.key.borrow_mut() = key;
        true
    }

    fn bars(&self, def: &PollDef) -> Vec<Row> {
        let n = def.answers.len().max(1);
        let columns = n.div_ceil(ROWS_PER_COLUMN);
        let per_column = n.div_ceil(columns);
        self.rows.set(per_column);
        let grid = gtk::Grid::builder()
            .row_homogeneous(true)
            .column_spacing(16)
            .row_spacing(8)
            .vexpand(true)
            .hexpand(true)
            .build();
        let mut rows = Vec::new();
        for (i, a) in def.answers.iter().enumerate() {
            let col = (i / per_column) as i32 * 3;
            let r = (i % per_column) as i32;
            let label = gtk::Label::new(Some(&a.label));
            label.set_xalign(0.0);
            label.set_ellipsize(pango::EllipsizeMode::End);
            label.set_max_width_chars(if columns > 1 { 14 } else { 24 });
            label.add_css_class("answer");
            let fill = gtk::ProgressBar::new();
            fill.set_hexpand(true);
            fill.set_valign(gtk::Align::Center);
            let count = gtk::Label::new(Some("0 · 0%"));
            count.set_xalign(1.0);
            count.set_width_chars(7);
            count.add_css_class("count");
            grid.attach(&label, col, r, 1, 1);
            grid.attach(&fill, col + 1, r, 1, 1);
            grid.attach(&count, col + 2, r, 1, 1);
            rows.push(Row {
                fill,
                count,
                target: Cell::new(0.0),
            });
        }
        self.area.append(&grid);
        rows
    }

    fn cloud(&self, def: &PollDef) -> Cloud {
        let label = gtk::Label::builder()
            .wrap(true)
            .wrap_mode(pango::WrapMode::Word)
            .justify(gtk::Justification::Center)
            .max_width_chars(90)
            .halign(gtk::Align::Center)
            .valign(gtk::Align::Center)
            .hexpand(true)
            .vexpand(true)
            .build();
        label.add_css_class("cloud");
        self.area.append(&label);
        Cloud {
            label,
            // A word never breaks inside itself.
            words: def
                .answers
                .iter()
                .map(|a| a.label.replace(' ', "\u{a0}"))
                .collect(),
            counts: RefCell::new(vec![0; def.answers.len()]),
            lit: RefCell::new(std::collections::BTreeSet::new()),
        }
    }

    /// Show the counts of `def` from `tally`.
    pub fn update(self: &Rc<Self>, def: &PollDef, tally: Option<&TallyView>) {
        let count_of = |id: &str| {
            tally
                .and_then(|t| t.answers.iter().find(|x| x.id == id))
                .map_or(0, |x| x.count)
        };
        let total = tally.map_or(0, |t| t.total);
        match &*self.shape.borrow() {
            Shape::Bars(rows) => {
                for (row, a) in rows.iter().zip(&def.answers) {
                    let count = count_of(&a.id);
                    let share = if total > 0 {
                        count as f64 / total as f64
                    } else {
                        0.0
                    };
                    row.count
                        .set_text(&format!("{count} · {:.0}%", share * 100.0));
                    row.target.set(share);
                }
            }
            Shape::Cloud(cloud) => {
                *cloud.counts.borrow_mut() = def.answers.iter().map(|a| count_of(&a.id)).collect();
                cloud.draw();
            }
        }
        self.animate();
    }

    /// Bars grow smoothly toward their new length, one step per frame, for
    /// as long as one is moving (no frames are asked for when idle).
    fn animate(self: &Rc<Self>) {
        if self.animating.replace(true) {
            return;
        }
        let v = Rc::downgrade(self);
        self.area.add_tick_callback(move |_, _| {
            let Some(this) = v.upgrade() else {
                return glib::ControlFlow::Break;
            };
            let mut moving = false;
            if let Shape::Bars(rows) = &*this.shape.borrow() {
                for row in rows {
                    let now = row.fill.fraction();
                    let target = row.target.get();
                    if (now - target).abs() > 0.002 {
                        row.fill.set_fraction(now + (target - now) * 0.2);
                        moving = true;
                    } else if now != target {
                        row.fill.set_fraction(target);
                    }
                }
            }
            if moving {
                glib::ControlFlow::Continue
            } else {
                this.animating.set(false);
                glib::ControlFlow::Break
            }
        });
    }

    /// Light up `answer` for about a second; false if it is not drawn.
    pub fn pulse(self: &Rc<Self>, answer: &str) -> bool {
        let Some(&i) = self.index.borrow().get(answer) else {
            return false;
        };
        self.light(i, true);
        let generation = self.pulse_gen.get() + 1;
        self.pulse_gen.set(generation);
        self.pulses.borrow_mut().insert(i, generation);
        let v = Rc::downgrade(self);
        glib::timeout_add_local_once(PULSE, move || {
            if let Some(this) = v.upgrade()
                && this.pulses.borrow().get(&i) == Some(&generation)
            {
                this.pulses.borrow_mut().remove(&i);
                this.light(i, false);
            }
        });
        true
    }

    fn light(&self, i: usize, on: bool) {
        match &*self.shape.borrow() {
            Shape::Bars(rows) => {
                if let Some(r) = rows.get(i) {
                    if on {
                        r.fill.add_css_class("pulse");
                    } else {
                        r.fill.remove_css_class("pulse");
                    }
                }
            }
            Shape::Cloud(cloud) => {
                if on {
                    cloud.lit.borrow_mut().insert(i);
                } else {
                    cloud.lit.borrow_mut().remove(&i);
                }
                cloud.draw();
            }
        }
    }
}

impl Cloud {
    /// Each word sized by its count (by area: the square root, 1× to 4×),
    /// its count small beside it; a pulsing word in the pulse colour.
    fn draw(&self) {
        let counts = self.counts.borrow();
        let lit = self.lit.borrow();
        let max = counts.iter().copied().max().unwrap_or(0).max(1);
        let mut markup = String::new();
        for (i, (word, &count)) in self.words.iter().zip(counts.iter()).enumerate() {
            let scale = 1.0 + 3.0 * (count as f64 / max as f64).sqrt();
            if i > 0 {
                markup.push_str(" \u{2003} ");
            }
            let colour = if lit.contains(&i) {
                "#ffd24a"
            } else {
                "#cfe3ff"
            };
            markup.push_str(&format!(
                "<span size=\"{}%\" foreground=\"{colour}\">{}</span>\u{a0}<span size=\"{}%\" foreground=\"#9aa4ae\">{count}</span>",
                (scale * 100.0).round(),
                glib::markup_escape_text(word),
                (scale * 45.0).round(),
            ));
        }
        self.label.set_markup(&markup);
    }
}
