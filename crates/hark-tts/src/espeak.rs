//! Text → IPA phonemes with the system's espeak-ng (Debian `libespeak-ng1`), as Piper voices
//! were trained on. espeak-ng keeps global state, so every call holds one process-wide lock.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::TtsError;

const AUDIO_OUTPUT_RETRIEVAL: c_int = 1;
const INITIALIZE_DONT_EXIT: c_int = 0x8000;
const CHARS_UTF8: c_int = 1;
const PHONEMES_IPA: c_int = 0x02;
const EE_OK: c_int = 0;

extern "C" {
    fn espeak_Initialize(
        output: c_int,
        buflength: c_int,
        path: *const c_char,
        options: c_int,
    ) -> c_int;
    fn espeak_SetVoiceByName(name: *const c_char) -> c_int;
    fn espeak_TextToPhonemes(
        textptr: *mut *const c_void,
        textmode: c_int,
        phonememode: c_int,
    ) -> *const c_char;
}

/// Which data directory espeak-ng was initialised with (it can only be initialised once).
static ESPEAK: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Phonemizes with espeak-ng, initialising it from `data_parent` (the directory that holds
/// `espeak-ng-data`) on first use.
pub fn phonemize_clause(text: &str, voice: &str, data_parent: &Path) -> Result<String, TtsError> {
    let mut guard = ESPEAK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    match guard.as_ref() {
        Some(dir) if dir != data_parent => {
            return Err(TtsError::Phonemes(format!(
                "espeak-ng is already initialised from {}; one data directory per process",
                dir.display()
            )))
        }
        Some(_) => {}
        None => {
            if !data_parent.join("espeak-ng-data").join("phontab").is_file() {
                return Err(TtsError::Phonemes(format!(
                    "espeak-ng data not found in {}; run `hark models fetch`",
                    data_parent.join("espeak-ng-data").display()
                )));
            }
            let path = CString::new(data_parent.to_string_lossy().as_bytes()).map_err(|_| {
                TtsError::Phonemes("espeak-ng data path contains a NUL byte".into())
            })?;
            // SAFETY: called once, under the lock, with a valid NUL-terminated path.
            let rate = unsafe {
                espeak_Initialize(
                    AUDIO_OUTPUT_RETRIEVAL,
                    0,
                    path.as_ptr(),
                    INITIALIZE_DONT_EXIT,
                )
            };
            if rate <= 0 {
                return Err(TtsError::Phonemes(format!(
                    "espeak-ng failed to initialise from {}",
                    data_parent.display()
                )));
            }
            *guard = Some(data_parent.to_path_buf());
        }
    }
    let voice_c = CString::new(voice)
        .map_err(|_| TtsError::Phonemes("voice name contains a NUL byte".into()))?;
    // SAFETY: espeak is initialised and we hold the lock.
    if unsafe { espeak_SetVoiceByName(voice_c.as_ptr()) } != EE_OK {
        return Err(TtsError::Phonemes(format!(
            "espeak-ng has no voice `{voice}`"
        )));
    }
    let text_c = CString::new(text.replace('\0', " "))
        .map_err(|_| TtsError::Phonemes("text contains a NUL byte".into()))?;
    let mut ptr: *const c_void = text_c.as_ptr().cast();
    let mut phonemes = String::new();
    // espeak returns one clause per call and advances `ptr`, setting it to null at the end.
    while !ptr.is_null() {
        // SAFETY: `ptr` points into `text_c`, which outlives the loop; espeak returns a pointer to
        // its own static buffer, valid until the next call, which we copy at once.
        let out = unsafe { espeak_TextToPhonemes(&mut ptr, CHARS_UTF8, PHONEMES_IPA) };
        if out.is_null() {
            break;
        }
        let clause = unsafe { CStr::from_ptr(out) }.to_string_lossy();
        if !phonemes.is_empty() && !clause.is_empty() {
            phonemes.push(' ');
        }
        phonemes.push_str(&clause);
    }
    Ok(strip_language_switches(&phonemes))
}

/// espeak marks words it reads in another language as `(fr)…(en)`; Piper voices know no such
/// symbols.
fn strip_language_switches(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut depth = 0usize;
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}
