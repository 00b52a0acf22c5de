//! CPU priority: a tap goes first.
//!
//! The intake (the main runtime's worker, which runs the readers, the
//! Station and its commits, and the taps posted over HTTP) runs at the lowest
//! real-time priority where it is allowed (`SCHED_FIFO` 1: root, or
//! `LimitRTPRIO=1` in the systemd unit). A normal-priority thread is not
//! enough: under the kernel's EEVDF scheduler a woken thread can wait a
//! whole slice (up to 8 ms measured, `BENCHMARKS.md`) behind threads that have
//! used less than their share, even `SCHED_IDLE` ones. Threads the intake
//! starts (tokio's blocking pool, the fan-out runtime) do not inherit it
//! (`SCHED_RESET_ON_FORK`), and the kernel's real-time throttling keeps 5% of
//! every second for everything else should an intake thread spin.
//!
//! Every other HTTP request (pages, the API, the admin side) is served by
//! threads at normal priority ([`normal_this_thread`]): a LAN flooding
//! `/metrics` competes with sshd and the compositor, not above them.
//! The event-stream crowd's threads run under `SCHED_IDLE` and the screen's
//! thread (with the renderer threads it starts) at nice 5: when the CPU is
//! busy, a tap goes first; when it is not, they get all of it.
//!
//! The price, measured (`BENCHMARKS.md`, "The 10,000 taps/s tail and
//! real-time priority"): kernel workers stay at normal priority, and the
//! one that moves a pty's bytes to its reader waits behind a busy intake —
//! 10,000 taps/s from a load generator on the same two cores had a p99 of
//! 5.5–7.9 ms with real-time, 2.7–3.7 ms without; but without it a posted
//! tap's p99 under 10,000 open streams doubled (2.6 → 5.9 ms).

use std::io;
use std::sync::OnceLock;

/// Nice value of the fan-out threads (thousands of SSE streams) where
/// `SCHED_IDLE` is refused.
pub const FANOUT_NICE: i32 = 10;
/// Nice value of the GTK main thread and the threads it starts (Mesa's
/// renderer threads among them).
pub const SCREEN_NICE: i32 = 5;

/// Lower the calling thread's priority to `nice`. On Linux the nice value
/// is per thread, and threads started afterwards from this one inherit it.
pub fn lower_this_thread(nice: i32) {
    // SAFETY: setpriority with who = 0 changes the calling thread's nice
    // value; no memory is involved.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if r != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), nice, "cannot lower this thread's priority");
    }
}

/// Run the calling thread under the normal policy (`SCHED_OTHER`, nice 0),
/// whatever the thread that started it had.
pub fn normal_this_thread() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler with pid 0 changes the calling thread's
    // policy; `param` outlives the call.
    let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &raw const param) };
    if r != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "cannot set SCHED_OTHER on this thread");
    }
}

/// Make the calling thread run only when no normal thread wants the CPU
/// (`SCHED_IDLE`): a normal thread that wakes up preempts it at once. Falls
/// back to [`FANOUT_NICE`] where the policy is refused.
pub fn idle_this_thread() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler with pid 0 changes the calling thread's
    // policy; `param` outlives the call.
    let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &raw const param) };
    if r != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "SCHED_IDLE refused; lowering the nice value instead");
        lower_this_thread(FANOUT_NICE);
    }
}

/// The real-time priority of the intake's threads: the lowest there is.
pub const INTAKE_RT_PRIORITY: i32 = 1;

/// Run the calling thread at [`INTAKE_RT_PRIORITY`] under `SCHED_FIFO`,
/// without passing it on to threads it starts. Where that is refused the
/// thread stays as it was. The first outcome in the process is logged, at
/// info level, with what to change when it was refused.
pub fn raise_intake_thread() -> io::Result<()> {
    static LOGGED: OnceLock<()> = OnceLock::new();
    let param = libc::sched_param {
        sched_priority: INTAKE_RT_PRIORITY,
    };
    // SAFETY: sched_setscheduler with pid 0 changes the calling thread's
    // policy; `param` outlives the call.
    let r = unsafe {
        libc::sched_setscheduler(
            0,
            libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK,
            &raw const param,
        )
    };
    let result = if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    };
    LOGGED.get_or_init(|| match &result {
        Ok(()) => tracing::info!(
            priority = INTAKE_RT_PRIORITY,
            "the intake (readers, Station, store, HTTP API) runs at real-time priority: taps go ahead of event streams and the screen"
        ),
        Err(e) => tracing::info!(
            error = %e,
            "the intake stays at normal priority (a real-time priority needs root or LimitRTPRIO=1); with thousands of event streams open, taps may wait a few ms"
        ),
    });
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_calling_thread_is_lowered() {
        let before = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let inside = std::thread::spawn(move || {
            lower_this_thread(before + 3);
            let child = std::thread::spawn(|| unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) });
            (
                unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) },
                child.join().unwrap(),
            )
        })
        .join()
        .unwrap();
        assert_eq!(inside, (before + 3, before + 3), "lowered, and inherited");
        assert_eq!(unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }, before);
    }
}
