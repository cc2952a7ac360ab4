//! Sound cards: the microphone and the speaker, through cpal.
//!
//! A cpal callback runs on the audio system's real-time thread, so the callbacks here do no
//! allocation, locking or logging: each is one end of a lock-free ring buffer (ringbuf) and
//! shares only atomics with the rest of the program. Everything else — mixing down to mono,
//! resampling, cutting into windows — happens on the reader's or writer's own thread.
//!
//! - [`open_microphone`] → ([`Microphone`], [`MicrophoneReader`]): the stream stays with the
//!   caller (cpal streams are not `Send`); the reader hands out 16 kHz mono windows.
//! - [`open_speaker`] → ([`Speaker`], [`SpeakerWriter`]): the writer queues mono audio at the
//!   voice's rate; [`SpeakerWriter::stop`] drops what is queued, after a short fade, at once.
//! - [`list_devices`] for `hark talk --list-devices`.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, Sample, SampleFormat, SizedSample, StreamConfig};
use hark_core::{AudioBuffer, ASR_SAMPLE_RATE};
use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};
use rubato::{Resampler, SincFixedIn};

use crate::AudioError;

/// How much audio each ring buffer holds: enough for a busy reader to catch up.
const RING_SECONDS: usize = 4;
/// The fade that ends a reply cut short, so the cut does not click.
const FADE_MS: f32 = 10.0;
/// How fast the playback level (for the echo gate) falls after the audio stops, per second.
const LEVEL_DECAY_PER_S: f32 = 0.002;

/// What the callbacks count, for the user: never a crash, always a figure.
#[derive(Debug, Default)]
pub struct DeviceStats {
    /// Microphone samples dropped because the reader was behind (its ring buffer full).
    pub overruns: AtomicU64,
    /// Speaker callbacks that ran out of audio in the middle of a reply.
    pub underruns: AtomicU64,
    /// Errors the audio system reported on the stream.
    pub errors: AtomicU64,
    /// The first of them, for the user.
    first_error: std::sync::OnceLock<String>,
}

impl DeviceStats {
    pub fn overruns(&self) -> u64 {
        self.overruns.load(Ordering::Relaxed)
    }
    pub fn underruns(&self) -> u64 {
        self.underruns.load(Ordering::Relaxed)
    }
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
    /// The first error the audio system reported, if any.
    pub fn first_error(&self) -> Option<&str> {
        self.first_error.get().map(String::as_str)
    }
    /// Called from the stream's error callback (not its data callback): errors are rare, so
    /// formatting the first one is allowed here.
    fn note_error(&self, err: cpal::Error) {
        if self.errors.fetch_add(1, Ordering::Relaxed) == 0 {
            let _ = self.first_error.set(err.to_string());
        }
    }
}

/// One sound device, as `hark talk --list-devices` shows it.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// The host's name for it (ALSA: "default", "pulse", "hw:CARD=…"): what `--input` takes.
    pub id: String,
    /// Its description.
    pub name: String,
    /// Its default input format ("16000 Hz, 1 ch, i16"), if it records.
    pub input: Option<String>,
    /// Its default output format, if it plays.
    pub output: Option<String>,
    pub default_input: bool,
    pub default_output: bool,
}

fn device_error(what: &str, e: impl std::fmt::Display) -> AudioError {
    AudioError::Device(format!("{what}: {e}"))
}

/// Runs `f` with the process's stderr sent to /dev/null: ALSA's and JACK's plugins print their
/// probing failures ("Cannot get card index", "jack server is not running") straight to it
/// while devices are enumerated or opened. Our own errors are returned, not printed.
fn quietly<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: plain fd calls on fds we own; stderr is restored before returning.
    unsafe {
        let saved = libc::dup(2);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
        if saved < 0 || null < 0 {
            for fd in [saved, null] {
                if fd >= 0 {
                    libc::close(fd);
                }
            }
            return f();
        }
        libc::dup2(null, 2);
        libc::close(null);
        let result = f();
        libc::dup2(saved, 2);
        libc::close(saved);
        result
    }
}

/// Why a device cannot be used, and what to do about it.
fn unusable(what: &str, e: impl std::fmt::Display) -> AudioError {
    AudioError::Device(format!(
        "the {what} cannot be used ({e}): no sound card, no permission to use it, or no sound \
         server (PulseAudio, PipeWire) running? `hark talk --list-devices` shows the devices"
    ))
}

