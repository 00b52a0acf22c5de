//! The GTK tally screen (feature `gtk`).
//!
//! GTK runs on the main thread in the GLib main loop; tokio runs beside it
//! on its own threads. One tokio task reads the Station's state (`watch`)
//! and events (`broadcast`) and hands them to the GLib side over an
//! async-channel, which `glib::spawn_future_local` awaits: no GTK call off
//! the main thread, no `block_on` on it, no timers to fetch state. Widgets
//! only render what they are given; the screen never talks to a service.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use gtk::prelude::*;
use gtk::{gdk, glib, pango};
use gtk4 as gtk;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::domain::TagUid;
use crate::station::health;
use crate::station::{Event, PersonEvent, ReaderStatus, Snapshot, StationHandle};
use crate::sys::priority;

/// What the tokio side tells the screen.
enum Msg {
    State(Arc<Snapshot>),
    Tap {
        counted: bool,
        first_name: Option<Arc<str>>,
        tag: TagUid,
    },
    /// The voter of a recent tap was named after the tap.
    Person(PersonEvent),
    Quit,
}

#[derive(Debug, Clone, Copy)]
pub struct ScreenOptions {
    pub fullscreen: bool,
}

/// Without a GPU (no DRM render node), GTK's GL renderer runs on Mesa's
/// software rasterizer, whose threads redraw the whole window each frame
/// and take CPU from the intake (measured: tap p99 +111% under Xvfb). The
/// cairo renderer redraws only what changed (measured: within noise of
/// headless; see BENCHMARKS.md). So without one, use cairo, unless
/// `GSK_RENDERER` says otherwise. Returns the renderer chosen, if any.
///
/// Call before any other thread starts: it sets an environment variable.
#[must_use]
pub fn choose_renderer() -> Option<&'static str> {
    if std::env::var_os("GSK_RENDERER").is_some() {
        return None;
    }
    let gpu = std::fs::read_dir("/dev/dri").is_ok_and(|d| {
        d.flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("renderD"))
    });
    if gpu {
        return None;
    }
    // SAFETY: called from main before the runtime or any other thread
    // exists, so nothing reads the environment concurrently.
    unsafe { std::env::set_var("GSK_RENDERER", "cairo") };
    Some("cairo")
}

/// Whether a display is there to open a window on.
#[must_use]
pub fn display_present() -> bool {
    std::env::var_os("DISPLAY").is_some_and(|d| !d.is_empty())
        || std::env::var_os("WAYLAND_DISPLAY").is_some_and(|d| !d.is_empty())
}

/// Run the screen on this (the main) thread until the window is closed or
/// `shutdown` is cancelled. Cancels `shutdown` itself when the window closes.
/// Lowers this thread's CPU priority (see [`crate::sys::priority`]); the tokio
/// threads, started before, keep theirs.
pub fn run(
    station: &StationHandle,
    rt: &tokio::runtime::Handle,
    options: ScreenOptions,
    shutdown: &CancellationToken,
) -> glib::ExitCode {
    let (tx, rx) = async_channel::bounded::<Msg>(64);
    rt.spawn(forward(station.clone(), tx, shutdown.clone()));
    // Drawing never goes before a tap: this thread, and the renderer
    // threads GTK starts from it, yield to the intake when the CPU is busy.
    priority::lower_this_thread(priority::SCREEN_NICE);

    let app = gtk::Application::builder()
        .application_id("org.pollstation.Screen")
        .flags(gtk::gio::ApplicationFlags::NON_UNIQUE)
        .build();
    let rx = Rc::new(RefCell::new(Some(rx)));
    app.connect_activate(move |app| {
        let Some(rx) = rx.borrow_mut().take() else {
            return;
        };
        let view = View::build(app, options);
        glib::spawn_future_local(async move {
            while let Ok(msg) = rx.recv().await {
                match msg {
                    Msg::State(s) => view.state(&s),
                    Msg::Tap {
                        counted,
                        first_name,
                        tag,
                    } => view.thanks(counted, first_name.as_deref(), tag),
                    Msg::Person(p) => view.named(&p),
                    Msg::Quit => {
                        view.window.close();
                        break;
                    }
                }
            }
        });
    });
    let code = app.run_with_args::<&str>(&[]);
    tracing::info!("screen closed; shutting the station down");
    shutdown.cancel();
    code
}

/// tokio side: state and taps to the screen.
async fn forward(
    station: StationHandle,
    tx: async_channel::Sender<Msg>,
    shutdown: CancellationToken,
) {
    let mut state = station.watch();
    let mut events = station.subscribe();
    let first = state.borrow_and_update().clone();
    if tx.send(Msg::State(first)).await.is_err() {
        return;
    }
    // At most this many state updates a second reach the screen: people
    // cannot read faster, and every redraw is CPU the intake may need.
    let min_gap = Duration::from_millis(50);
    let mut last_state = tokio::time::Instant::now();
    loop {
        let msg = tokio::select! {
            () = shutdown.cancelled() => Msg::Quit,
            changed = state.changed() => match changed {
                Ok(()) => {
                    // Let a burst of commits settle into one update.
                    tokio::time::sleep_until(last_state + min_gap).await;
                    last_state = tokio::time::Instant::now();
                    Msg::State(state.borrow_and_update().clone())
                }
                Err(_) => Msg::Quit,
            },
            ev = events.recv() => match ev {
                Ok(Event::Tap(t)) => Msg::Tap {
                    counted: t.counted,
                    first_name: t.first_name,
                    tag: t.tag,
                },
                Ok(Event::Person(p)) => Msg::Person(p),
                Ok(_) | Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => Msg::Quit,
            },
        };
        let quit = matches!(msg, Msg::Quit);
        if tx.send(msg).await.is_err() || quit {
            return;
        }
    }
}

