//! Whisper weights in CTranslate2 form (`model.bin`) → whisper.cpp's legacy ggml file.
//!
//! No package ships a ggml Whisper; they ship CTranslate2 (faster-whisper) weights. This is a
//! faithful re-implementation of whisper.cpp's `convert-pt-to-ggml.py` on CT2 input: the same
//! hyper-parameters, mel filters, vocabulary and tensor layout, with CT2's fused projections split.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use base64::Engine;
use half::f16;

use crate::ModelsError;

/// ggml's file magic, "ggml" as a little-endian u32.
const GGML_MAGIC: u32 = 0x6767_6d6c;

/// Whisper's dimensions, as whisper.cpp reads them from the file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WhisperDims {
    pub n_vocab: usize,
    pub n_audio_ctx: usize,
    pub n_audio_state: usize,
    pub n_audio_head: usize,
    pub n_audio_layer: usize,
    pub n_text_ctx: usize,
    pub n_text_state: usize,
    pub n_text_head: usize,
    pub n_text_layer: usize,
    pub n_mels: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DType {
    F32,
    I8,
    I16,
    I32,
    F16,
    Bf16,
}

impl DType {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => DType::F32,
            1 => DType::I8,
            2 => DType::I16,
            3 => DType::I32,
            4 => DType::F16,
            5 => DType::Bf16,
            _ => return None,
        })
    }
    fn size(self) -> usize {
        match self {
            DType::I8 => 1,
            DType::I16 | DType::F16 | DType::Bf16 => 2,
            DType::F32 | DType::I32 => 4,
        }
    }
}

/// One CT2 variable: shape (outermost first, as PyTorch) and raw little-endian bytes.
struct Variable {
    shape: Vec<usize>,
    dtype: DType,
    data: Vec<u8>,
}

impl Variable {
    fn to_f32(&self, name: &str) -> Result<Vec<f32>, ModelsError> {
        let d = &self.data;
        Ok(match self.dtype {
            DType::F32 => d
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::F16 => d
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::Bf16 => d
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(ModelsError::Convert(format!(
                    "`{name}` is {other:?}: quantized CTranslate2 weights are not supported, use an fp16/fp32 model"
                )))
            }
        })
    }

    fn scalar(&self, name: &str) -> Result<usize, ModelsError> {
        let d = &self.data;
        let v: i64 = match self.dtype {
            DType::I8 if !d.is_empty() => d[0] as i8 as i64,
            DType::I16 if d.len() >= 2 => i16::from_le_bytes([d[0], d[1]]) as i64,
            DType::I32 if d.len() >= 4 => i32::from_le_bytes([d[0], d[1], d[2], d[3]]) as i64,
            _ => {
                return Err(ModelsError::Convert(format!(
                    "`{name}` is not an integer scalar"
                )))
            }
        };
        usize::try_from(v).map_err(|_| ModelsError::Convert(format!("`{name}` is negative")))
    }
}

/// A bounds-checked little-endian reader over the CT2 file.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ModelsError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                ModelsError::Convert(format!(
                    "CTranslate2 file ends early (wanted {n} bytes at offset {})",
                    self.pos
                ))
            })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, ModelsError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, ModelsError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, ModelsError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self) -> Result<String, ModelsError> {
        let len = self.u16()? as usize;
        let raw = self.take(len)?;
        let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
        Ok(String::from_utf8_lossy(raw).into_owned())
    }
}

