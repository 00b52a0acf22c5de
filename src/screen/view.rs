//! The window: the shown poll (question, meta line, answers), the status
//! strip, the thanks banner and the QR code, with sizes that follow the
//! window so the poll fills a projector (the question about 5.5% of the
//! height, each of up to 8 rows at least 1/12 of it). Which poll is shown:
//! the active one, or the one picked with the arrow keys, or — with
//! `rotate_s` — each open poll in turn, the active one first.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use gtk::prelude::*;
use gtk::{gdk, glib};
use gtk4 as gtk;

use super::ScreenOptions;
use super::poll::Answers;
use crate::domain::{TagUid, Words};
use crate::station::health;
use crate::station::{PersonEvent, ReaderStatus, Snapshot, XmppState};

pub struct View {
    pub window: gtk::ApplicationWindow,
    question: gtk::Label,
    meta: gtk::Label,
    answers: Rc<Answers>,
    root: gtk::Box,
    readers: gtk::Box,
    status: gtk::Label,
    banner: gtk::Label,
    banner_gen: Cell<u64>,
    /// The tag the banner thanks and the answer it names (to name the
    /// voter when the name arrives).
    banner_tag: RefCell<Option<(TagUid, String)>>,
    qr: gtk::Picture,
    qr_url: Option<String>,
    /// Poll shown: `None` follows the active poll (or the rotation).
    chosen: Cell<Option<usize>>,
    /// Steps the rotation has taken.
    rotation: Cell<usize>,
    rotating: bool,
    last: RefCell<Option<Arc<Snapshot>>>,
    /// The reader strip as last drawn: rebuilt only when it changes.
    strip_key: RefCell<String>,
    /// What changed since the last paint (for the "screen painted" log).
    unpainted: RefCell<Vec<String>>,
    words: &'static Words,
    /// Font and bar sizes for the window's size and the rows shown.
    sizes: gtk::CssProvider,
    size: Cell<(i32, i32)>,
    sized_for: Cell<(i32, i32, usize)>,
}

fn object<T: IsA<glib::Object>>(ui: &gtk::Builder, id: &str) -> T {
    ui.object(id)
        .unwrap_or_else(|| panic!("ui/screen.ui has no object {id:?} of the right type"))
}