fn format_config(c: &cpal::SupportedStreamConfig) -> String {
    format!(
        "{} Hz, {} ch, {}",
        c.sample_rate(),
        c.channels(),
        c.sample_format()
    )
}

fn device_id(d: &cpal::Device) -> String {
    d.id()
        .map(|id| id.id().to_string())
        .unwrap_or_else(|_| d.to_string())
}

/// Every device of the default audio host that records or plays, with its default formats.
pub fn list_devices() -> Result<Vec<DeviceInfo>, AudioError> {
    quietly(list_devices_inner)
}

fn list_devices_inner() -> Result<Vec<DeviceInfo>, AudioError> {
    let host = cpal::default_host();
    let default_in = host.default_input_device().map(|d| device_id(&d));
    let default_out = host.default_output_device().map(|d| device_id(&d));
    let devices = host
        .devices()
        .map_err(|e| device_error("listing sound devices", e))?;
    Ok(devices
        .map(|d| {
            let id = device_id(&d);
            DeviceInfo {
                input: d.default_input_config().ok().map(|c| format_config(&c)),
                output: d.default_output_config().ok().map(|c| format_config(&c)),
                default_input: default_in.as_deref() == Some(id.as_str()),
                default_output: default_out.as_deref() == Some(id.as_str()),
                name: d.to_string(),
                id,
            }
        })
        .filter(|d| d.input.is_some() || d.output.is_some())
        .collect())
}

fn find_device(name: Option<&str>, input: bool) -> Result<cpal::Device, AudioError> {
    let host = cpal::default_host();
    let kind = if input { "microphone" } else { "speaker" };
    match name {
        None => {
            let device = if input {
                host.default_input_device()
            } else {
                host.default_output_device()
            };
            device.ok_or_else(|| {
                AudioError::Device(format!(
                    "no default {kind} (no sound card, or no permission to use it); \
                     `hark talk --list-devices` shows what there is"
                ))
            })
        }
        Some(wanted) => {
            let devices = host
                .devices()
                .map_err(|e| device_error("listing sound devices", e))?;
            let mut names = Vec::new();
            // An exact id first ("pulse"), then a part of a description.
            let devices: Vec<_> = devices
                .filter(|d| {
                    if input {
                        d.default_input_config().is_ok()
                    } else {
                        d.default_output_config().is_ok()
                    }
                })
                .collect();
            if let Some(d) = devices.iter().find(|d| device_id(d) == wanted) {
                return Ok(d.clone());
            }
            if let Some(d) = devices.iter().find(|d| d.to_string().contains(wanted)) {
                return Ok(d.clone());
            }
            names.extend(devices.iter().map(device_id));
            Err(AudioError::Device(format!(
                "no {kind} called {wanted:?}; there are: {}",
                names.join(", ")
            )))
        }
    }
}

/// The device's configuration closest to what we want: `rate` and `channels` when a range
/// holds them (no resampling then), else the device's default; a buffer of `buffer_ms`.
fn choose_config(
    device: &cpal::Device,
    input: bool,
    (rate, channels): (u32, u16),
    buffer_ms: f32,
) -> Result<(StreamConfig, SampleFormat), AudioError> {
    let what = if input { "microphone" } else { "speaker" };
    let ranges: Vec<_> = if input {
        device.supported_input_configs().map(|r| r.collect())
    } else {
        device.supported_output_configs().map(|r| r.collect())
    }
    .map_err(|e| unusable(what, e))?;
    let usable = |f: SampleFormat| {
        matches!(
            f,
            SampleFormat::F32 | SampleFormat::I16 | SampleFormat::I32 | SampleFormat::U16
        )
    };
    let exact = ranges
        .iter()
        .filter(|r| usable(r.sample_format()) && r.contains_rate(rate))
        .min_by_key(|r| {
            (
                r.channels() != channels,
                r.sample_format() != SampleFormat::F32,
            )
        });
    let chosen = match exact {
        Some(r) => r.with_sample_rate(rate),
        None => {
            let default = if input {
                device.default_input_config()
            } else {
                device.default_output_config()
            }
            .map_err(|e| unusable(what, e))?;
            if !usable(default.sample_format()) {
                return Err(AudioError::Device(format!(
                    "the {what} only offers {} samples, which Hark does not handle",
                    default.sample_format()
                )));
            }
            default
        }
    };
    let mut config = chosen.config();
    // A small fixed buffer: the audio system's defaults can be seconds long (PulseAudio's).
    let frames = (config.sample_rate as f32 * buffer_ms / 1000.0)
        .round()
        .max(16.0) as u32;
    config.buffer_size = cpal::BufferSize::Fixed(match chosen.buffer_size() {
        cpal::SupportedBufferSize::Range { min, max } => frames.clamp(*min, *max),
        cpal::SupportedBufferSize::Unknown => frames,
    });
    Ok((config, chosen.sample_format()))
}