/// Reads every variable of a CTranslate2 `model.bin` (binary version 6).
fn read_ct2(bytes: &[u8]) -> Result<HashMap<String, Variable>, ModelsError> {
    let mut c = Cursor { bytes, pos: 0 };
    let version = c.u32()?;
    if version != 6 {
        return Err(ModelsError::Convert(format!(
            "CTranslate2 binary version {version} is not supported (expected 6)"
        )));
    }
    let spec = c.string()?;
    if spec != "WhisperSpec" {
        return Err(ModelsError::Convert(format!(
            "the CTranslate2 model is a `{spec}`, not a WhisperSpec"
        )));
    }
    let _revision = c.u32()?;
    let count = c.u32()? as usize;
    let mut vars = HashMap::with_capacity(count.min(4096));
    for _ in 0..count {
        let name = c.string()?;
        let rank = c.u8()? as usize;
        let mut shape = Vec::with_capacity(rank);
        for _ in 0..rank {
            shape.push(c.u32()? as usize);
        }
        let code = c.u8()?;
        let dtype = DType::from_code(code)
            .ok_or_else(|| ModelsError::Convert(format!("`{name}` has unknown dtype {code}")))?;
        let nbytes = c.u32()? as usize;
        let expected = shape
            .iter()
            .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d));
        if expected != Some(nbytes) {
            return Err(ModelsError::Convert(format!(
                "`{name}`: shape {shape:?} of {dtype:?} does not match {nbytes} bytes"
            )));
        }
        let data = c.take(nbytes)?.to_vec();
        vars.insert(name, Variable { shape, dtype, data });
    }
    Ok(vars)
}

/// A tensor as whisper.cpp will hold it: PyTorch-order shape, f32 values, and the stored type.
struct Tensor {
    name: String,
    shape: Vec<usize>,
    values: Vec<f32>,
    f16: bool,
}

struct Builder<'a> {
    vars: &'a HashMap<String, Variable>,
    out: Vec<Tensor>,
}

impl Builder<'_> {
    fn var(&self, name: &str) -> Result<&Variable, ModelsError> {
        self.vars
            .get(name)
            .ok_or_else(|| ModelsError::Convert(format!("the CTranslate2 model lacks `{name}`")))
    }

    /// Rows `[from, to)` of a 2-D (or 1-D) variable.
    fn rows(
        &self,
        name: &str,
        part: usize,
        parts: usize,
    ) -> Result<(Vec<usize>, Vec<f32>), ModelsError> {
        let v = self.var(name)?;
        let all = v.to_f32(name)?;
        let rows = v.shape.first().copied().unwrap_or(1);
        if rows % parts != 0 {
            return Err(ModelsError::Convert(format!(
                "`{name}` cannot split {rows} rows in {parts}"
            )));
        }
        let per = rows / parts;
        let row_len = all.len() / rows.max(1);
        let mut shape = v.shape.clone();
        if let Some(first) = shape.first_mut() {
            *first = per;
        }
        Ok((
            shape,
            all[part * per * row_len..(part + 1) * per * row_len].to_vec(),
        ))
    }

    fn push(&mut self, ggml: &str, shape: Vec<usize>, values: Vec<f32>) {
        // As convert-pt-to-ggml.py: matrices and convolutions in f16; vectors in f32.
        let f16 = shape.len() >= 2;
        self.out.push(Tensor {
            name: ggml.to_string(),
            shape,
            values,
            f16,
        });
    }

    fn copy(&mut self, ct2: &str, ggml: &str) -> Result<(), ModelsError> {
        let (shape, values) = self.rows(ct2, 0, 1)?;
        self.push(ggml, shape, values);
        Ok(())
    }

    /// A 2-D tensor stored in f32 (positional embeddings), or a conv bias as shape [n, 1].
    fn copy_f32(
        &mut self,
        ct2: &str,
        ggml: &str,
        shape: Option<Vec<usize>>,
    ) -> Result<(), ModelsError> {
        let (s, values) = self.rows(ct2, 0, 1)?;
        self.out.push(Tensor {
            name: ggml.to_string(),
            shape: shape.unwrap_or(s),
            values,
            f16: false,
        });
        Ok(())
    }

    fn linear(&mut self, ct2: &str, ggml: &str) -> Result<(), ModelsError> {
        self.copy(&format!("{ct2}/weight"), &format!("{ggml}.weight"))?;
        self.copy(&format!("{ct2}/bias"), &format!("{ggml}.bias"))
    }

    fn norm(&mut self, ct2: &str, ggml: &str) -> Result<(), ModelsError> {
        self.copy(&format!("{ct2}/gamma"), &format!("{ggml}.weight"))?;
        self.copy(&format!("{ct2}/beta"), &format!("{ggml}.bias"))
    }

    /// Splits a fused projection's rows into `names.len()` parts. whisper.cpp's keys carry no
    /// bias (CT2 stores zeros there), so a `None` bias name drops that part's bias.
    fn split(&mut self, ct2: &str, names: &[(&str, bool)]) -> Result<(), ModelsError> {
        for (i, (ggml, with_bias)) in names.iter().enumerate() {
            let (shape, w) = self.rows(&format!("{ct2}/weight"), i, names.len())?;
            self.push(&format!("{ggml}.weight"), shape, w);
            if *with_bias {
                let (shape, b) = self.rows(&format!("{ct2}/bias"), i, names.len())?;
                self.push(&format!("{ggml}.bias"), shape, b);
            }
        }
        Ok(())
    }

    fn count_layers(&self, prefix: &str) -> usize {
        (0..)
            .take_while(|i| {
                self.vars
                    .contains_key(&format!("{prefix}/layer_{i}/ffn/linear_0/weight"))
            })
            .count()
    }
}