impl View {
    pub fn build(app: &gtk::Application, options: ScreenOptions) -> Rc<View> {
        let provider = gtk::CssProvider::new();
        provider.load_from_data(include_str!("../../ui/style.css"));
        let sizes = gtk::CssProvider::new();
        if let Some(display) = gdk::Display::default() {
            gtk::style_context_add_provider_for_display(
                &display,
                &provider,
                gtk::STYLE_PROVIDER_PRIORITY_APPLICATION,
            );
            gtk::style_context_add_provider_for_display(
                &display,
                &sizes,
                gtk::STYLE_PROVIDER_PRIORITY_APPLICATION + 1,
            );
        }
        let window = gtk::ApplicationWindow::builder()
            .application(app)
            .title("pollstation")
            .default_width(1280)
            .default_height(800)
            .build();
        window.add_css_class("pollstation");

        let ui = gtk::Builder::from_string(include_str!("../../ui/screen.ui"));
        let overlay: gtk::Overlay = object(&ui, "overlay");
        window.set_child(Some(&overlay));
        // Told the overlay's size on every resize: the sizes follow it.
        let sizer: gtk::DrawingArea = object(&ui, "sizer");

        let qr_url = options.qr_url.clone();
        let view = Rc::new(View {
            window,
            question: object(&ui, "question"),
            meta: object(&ui, "meta"),
            answers: Answers::new(object(&ui, "answers")),
            root: object(&ui, "root"),
            readers: object(&ui, "readers"),
            status: object(&ui, "status"),
            banner: object(&ui, "banner"),
            banner_gen: Cell::new(0),
            banner_tag: RefCell::new(None),
            qr: object(&ui, "qr"),
            qr_url,
            chosen: Cell::new(None),
            rotation: Cell::new(0),
            rotating: options.rotate.is_some(),
            last: RefCell::new(None),
            strip_key: RefCell::new(String::new()),
            unpainted: RefCell::new(Vec::new()),
            words: options.language.words(),
            sizes,
            size: Cell::new((1280, 800)),
            sized_for: Cell::new((0, 0, 0)),
        });
        view.qr.set_visible(view.qr_url.is_some());
        if view.qr_url.is_some() {
            view.root.add_css_class("has-qr");
        }
        let v = Rc::downgrade(&view);
        sizer.connect_resize(move |_, w, h| {
            if let Some(view) = v.upgrade() {
                view.size.set((w, h));
                view.rescale();
            }
        });

        let keys = gtk::EventControllerKey::new();
        let v = Rc::downgrade(&view);
        keys.connect_key_pressed(move |_, key, _, _| {
            let Some(view) = v.upgrade() else {
                return glib::Propagation::Proceed;
            };
            match key {
                gdk::Key::F11 => {
                    if view.window.is_fullscreen() {
                        view.window.unfullscreen();
                    } else {
                        view.window.fullscreen();
                    }
                }
                gdk::Key::Escape => view.window.unfullscreen(),
                gdk::Key::Left | gdk::Key::Right => {
                    view.step(if key == gdk::Key::Left { -1 } else { 1 });
                }
                _ => return glib::Propagation::Proceed,
            }
            glib::Propagation::Stop
        });
        view.window.add_controller(keys);

        if let Some(every) = options.rotate {
            let v = Rc::downgrade(&view);
            glib::timeout_add_local(every, move || {
                let Some(view) = v.upgrade() else {
                    return glib::ControlFlow::Break;
                };
                view.rotation.set(view.rotation.get() + 1);
                if let Some(snap) = view.last.borrow().clone() {
                    view.render_poll(&snap);
                }
                glib::ControlFlow::Continue
            });
        }

        // Tests (and curious operators) learn from the log when a state has
        // actually been painted, not just applied.
        let v = Rc::downgrade(&view);
        view.window.connect_realize(move |w| {
            let Some(clock) = w.frame_clock() else {
                return;
            };
            let v = v.clone();
            clock.connect_after_paint(move |_| {
                if let Some(view) = v.upgrade() {
                    let what = view.unpainted.take();
                    if !what.is_empty() {
                        tracing::debug!(what = %what.join("; "), "screen painted");
                    }
                }
            });
        });

        if options.fullscreen {
            // Without a window manager (a kiosk X server) fullscreen is not
            // honoured: start at the monitor's size so the poll fills it anyway.
            if let Some((w, h)) = monitor_size() {
                view.window.set_default_size(w, h);
            }
            view.window.fullscreen();
            view.window.set_cursor_from_name(Some("none"));
        }
        view.window.present();
        view
    }

    /// Font, bar and QR sizes for the window's height and the rows shown.
    fn rescale(&self) {
        let (w, h) = self.size.get();
        let rows = self.answers.rows();
        if self.sized_for.get() == (w, h, rows) || h <= 0 {
            return;
        }
        self.sized_for.set((w, h, rows));
        let hf = f64::from(h);
        // The rows share what the question, meta line and strip leave.
        let row = if rows == 0 {
            0.0
        } else {
            hf * 0.66 / rows as f64
        };
        let font = (row * 0.42).clamp(hf * 0.028, hf * 0.065);
        let bar = (row * 0.5).clamp(hf * 0.025, hf * 0.09);
        let qr = (hf * 0.18).round() as i32;
        let css = format!(
            ".root {{ padding: {py:.0}px {px:.0}px; }}\n\
             .root.has-qr {{ padding-right: {qpad}px; }}\n\
             .question {{ font-size: {q:.0}px; }}\n\
             .meta {{ font-size: {m:.0}px; }}\n\
             .answer, .count {{ font-size: {font:.0}px; }}\n\
             progressbar trough, progressbar progress {{ min-height: {bar:.0}px; }}\n\
             .cloud {{ font-size: {cloud:.0}px; }}\n\
             .banner {{ font-size: {b:.0}px; }}\n\
             .strip {{ font-size: {s:.0}px; }}\n",
            py = hf * 0.035,
            px = f64::from(w) * 0.035,
            qpad = qr + (f64::from(w) * 0.035) as i32 * 2,
            q = hf * 0.055,
            m = hf * 0.028,
            cloud = hf * 0.03,
            b = hf * 0.045,
            s = hf * 0.022,
        );
        self.sizes.load_from_data(&css);
        // The banner floats over a gap kept free below the answers and the
        // status strip: it never hides a count.
        self.answers.reserve_below((hf * 0.075) as i32);
        self.banner.set_margin_bottom((hf * 0.012) as i32);
        if let Some(url) = &self.qr_url
            && let Some(t) = super::qr::texture(url, qr)
        {
            self.qr.set_paintable(Some(&t));
            self.qr.set_size_request(t.width(), t.height());
        }
        tracing::debug!(width = w, height = h, rows, "screen sized");
    }

