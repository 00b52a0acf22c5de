//! CPU priority for the threads that must never slow the intake.
//!
//! The intake (readers, the Station, the store, the HTTP API) runs at the
//! normal priority. The event-stream crowd's threads and the screen's
//! thread (with the renderer threads it starts) run at a lower one: when
//! the CPU is busy, a tap goes first; when it is not, they get all of it.

use std::io;

/// Nice value of the fan-out threads (thousands of SSE streams).
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
