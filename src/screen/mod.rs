//! The GTK tally screen (feature `gtk`).
//!
//! GTK runs on the main thread in the GLib main loop; tokio runs beside it
//! on its own threads. One tokio task reads the Station's state (`watch`)
//! and events (`broadcast`) and hands them to the GLib side over an
//! async-channel, which `glib::spawn_future_local` awaits: no GTK call off
//! the main thread, no `block_on` on it, no timers to fetch state. Widgets
//! only render what they are given; the screen never talks to a service.
//!
//! - `view`: the window, the status strip, the banner, rotation and the
//!   sizes that follow the window (a projector layout: the poll fills it);
//! - `poll`: the shown poll as bars or a word cloud, and the pulse of the
//!   answer a vote went to;
//! - `qr`: the QR code of the public results address.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use gtk::glib;
use gtk::prelude::*;
use gtk4 as gtk;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::domain::{Language, TagUid};
use crate::station::{Event, PersonEvent, Snapshot, StationHandle};
use crate::sys::priority;

mod poll;
mod qr;
mod view;

use view::View;

/// What the tokio side tells the screen.
enum Msg {
    State(Arc<Snapshot>),
    Tap {
        counted: bool,
        first_name: Option<Arc<str>>,
        tag: TagUid,
        poll: Arc<str>,
        answer: Arc<str>,
    },
    /// The voter of a recent tap was named after the tap.
    Person(PersonEvent),
    Quit,
}

#[derive(Debug, Clone)]
pub struct ScreenOptions {
    pub fullscreen: bool,
    /// Cycle through the open polls, this long each.
    pub rotate: Option<Duration>,
    /// The public results address, shown as a QR code (`None`: no code).
    pub qr_url: Option<String>,
    pub language: Language,
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
        let view = View::build(app, options.clone());
        glib::spawn_future_local(async move {
            while let Ok(msg) = rx.recv().await {
                match msg {
                    Msg::State(s) => view.state(&s),
                    Msg::Tap {
                        counted,
                        first_name,
                        tag,
                        poll,
                        answer,
                    } => view.tapped(counted, first_name.as_deref(), tag, &poll, &answer),
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
                    poll: t.poll,
                    answer: t.answer,
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