/// A streaming resampler for a continuous signal: state carries over between calls.
struct StreamResampler {
    inner: SincFixedIn<f32>,
    pending: Vec<f32>,
    from: u32,
    to: u32,
}

impl StreamResampler {
    const CHUNK: usize = 512;

    fn new(from: u32, to: u32) -> Result<Self, AudioError> {
        let params = crate::resample::sinc_params();
        let inner = SincFixedIn::new(to as f64 / from as f64, 1.0, params, Self::CHUNK, 1)
            .map_err(|e| AudioError::Resample {
                from,
                to,
                detail: e.to_string(),
            })?;
        Ok(Self {
            inner,
            pending: Vec::with_capacity(Self::CHUNK * 2),
            from,
            to,
        })
    }

    fn push(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<(), AudioError> {
        self.pending.extend_from_slice(input);
        let mut start = 0;
        while self.pending.len() - start >= Self::CHUNK {
            let produced = self
                .inner
                .process(&[&self.pending[start..start + Self::CHUNK]], None)
                .map_err(|e| AudioError::Resample {
                    from: self.from,
                    to: self.to,
                    detail: e.to_string(),
                })?;
            out.extend_from_slice(&produced[0]);
            start += Self::CHUNK;
        }
        self.pending.drain(..start);
        Ok(())
    }
}

/// An open microphone stream. Keep it alive (on the thread that opened it) while reading.
pub struct Microphone {
    _stream: cpal::Stream,
    pub name: String,
    pub sample_rate: u32,
    pub channels: u16,
    pub stats: Arc<DeviceStats>,
}

/// The microphone's other end: 16 kHz mono audio, a window at a time.
pub struct MicrophoneReader {
    ring: HeapCons<f32>,
    channels: usize,
    resampler: Option<StreamResampler>,
    interleaved: Vec<f32>,
    mono: Vec<f32>,
    ready: Vec<f32>,
}

impl MicrophoneReader {
    /// The next `len` samples of 16 kHz mono, waiting up to `timeout` for them.
    pub fn read(&mut self, len: usize, timeout: Duration) -> Result<Option<Vec<f32>>, AudioError> {
        let deadline = Instant::now() + timeout;
        while self.ready.len() < len {
            let available = self.ring.occupied_len();
            if available < self.channels {
                if Instant::now() >= deadline {
                    return Ok(None);
                }
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            let frames = available / self.channels;
            self.interleaved.resize(frames * self.channels, 0.0);
            let got = self.ring.pop_slice(&mut self.interleaved);
            self.mono.clear();
            self.mono.extend(
                self.interleaved[..got]
                    .chunks_exact(self.channels)
                    .map(|frame| frame.iter().sum::<f32>() / self.channels as f32),
            );
            match self.resampler.as_mut() {
                Some(r) => r.push(&self.mono, &mut self.ready)?,
                None => self.ready.extend_from_slice(&self.mono),
            }
        }
        let rest = self.ready.split_off(len);
        Ok(Some(std::mem::replace(&mut self.ready, rest)))
    }

    /// Drops what has been captured so far (a conversation starts from now); returns how many
    /// samples that was.
    pub fn clear(&mut self) -> usize {
        self.ready.clear();
        self.ring.clear()
    }
}

/// Checks that a microphone (`input`) or speaker can be opened, without opening it: its name.
pub fn probe(name: Option<&str>, input: bool) -> Result<String, AudioError> {
    quietly(|| {
        let device = find_device(name, input)?;
        choose_config(&device, input, (ASR_SAMPLE_RATE, 1), 20.0)?;
        Ok(device_id(&device))
    })
}

/// Opens a microphone (`name`: a device id, part of a device's description, or the default
/// one) for 16 kHz mono, delivered in buffers of `buffer_ms`.
pub fn open_microphone(
    name: Option<&str>,
    buffer_ms: f32,
) -> Result<(Microphone, MicrophoneReader), AudioError> {
    quietly(|| open_microphone_inner(name, buffer_ms))
}

fn open_microphone_inner(
    name: Option<&str>,
    buffer_ms: f32,
) -> Result<(Microphone, MicrophoneReader), AudioError> {
    let device = find_device(name, true)?;
    let (config, format) = choose_config(&device, true, (ASR_SAMPLE_RATE, 1), buffer_ms)?;
    let capacity = config.sample_rate as usize * config.channels as usize * RING_SECONDS;
    let (producer, consumer) = HeapRb::<f32>::new(capacity).split();
    let stats = Arc::new(DeviceStats::default());
    let stream = match format {
        SampleFormat::F32 => build_input::<f32>(&device, &config, producer, &stats),
        SampleFormat::I16 => build_input::<i16>(&device, &config, producer, &stats),
        SampleFormat::I32 => build_input::<i32>(&device, &config, producer, &stats),
        _ => build_input::<u16>(&device, &config, producer, &stats),
    }?;
    stream
        .play()
        .map_err(|e| device_error("starting the microphone", e))?;
    let resampler = (config.sample_rate != ASR_SAMPLE_RATE)
        .then(|| StreamResampler::new(config.sample_rate, ASR_SAMPLE_RATE))
        .transpose()?;
    let mic = Microphone {
        _stream: stream,
        name: device_id(&device),
        sample_rate: config.sample_rate,
        channels: config.channels,
        stats,
    };
    let reader = MicrophoneReader {
        ring: consumer,
        channels: config.channels as usize,
        resampler,
        interleaved: Vec::new(),
        mono: Vec::new(),
        ready: Vec::new(),
    };
    Ok((mic, reader))
}

fn build_input<T>(
    device: &cpal::Device,
    config: &StreamConfig,
    mut ring: HeapProd<f32>,
    stats: &Arc<DeviceStats>,
) -> Result<cpal::Stream, AudioError>
where
    T: SizedSample,
    f32: FromSample<T>,
{
    let (counts, errors) = (Arc::clone(stats), Arc::clone(stats));
    device
        .build_input_stream::<T, _, _>(
            *config,
            // Real-time: no allocation, lock or log.
            move |data: &[T], _: &cpal::InputCallbackInfo| {
                let pushed = ring.push_iter(data.iter().map(|s| f32::from_sample(*s)));
                if pushed < data.len() {
                    counts
                        .overruns
                        .fetch_add((data.len() - pushed) as u64, Ordering::Relaxed);
                }
            },
            move |err| {
                errors.note_error(err);
            },
            None,
        )
        .map_err(|e| device_error("opening the microphone", e))
}

/// What the speaker's callback shares with its writer.
#[derive(Debug, Default)]
struct SpeakerShared {
    /// Bumped by [`SpeakerWriter::stop`]: the callback fades out and drops what is queued.
    stops: AtomicU64,
    /// The writer has more of the current reply to come: running dry now is an underrun.
    more_coming: AtomicBool,
    /// Recent playback level (RMS, f32 bits), held and decaying, for the echo gate.
    level: AtomicU32,
    /// The device's latency from callback to the sound leaving it, µs.
    latency_us: AtomicU64,
}

/// An open speaker stream. Keep it alive (on the thread that opened it) while writing.
pub struct Speaker {
    _stream: cpal::Stream,
    pub name: String,
    pub sample_rate: u32,
    pub channels: u16,
    pub stats: Arc<DeviceStats>,
}

/// The speaker's other end: queues mono audio at the source's rate.
pub struct SpeakerWriter {
    ring: HeapProd<f32>,
    shared: Arc<SpeakerShared>,
    source_rate: u32,
    device_rate: u32,
}

/// Reads the speaker's recent playback level from any thread (for the echo gate).
#[derive(Clone, Debug, Default)]
pub struct PlaybackLevel(Arc<SpeakerShared>);

impl PlaybackLevel {
    /// Sets the level, for an output that is not a sound card (a speaker's callback sets its
    /// own).
    pub fn set(&self, rms: f32) {
        self.0.level.store(rms.to_bits(), Ordering::Relaxed);
    }