/// Reads the dimensions of a CT2 Whisper model.
fn dims(b: &Builder) -> Result<WhisperDims, ModelsError> {
    let shape = |name: &str| -> Result<Vec<usize>, ModelsError> { Ok(b.var(name)?.shape.clone()) };
    let enc_pos = shape("encoder/position_encodings/encodings")?;
    let dec_pos = shape("decoder/position_encodings/encodings")?;
    let emb = shape("decoder/embeddings/weight")?;
    let conv1 = shape("encoder/conv1/weight")?;
    let two = |s: &[usize], name: &str| -> Result<(usize, usize), ModelsError> {
        match s {
            [a, b] => Ok((*a, *b)),
            _ => Err(ModelsError::Convert(format!(
                "`{name}` should be 2-D, is {s:?}"
            ))),
        }
    };
    let (n_audio_ctx, n_audio_state) = two(&enc_pos, "encoder position encodings")?;
    let (n_text_ctx, n_text_state) = two(&dec_pos, "decoder position encodings")?;
    let (n_vocab, _) = two(&emb, "decoder embeddings")?;
    let n_mels = *conv1
        .get(1)
        .ok_or_else(|| ModelsError::Convert("conv1 is not 3-D".into()))?;
    Ok(WhisperDims {
        n_vocab,
        n_audio_ctx,
        n_audio_state,
        n_audio_head: b.var("encoder/num_heads")?.scalar("encoder/num_heads")?,
        n_audio_layer: b.count_layers("encoder"),
        n_text_ctx,
        n_text_state,
        n_text_head: b.var("decoder/num_heads")?.scalar("decoder/num_heads")?,
        n_text_layer: b.count_layers("decoder"),
        n_mels,
    })
}