    fn step(&self, by: i64) {
        let Some(snap) = self.last.borrow().clone() else {
            return;
        };
        if snap.polls.is_empty() {
            return;
        }
        let n = snap.polls.len() as i64;
        let current = self.shown_index(&snap) as i64;
        self.chosen
            .set(Some(((current + by).rem_euclid(n)) as usize));
        self.render_poll(&snap);
    }

    fn shown_index(&self, snap: &Snapshot) -> usize {
        if let Some(i) = self.chosen.get().filter(|&i| i < snap.polls.len()) {
            return i;
        }
        let active = snap.polls.iter().position(|p| p.active);
        if self.rotating {
            // The active poll, then the other open ones, in config order.
            let order: Vec<usize> = active
                .into_iter()
                .chain(
                    snap.polls
                        .iter()
                        .enumerate()
                        .filter(|(i, p)| p.def.open && Some(*i) != active)
                        .map(|(i, _)| i),
                )
                .collect();
            if !order.is_empty() {
                return order[self.rotation.get() % order.len()];
            }
        }
        active.unwrap_or(0)
    }

    pub fn state(&self, snap: &Arc<Snapshot>) {
        let previous_active = self
            .last
            .borrow()
            .as_ref()
            .and_then(|s| s.active_poll.clone());
        if previous_active.is_some() && previous_active != snap.active_poll {
            self.chosen.set(None); // a new active poll: show it
            self.rotation.set(0);
        }
        *self.last.borrow_mut() = Some(snap.clone());
        self.render_poll(snap);
        self.render_status(snap);
    }

    fn render_poll(&self, snap: &Snapshot) {
        let Some(poll) = snap.polls.get(self.shown_index(snap)) else {
            self.question.set_text(self.words.no_polls);
            return;
        };
        let tally = snap.tally(&poll.def.id);
        let total = tally.map_or(0, |t| t.total);
        self.question.set_text(&poll.def.question);
        let mut flags = vec![self.words.count(total)];
        flags.push(
            if poll.def.open {
                self.words.open
            } else {
                self.words.closed
            }
            .to_string(),
        );
        if !poll.active {
            flags.push(self.words.not_active.to_string());
        }
        self.meta.set_text(&flags.join(" · "));
        if self.answers.layout(&poll.def) {
            self.rescale();
        }
        self.answers.update(&poll.def, tally);
        tracing::debug!(poll = %poll.def.id, total, "screen updated");
        self.unpainted
            .borrow_mut()
            .push(format!("poll={} total={total}", poll.def.id));
        self.window.queue_draw();
    }

    fn render_status(&self, snap: &Snapshot) {
        let key: String = snap
            .readers
            .iter()
            .map(|r| {
                format!(
                    "{}:{:?}:{}:{:?};",
                    r.id,
                    r.status,
                    r.frames_bad > 0,
                    r.last_error
                )
            })
            .collect();
        if *self.strip_key.borrow() != key {
            self.render_readers(snap);
            *self.strip_key.borrow_mut() = key;
        }
        self.render_status_line(snap);
    }

    fn render_readers(&self, snap: &Snapshot) {
        while let Some(child) = self.readers.first_child() {
            self.readers.remove(&child);
        }
        for r in &snap.readers {
            let dot = gtk::Label::new(Some(&format!("● {}", r.id)));
            dot.add_css_class(match r.status {
                ReaderStatus::Connected => "connected",
                ReaderStatus::Disconnected => "disconnected",
            });
            if r.frames_bad > 0 && r.status == ReaderStatus::Connected {
                dot.add_css_class("errors");
            }
            dot.set_tooltip_text(r.last_error.as_deref());
            self.readers.append(&dot);
        }
    }

