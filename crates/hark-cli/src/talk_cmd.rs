//! `hark talk`: talk to Hark through the microphone and hear it answer.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use crossbeam_channel::{unbounded, Receiver};
use hark_audio::device::{self, DeviceStats};
use hark_core::TurnRecord;
use hark_models::ModelStore;
use hark_pipeline::live::{EchoGate, LiveControl, LiveEvent, LiveIo};
use hark_pipeline::Pipeline;

use crate::run_cmd::ConversationArgs;

#[derive(Debug, Args)]
pub struct TalkArgs {
    /// List the sound devices (and their default formats) and exit.
    #[arg(long)]
    list_devices: bool,
    /// The microphone: a device id from `--list-devices` ("pulse", "hw:CARD=…") or part of a
    /// device's description (default: the system's default input).
    #[arg(long, value_name = "DEVICE")]
    input: Option<String>,
    /// The speaker, likewise (default: the system's default output).
    #[arg(long, value_name = "DEVICE")]
    output: Option<String>,
    /// Append one JSON record per turn (transcript, reply, every latency span) to this file (its
    /// directory is made if need be).
    #[arg(long, value_name = "T.jsonl")]
    trace: Option<PathBuf>,
    /// Show what you are saying as you say it (partial transcripts). On two cores this costs
    /// 200-400 ms of reply latency: a partial decode in flight when you stop cannot be cut short.
    #[arg(long)]
    partials: bool,
    /// Do not gate the microphone while Hark speaks (with headphones, or an echo-cancelling
    /// microphone). With the gate, while Hark speaks the microphone is heard as silence unless it
    /// is clearly louder than Hark's own echo (see --echo-margin-db): speak up to interrupt.
    #[arg(long)]
    no_echo_gate: bool,
    /// How much louder than Hark's echo (its playback times the echo path's gain, learned as it
    /// speaks) your voice must be to get through the gate and interrupt, dB.
    #[arg(
        long,
        default_value_t = 10.0,
        value_name = "DB",
        allow_negative_numbers = true
    )]
    echo_margin_db: f32,
    /// The sound card's buffer, ms (20 to 500): smaller is quicker, too small crackles on a
    /// busy machine.
    #[arg(long, default_value_t = 20.0, value_name = "MS")]
    audio_buffer_ms: f32,
    /// Stop after this many turns have been answered (default: talk until you quit).
    #[arg(long, value_name = "N")]
    turns: Option<usize>,
    #[command(flatten)]
    conversation_args: ConversationArgs,
}

