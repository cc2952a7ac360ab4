//! The few whisper.cpp calls recognition makes, straight on whisper-rs-sys.
//!
//! whisper-rs 0.16 keeps the context and state pointers to itself, and its `full` computes the
//! spectrogram on every call (`whisper_full_with_state` with samples). Decoding a spectrogram
//! set beforehand (our own, [`crate::mel`]) needs `whisper_set_mel_with_state` and a
//! `whisper_full_with_state` without samples on the same state.

use std::ffi::{CStr, CString};
use std::path::Path;
use std::ptr::NonNull;

use whisper_rs::whisper_rs_sys as sys;

/// A loaded model and one decoding state of it.
pub struct Whisper {
    ctx: NonNull<sys::whisper_context>,
    state: NonNull<sys::whisper_state>,
}

// SAFETY: the context and state are heap objects of whisper.cpp that hold no thread-bound
// resources; `Whisper` owns them and hands out no aliases, so one thread at a time uses them.
unsafe impl Send for Whisper {}

/// One decoded segment.
pub struct Segment {
    pub text: String,
    pub no_speech_prob: f32,
    pub tokens: usize,
}

impl Whisper {
    /// Loads a ggml model on the CPU (no GPU, no flash attention, no DTW timestamps).
    pub fn load(path: &Path) -> Result<Self, String> {
        let path_c = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| "the path holds a NUL byte".to_string())?;
        // SAFETY: plain C calls; the path outlives the load, the returned pointers are checked.
        unsafe {
            let mut params = sys::whisper_context_default_params();
            params.use_gpu = false;
            params.flash_attn = false;
            let ctx = NonNull::new(sys::whisper_init_from_file_with_params_no_state(
                path_c.as_ptr(),
                params,
            ))
            .ok_or("whisper.cpp could not load it")?;
            let Some(state) = NonNull::new(sys::whisper_init_state(ctx.as_ptr())) else {
                sys::whisper_free(ctx.as_ptr());
                return Err("whisper.cpp could not make a decoding state".into());
            };
            Ok(Whisper { ctx, state })
        }
    }

    pub fn is_multilingual(&self) -> bool {
        // SAFETY: a valid context.
        unsafe { sys::whisper_is_multilingual(self.ctx.as_ptr()) != 0 }
    }

    /// Makes `mel` (`n_mel` bands of `frames` frames each, band after band) the spectrogram the
    /// next [`Whisper::full`] decodes.
    pub fn set_mel(&mut self, mel: &[f32], n_mel: usize, frames: usize) -> Result<(), String> {
        if mel.len() != n_mel * frames {
            return Err(format!(
                "a spectrogram of {} values for {n_mel} × {frames}",
                mel.len()
            ));
        }
        let (Ok(n_mel), Ok(frames)) = (i32::try_from(n_mel), i32::try_from(frames)) else {
            return Err("the spectrogram is too large".into());
        };
        // SAFETY: `mel` holds exactly `n_mel * frames` values, which whisper.cpp copies.
        let rc = unsafe {
            sys::whisper_set_mel_with_state(
                self.ctx.as_ptr(),
                self.state.as_ptr(),
                mel.as_ptr(),
                frames,
                n_mel,
            )
        };
        match rc {
            0 => Ok(()),
            _ => Err(format!("whisper.cpp refused the spectrogram ({rc})")),
        }
    }

    /// Decodes `samples` (16 kHz), or with none the spectrogram set by [`Whisper::set_mel`],
    /// with `params`; whisper.cpp's status code on failure.
    ///
    /// # Safety
    /// Every pointer in `params` (language, callbacks and their data) must be valid for the
    /// whole call.
    pub unsafe fn full(
        &mut self,
        params: sys::whisper_full_params,
        samples: &[f32],
    ) -> Result<(), i32> {
        let n = i32::try_from(samples.len()).map_err(|_| -1)?;
        // SAFETY: valid context and state; `samples` is read during the call only (whisper.cpp
        // computes the spectrogram from it unless it is empty).
        let rc = unsafe {
            sys::whisper_full_with_state(
                self.ctx.as_ptr(),
                self.state.as_ptr(),
                params,
                if n == 0 {
                    std::ptr::null()
                } else {
                    samples.as_ptr()
                },
                n,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(rc)
        }
    }

    /// The segments of the last decode.
    pub fn segments(&self) -> Vec<Segment> {
        let state = self.state.as_ptr();
        // SAFETY: valid state; segment indices below its count; the text pointer is read at
        // once, before the next decode could free it.
        unsafe {
            (0..sys::whisper_full_n_segments_from_state(state))
                .map(|i| {
                    let text = sys::whisper_full_get_segment_text_from_state(state, i);
                    Segment {
                        text: if text.is_null() {
                            String::new()
                        } else {
                            CStr::from_ptr(text).to_string_lossy().into_owned()
                        },
                        no_speech_prob: sys::whisper_full_get_segment_no_speech_prob_from_state(
                            state, i,
                        ),
                        tokens: sys::whisper_full_n_tokens_from_state(state, i).max(0) as usize,
                    }
                })
                .collect()
        }
    }
}

impl Drop for Whisper {
    fn drop(&mut self) {
        // SAFETY: owned, freed once, the state before the context it belongs to.
        unsafe {
            sys::whisper_free_state(self.state.as_ptr());
            sys::whisper_free(self.ctx.as_ptr());
        }
    }
}
