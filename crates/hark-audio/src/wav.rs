//! Reading any common WAV (8/16/24/32-bit integer, 32-bit float, mono or multi-channel, any
//! rate) into mono f32, and writing 16-bit WAVs.

use std::io::{Cursor, Write};
use std::path::Path;

use hark_core::AudioBuffer;

use crate::AudioError;

/// Inputs longer than this are refused (before their samples are decoded).
pub const MAX_MINUTES: u32 = 120;

/// A WAV decoded to mono, with what was noticed on the way.
#[derive(Debug, Clone)]
pub struct DecodedWav {
    pub audio: AudioBuffer,
    pub channels: u16,
    pub bits_per_sample: u16,
    pub float: bool,
    /// The data chunk ended before its header said: what was there was kept.
    pub truncated: bool,
}

/// Reads a WAV file (`-` reads standard input).
pub fn read_wav(path: &Path) -> Result<DecodedWav, AudioError> {
    let name = path.display().to_string();
    let bytes = if name == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut buf).map_err(|source| {
            AudioError::Io {
                path: "<stdin>".into(),
                source,
            }
        })?;
        buf
    } else {
        // Refuse what cannot be a sane input before reading it: 2 hours of 8-channel 32-bit
        // audio at 96 kHz is about 22 GB; 4 GiB is the WAV format's own limit.
        let len = std::fs::metadata(path)
            .map_err(|source| AudioError::Io {
                path: name.clone(),
                source,
            })?
            .len();
        if len > u32::MAX as u64 + 8 {
            return Err(AudioError::Unsupported {
                path: name,
                detail: format!(
                    "{:.1} GB is larger than any WAV file can be",
                    len as f64 / 1e9
                ),
            });
        }
        std::fs::read(path).map_err(|source| AudioError::Io {
            path: name.clone(),
            source,
        })?
    };
    read_wav_bytes(&bytes, if name == "-" { "<stdin>" } else { &name })
}

/// Decodes WAV bytes; `name` appears in errors.
pub fn read_wav_bytes(bytes: &[u8], name: &str) -> Result<DecodedWav, AudioError> {
    let path = name.to_string();
    if bytes.is_empty() {
        return Err(AudioError::NotWav {
            path,
            detail: "the file is empty (0 bytes)".into(),
        });
    }
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(AudioError::NotWav {
            path,
            detail: "it does not start with a RIFF/WAVE header".into(),
        });
    }
    let (bytes, cut_short) = repair_truncated(bytes);
    let reader =
        hound::WavReader::new(Cursor::new(&bytes[..])).map_err(|e| AudioError::NotWav {
            path: path.clone(),
            detail: match e {
                hound::Error::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                    "the header is cut short (the file is truncated)".into()
                }
                other => other.to_string(),
            },
        })?;
    let spec = reader.spec();
    if spec.channels == 0 {
        return Err(AudioError::Unsupported {
            path,
            detail: "the header says 0 channels".into(),
        });
    }
    if !(4_000..=768_000).contains(&spec.sample_rate) {
        return Err(AudioError::Unsupported {
            path,
            detail: format!(
                "sample rate {} Hz is outside 4 kHz–768 kHz",
                spec.sample_rate
            ),
        });
    }
    let frames_claimed = reader.duration() as f64;
    let minutes = frames_claimed / spec.sample_rate as f64 / 60.0;
    if minutes > MAX_MINUTES as f64 {
        return Err(AudioError::TooLong {
            path,
            minutes,
            limit: MAX_MINUTES,
        });
    }
    let float = spec.sample_format == hound::SampleFormat::Float;
    let (interleaved, truncated) = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => collect(reader.into_samples::<f32>(), |s| s),
        (hound::SampleFormat::Int, 8) => collect(reader.into_samples::<i8>(), |s| s as f32 / 128.0),
        (hound::SampleFormat::Int, 16) => collect(reader.into_samples::<i16>(), |s| s as f32 / 32_768.0),
        (hound::SampleFormat::Int, 24) => collect(reader.into_samples::<i32>(), |s| s as f32 / 8_388_608.0),
        (hound::SampleFormat::Int, 32) => collect(reader.into_samples::<i32>(), |s| s as f32 / 2_147_483_648.0),
        (format, bits) => {
            return Err(AudioError::Unsupported {
                path,
                detail: format!("{bits}-bit {format:?} samples are not supported (use 8/16/24/32-bit PCM or 32-bit float)"),
            })
        }
    };
    let truncated = truncated || cut_short;
    let interleaved = interleaved.map_err(|detail| AudioError::NotWav {
        path: path.clone(),
        detail,
    })?;
    let channels = spec.channels as usize;
    let mono: Vec<f32> = interleaved
        .chunks_exact(channels)
        .map(|frame| {
            let s = frame.iter().sum::<f32>() / channels as f32;
            // NaN or ±inf in a float WAV would poison every stage after us.
            if s.is_finite() {
                s.clamp(-1.0, 1.0)
            } else {
                0.0
            }
        })
        .collect();
    if mono.is_empty() {
        return Err(AudioError::Empty { path });
    }
    Ok(DecodedWav {
        audio: AudioBuffer::new(mono, spec.sample_rate),
        channels: spec.channels,
        bits_per_sample: spec.bits_per_sample,
        float,
        truncated,
    })
}