pub fn run(args: TalkArgs, store: &ModelStore) -> Result<()> {
    if args.list_devices {
        return list_devices();
    }
    let control = Arc::new(LiveControl::default());
    // Ctrl-C before the conversation starts (loading, fetching) quits at once; during it, the
    // conversation ends cleanly (the trace is complete); a second Ctrl-C quits at once.
    let talking = Arc::new(AtomicBool::new(false));
    let (on_signal, talking_now) = (Arc::clone(&control), Arc::clone(&talking));
    ctrlc::set_handler(move || {
        if !talking_now.load(Ordering::SeqCst) || on_signal.is_stopped() {
            std::process::exit(130);
        }
        on_signal.stop();
    })
    .context("installing the Ctrl-C handler")?;

    // A missing sound card is found before the models load.
    device::probe(args.output.as_deref(), false)?;
    device::probe(args.input.as_deref(), true)?;
    let config = args.conversation_args.config(store, args.partials)?;
    eprintln!("hark: loading the models…");
    let mut pipeline = Pipeline::load(config).context("loading the models")?;
    eprintln!(
        "hark: models loaded and warmed in {:.0} ms",
        pipeline.startup_ms()
    );
    let buffer_ms = args.audio_buffer_ms.clamp(20.0, 500.0);
    let (speaker, speaker_writer) = device::open_speaker(
        args.output.as_deref(),
        pipeline.voice_sample_rate(),
        buffer_ms,
    )
    .context("opening the speaker")?;
    let (mic, mut mic_reader) = device::open_microphone(args.input.as_deref(), buffer_ms)
        .context("opening the microphone")?;
    let echo_gate =
        (!args.no_echo_gate).then(|| EchoGate::new(speaker_writer.level(), args.echo_margin_db));

    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let mut out = std::io::stdout();
    writeln!(
        out,
        "hark: listening on {} ({} Hz, {} ch), speaking on {} ({} Hz, {} ch).{}",
        mic.name,
        mic.sample_rate,
        mic.channels,
        speaker.name,
        speaker.sample_rate,
        speaker.channels,
        if interactive {
            " Keys: m mute, space interrupt, q quit."
        } else {
            " Ctrl-C to quit."
        }
    )?;
    let trace = crate::run_cmd::open_trace(args.trace.as_deref())?;

    let (events_tx, events_rx) = unbounded();
    let view_control = Arc::clone(&control);
    let max_turns = args.turns;
    let view = std::thread::spawn(move || show(&events_rx, trace, &view_control, max_turns));
    let raw = interactive && crossterm::terminal::enable_raw_mode().is_ok();
    let keys = raw.then(|| {
        let control = Arc::clone(&control);
        std::thread::spawn(move || read_keys(&control))
    });

    talking.store(true, Ordering::SeqCst);
    // What the microphone captured while the rest was opening is not part of the conversation
    // (nor are the overruns it caused).
    mic_reader.clear();
    mic.stats
        .overruns
        .store(0, std::sync::atomic::Ordering::Relaxed);
    let io = LiveIo {
        input: Box::new(mic_reader),
        output: Some(Box::new(speaker_writer)),
        events: Some(events_tx),
        control: Arc::clone(&control),
        echo_gate,
    };
    let result = pipeline.run_live(io, "microphone");
    // The stages are done: the key reader and the view wind down.
    control.stop();
    if raw {
        let _ = crossterm::terminal::disable_raw_mode();
    }
    if let Some(keys) = keys {
        let _ = keys.join();
    }
    let view_result = view
        .join()
        .map_err(|_| anyhow::anyhow!("the terminal view panicked"))?;
    let (records, _timeline, stats) = result.context("the conversation")?;
    view_result.context("writing the trace")?;

    let failed = records.iter().filter(|r| r.error.is_some()).count();
    let mut out = std::io::stdout();
    writeln!(
        out,
        "hark: {} turn(s); microphone: {} overrun sample(s), {} error(s); speaker: {} underrun(s), \
         {} error(s); {} window(s) echo-gated, {} late reply piece(s)",
        records.len(),
        mic.stats.overruns(),
        mic.stats.errors(),
        speaker.stats.underruns(),
        speaker.stats.errors(),
        stats.echo_gated,
        stats.late_pieces
    )?;
    warn_device(&mic.stats, "microphone");
    warn_device(&speaker.stats, "speaker");
    if failed > 0 {
        bail!("{failed} turn(s) failed (see above)");
    }
    Ok(())
}

fn warn_device(stats: &DeviceStats, what: &str) {
    if stats.errors() > 0 {
        eprintln!(
            "hark: warning: the {what} reported {} error(s), the first: {}",
            stats.errors(),
            stats.first_error().unwrap_or("?")
        );
    }
}

fn list_devices() -> Result<()> {
    let devices = device::list_devices().context("listing sound devices")?;
    if devices.is_empty() {
        println!("no sound devices (no sound card, or no permission to use one)");
        return Ok(());
    }
    for d in devices {
        let mark = |default: bool| if default { " (default)" } else { "" };
        println!("{}  {}", d.id, d.name);
        if let Some(input) = &d.input {
            println!("    input:  {input}{}", mark(d.default_input));
        }
        if let Some(output) = &d.output {
            println!("    output: {output}{}", mark(d.default_output));
        }
    }
    Ok(())
}

/// Keys, read in raw mode: m mutes, space (or i) interrupts, q / Esc / Ctrl-C quit.
fn read_keys(control: &LiveControl) {
    use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
    while !control.is_stopped() {
        match event::poll(Duration::from_millis(100)) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(_) => return,
        }
        let Ok(Event::Key(key)) = event::read() else {
            continue;
        };
        if key.kind != KeyEventKind::Press {
            continue;
        }
        match key.code {
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => control.stop(),
            KeyCode::Char('q') | KeyCode::Esc => control.stop(),
            KeyCode::Char('m') => {
                let muted = control.toggle_mute();
                print!(
                    "\r\n[{}]\r\n",
                    if muted {
                        "microphone muted (m to unmute)"
                    } else {
                        "microphone on"
                    }
                );
                let _ = std::io::stdout().flush();
            }
            KeyCode::Char(' ') | KeyCode::Char('i') => control.interrupt(),
            _ => {}
        }
    }
}