struct Row {
    fill: gtk::ProgressBar,
    count: gtk::Label,
    target: Cell<f64>,
}

struct View {
    window: gtk::ApplicationWindow,
    question: gtk::Label,
    meta: gtk::Label,
    answers: gtk::Grid,
    rows: RefCell<Vec<Row>>,
    layout_key: RefCell<String>,
    readers: gtk::Box,
    status: gtk::Label,
    banner: gtk::Label,
    banner_gen: Cell<u64>,
    /// The tag the banner thanks (to name it when the name arrives).
    banner_tag: RefCell<Option<TagUid>>,
    /// Poll shown: `None` follows the active poll; arrows pick another.
    chosen: Cell<Option<usize>>,
    last: RefCell<Option<Arc<Snapshot>>>,
    animating: Cell<bool>,
    /// The reader strip as last drawn: rebuilt only when it changes.
    strip_key: RefCell<String>,
    /// What changed since the last paint (for the "screen painted" log).
    unpainted: RefCell<Vec<String>>,
}

impl View {
    fn build(app: &gtk::Application, options: ScreenOptions) -> Rc<View> {
        let provider = gtk::CssProvider::new();
        provider.load_from_data(include_str!("../ui/style.css"));
        if let Some(display) = gdk::Display::default() {
            gtk::style_context_add_provider_for_display(
                &display,
                &provider,
                gtk::STYLE_PROVIDER_PRIORITY_APPLICATION,
            );
        }
        let window = gtk::ApplicationWindow::builder()
            .application(app)
            .title("pollstation")
            .default_width(1280)
            .default_height(800)
            .build();
        window.add_css_class("pollstation");

        let ui = gtk::Builder::from_string(include_str!("../ui/screen.ui"));
        let get = |id: &str| -> glib::Object {
            ui.object(id)
                .unwrap_or_else(|| panic!("ui/screen.ui has no object {id:?}"))
        };
        let overlay: gtk::Overlay = get("overlay").downcast().expect("overlay is a GtkOverlay");
        let question: gtk::Label = get("question").downcast().expect("question is a GtkLabel");
        let meta: gtk::Label = get("meta").downcast().expect("meta is a GtkLabel");
        let answers: gtk::Grid = get("answers").downcast().expect("answers is a GtkGrid");
        let readers: gtk::Box = get("readers").downcast().expect("readers is a GtkBox");
        let status: gtk::Label = get("status").downcast().expect("status is a GtkLabel");
        let banner: gtk::Label = get("banner").downcast().expect("banner is a GtkLabel");
        window.set_child(Some(&overlay));

        let view = Rc::new(View {
            window,
            question,
            meta,
            answers,
            rows: RefCell::new(Vec::new()),
            layout_key: RefCell::new(String::new()),
            readers,
            status,
            banner,
            banner_gen: Cell::new(0),
            banner_tag: RefCell::new(None),
            chosen: Cell::new(None),
            last: RefCell::new(None),
            animating: Cell::new(false),
            strip_key: RefCell::new(String::new()),
            unpainted: RefCell::new(Vec::new()),
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
                    view.step(if key == gdk::Key::Left { -1 } else { 1 })
                }
                _ => return glib::Propagation::Proceed,
            }
            glib::Propagation::Stop
        });
        view.window.add_controller(keys);

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
            view.window.fullscreen();
            view.window.set_cursor_from_name(Some("none"));
        }
        view.window.present();
        view
    }

    /// Bars grow smoothly toward their new length, one step per frame, for
    /// as long as one is moving (no frames are asked for when idle).
    fn animate(self: &Rc<Self>) {
        if self.animating.replace(true) {
            return;
        }
        let v = Rc::downgrade(self);
        self.window.add_tick_callback(move |_, _| {
            let Some(view) = v.upgrade() else {
                return glib::ControlFlow::Break;
            };
            let mut moving = false;
            for row in view.rows.borrow().iter() {
                let now = row.fill.fraction();
                let target = row.target.get();
                if (now - target).abs() > 0.002 {
                    row.fill.set_fraction(now + (target - now) * 0.2);
                    moving = true;
                } else if now != target {
                    row.fill.set_fraction(target);
                }
            }
            if moving {
                glib::ControlFlow::Continue
            } else {
                view.animating.set(false);
                glib::ControlFlow::Break
            }
        });
    }

    fn step(self: &Rc<Self>, by: i64) {
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
        self.state(&snap);
    }

    fn shown_index(&self, snap: &Snapshot) -> usize {
        self.chosen
            .get()
            .filter(|&i| i < snap.polls.len())
            .or_else(|| snap.polls.iter().position(|p| p.active))
            .unwrap_or(0)
    }

    fn state(self: &Rc<Self>, snap: &Arc<Snapshot>) {
        let previous_active = self
            .last
            .borrow()
            .as_ref()
            .and_then(|s| s.active_poll.clone());
        if previous_active.is_some() && previous_active != snap.active_poll {
            self.chosen.set(None); // a new active poll: show it
        }
        *self.last.borrow_mut() = Some(snap.clone());
        self.render_poll(snap);
        self.render_status(snap);
        self.animate();
    }

    fn render_poll(&self, snap: &Snapshot) {
        let Some(poll) = snap.polls.get(self.shown_index(snap)) else {
            self.question.set_text("No polls configured");
            return;
        };
        let tally = snap.tally(&poll.def.id);
        let total = tally.map_or(0, |t| t.total);
        self.question.set_text(&poll.def.question);
        let mut flags = vec![format!("{total} vote{}", if total == 1 { "" } else { "s" })];
        flags.push(if poll.def.open {
            "open".into()
        } else {
            "closed".into()
        });
        if !poll.active {
            flags.push("not the active poll".into());
        }
        self.meta.set_text(&flags.join(" · "));

        let n = poll.def.answers.len();
        let key = format!("{}:{n}", poll.def.id);
        if *self.layout_key.borrow() != key {
            while let Some(child) = self.answers.first_child() {
                self.answers.remove(&child);
            }
            // Up to 12 answers in one column; more go into columns of 17.
            let per_column = if n <= 12 { n.max(1) } else { 17 };
            let dense = n > 12;
            let mut rows = Vec::new();
            for (i, a) in poll.def.answers.iter().enumerate() {
                let col = (i / per_column) as i32 * 3;
                let r = (i % per_column) as i32;
                let label = gtk::Label::new(Some(&a.label));
                label.set_xalign(0.0);
                label.set_ellipsize(pango::EllipsizeMode::End);
                label.set_width_chars(if dense { 10 } else { 18 });
                label.set_max_width_chars(if dense { 12 } else { 30 });
                label.add_css_class("answer");
                let fill = gtk::ProgressBar::new();
                fill.set_hexpand(true);
                fill.set_width_request(if dense { 60 } else { 300 });
                fill.set_valign(gtk::Align::Center);
                let count = gtk::Label::new(Some("0 · 0%"));
                count.set_xalign(1.0);
                count.set_width_chars(if dense { 7 } else { 10 });
                count.add_css_class("count");
                if dense {
                    for w in [
                        label.upcast_ref::<gtk::Widget>(),
                        fill.upcast_ref(),
                        count.upcast_ref(),
                    ] {
                        w.add_css_class("dense");
                    }
                }
                self.answers.attach(&label, col, r, 1, 1);
                self.answers.attach(&fill, col + 1, r, 1, 1);
                self.answers.attach(&count, col + 2, r, 1, 1);
                rows.push(Row {
                    fill,
                    count,
                    target: Cell::new(0.0),
                });
            }
            *self.rows.borrow_mut() = rows;
            *self.layout_key.borrow_mut() = key;
        }
        for (row, a) in self.rows.borrow().iter().zip(&poll.def.answers) {
            let count = tally
                .and_then(|t| t.answers.iter().find(|x| x.id == a.id))
                .map_or(0, |x| x.count);
            let share = if total > 0 {
                count as f64 / total as f64
            } else {
                0.0
            };
            row.count
                .set_text(&format!("{count} · {:.0}%", share * 100.0));
            row.target.set(share);
        }
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
            "readers {up}/{} · network {}",
            snap.readers.len(),
            snap.network.state.as_str()
        );
        if snap.xmpp.state != crate::station::XmppState::Disabled {
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
            status.push_str(" · VOTES ARE NOT BEING RECORDED: ");
            status.push_str(snap.store.error.as_deref().unwrap_or("store failing"));
            self.status.add_css_class("alarm");
        } else {
            self.status.remove_css_class("alarm");
        }
        self.status.set_text(&status);
    }

    /// The name of the voter on the banner arrived: thank them by name.
    fn named(&self, p: &PersonEvent) {
        if self.banner.is_visible() && self.banner_tag.borrow().as_ref() == Some(&p.tag) {
            self.banner
                .set_text(&format!("Thank you, {}!", p.first_name));
            tracing::debug!("screen thanks by name");
            self.unpainted
                .borrow_mut()
                .push(format!("thanks name={}", p.first_name));
            self.window.queue_draw();
        }
    }

    /// The banner after each tap, for about three seconds.
    fn thanks(self: &Rc<Self>, counted: bool, first_name: Option<&str>, tag: TagUid) {
        let text = match (counted, first_name) {
            (true, Some(n)) => format!("Thank you, {n}!"),
            (true, None) => "Thank you!".to_string(),
            (false, _) => "Already voted".to_string(),
        };
        self.banner.set_text(&text);
        *self.banner_tag.borrow_mut() = counted.then_some(tag);
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
