//! A structural check of a whisper.cpp ggml file before whisper.cpp reads it: whisper.cpp
//! trusts the sizes in the file and throws C++ exceptions (which abort a Rust process) on a
//! damaged one, so we walk the headers first and refuse anything that does not add up.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use crate::mel::MelFilters;

const MAGIC: u32 = 0x6767_6d6c;

/// Bytes per element for the ggml types a Whisper file may hold (f32, f16, and the quantized
/// types whisper.cpp can load), as (type, block size, bytes per block).
fn type_size(t: i32) -> Option<(u64, u64)> {
    Some(match t {
        0 => (1, 4),
        1 => (1, 2),
        2 => (32, 18),    // q4_0
        3 => (32, 20),    // q4_1
        6 => (32, 22),    // q5_0
        7 => (32, 24),    // q5_1
        8 => (32, 34),    // q8_0
        10 => (256, 84),  // q2_k
        11 => (256, 110), // q3_k
        12 => (256, 144), // q4_k
        13 => (256, 176), // q5_k
        14 => (256, 210), // q6_k
        _ => return None,
    })
}

struct Reader {
    inner: BufReader<File>,
    len: u64,
}

impl Reader {
    fn i32(&mut self) -> Result<i32, String> {
        let mut b = [0u8; 4];
        self.inner
            .read_exact(&mut b)
            .map_err(|_| "the file ends early".to_string())?;
        Ok(i32::from_le_bytes(b))
    }
    fn count(&mut self, what: &str, max: i32) -> Result<u64, String> {
        let v = self.i32()?;
        if !(0..=max).contains(&v) {
            return Err(format!("{what} is {v}, outside 0..={max}"));
        }
        Ok(v as u64)
    }
    fn skip(&mut self, n: u64) -> Result<(), String> {
        let pos = self.inner.stream_position().map_err(|e| e.to_string())?;
        if pos.checked_add(n).is_none_or(|end| end > self.len) {
            return Err("the file ends early".into());
        }
        self.inner
            .seek(SeekFrom::Current(n as i64))
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

/// Checks the header, mel filters, vocabulary and every tensor header of a ggml Whisper file;
/// returns its mel filter bank.
pub fn check(path: &Path) -> Result<MelFilters, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut r = Reader {
        inner: BufReader::new(file),
        len,
    };
    if r.i32()? as u32 != MAGIC {
        return Err("not a ggml file (bad magic)".into());
    }
    let names = [
        "n_vocab",
        "n_audio_ctx",
        "n_audio_state",
        "n_audio_head",
        "n_audio_layer",
        "n_text_ctx",
        "n_text_state",
        "n_text_head",
        "n_text_layer",
        "n_mels",
    ];
    for name in names {
        let v = r.i32()?;
        if !(1..=1_000_000).contains(&v) {
            return Err(format!("{name} is {v}"));
        }
    }
    let _ftype = r.i32()?;
    let n_mel = r.count("mel filter count", 1024)?;
    let n_fft = r.count("mel filter width", 4096)?;
    let pos = r.inner.stream_position().map_err(|e| e.to_string())?;
    if pos.saturating_add(n_mel * n_fft * 4) > len {
        return Err("the file ends early".into());
    }
    let mut bytes = vec![0u8; (n_mel * n_fft * 4) as usize];
    r.inner
        .read_exact(&mut bytes)
        .map_err(|_| "the file ends early".to_string())?;
    let filters = MelFilters {
        n_mel: n_mel as usize,
        weights: bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    };
    let n_tokens = r.count("vocabulary size", 1_000_000)?;
    for _ in 0..n_tokens {
        let n = r.count("token length", 4096)?;
        r.skip(n)?;
    }
    let mut tensors = 0;
    while r.inner.stream_position().map_err(|e| e.to_string())? < len {
        let n_dims = r.count("tensor rank", 4)?;
        let name_len = r.count("tensor name length", 1024)?;
        let ttype = r.i32()?;
        let (block, bytes) =
            type_size(ttype).ok_or_else(|| format!("unknown tensor type {ttype}"))?;
        let mut elements: u64 = 1;
        for _ in 0..n_dims {
            elements = elements.saturating_mul(r.count("tensor dimension", 1 << 24)?.max(1));
        }
        r.skip(name_len)?;
        r.skip(elements.div_ceil(block).saturating_mul(bytes))?;
        tensors += 1;
    }
    if tensors == 0 {
        return Err("the file holds no tensors".into());
    }
    Ok(filters)
}