    fn render_status_line(&self, snap: &Snapshot) {
        let up = snap
            .readers
            .iter()
            .filter(|r| r.status == ReaderStatus::Connected)
            .count();
        let mut status = format!(
            "{} {up}/{} · {} {}",
            self.words.readers,
            snap.readers.len(),
            self.words.network,
            snap.network.state.as_str()
        );
        if snap.xmpp.state != XmppState::Disabled {
            status.push_str(&format!(" · XMPP {}", snap.xmpp.state.as_str()));
            if snap.xmpp.outbox > 0 {
                status.push_str(&format!(" — {} queued", snap.xmpp.outbox));
            }
        }
        if !snap.remote.is_empty() {
            status.push_str(&format!(" · {} remote result(s)", snap.remote.len()));
        }
        let overview = health::overview(snap);
        if let Some(c) = overview.components.iter().find(|c| {
            c.level >= health::Level::Warning
                && c.component != "store"
                && !c.component.starts_with("reader:")
        }) {
            status.push_str(&format!(" · {}: {}", c.component, c.message));
        }
        if !snap.hotplug.unbound.is_empty() {
            status.push_str(&format!(
                " · {} new reader(s) plugged in: bind on the operator page",
                snap.hotplug.unbound.len()
            ));
        }
        if !snap.store.writable {
            status.push_str(&format!(" · {}: ", self.words.store_failing));
            status.push_str(snap.store.error.as_deref().unwrap_or("store failing"));
            self.status.add_css_class("alarm");
        } else {
            self.status.remove_css_class("alarm");
        }
        self.status.set_text(&status);
    }

    /// The name of the voter on the banner arrived: thank them by name.
    pub fn named(&self, p: &PersonEvent) {
        let answer = match &*self.banner_tag.borrow() {
            Some((tag, answer)) if self.banner.is_visible() && *tag == p.tag => answer.clone(),
            _ => return,
        };
        self.banner
            .set_text(&self.words.thanks(Some(&p.first_name), Some(&answer)));
        tracing::debug!("screen thanks by name");
        self.unpainted
            .borrow_mut()
            .push(format!("thanks name={}", p.first_name));
        self.window.queue_draw();
    }

    /// A tap: the answer it counted for pulses (when shown), and the banner
    /// thanks the voter and names the answer, for about three seconds.
    pub fn tapped(
        self: &Rc<Self>,
        counted: bool,
        first_name: Option<&str>,
        tag: TagUid,
        poll: &str,
        answer: &str,
    ) {
        let label = self.last.borrow().as_ref().and_then(|s| {
            let def = &s.polls.iter().find(|p| *p.def.id == *poll)?.def;
            Some(def.answers.iter().find(|a| a.id == answer)?.label.clone())
        });
        let shown = self.last.borrow().as_ref().is_some_and(|s| {
            s.polls
                .get(self.shown_index(s))
                .is_some_and(|p| *p.def.id == *poll)
        });
        if counted && shown && self.answers.pulse(answer) {
            tracing::debug!(poll, answer, "screen pulse");
            self.unpainted
                .borrow_mut()
                .push(format!("pulse answer={answer}"));
        }
        let text = if counted {
            self.words.thanks(first_name, label.as_deref())
        } else {
            self.words.already_voted.to_string()
        };
        self.banner.set_text(&text);
        *self.banner_tag.borrow_mut() = counted.then(|| (tag, label.unwrap_or_default()));
        self.banner
            .remove_css_class(if counted { "refused" } else { "counted" });
        self.banner
            .add_css_class(if counted { "counted" } else { "refused" });
        self.banner.set_visible(true);
        tracing::debug!(counted, "screen thanks");
        self.unpainted
            .borrow_mut()
            .push(format!("thanks counted={counted}"));
        self.window.queue_draw();
        let generation = self.banner_gen.get() + 1;
        self.banner_gen.set(generation);
        let v = Rc::downgrade(self);
        glib::timeout_add_local_once(Duration::from_secs(3), move || {
            if let Some(view) = v.upgrade()
                && view.banner_gen.get() == generation
            {
                view.banner.set_visible(false);
            }
        });
    }
}

/// The size of the first monitor, if the display tells.
fn monitor_size() -> Option<(i32, i32)> {
    let display = gdk::Display::default()?;
    let monitor = display
        .monitors()
        .item(0)?
        .downcast::<gdk::Monitor>()
        .ok()?;
    let g = monitor.geometry();
    Some((g.width(), g.height()))
}
