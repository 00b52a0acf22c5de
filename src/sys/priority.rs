//! CPU priority: a tap goes first.
//!
//! The intake (the main runtime's worker, which runs the readers, the
//! Station and its commits, the first event streams and the taps posted over
//! HTTP) runs at nice −20, the most the normal policy gives, where it is
//! allowed (root, or `LimitNICE=-20` in the systemd unit). A thread at nice
//! 0 is not enough: under the kernel's EEVDF scheduler a woken thread can
//! wait a whole slice (up to 8 ms measured, `BENCHMARKS.md`) behind threads
//! that have used less than their share, even `SCHED_IDLE` ones; at nice
//! −20 its share dwarfs theirs and it preempts them when it wakes. Threads
//! the intake starts (tokio's blocking pool, the fan-out runtime, the WAL
//! checkpointer) do not inherit it (`SCHED_FLAG_RESET_ON_FORK`).
//!
//! Not a real-time priority, which the intake had until 2026-12-07
//! (`SCHED_FIFO` 1; DESIGN.md's "the highest priority the machine allows"
//! is read as the highest normal one): the kernel's workers stay at normal priority, and the
//! one that moves a serial port's (or a pty's) bytes to its reader waited
//! behind a busy real-time intake — 10,000 taps/s on 64 ptys had a p99 of
//! 6.7–9.9 ms under `SCHED_FIFO`, 1.5–2.6 ms at nice −20, and the station
//! used a quarter less CPU (`cargo bench --bench intake`). The price,
//! measured the same day: a tap posted over HTTP while 10,000 event streams
//! are open has a p99 of 5.1–5.8 ms instead of 3.2–4.3 (`cargo bench
//! --bench sse_load`; p50 unchanged). And a runaway
//! intake thread leaves the rest of the box a sliver of the CPU instead of
//! the 5% real-time throttling kept.
//!
//! Every other HTTP request (pages, the API, the admin side) is served by
//! threads at normal priority ([`normal_this_thread`]): a LAN flooding
//! `/metrics` competes with sshd and the compositor, not above them.
//! The event-stream crowd's threads run under `SCHED_IDLE` and the screen's
//! thread (with the renderer threads it starts) at nice 5: when the CPU is
//! busy, a tap goes first; when it is not, they get all of it.

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

/// Run the calling thread under the normal policy (`SCHED_OTHER`) at nice 0
/// or above, whatever the thread that started it had.
pub fn normal_this_thread() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler with pid 0 changes the calling thread's
    // policy; `param` outlives the call.
    let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &raw const param) };
    if r != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "cannot set SCHED_OTHER on this thread");
    }
    // SAFETY: as in `lower_this_thread`; raising a nice value to 0 is
    // always allowed.
    if unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) } < 0 {
        lower_this_thread(0);
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

/// The nice value of the intake's thread: the highest priority the normal
/// policy has.
pub const INTAKE_NICE: i32 = -20;

/// `struct sched_attr` of `sched_setattr(2)` (its first version, 48 bytes).
#[repr(C)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// `SCHED_FLAG_RESET_ON_FORK`: threads started from this one get nice 0.
const SCHED_FLAG_RESET_ON_FORK: u64 = 0x01;

/// Set the calling thread's policy to `SCHED_OTHER` at `nice`, with
/// `SCHED_FLAG_RESET_ON_FORK`.
fn set_normal_nice_no_inherit(nice: i32) -> io::Result<()> {
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        flags: SCHED_FLAG_RESET_ON_FORK,
        nice,
        priority: 0,
        runtime: 0,
        deadline: 0,
        period: 0,
    };
    // SAFETY: sched_setattr with pid 0 changes the calling thread's policy
    // and nice value; `attr` is a complete `struct sched_attr` whose size
    // field says which version it is, and outlives the call.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &raw const attr, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The lowest nice value `RLIMIT_NICE` lets an unprivileged thread take,
/// or `None` where it allows no raise at all.
fn nice_allowed_by_rlimit() -> Option<i32> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the limit into `lim`, which outlives the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NICE, &raw mut lim) } != 0 {
        return None;
    }
    nice_for_rlimit(lim.rlim_cur)
}

/// `RLIMIT_NICE` counts from 1 for nice 19 up to 40 for nice −20
/// (`setrlimit(2)`); 0 allows no raise.
fn nice_for_rlimit(limit: u64) -> Option<i32> {
    let limit = i32::try_from(limit.min(40)).unwrap_or(40);
    (limit >= 1).then(|| 20 - limit)
}

/// Ask `set` for [`INTAKE_NICE`]; where refused, for the lowest nice value
/// `allowed` gives if that is below the thread's own (`now`). The nice
/// value reached, or the first refusal.
fn raise_with(
    set: impl Fn(i32) -> io::Result<()>,
    now: impl FnOnce() -> i32,
    allowed: impl FnOnce() -> Option<i32>,
) -> io::Result<i32> {
    match set(INTAKE_NICE) {
        Ok(()) => Ok(INTAKE_NICE),
        Err(refused) => match allowed() {
            Some(nice) if nice < now() => set(nice).map(|()| nice).map_err(|_| refused),
            _ => Err(refused),
        },
    }
}