/// A file cut off inside its data chunk claims more data than it holds. Returns the bytes with
/// the data chunk's length shrunk to whole frames of what is there, and whether that was needed.
fn repair_truncated(bytes: &[u8]) -> (std::borrow::Cow<'_, [u8]>, bool) {
    let u32_at = |i: usize| {
        bytes
            .get(i..i + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u16_at = |i: usize| {
        bytes
            .get(i..i + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let mut pos = 12;
    let mut block_align = 1usize;
    while let (Some(id), Some(len)) = (bytes.get(pos..pos + 4), u32_at(pos + 4)) {
        let body = pos + 8;
        if id == b"fmt " {
            block_align = u16_at(body + 12).map_or(1, |b| b.max(1) as usize);
        }
        if id == b"data" {
            let available = bytes.len().saturating_sub(body);
            if (len as usize) <= available {
                return (bytes.into(), false);
            }
            // Programs that write a WAV to a pipe cannot know its length and leave these
            // placeholders: "to the end of the stream", not a truncated file.
            let streamed = len == u32::MAX;
            let whole = available - available % block_align;
            let mut fixed = bytes[..body + whole].to_vec();
            fixed[pos + 4..pos + 8].copy_from_slice(&(whole as u32).to_le_bytes());
            let riff = (fixed.len() - 8) as u32;
            fixed[4..8].copy_from_slice(&riff.to_le_bytes());
            return (fixed.into(), !streamed);
        }
        pos = body + len as usize + (len as usize & 1);
    }
    (bytes.into(), false)
}

/// Collects samples until the end or the first error; a cut-short data chunk keeps what was
/// read (`truncated`), any other error fails.
fn collect<S, I>(samples: I, to_f32: impl Fn(S) -> f32) -> (Result<Vec<f32>, String>, bool)
where
    I: Iterator<Item = hound::Result<S>>,
{
    let mut out = Vec::new();
    for s in samples {
        match s {
            Ok(v) => out.push(to_f32(v)),
            Err(hound::Error::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return (Ok(out), true)
            }
            // hound reports a sample cut in half this way.
            Err(hound::Error::FormatError(m)) if m.contains("enough bytes") => {
                return (Ok(out), true)
            }
            Err(hound::Error::IoError(e)) => return (Err(e.to_string()), false),
            Err(e) => return (Err(e.to_string()), false),
        }
    }
    (Ok(out), false)
}

fn to_i16(s: f32) -> i16 {
    (s.clamp(-1.0, 1.0) * 32_767.0).round() as i16
}

/// Writes mono 16-bit PCM; `-` writes to standard output.
pub fn write_wav(path: &Path, audio: &AudioBuffer) -> Result<(), AudioError> {
    let frames: Vec<[f32; 1]> = audio.samples.iter().map(|s| [*s]).collect();
    write_frames(path, &frames, audio.sample_rate)
}

/// Writes a stereo 16-bit WAV from two equally long channels (the shorter is padded).
pub fn write_wav_stereo(
    path: &Path,
    left: &[f32],
    right: &[f32],
    sample_rate: u32,
) -> Result<(), AudioError> {
    let n = left.len().max(right.len());
    let frames: Vec<[f32; 2]> = (0..n)
        .map(|i| {
            [
                left.get(i).copied().unwrap_or(0.0),
                right.get(i).copied().unwrap_or(0.0),
            ]
        })
        .collect();
    write_frames(path, &frames, sample_rate)
}

fn write_frames<const C: usize>(
    path: &Path,
    frames: &[[f32; C]],
    sample_rate: u32,
) -> Result<(), AudioError> {
    let name = path.display().to_string();
    let io = |source| AudioError::Io {
        path: name.clone(),
        source,
    };
    let spec = hound::WavSpec {
        channels: C as u16,
        sample_rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut bytes = Cursor::new(Vec::with_capacity(44 + frames.len() * C * 2));
    {
        let mut w = hound::WavWriter::new(&mut bytes, spec)
            .map_err(|e| io(std::io::Error::other(e.to_string())))?;
        let mut w16 = w.get_i16_writer((frames.len() * C) as u32);
        for frame in frames {
            for s in frame {
                w16.write_sample(to_i16(*s));
            }
        }
        w16.flush()
            .map_err(|e| io(std::io::Error::other(e.to_string())))?;
        w.finalize()
            .map_err(|e| io(std::io::Error::other(e.to_string())))?;
    }
    let bytes = bytes.into_inner();
    if name == "-" {
        let mut out = std::io::stdout().lock();
        out.write_all(&bytes).map_err(io)?;
        out.flush().map_err(io)
    } else {
        // Write beside the target, then rename: a reader never sees half a file.
        let tmp = path.with_extension("wav.partial");
        let result = std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, path));
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav_bytes(
        spec: hound::WavSpec,
        write: impl FnOnce(&mut hound::WavWriter<&mut Cursor<Vec<u8>>>),
    ) -> Vec<u8> {
        let mut c = Cursor::new(Vec::new());
        {
            let mut w = hound::WavWriter::new(&mut c, spec).unwrap();
            write(&mut w);
            w.finalize().unwrap();
        }
        c.into_inner()
    }

    fn spec(channels: u16, rate: u32, bits: u16, float: bool) -> hound::WavSpec {
        hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format: if float {
                hound::SampleFormat::Float
            } else {
                hound::SampleFormat::Int
            },
        }
    }

    #[test]
    fn reads_every_common_format_to_the_same_level() {
        let half = 0.5f64;
        let cases: Vec<(hound::WavSpec, Vec<u8>)> = vec![
            (
                spec(1, 8000, 8, false),
                wav_bytes(spec(1, 8000, 8, false), |w| {
                    (0..100).for_each(|_| w.write_sample((half * 128.0) as i8).unwrap())
                }),
            ),
            (
                spec(1, 16000, 16, false),
                wav_bytes(spec(1, 16000, 16, false), |w| {
                    (0..100).for_each(|_| w.write_sample((half * 32768.0) as i16).unwrap())
                }),
            ),
            (
                spec(1, 16000, 24, false),
                wav_bytes(spec(1, 16000, 24, false), |w| {
                    (0..100).for_each(|_| w.write_sample((half * 8388608.0) as i32).unwrap())
                }),
            ),
            (
                spec(1, 16000, 32, false),
                wav_bytes(spec(1, 16000, 32, false), |w| {
                    (0..100).for_each(|_| w.write_sample((half * 2147483648.0) as i32).unwrap())
                }),
            ),
            (
                spec(1, 16000, 32, true),
                wav_bytes(spec(1, 16000, 32, true), |w| {
                    (0..100).for_each(|_| w.write_sample(half as f32).unwrap())
                }),
            ),
        ];
        for (s, bytes) in cases {
            let d = read_wav_bytes(&bytes, "t").unwrap();
            assert_eq!(d.audio.samples.len(), 100, "{s:?}");
            assert!(
                (d.audio.samples[0] - 0.5).abs() < 0.01,
                "{s:?}: {}",
                d.audio.samples[0]
            );
            assert!(!d.truncated);
        }
    }

    #[test]
    fn stereo_is_mixed_down() {
        let bytes = wav_bytes(spec(2, 44100, 16, false), |w| {
            for _ in 0..10 {
                w.write_sample(16384i16).unwrap();
                w.write_sample(0i16).unwrap();
            }
        });
        let d = read_wav_bytes(&bytes, "t").unwrap();
        assert_eq!(
            (d.channels, d.audio.sample_rate, d.audio.samples.len()),
            (2, 44100, 10)
        );
        assert!((d.audio.samples[0] - 0.25).abs() < 1e-3);
    }

    #[test]
    fn bad_bytes_give_clear_errors() {
        let err = |b: &[u8]| read_wav_bytes(b, "x.wav").unwrap_err().to_string();
        assert!(err(b"").contains("empty"));
        assert!(err(b"this is not audio at all, just text").contains("RIFF/WAVE"));
        let good = wav_bytes(spec(1, 16000, 16, false), |w| {
            (0..1000).for_each(|i| w.write_sample(i as i16).unwrap())
        });
        assert!(err(&good[..30]).contains("x.wav"));
        let no_samples = wav_bytes(spec(1, 16000, 16, false), |_| {});
        assert!(err(&no_samples).contains("no audio"));
    }

    #[test]
    fn truncated_data_keeps_what_is_there() {
        let good = wav_bytes(spec(1, 16000, 16, false), |w| {
            (0..1000).for_each(|i| w.write_sample(i as i16).unwrap())
        });
        let cut = &good[..good.len() - 500];
        let d = read_wav_bytes(cut, "t").unwrap();
        assert!(d.truncated);
        assert_eq!(d.audio.samples.len(), 750);
    }

    #[test]
    fn a_streamed_length_is_not_truncation() {
        let mut bytes = wav_bytes(spec(1, 16000, 16, false), |w| {
            (0..100).for_each(|i| w.write_sample(i as i16).unwrap())
        });
        bytes[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        bytes[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let d = read_wav_bytes(&bytes, "pipe").unwrap();
        assert_eq!(d.audio.samples.len(), 100);
        assert!(!d.truncated);
    }

    #[test]
    fn writes_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.wav");
        let audio = AudioBuffer::new(vec![0.0, 0.5, -0.5, 1.0], 22050);
        write_wav(&p, &audio).unwrap();
        let back = read_wav(&p).unwrap();
        assert_eq!(back.audio.sample_rate, 22050);
        for (a, b) in audio.samples.iter().zip(&back.audio.samples) {
            assert!((a - b).abs() < 1e-3);
        }
        write_wav_stereo(&p, &[0.1, 0.2], &[0.3], 16000).unwrap();
        // Writing where a directory stands fails and leaves nothing behind.
        let err = write_wav(dir.path(), &audio);
        assert!(err.is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(read_wav(&p).unwrap().channels, 2);
    }
}
