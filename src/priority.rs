//! CPU priority for the threads that must never slow the intake.
//!
//! The intake (readers, the Station, the store, the HTTP API) runs at the
//! normal priority. The event-stream crowd's threads run under `SCHED_IDLE`
//! (any normal thread that wakes preempts them at once) and the screen's
//! thread (with the renderer threads it starts) at nice 5: when the CPU is
//! busy, a tap goes first; when it is not, they get all of it.

use std::io;

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