fn tensors(b: &mut Builder, d: &WhisperDims) -> Result<(), ModelsError> {
    b.copy_f32(
        "encoder/position_encodings/encodings",
        "encoder.positional_embedding",
        None,
    )?;
    b.copy("encoder/conv1/weight", "encoder.conv1.weight")?;
    b.copy_f32(
        "encoder/conv1/bias",
        "encoder.conv1.bias",
        Some(vec![d.n_audio_state, 1]),
    )?;
    b.copy("encoder/conv2/weight", "encoder.conv2.weight")?;
    b.copy_f32(
        "encoder/conv2/bias",
        "encoder.conv2.bias",
        Some(vec![d.n_audio_state, 1]),
    )?;
    for i in 0..d.n_audio_layer {
        let (c, g) = (format!("encoder/layer_{i}"), format!("encoder.blocks.{i}"));
        b.norm(
            &format!("{c}/self_attention/layer_norm"),
            &format!("{g}.attn_ln"),
        )?;
        b.split(
            &format!("{c}/self_attention/linear_0"),
            &[
                (&format!("{g}.attn.query"), true),
                (&format!("{g}.attn.key"), false),
                (&format!("{g}.attn.value"), true),
            ],
        )?;
        b.linear(
            &format!("{c}/self_attention/linear_1"),
            &format!("{g}.attn.out"),
        )?;
        b.norm(&format!("{c}/ffn/layer_norm"), &format!("{g}.mlp_ln"))?;
        b.linear(&format!("{c}/ffn/linear_0"), &format!("{g}.mlp.0"))?;
        b.linear(&format!("{c}/ffn/linear_1"), &format!("{g}.mlp.2"))?;
    }
    b.norm("encoder/layer_norm", "encoder.ln_post")?;

    b.copy_f32(
        "decoder/position_encodings/encodings",
        "decoder.positional_embedding",
        None,
    )?;
    b.copy(
        "decoder/embeddings/weight",
        "decoder.token_embedding.weight",
    )?;
    for i in 0..d.n_text_layer {
        let (c, g) = (format!("decoder/layer_{i}"), format!("decoder.blocks.{i}"));
        b.norm(
            &format!("{c}/self_attention/layer_norm"),
            &format!("{g}.attn_ln"),
        )?;
        b.split(
            &format!("{c}/self_attention/linear_0"),
            &[
                (&format!("{g}.attn.query"), true),
                (&format!("{g}.attn.key"), false),
                (&format!("{g}.attn.value"), true),
            ],
        )?;
        b.linear(
            &format!("{c}/self_attention/linear_1"),
            &format!("{g}.attn.out"),
        )?;
        b.norm(
            &format!("{c}/attention/layer_norm"),
            &format!("{g}.cross_attn_ln"),
        )?;
        b.linear(
            &format!("{c}/attention/linear_0"),
            &format!("{g}.cross_attn.query"),
        )?;
        b.split(
            &format!("{c}/attention/linear_1"),
            &[
                (&format!("{g}.cross_attn.key"), false),
                (&format!("{g}.cross_attn.value"), true),
            ],
        )?;
        b.linear(
            &format!("{c}/attention/linear_2"),
            &format!("{g}.cross_attn.out"),
        )?;
        b.norm(&format!("{c}/ffn/layer_norm"), &format!("{g}.mlp_ln"))?;
        b.linear(&format!("{c}/ffn/linear_0"), &format!("{g}.mlp.0"))?;
        b.linear(&format!("{c}/ffn/linear_1"), &format!("{g}.mlp.2"))?;
    }
    b.norm("decoder/layer_norm", "decoder.ln")?;
    Ok(())
}

/// Reads array `name` (little-endian f32 or f64, C order, 2-D) from a `.npz` archive.
fn read_npz_matrix(path: &Path, name: &str) -> Result<(usize, usize, Vec<f32>), ModelsError> {
    let file = File::open(path).map_err(|e| ModelsError::io(path, e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| {
        ModelsError::Convert(format!("{}: not a .npz archive: {e}", path.display()))
    })?;
    let mut member = zip
        .by_name(&format!("{name}.npy"))
        .map_err(|_| ModelsError::Convert(format!("{}: no array `{name}`", path.display())))?;
    let mut bytes = Vec::new();
    member
        .read_to_end(&mut bytes)
        .map_err(|e| ModelsError::io(path, e))?;
    let bad = |what: &str| ModelsError::Convert(format!("{}: `{name}` {what}", path.display()));
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("is not a .npy array"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return Err(bad("has a truncated header")),
    };
    let header = std::str::from_utf8(
        bytes
            .get(start..start + header_len)
            .ok_or_else(|| bad("has a truncated header"))?,
    )
    .map_err(|_| bad("has a non-text header"))?;
    if header.contains("'fortran_order': True") {
        return Err(bad("is in Fortran order"));
    }
    let shape_text = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("has no shape"))?;
    let shape: Vec<usize> = shape_text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().map_err(|_| bad("has a bad shape")))
        .collect::<Result<_, _>>()?;
    let [rows, cols] = shape[..] else {
        return Err(bad("is not 2-D"));
    };
    let data = &bytes[start + header_len..];
    let values: Vec<f32> = if header.contains("'<f4'") {
        data.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else if header.contains("'<f8'") {
        data.chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect()
    } else {
        return Err(bad("is neither <f4 nor <f8"));
    };
    if Some(values.len()) != rows.checked_mul(cols) {
        return Err(bad("has fewer values than its shape"));
    }
    Ok((rows, cols, values))
}

