//! How long whisper.cpp's idle worker threads spin, set before they exist.
//!
//! whisper.cpp runs its graphs on OpenMP (GCC's libgomp), whose workers spin after each
//! parallel region before they sleep: 300 000 rounds by default, several milliseconds. Within a
//! decode that is what keeps them quick (with no spinning at all a decode at a pause took 1.6×
//! as long), but after the final decode at a pause the spinning worker takes a core from the
//! LLM's prefill, which starts at that moment. Measured live (`hark run --realtime` on the
//! bundled questions and goforward, 20 turns each, the settings alternating): prefill 360 →
//! 515 tok/s, V2V mean 335 → 310 ms, the decode itself unchanged (115 → 108 ms).
//!
//! libgomp reads `GOMP_SPINCOUNT` once, when it is loaded, before `main` (and before the C
//! library has set up the environment an executable's `.preinit_array` could change). So when
//! the user has chosen neither a spin count nor a wait policy, `hark` starts itself again at
//! once with the setting: the same process (`exec`), arguments, standard streams and exit
//! status.

use std::ffi::OsString;

/// Spin rounds of an idle libgomp worker: about half a millisecond, which still spans the gap
/// between a decode's graphs (a token's logits are processed in about 0.3 ms). 3 000 measured
/// worse (V2V mean 317 against 303 ms, alternating).
pub const SPIN_COUNT: &str = "20000";

/// The variable libgomp reads.
const SPIN_VAR: &str = "GOMP_SPINCOUNT";
/// libgomp's wait policy, which the user may have set instead.
const POLICY_VAR: &str = "OMP_WAIT_POLICY";
/// Set for the second start: the spin count is Hark's own, not the user's.
const SET_BY_HARK: &str = "HARK_SET_GOMP_SPINCOUNT";

/// What to do at start, given the environment as `get` reads it.
#[derive(Debug, PartialEq, Eq)]
enum Start {
    /// Start again with the spin count set.
    Again,
    /// The spin count is Hark's: libgomp has read it, so take it out of the environment (and
    /// the marker with it) so that programs Hark starts (the peers of `hark bench`) run with
    /// their own defaults.
    Forget,
    /// The user chose the setting.
    AsIs,
}

fn decide(get: impl Fn(&str) -> Option<OsString>) -> Start {
    if get(SET_BY_HARK).is_some() {
        Start::Forget
    } else if get(SPIN_VAR).is_some() || get(POLICY_VAR).is_some() {
        Start::AsIs
    } else {
        Start::Again
    }
}

/// Call first thing in `main`, before any thread is started. Returns unless the process is
/// replaced by its second start; if that fails, Hark goes on with libgomp's default.
pub fn set_spin_count() {
    match decide(|k| std::env::var_os(k)) {
        Start::AsIs => {}
        Start::Forget => {
            std::env::remove_var(SPIN_VAR);
            std::env::remove_var(SET_BY_HARK);
        }
        Start::Again => start_again(),
    }
}

#[cfg(unix)]
fn start_again() {
    use std::os::unix::process::CommandExt;
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    // `exec` returns only on failure (no /proc, a binary replaced meanwhile): then Hark goes
    // on as it is, with libgomp's default.
    let _ = std::process::Command::new(&exe)
        .arg0(arg0)
        .args(args)
        .env(SPIN_VAR, SPIN_COUNT)
        .env(SET_BY_HARK, "1")
        .exec();
}

#[cfg(not(unix))]
fn start_again() {}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn hark_sets_the_spin_count_once_and_never_over_the_users_choice() {
        assert_eq!(decide(env(&[])), Start::Again);
        assert_eq!(decide(env(&[("GOMP_SPINCOUNT", "100")])), Start::AsIs);
        assert_eq!(decide(env(&[("OMP_WAIT_POLICY", "passive")])), Start::AsIs);
        assert_eq!(
            decide(env(&[
                ("GOMP_SPINCOUNT", SPIN_COUNT),
                ("HARK_SET_GOMP_SPINCOUNT", "1")
            ])),
            Start::Forget
        );
    }
}