    /// RMS of what the speaker played over roughly the last few hundred ms.
    pub fn get(&self) -> f32 {
        f32::from_bits(self.0.level.load(Ordering::Relaxed))
    }
}

impl SpeakerWriter {
    /// Queues `samples` (mono, the source's rate) after what is already queued, waiting while
    /// the ring buffer is full.
    pub fn write(&mut self, samples: &[f32]) -> Result<(), AudioError> {
        if samples.is_empty() {
            return Ok(());
        }
        self.shared.more_coming.store(true, Ordering::Relaxed);
        let resampled;
        let mut rest: &[f32] = if self.source_rate == self.device_rate {
            samples
        } else {
            // Whole pieces, delay-compensated: a reply's pieces join where they should.
            resampled = crate::resample(
                &AudioBuffer::new(samples.to_vec(), self.source_rate),
                self.device_rate,
            )?
            .samples;
            &resampled
        };
        let stops = self.shared.stops.load(Ordering::Relaxed);
        while !rest.is_empty() {
            let pushed = self.ring.push_slice(rest);
            rest = &rest[pushed..];
            if !rest.is_empty() {
                if self.shared.stops.load(Ordering::Relaxed) != stops {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(())
    }

    /// The current reply has no more audio coming: running dry from now on is its end.
    pub fn end_of_reply(&self) {
        self.shared.more_coming.store(false, Ordering::Relaxed);
    }

    /// Stops at once: what is queued fades out over 10 ms and is dropped.
    pub fn stop(&self) {
        self.shared.more_coming.store(false, Ordering::Relaxed);
        self.shared.stops.fetch_add(1, Ordering::Relaxed);
    }

    /// How much audio is queued and not yet taken by the device.
    pub fn queued(&self) -> Duration {
        Duration::from_secs_f64(self.ring.occupied_len() as f64 / self.device_rate as f64)
    }

    /// The device's own latency: from the callback taking a sample to it being heard.
    pub fn latency(&self) -> Duration {
        Duration::from_micros(self.shared.latency_us.load(Ordering::Relaxed))
    }

    pub fn level(&self) -> PlaybackLevel {
        PlaybackLevel(Arc::clone(&self.shared))
    }
}

/// Opens a speaker (`name`: a device id, part of a device's description, or the default one)
/// for mono audio at `source_rate`, played on every channel, with a buffer of `buffer_ms`.
pub fn open_speaker(
    name: Option<&str>,
    source_rate: u32,
    buffer_ms: f32,
) -> Result<(Speaker, SpeakerWriter), AudioError> {
    quietly(|| open_speaker_inner(name, source_rate, buffer_ms))
}

fn open_speaker_inner(
    name: Option<&str>,
    source_rate: u32,
    buffer_ms: f32,
) -> Result<(Speaker, SpeakerWriter), AudioError> {
    let device = find_device(name, false)?;
    let (config, format) = choose_config(&device, false, (source_rate, 1), buffer_ms)?;
    let (producer, consumer) =
        HeapRb::<f32>::new(config.sample_rate as usize * RING_SECONDS).split();
    let stats = Arc::new(DeviceStats::default());
    let shared = Arc::new(SpeakerShared::default());
    let args = (&device, &config, consumer, &stats, &shared);
    let stream = match format {
        SampleFormat::F32 => build_output::<f32>(args),
        SampleFormat::I16 => build_output::<i16>(args),
        SampleFormat::I32 => build_output::<i32>(args),
        _ => build_output::<u16>(args),
    }?;
    stream
        .play()
        .map_err(|e| device_error("starting the speaker", e))?;
    let speaker = Speaker {
        _stream: stream,
        name: device_id(&device),
        sample_rate: config.sample_rate,
        channels: config.channels,
        stats,
    };
    let writer = SpeakerWriter {
        ring: producer,
        shared,
        source_rate,
        device_rate: config.sample_rate,
    };
    Ok((speaker, writer))
}

type OutputArgs<'a> = (
    &'a cpal::Device,
    &'a StreamConfig,
    HeapCons<f32>,
    &'a Arc<DeviceStats>,
    &'a Arc<SpeakerShared>,
);

fn build_output<T>(
    (device, config, mut ring, stats, shared): OutputArgs<'_>,
) -> Result<cpal::Stream, AudioError>
where
    T: SizedSample + FromSample<f32>,
{
    let (counts, errors) = (Arc::clone(stats), Arc::clone(stats));
    let shared = Arc::clone(shared);
    let channels = config.channels.max(1) as usize;
    let rate = config.sample_rate as f32;
    let fade_len = (rate * FADE_MS / 1000.0).max(1.0) as usize;
    let mut stops_seen = 0u64;
    let mut fading = 0usize;
    let mut level = 0f32;
    device
        .build_output_stream::<T, _, _>(
            *config,
            // Real-time: no allocation, lock or log.
            move |data: &mut [T], info: &cpal::OutputCallbackInfo| {
                let stops = shared.stops.load(Ordering::Relaxed);
                if stops != stops_seen {
                    stops_seen = stops;
                    fading = fade_len;
                }
                let mut energy = 0f32;
                let mut ran_dry = false;
                let frames = data.len() / channels;
                for frame in data.chunks_exact_mut(channels) {
                    let mut s = match ring.try_pop() {
                        Some(s) => s,
                        None => {
                            ran_dry = true;
                            0.0
                        }
                    };
                    if fading > 0 {
                        s *= fading as f32 / fade_len as f32;
                        fading -= 1;
                        if fading == 0 {
                            ring.clear();
                        }
                    }
                    energy += s * s;
                    let out = T::from_sample(s);
                    frame.iter_mut().for_each(|x| *x = out);
                }
                if ran_dry && shared.more_coming.load(Ordering::Relaxed) {
                    counts.underruns.fetch_add(1, Ordering::Relaxed);
                }
                let rms = (energy / frames.max(1) as f32).sqrt();
                let decay = LEVEL_DECAY_PER_S.powf(frames as f32 / rate);
                level = rms.max(level * decay);
                shared.level.store(level.to_bits(), Ordering::Relaxed);
                let t = info.timestamp();
                let lag = t.playback.duration_since(t.callback).as_micros() as u64;
                shared.latency_us.store(lag, Ordering::Relaxed);
            },
            move |err| {
                errors.note_error(err);
            },
            None,
        )
        .map_err(|e| device_error("opening the speaker", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stereo_48k_microphone_reads_as_16k_mono_windows() {
        // What a 48 kHz stereo callback pushes: a 440 Hz tone on the left, silence on the right.
        let rate = 48_000;
        let (mut producer, consumer) = HeapRb::<f32>::new(rate * 2 * 2).split();
        for i in 0..rate {
            let s = (i as f32 * 440.0 * std::f32::consts::TAU / rate as f32).sin() * 0.5;
            producer.try_push(s).unwrap();
            producer.try_push(0.0).unwrap();
        }
        let mut reader = MicrophoneReader {
            ring: consumer,
            channels: 2,
            resampler: Some(StreamResampler::new(rate as u32, ASR_SAMPLE_RATE).unwrap()),
            interleaved: Vec::new(),
            mono: Vec::new(),
            ready: Vec::new(),
        };
        let mut heard = Vec::new();
        while let Some(window) = reader.read(512, Duration::from_millis(10)).unwrap() {
            assert_eq!(window.len(), 512);
            heard.extend(window);
        }
        // A second of audio, less what the resampler still holds.
        assert!(
            heard.len() >= 15_000 && heard.len() <= 16_000,
            "{}",
            heard.len()
        );
        // Mixed down: half the tone's level (RMS 0.5 / √2 / 2); still 440 Hz (zero crossings).
        let body = &heard[1_000..heard.len() - 1_000];
        let rms = (body.iter().map(|s| s * s).sum::<f32>() / body.len() as f32).sqrt();
        assert!((rms - 0.1768).abs() < 0.01, "rms {rms}");
        let crossings = body
            .windows(2)
            .filter(|w| w[0] < 0.0 && w[1] >= 0.0)
            .count();
        let hz = crossings as f32 * 16_000.0 / body.len() as f32;
        assert!((hz - 440.0).abs() < 5.0, "{hz} Hz");
        // Nothing left: the reader waits, then says so.
        assert!(reader
            .read(512, Duration::from_millis(5))
            .unwrap()
            .is_none());
    }

    #[test]
    fn stream_resampler_matches_the_whole_file_resampler() {
        // 48 kHz → 16 kHz fed in odd-sized pieces equals resampling the whole signal.
        let rate = 48_000;
        let signal: Vec<f32> = (0..rate)
            .map(|i| (i as f32 * 440.0 * std::f32::consts::TAU / rate as f32).sin() * 0.5)
            .collect();
        let whole = crate::resample(&AudioBuffer::new(signal.clone(), rate), 16_000).unwrap();
        let mut r = StreamResampler::new(rate, 16_000).unwrap();
        let mut out = Vec::new();
        for piece in signal.chunks(777) {
            r.push(piece, &mut out).unwrap();
        }
        assert!(out.len() > 15_000 && out.len() <= 16_000, "{}", out.len());
        let err = out
            .iter()
            .zip(&whole.samples)
            .skip(200)
            .take(out.len() - 400)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-3, "max difference {err}");
    }
}