/// The tiktoken vocabulary: one token a line, `base64(bytes) rank`, in rank order.
fn read_tiktoken(path: &Path) -> Result<Vec<Vec<u8>>, ModelsError> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelsError::io(path, e))?;
    // Python's decoder, which wrote these files, accepts missing or extra padding (the
    // multilingual file holds a bare "=" for an empty token), so we decode without padding.
    let engine = base64::engine::general_purpose::STANDARD_NO_PAD;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            let token = line.split_whitespace().next().unwrap_or_default();
            engine.decode(token.trim_end_matches('=')).map_err(|e| {
                ModelsError::Convert(format!(
                    "{}: line {}: bad base64: {e}",
                    path.display(),
                    i + 1
                ))
            })
        })
        .collect()
}

/// Converts a CT2 Whisper model to a ggml file at `out`, returning the model's dimensions.
pub fn convert(
    ct2_model: &Path,
    mel_filters: &Path,
    vocab: &Path,
    out: &Path,
) -> Result<WhisperDims, ModelsError> {
    let bytes = std::fs::read(ct2_model).map_err(|e| ModelsError::io(ct2_model, e))?;
    let vars = read_ct2(&bytes)?;
    let mut b = Builder {
        vars: &vars,
        out: Vec::new(),
    };
    let d = dims(&b)?;
    tensors(&mut b, &d)?;
    let mel_name = format!("mel_{}", d.n_mels);
    let (n_mel, n_fft, filters) = read_npz_matrix(mel_filters, &mel_name)?;
    let tokens = read_tiktoken(vocab)?;

    let file = File::create(out).map_err(|e| ModelsError::io(out, e))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let io = |e| ModelsError::io(out, e);
    let i32le = |w: &mut BufWriter<File>, v: usize| w.write_all(&(v as i32).to_le_bytes());
    w.write_all(&GGML_MAGIC.to_le_bytes()).map_err(io)?;
    for v in [
        d.n_vocab,
        d.n_audio_ctx,
        d.n_audio_state,
        d.n_audio_head,
        d.n_audio_layer,
        d.n_text_ctx,
        d.n_text_state,
        d.n_text_head,
        d.n_text_layer,
        d.n_mels,
        1, // ftype 1: f16 weights
    ] {
        i32le(&mut w, v).map_err(io)?;
    }
    i32le(&mut w, n_mel).map_err(io)?;
    i32le(&mut w, n_fft).map_err(io)?;
    for v in &filters {
        w.write_all(&v.to_le_bytes()).map_err(io)?;
    }
    i32le(&mut w, tokens.len()).map_err(io)?;
    for t in &tokens {
        i32le(&mut w, t.len()).map_err(io)?;
        w.write_all(t).map_err(io)?;
    }
    for t in &b.out {
        i32le(&mut w, t.shape.len()).map_err(io)?;
        i32le(&mut w, t.name.len()).map_err(io)?;
        i32le(&mut w, usize::from(t.f16)).map_err(io)?;
        // ggml lists dimensions innermost first.
        for dim in t.shape.iter().rev() {
            i32le(&mut w, *dim).map_err(io)?;
        }
        w.write_all(t.name.as_bytes()).map_err(io)?;
        if t.f16 {
            for v in &t.values {
                w.write_all(&f16::from_f32(*v).to_le_bytes()).map_err(io)?;
            }
        } else {
            for v in &t.values {
                w.write_all(&v.to_le_bytes()).map_err(io)?;
            }
        }
    }
    w.flush().map_err(io)?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_ct2_is_an_error_not_a_panic() {
        let mut bytes = 6u32.to_le_bytes().to_vec();
        bytes.extend_from_slice(&12u16.to_le_bytes());
        bytes.extend_from_slice(b"WhisperSpec\0");
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&5u32.to_le_bytes()); // claims 5 variables, has none
        let err = read_ct2(&bytes).err().unwrap().to_string();
        assert!(err.contains("ends early"), "{err}");
        let err = read_ct2(&[1, 0, 0, 0]).err().unwrap().to_string();
        assert!(err.contains("version 1"), "{err}");
    }
}
