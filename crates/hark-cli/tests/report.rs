//! `hark report` on records from real `hark run` calls, and on hand-broken files.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// Records from a real run: two single-question files and one two-turn conversation.
fn real_trace(dir: &Path) -> std::path::PathBuf {
    let data = testdata();
    let (a, b) = (
        read_raw(&data.join("goforward.raw")),
        read_raw(&data.join("something.raw")),
    );
    write_wav(&dir.join("goforward.wav"), &a, 16_000, 1, 16, false);
    write_wav(&dir.join("something.wav"), &b, 16_000, 1, 16, false);
    let mut two = a.clone();
    two.extend(vec![0.0; 24_000]);
    two.extend(&b);
    write_wav(&dir.join("two-turns.wav"), &two, 16_000, 1, 16, false);
    let trace = dir.join("trace.jsonl");
    let out = run(hark()
        .arg("run")
        .args(["goforward.wav", "something.wav", "two-turns.wav"].map(|f| dir.join(f)))
        .arg("--out")
        .arg(dir.join("replies"))
        .arg("--trace")
        .arg(&trace)
        .args(["--max-reply-tokens", "24"]));
    assert!(out.status.success());
    assert_eq!(read_trace(&trace).len(), 4);
    trace
}

fn report(args: &[&std::ffi::OsStr]) -> std::process::Output {
    run(Command::new(env!("CARGO_BIN_EXE_hark"))
        .arg("report")
        .args(args))
}

fn chromium() -> &'static str {
    let path = "/usr/bin/chromium";
    assert!(
        Path::new(path).is_file(),
        "{path} is missing: `apt-get install chromium` (scripts/setup --test does)"
    );
    path
}

fn headless(profile: &Path) -> Command {
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

#[test]
fn tables_pages_images_and_traces_from_a_real_run() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = real_trace(tmp.path());
    let (html, svg, png, chrome) = (
        tmp.path().join("r.html"),
        tmp.path().join("r.svg"),
        tmp.path().join("r.png"),
        tmp.path().join("r.json"),
    );
    let out = report(&[
        trace.as_os_str(),
        "--html".as_ref(),
        html.as_os_str(),
        "--svg".as_ref(),
        svg.as_os_str(),
        "--png".as_ref(),
        png.as_os_str(),
        "--chrome-trace".as_ref(),
        chrome.as_os_str(),
    ]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("4 turn(s), 4 answered"), "{table}");
    for row in [
        "v2v",
        "endpoint",
        "asr_final",
        "llm_ttft",
        "first_clause",
        "tts_first_audio",
        "output",
        "tpot",
        "decode",
        "peak_memory",
    ] {
        assert!(
            table.lines().any(|l| l.starts_with(row)),
            "no `{row}` row in:\n{table}"
        );
    }
    assert!(table.contains("slowest turns:"));

    // SVG: the distributions and one waterfall per turn, each span a bar.
    let svg_text = std::fs::read_to_string(&svg).unwrap();
    assert_eq!(svg_text.matches("class=\"waterfall\"").count(), 4);
    assert_eq!(svg_text.matches("class=\"span span-asr_final\"").count(), 4);
    assert_eq!(svg_text.matches("class=\"distribution\"").count(), 1);

    // PNG: a real image with content, not a blank canvas.
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.width, 960);
    assert!(info.height > 4 * 200);
    let distinct: std::collections::HashSet<&[u8]> = buf
        .chunks(4)
        .take(info.width as usize * info.height as usize)
        .collect();
    assert!(
        distinct.len() > 20,
        "{} colours: a blank image?",
        distinct.len()
    );

    // Chrome trace: one track per stage, every span an event.
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&chrome).unwrap()).unwrap();
    let events = v["traceEvents"].as_array().unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e["ph"] == "X" && e["name"] == "llm_ttft")
            .count(),
        4
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e["name"] == "process_name")
            .count(),
        3,
        "one process per input"
    );

    // The HTML page in a real browser: the DOM it renders, and a screenshot.
    let profile = tempfile::tempdir().unwrap();
    let dom = headless(profile.path())
        .arg("--dump-dom")
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("id=\"summary\""),
        "no summary table in the rendered DOM"
    );
    assert_eq!(dom.matches("class=\"waterfall\"").count(), 4);
    assert_eq!(dom.matches("class=\"band band-user\"").count(), 4);
    assert_eq!(dom.matches("class=\"band band-reply\"").count(), 4);
    // Slowest first.
    let v2v: Vec<f64> = dom
        .split("data-v2v=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(v2v.len(), 4);
    assert!(v2v.windows(2).all(|w| w[0] >= w[1]), "{v2v:?}");
    let shot = tmp.path().join("shot.png");
    let status = headless(profile.path())
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1000,1400")
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let bytes_per_pixel = info.line_size / info.width as usize;
    let distinct: std::collections::HashSet<&[u8]> =
        buf[..info.buffer_size()].chunks(bytes_per_pixel).collect();
    assert!(
        distinct.len() > 20,
        "the page rendered as {} colours",
        distinct.len()
    );

    // Comparing a run with itself: every ratio is 1.
    let out = report(&["--compare".as_ref(), trace.as_os_str(), trace.as_os_str()]);
    assert!(out.status.success());
    let cmp = String::from_utf8_lossy(&out.stdout);
    let v2v_row = cmp.lines().find(|l| l.starts_with("v2v")).unwrap();
    assert!(v2v_row.contains("1.00×"), "{v2v_row}");
}

#[test]
fn broken_trace_files_are_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let good = serde_json::to_string(&hark_core::TurnRecord {
        schema: hark_core::SCHEMA_VERSION,
        turn: 1,
        ..Default::default()
    })
    .unwrap();
    let cases = [
        ("empty.jsonl", String::new(), "holds no turn records"),
        (
            "cut.jsonl",
            format!("{good}\n{}", &good[..good.len() / 2]),
            "line 2 is cut short",
        ),
        (
            "foreign.json",
            "{\"traceEvents\": [], \"displayTimeUnit\": \"ms\"}".to_string(),
            "no `schema` field",
        ),
        (
            "v2.jsonl",
            good.replace("\"schema\":1", "\"schema\":2"),
            "schema version 2; this hark reads version 1",
        ),
        ("binary.jsonl", "\u{1}\u{2}garbage".to_string(), "not JSON"),
    ];
    for (name, text, needle) in cases {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = report(&[path.as_os_str()]);
        assert_eq!(out.status.code(), Some(1), "{name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(needle) && stderr.contains(name),
            "{name}: {stderr}"
        );
    }
    let out = report(&[tmp.path().join("missing.jsonl").as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
}