/// Run the calling thread at [`INTAKE_NICE`] under the normal policy,
/// without passing it on to threads it starts. Where that is refused, the
/// thread takes the lowest nice value `RLIMIT_NICE` allows (`LimitNICE=-10`
/// gives −10) if that is below its own, and otherwise stays as it was.
/// Returns the nice value reached. The first outcome in the process is
/// logged, at info level, with what to change when −20 was refused.
pub fn raise_intake_thread() -> io::Result<i32> {
    static LOGGED: OnceLock<()> = OnceLock::new();
    let result = raise_with(
        set_normal_nice_no_inherit,
        // SAFETY: getpriority with who = 0 reads the calling thread's nice
        // value.
        || unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) },
        nice_allowed_by_rlimit,
    );
    LOGGED.get_or_init(|| match &result {
        Ok(INTAKE_NICE) => tracing::info!(
            nice = INTAKE_NICE,
            "the intake (readers, Station, store, HTTP API) runs at nice -20: taps go ahead of event streams and the screen"
        ),
        Ok(nice) => tracing::info!(
            nice,
            "the intake runs at nice {nice}, the most RLIMIT_NICE allows (nice -20 needs root or LimitNICE=-20); with thousands of event streams open, taps may wait a few ms"
        ),
        Err(e) => tracing::info!(
            error = %e,
            "the intake stays at normal priority (nice -20 needs root or LimitNICE=-20); with thousands of event streams open, taps may wait a few ms"
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

    #[test]
    fn rlimit_nice_maps_to_the_lowest_nice_value() {
        assert_eq!(nice_for_rlimit(0), None);
        assert_eq!(nice_for_rlimit(1), Some(19));
        assert_eq!(nice_for_rlimit(30), Some(-10), "LimitNICE=-10");
        assert_eq!(nice_for_rlimit(40), Some(-20));
        assert_eq!(nice_for_rlimit(libc::RLIM_INFINITY), Some(-20));
    }

    /// The fallback's decisions, against a kernel that grants nice values
    /// down to `floor` (`None`: none below 0), as `RLIMIT_NICE` does. The
    /// integration test of the same path needs `CAP_SYS_RESOURCE`, which
    /// these build machines lack.
    #[test]
    fn a_refused_raise_falls_back_to_what_the_limit_allows() {
        let kernel = |floor: Option<i32>| {
            move |n: i32| {
                if floor.is_some_and(|f| n >= f) {
                    Ok(())
                } else {
                    Err(io::Error::from_raw_os_error(libc::EPERM))
                }
            }
        };
        let eperm = |r: io::Result<i32>| r.unwrap_err().raw_os_error() == Some(libc::EPERM);
        assert_eq!(
            raise_with(kernel(Some(-20)), || 0, || Some(-20)).unwrap(),
            -20
        );
        assert_eq!(
            raise_with(kernel(Some(-10)), || 0, || Some(-10)).unwrap(),
            -10,
            "LimitNICE=-10"
        );
        assert!(
            eperm(raise_with(kernel(None), || 0, || None)),
            "no raise at all"
        );
        assert!(
            eperm(raise_with(kernel(Some(-10)), || -15, || Some(-10))),
            "not above the thread's own nice value"
        );
        assert!(
            eperm(raise_with(kernel(Some(-5)), || 0, || Some(-10))),
            "refused again: an error, not a nice value it did not get"
        );
    }

    #[test]
    fn the_intake_is_raised_as_far_as_allowed_and_what_it_starts_is_not() {
        let before = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        // The lowest nice value this process may take (−20 as root or with
        // RLIMIT_NICE 40, less with a smaller limit, none below its own
        // without one): ask the kernel from a short-lived thread.
        let lowest = std::thread::spawn(move || {
            (INTAKE_NICE..before.max(INTAKE_NICE + 1))
                .find(|&n| unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, n) } == 0)
        })
        .join()
        .unwrap();
        let (raised, nice, policy, child) = std::thread::spawn(|| {
            let raised = raise_intake_thread();
            let child = std::thread::spawn(|| unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) });
            (
                raised.ok(),
                unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) },
                unsafe { libc::sched_getscheduler(0) },
                child.join().unwrap(),
            )
        })
        .join()
        .unwrap();
        assert_eq!(raised, lowest);
        assert_eq!(policy & !libc::SCHED_RESET_ON_FORK, libc::SCHED_OTHER);
        assert_eq!(policy & libc::SCHED_RESET_ON_FORK != 0, lowest.is_some());
        match lowest {
            Some(n) => {
                assert_eq!((nice, child), (n, 0), "raised; not inherited");
                let normal = std::thread::spawn(|| {
                    let _ = raise_intake_thread();
                    normal_this_thread();
                    unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
                });
                assert_eq!(normal.join().unwrap(), 0, "normal_this_thread undoes it");
            }
            None => assert_eq!((nice, child), (before, before)),
        }
    }
}