/// The terminal view: what you say, the reply as it streams, each turn's latency. Writes each
/// finished turn's record to the trace as it comes.
fn show(
    events: &Receiver<LiveEvent>,
    mut trace: Option<BufWriter<File>>,
    control: &LiveControl,
    max_turns: Option<usize>,
) -> std::io::Result<()> {
    let tty = std::io::stdout().is_terminal();
    // Raw mode needs \r\n; a pipe gets plain lines.
    let nl = if tty { "\r\n" } else { "\n" };
    let (bold, dim, reset) = if tty {
        ("\x1b[1m", "\x1b[2m", "\x1b[0m")
    } else {
        ("", "", "")
    };
    let mut out = std::io::stdout();
    let mut answered = 0usize;
    let mut line = Line::Empty;
    for event in events {
        match event {
            LiveEvent::SpeechStarted => {}
            LiveEvent::Partial(text) => {
                if tty {
                    if line == Line::Reply {
                        write!(out, "{nl}")?;
                    }
                    write!(out, "\r\x1b[2K{dim}you: {text}…{reset}")?;
                    line = Line::Partial;
                }
            }
            LiveEvent::Heard { text, .. } => {
                match line {
                    Line::Partial => write!(out, "\r\x1b[2K")?,
                    Line::Reply => write!(out, "{nl}")?,
                    Line::Empty => {}
                }
                write!(out, "{bold}you:{reset} {text}{nl}{bold}hark:{reset}")?;
                line = Line::Reply;
            }
            LiveEvent::Reply { text, .. } => {
                if line != Line::Reply {
                    write!(out, "{nl}{bold}hark:{reset} …")?;
                    line = Line::Reply;
                }
                write!(out, " {text}")?;
            }
            LiveEvent::Interrupted { .. } => {
                if line == Line::Reply {
                    write!(out, " {dim}[interrupted]{reset}")?;
                } else {
                    write!(out, "{dim}[interrupted]{reset}{nl}")?;
                }
            }
            LiveEvent::Warning(text) => {
                end_line(&mut out, &mut line, tty, nl)?;
                write!(out, "{dim}[{text}]{reset}{nl}")?;
            }
            LiveEvent::TurnDone(rec) => {
                end_line(&mut out, &mut line, tty, nl)?;
                write_turn(&mut out, &rec, nl, dim, reset)?;
                if let Some(t) = trace.as_mut() {
                    serde_json::to_writer(&mut *t, &*rec)?;
                    t.write_all(b"\n")?;
                    t.flush()?;
                }
                answered += 1;
                if max_turns.is_some_and(|n| answered >= n) {
                    control.finish();
                }
            }
        }
        out.flush()?;
    }
    end_line(&mut out, &mut line, tty, nl)?;
    Ok(())
}

/// What the cursor's line holds: a partial transcript is redrawn in place, a reply grows.
#[derive(PartialEq)]
enum Line {
    Empty,
    Partial,
    Reply,
}

/// Ends the cursor's line: a reply stays, a partial transcript is wiped (it will be redrawn).
fn end_line(out: &mut impl Write, line: &mut Line, tty: bool, nl: &str) -> std::io::Result<()> {
    match line {
        Line::Reply => write!(out, "{nl}")?,
        Line::Partial if tty => write!(out, "\r\x1b[2K")?,
        _ => {}
    }
    *line = Line::Empty;
    Ok(())
}

fn write_turn(
    out: &mut impl Write,
    rec: &TurnRecord,
    nl: &str,
    dim: &str,
    reset: &str,
) -> std::io::Result<()> {
    if let Some(e) = &rec.error {
        return write!(out, "  error: {e}{nl}");
    }
    let s = &rec.spans;
    write!(
        out,
        "  {dim}v2v {:.0} ms = endpoint {:.0} + asr_final {:.0} + llm_ttft {:.0} + first_clause {:.0} + tts_first_audio {:.0} + output {:.0}{reset}{nl}",
        rec.v2v_ms, s.endpoint, s.asr_final, s.llm_ttft, s.first_clause, s.tts_first_audio, s.output
    )
}
