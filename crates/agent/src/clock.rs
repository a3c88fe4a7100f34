//! SetGuestDateTime (Kata's): the guest's wall clock. A VM cloned from a
//! template starts with the template's clock, so the shim sets it right after
//! it connects.

use std::io;

use crate::error::AgentError;

/// A checked wall-clock time: seconds and microseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallTime {
    sec: i64,
    usec: i64,
}

/// Checks SetGuestDateTime's fields: `sec` not negative, `usec` in
/// 0..=999999.
pub fn wall_time(sec: i64, usec: i64) -> Result<WallTime, AgentError> {
    if sec < 0 {
        return Err(AgentError::Invalid(format!(
            "Invalid sec {sec} (the time is before 1970)"
        )));
    }
    if !(0..1_000_000).contains(&usec) {
        return Err(AgentError::Invalid(format!(
            "Invalid usec {usec} (0..=999999)"
        )));
    }
    Ok(WallTime { sec, usec })
}

/// Sets CLOCK_REALTIME to `t`.
pub fn set_realtime(t: WallTime) -> Result<(), AgentError> {
    let ts = libc::timespec {
        tv_sec: t.sec,
        tv_nsec: t.usec * 1000,
    };
    clock_settime_realtime(&ts).map_err(|e| AgentError::io("clock_settime(CLOCK_REALTIME)", e))?;
    tracing::info!(sec = t.sec, usec = t.usec, "guest clock set");
    Ok(())
}

/// clock_settime(2) on CLOCK_REALTIME (nix's wrapper needs a feature the
/// workspace does not build).
#[allow(unsafe_code)]
fn clock_settime_realtime(ts: &libc::timespec) -> io::Result<()> {
    // SAFETY: `ts` is a valid, initialised timespec that outlives the call;
    // the kernel only reads it.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, ts) } < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_times_pass() {
        assert_eq!(wall_time(0, 0).unwrap(), WallTime { sec: 0, usec: 0 });
        let t = wall_time(1_800_000_000, 999_999).unwrap();
        assert_eq!((t.sec, t.usec), (1_800_000_000, 999_999));
    }

    #[test]
    fn bad_times_are_refused_by_field() {
        for (sec, usec, field) in [
            (-1, 0, "sec"),
            (i64::MIN, 0, "sec"),
            (0, -1, "usec"),
            (0, 1_000_000, "usec"),
            (0, i64::MAX, "usec"),
        ] {
            let e = wall_time(sec, usec).unwrap_err().to_string();
            assert!(e.contains(&format!("Invalid {field}")), "{e}");
        }
    }
}
