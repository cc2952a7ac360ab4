//! Piper's decoder (HiFi-GAN, `/dec/…`) run by our own code instead of ONNX Runtime: most of a
//! voice's time is spent here, and ONNX Runtime's 1-D convolutions run at half of what these
//! two cores can do (see [`super::kernels`]).
//!
//! The generator, as Piper's VITS defines it and its ONNX export spells it:
//!
//! ```text
//! x = conv_pre(z)
//! for each upsampling stage i:
//!     x = ups[i](leaky_relu(x, 0.1))                 # ConvTranspose, stride s
//!     x = mean over j of resblock[i, j](x)           # ResBlock2: for each conv c:
//!                                                    #   x = c(leaky_relu(x, 0.1)) + x
//! audio = tanh(conv_post(leaky_relu(x, 0.01)))
//! ```
//!
//! What we run is the same arithmetic, fused: each convolution's epilogue adds the residual and
//! the running sum and writes the next LeakyReLU, the mean's division is folded into the next
//! convolution's weights (LeakyReLU commutes with a positive scale), and a transposed
//! convolution runs as `s` ordinary ones, one per output phase, interleaved after.
//!
//! Only the graph this describes is taken; anything else (ResBlock1 voices, multi-speaker
//! conditioning) stays on ONNX Runtime, and the caller checks our output against ONNX Runtime's
//! once when the voice loads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use super::kernels::{self, Epilogue, Geometry, Ptr, OUT_BLOCK, TIME_BLOCK};
use super::proto::{fields, string, strings, varint_value, varints, Field, FIXED32, LEN};

// ONNX field numbers (onnx.proto).
const MODEL_GRAPH: u32 = 7;
const GRAPH_NODE: u32 = 1;
const GRAPH_INITIALIZER: u32 = 5;
const NODE_INPUT: u32 = 1;
const NODE_NAME: u32 = 3;
const NODE_OP_TYPE: u32 = 4;
const NODE_ATTRIBUTE: u32 = 5;
const ATTRIBUTE_NAME: u32 = 1;
const ATTRIBUTE_FLOAT: u32 = 2;
const ATTRIBUTE_INT: u32 = 3;
const ATTRIBUTE_INTS: u32 = 8;
const TENSOR_DIMS: u32 = 1;
const TENSOR_DATA_TYPE: u32 = 2;
const TENSOR_FLOAT_DATA: u32 = 4;
const TENSOR_NAME: u32 = 8;
const TENSOR_RAW_DATA: u32 = 9;
const TENSOR_DATA_LOCATION: u32 = 14;
const FLOAT: u64 = 1;

/// Zeroed floats kept on each side of every row, so that a convolution reads its padding in
/// place. Enough for a kernel of 7 at dilation 12 (36); checked when the voice loads.
const MARGIN: usize = 64;

/// A node of the decoder graph: what the generator needs of it.
struct Node<'a> {
    op_type: &'a str,
    inputs: Vec<&'a str>,
    attributes: HashMap<&'a str, Field<'a>>,
}

impl Node<'_> {
    fn ints(&self, name: &str) -> Result<Vec<i64>, String> {
        let Some(a) = self.attributes.get(name) else {
            return Ok(Vec::new());
        };
        let f = fields(a.body)?;
        let mut v: Vec<i64> = varints(&f, ATTRIBUTE_INTS)?
            .into_iter()
            .map(|x| x as i64)
            .collect();
        if v.is_empty() {
            if let Some(i) = f.iter().find(|f| f.number == ATTRIBUTE_INT) {
                v.push(varint_value(i.body)? as i64);
            }
        }
        Ok(v)
    }

    fn float(&self, name: &str) -> Result<Option<f32>, String> {
        let Some(a) = self.attributes.get(name) else {
            return Ok(None);
        };
        let f = fields(a.body)?;
        Ok(f.iter()
            .find(|f| f.number == ATTRIBUTE_FLOAT && f.wire == FIXED32)
            .and_then(|f| f.body.try_into().ok())
            .map(f32::from_le_bytes))
    }

    /// A 1-D attribute's single value (`[v]`, or `[v, v]` for symmetric pads), `default` when
    /// absent.
    fn one(&self, name: &str, default: i64) -> Result<usize, String> {
        let v = self.ints(name)?;
        let x = match v.as_slice() {
            [] => default,
            [x] => *x,
            [a, b] if a == b => *a,
            other => return Err(format!("{name} = {other:?} is not a symmetric 1-D value")),
        };
        usize::try_from(x).map_err(|_| format!("{name} = {x} is negative"))
    }
}

/// The decoder graph's nodes by name and its stored weights.
struct Graph<'a> {
    nodes: HashMap<&'a str, Node<'a>>,
    weights: HashMap<&'a str, &'a [u8]>,
}

impl<'a> Graph<'a> {
    fn read(model: &'a [u8]) -> Result<Self, String> {
        let top = fields(model)?;
        let graph = top
            .iter()
            .find(|f| f.number == MODEL_GRAPH && f.wire == LEN)
            .ok_or("the model has no graph")?;
        let g = fields(graph.body)?;
        let mut nodes = HashMap::new();
        for f in g.iter().filter(|f| f.number == GRAPH_NODE && f.wire == LEN) {
            let n = fields(f.body)?;
            let mut attributes = HashMap::new();
            for a in n.iter().filter(|a| a.number == NODE_ATTRIBUTE) {
                attributes.insert(string(&fields(a.body)?, ATTRIBUTE_NAME)?, *a);
            }
            nodes.insert(
                string(&n, NODE_NAME)?,
                Node {
                    op_type: string(&n, NODE_OP_TYPE)?,
                    inputs: strings(&n, NODE_INPUT)?,
                    attributes,
                },
            );
        }
        let mut weights = HashMap::new();
        for f in g
            .iter()
            .filter(|f| f.number == GRAPH_INITIALIZER && f.wire == LEN)
        {
            weights.insert(string(&fields(f.body)?, TENSOR_NAME)?, f.body);
        }
        Ok(Graph { nodes, weights })
    }

    fn has(&self, name: &str) -> bool {
        self.nodes.contains_key(name)
    }

    fn node(&self, name: &str, op: &str) -> Result<&Node<'a>, String> {
        let n = self
            .nodes
            .get(name)
            .ok_or_else(|| format!("no node {name}"))?;
        if n.op_type != op {
            return Err(format!("{name} is {}, not {op}", n.op_type));
        }
        Ok(n)
    }

    /// The stored weight a node reads as its input `i`, if it has one.
    fn weight(&self, n: &Node<'_>, i: usize) -> Result<Option<Tensor>, String> {
        match n.inputs.get(i).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(t) => {
                let body = self
                    .weights
                    .get(t)
                    .ok_or_else(|| format!("{t} is not a stored weight"))?;
                tensor(body).map(Some)
            }
        }
    }

    fn slope(&self, name: &str) -> Result<f32, String> {
        Ok(self
            .node(name, "LeakyRelu")?
            .float("alpha")?
            .unwrap_or(0.01))
    }

    /// A "same" convolution (output as long as its input), its weights scaled by `scale`.
    fn conv(&self, name: &str, scale: f32) -> Result<Conv, String> {
        let n = self.node(name, "Conv")?;
        if n.one("group", 1)? != 1 || n.one("strides", 1)? != 1 {
            return Err(format!("{name} is grouped or strided"));
        }
        let w = self
            .weight(n, 1)?
            .ok_or_else(|| format!("{name} has no weights"))?;
        let bias = self.weight(n, 2)?;
        let [outs, ins, taps] = w.dims[..] else {
            return Err(format!("{name}: weights {:?} are not 1-D", w.dims));
        };
        let dilation = n.one("dilations", 1)?;
        let pad = n.one("pads", 0)?;
        if taps == 0 || 2 * pad != (taps - 1) * dilation {
            return Err(format!("{name} does not keep its input's length"));
        }
        Ok(Conv::new(
            &w.data,
            bias.as_ref().map(|b| b.data.as_slice()),
            (outs, ins, taps),
            dilation,
            -(pad as isize),
            scale,
        ))
    }

    /// A transposed convolution as one convolution per output phase, its weights scaled by
    /// `scale`.
    fn upsample(&self, name: &str, scale: f32) -> Result<Upsample, String> {
        let n = self.node(name, "ConvTranspose")?;
        if n.one("group", 1)? != 1 || n.one("dilations", 1)? != 1 {
            return Err(format!("{name} is grouped or dilated"));
        }
        if n.ints("output_padding")?.iter().any(|&p| p != 0)
            || n.attributes.contains_key("output_shape")
        {
            return Err(format!("{name} sets its output's shape"));
        }
        let w = self
            .weight(n, 1)?
            .ok_or_else(|| format!("{name} has no weights"))?;
        let bias = self.weight(n, 2)?;
        let [ins, outs, kernel] = w.dims[..] else {
            return Err(format!("{name}: weights {:?} are not 1-D", w.dims));
        };
        let (stride, pad) = (n.one("strides", 1)?, n.one("pads", 0)?);
        // Output length (L - 1) * s - 2p + K is s * L only when K - 2p = s.
        if stride == 0 || kernel % stride != 0 || kernel != 2 * pad + stride {
            return Err(format!(
                "{name}: kernel {kernel}, stride {stride}, pads {pad}"
            ));
        }
        let taps = kernel / stride;
        let phases = (0..stride)
            .map(|r| {
                // Output sample q*s + r reads input q + a - j through weight k = c%s + j*s,
                // with c = r + pad and a = c / s; tap t = taps-1-j reads q + base + t.
                let c = r + pad;
                let base = (c / stride) as isize - (taps as isize - 1);
                let mut pw = vec![0.0; outs * ins * taps];
                for o in 0..outs {
                    for i in 0..ins {
                        for t in 0..taps {
                            let k = c % stride + (taps - 1 - t) * stride;
                            pw[(o * ins + i) * taps + t] = w.data[(i * outs + o) * kernel + k];
                        }
                    }
                }
                Conv::new(
                    &pw,
                    bias.as_ref().map(|b| b.data.as_slice()),
                    (outs, ins, taps),
                    1,
                    base,
                    scale,
                )
            })
            .collect();
        Ok(Upsample { stride, phases })
    }
}

/// A float tensor: its dims and values.
struct Tensor {
    dims: Vec<usize>,
    data: Vec<f32>,
}

fn tensor(body: &[u8]) -> Result<Tensor, String> {
    let f = fields(body)?;
    let name = string(&f, TENSOR_NAME)?;
    let data_type = f
        .iter()
        .find(|f| f.number == TENSOR_DATA_TYPE)
        .map(|f| varint_value(f.body))
        .transpose()?
        .unwrap_or(0);
    if data_type != FLOAT {
        return Err(format!("{name} is not float32 (type {data_type})"));
    }
    if f.iter().any(|f| f.number == TENSOR_DATA_LOCATION) {
        return Err(format!("{name} is stored outside the model"));
    }
    let dims = varints(&f, TENSOR_DIMS)?
        .into_iter()
        .map(|d| usize::try_from(d).map_err(|_| format!("{name}: dim {d} too large")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut data = Vec::new();
    if let Some(raw) = f.iter().find(|f| f.number == TENSOR_RAW_DATA) {
        data.extend(
            raw.body
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
    }
    for v in f.iter().filter(|f| f.number == TENSOR_FLOAT_DATA) {
        // Packed (one LEN field) or one fixed32 per value.
        let bytes = if v.wire == LEN || v.wire == FIXED32 {
            v.body
        } else {
            return Err(format!("{name}: float_data has wire type {}", v.wire));
        };
        data.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
    }
    if data.len() != dims.iter().product::<usize>() {
        return Err(format!("{name}: {} values for dims {dims:?}", data.len()));
    }
    Ok(Tensor { dims, data })
}

/// A convolution ready for the kernel.
struct Conv {
    ins: usize,
    outs: usize,
    taps: usize,
    dilation: usize,
    /// Where tap 0 of output sample 0 reads, relative to input sample 0.
    offset: isize,
    weights: Vec<f32>,
    bias: Vec<f32>,
}

impl Conv {
    /// `weights[o][i][k]`, scaled by `scale`.
    fn new(
        w: &[f32],
        bias: Option<&[f32]>,
        (outs, ins, taps): (usize, usize, usize),
        dilation: usize,
        offset: isize,
        scale: f32,
    ) -> Conv {
        let scaled: Vec<f32> = w.iter().map(|x| x * scale).collect();
        let mut b = vec![0.0; outs.div_ceil(OUT_BLOCK) * OUT_BLOCK];
        if let Some(bias) = bias {
            b[..outs].copy_from_slice(bias);
        }
        Conv {
            ins,
            outs,
            taps,
            dilation,
            offset,
            weights: kernels::pack(&scaled, outs, ins, taps),
            bias: b,
        }
    }

    /// Reach into the input's margins: how far before sample 0 and after the last sample.
    fn reach(&self) -> (isize, isize) {
        let span = ((self.taps - 1) * self.dilation) as isize;
        (-self.offset, self.offset + span)
    }
}

/// A transposed convolution of stride `stride` as `stride` convolutions, one per output phase.
struct Upsample {
    stride: usize,
    phases: Vec<Conv>,
}

struct Stage {
    up: Upsample,
    /// `[resblock][conv]`.
    blocks: Vec<Vec<Conv>>,
}

/// Piper's HiFi-GAN generator with its weights, and the buffers a decode reuses.
pub struct HifiGan {
    pre: Conv,
    stages: Vec<Stage>,
    post: Conv,
    up_slope: f32,
    block_slope: f32,
    post_slope: f32,
    pool: rayon::ThreadPool,
    work: Work,
}

/// Rows of floats with zeroed margins.
#[derive(Default)]
struct Buf {
    data: Vec<f32>,
    rows: usize,
    len: usize,
    stride: usize,
}

impl Buf {
    /// Makes room for `rows` rows of `len` samples (rounded up to whole tiles), zeroing margins
    /// and the tail after `len`. The samples themselves are left for the next write.
    fn shape(&mut self, rows: usize, len: usize) {
        let padded = len.div_ceil(TIME_BLOCK).max(1) * TIME_BLOCK;
        self.rows = rows;
        self.len = len;
        self.stride = MARGIN + padded + MARGIN;
        self.data.resize(rows * self.stride, 0.0);
        for r in 0..rows {
            let row = &mut self.data[r * self.stride..(r + 1) * self.stride];
            row[..MARGIN].fill(0.0);
            row[MARGIN + len..].fill(0.0);
        }
    }

    fn tiles(&self) -> usize {
        (self.stride - 2 * MARGIN) / TIME_BLOCK
    }

    /// Sample 0 of row 0.
    fn origin(&mut self) -> Ptr {
        Ptr(self.data[MARGIN..].as_mut_ptr())
    }

    /// Zeroes what a convolution wrote past `len` (its last tile runs over).
    fn clear_tail(&mut self) {
        let (len, stride) = (self.len, self.stride);
        for r in 0..self.rows {
            self.data[r * stride + MARGIN + len..(r + 1) * stride - MARGIN].fill(0.0);
        }
    }

    fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.stride + MARGIN..r * self.stride + MARGIN + self.len]
    }

    fn row_mut(&mut self, r: usize) -> &mut [f32] {
        &mut self.data[r * self.stride + MARGIN..r * self.stride + MARGIN + self.len]
    }
}

#[derive(Default)]
struct Work {
    /// The current stage's input, its LeakyReLU applied.
    input: Buf,
    /// Each output phase of the upsampling, one after the other.
    phases: Buf,
    up: Buf,
    up_act: Buf,
    h: [Buf; 2],
    h_act: [Buf; 2],
    sum: Buf,
    out: Buf,
}

impl HifiGan {
    /// Reads the generator from the decoder part of a Piper voice (`/dec/…` nodes). `Err` says
    /// why the graph is not the one we run; the caller keeps ONNX Runtime's decoder then.
    pub fn from_onnx(model: &[u8], threads: usize) -> Result<HifiGan, String> {
        if !kernels::supported() {
            return Err("this CPU has no AVX-512".into());
        }
        let graph = Graph::read(model)?;
        if graph.nodes.keys().any(|n| n.starts_with("/dec/cond")) {
            return Err("the decoder is conditioned on a speaker".into());
        }
        let ups = (0..)
            .take_while(|i| graph.has(&format!("/dec/ups.{i}/ConvTranspose")))
            .count();
        let resblocks = (0..)
            .take_while(|i| graph.has(&format!("/dec/resblocks.{i}/convs.0/Conv")))
            .count();
        if ups == 0 || resblocks == 0 || resblocks % ups != 0 {
            return Err(format!("{ups} upsamplings and {resblocks} ResBlock2s"));
        }
        if graph.nodes.keys().any(|n| n.contains("/convs1.")) {
            return Err("the decoder uses ResBlock1".into());
        }
        let per_stage = resblocks / ups;
        // Each stage's mean is folded into the next convolution.
        let mean = 1.0 / per_stage as f32;
        let mut stages = Vec::new();
        for i in 0..ups {
            let scale = if i == 0 { 1.0 } else { mean };
            let up = graph.upsample(&format!("/dec/ups.{i}/ConvTranspose"), scale)?;
            let mut blocks = Vec::new();
            for j in 0..per_stage {
                let b = i * per_stage + j;
                let convs = (0..)
                    .map(|m| format!("/dec/resblocks.{b}/convs.{m}/Conv"))
                    .take_while(|name| graph.has(name))
                    .map(|name| graph.conv(&name, 1.0))
                    .collect::<Result<Vec<_>, _>>()?;
                if convs.is_empty() {
                    return Err(format!("resblock {b} has no convolutions"));
                }
                blocks.push(convs);
            }
            stages.push(Stage { up, blocks });
        }
        let pre = graph.conv("/dec/conv_pre/Conv", 1.0)?;
        let post = graph.conv("/dec/conv_post/Conv", mean)?;
        if post.outs != 1 || !graph.nodes.values().any(|n| n.op_type == "Tanh") {
            return Err("the decoder does not end in one tanh channel".into());
        }
        // Check the channel counts chain and every read stays inside the margins.
        let mut channels = pre.outs;
        for s in &stages {
            for p in &s.up.phases {
                if p.ins != channels {
                    return Err(format!("upsampling reads {} channels of {channels}", p.ins));
                }
            }
            channels = s.up.phases[0].outs;
            for c in s.blocks.iter().flatten() {
                if c.ins != channels || c.outs != channels {
                    return Err(format!(
                        "a resblock convolution maps {} → {} channels in a stage of {channels}",
                        c.ins, c.outs
                    ));
                }
            }
        }
        if post.ins != channels {
            return Err(format!(
                "conv_post reads {} channels of {channels}",
                post.ins
            ));
        }
        let convs = std::iter::once(&pre)
            .chain(
                stages
                    .iter()
                    .flat_map(|s| s.up.phases.iter().chain(s.blocks.iter().flatten())),
            )
            .chain(std::iter::once(&post));
        for c in convs {
            let (before, after) = c.reach();
            if before > MARGIN as isize || after > MARGIN as isize {
                return Err(format!(
                    "a convolution reaches {before}/{after} samples beyond its input"
                ));
            }
        }
        // The LeakyReLU that feeds conv_post (its own slope, 0.01 in Piper's export).
        let post_input = graph
            .node("/dec/conv_post/Conv", "Conv")?
            .inputs
            .first()
            .copied()
            .unwrap_or_default();
        let post_slope = graph.slope(post_input.strip_suffix("_output_0").unwrap_or(post_input))?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("hark-hifigan-{i}"))
            .build()
            .map_err(|e| format!("decoder threads: {e}"))?;
        Ok(HifiGan {
            up_slope: graph.slope("/dec/LeakyRelu")?,
            block_slope: graph.slope("/dec/resblocks.0/LeakyRelu")?,
            post_slope,
            pre,
            stages,
            post,
            pool,
            work: Work::default(),
        })
    }

    /// Channels of the latent the decoder reads.
    pub fn in_channels(&self) -> usize {
        self.pre.ins
    }

    /// Audio of `frames` latent frames, `z[c * frames + t]`; `None` once `stop` is set (it is
    /// checked every few hundred microseconds of work).
    pub fn decode(&mut self, z: &[f32], frames: usize, stop: &AtomicBool) -> Option<Vec<f32>> {
        let w = &mut self.work;
        let pool = &Pool {
            threads: &self.pool,
            stop,
        };
        let c0 = self.pre.ins;
        debug_assert_eq!(z.len(), c0 * frames);
        // The latent, then conv_pre with the first LeakyReLU.
        w.h[0].shape(c0, frames);
        for c in 0..c0 {
            w.h[0]
                .row_mut(c)
                .copy_from_slice(&z[c * frames..(c + 1) * frames]);
        }
        w.input.shape(self.pre.outs, frames);
        run(
            pool,
            &self.pre,
            &mut w.h[0],
            &mut w.input,
            Outputs::act(self.up_slope),
        );
        let mut len = frames;
        for (si, stage) in self.stages.iter().enumerate() {
            let s = stage.up.stride;
            let channels = stage.up.phases[0].outs;
            // Each phase into its own rows of `phases`, then interleaved.
            w.phases.shape(s * channels, len);
            for (r, phase) in stage.up.phases.iter().enumerate() {
                let rows = Ptr(w
                    .phases
                    .origin()
                    .0
                    .wrapping_add(r * channels * w.phases.stride));
                conv(
                    pool,
                    phase,
                    &mut w.input,
                    w.phases.tiles(),
                    Epilogue {
                        residual: Ptr::null(),
                        sum: Ptr::null(),
                        raw: rows,
                        act: Ptr::null(),
                        slope: 0.0,
                        stride: w.phases.stride,
                    },
                );
            }
            len *= s;
            w.up.shape(channels, len);
            w.up_act.shape(channels, len);
            interleave(
                pool,
                &w.phases,
                s,
                channels,
                &mut w.up,
                &mut w.up_act,
                self.block_slope,
            );
            let last_stage = si + 1 == self.stages.len();
            let next_slope = if last_stage {
                self.post_slope
            } else {
                self.up_slope
            };
            w.sum.shape(channels, len);
            let blocks = stage.blocks.len();
            for (j, block) in stage.blocks.iter().enumerate() {
                // `cur` holds the block's running value (raw, activated); starts at the upsampled x.
                let mut cur: Option<usize> = None;
                for (m, c) in block.iter().enumerate() {
                    let last_conv = m + 1 == block.len();
                    let (input, residual) = match cur {
                        None => (&mut w.up_act as *mut Buf, &mut w.up as *mut Buf),
                        Some(k) => (&mut w.h_act[k] as *mut Buf, &mut w.h[k] as *mut Buf),
                    };
                    // SAFETY: `input` and `residual` point at two distinct buffers of `w`,
                    // neither of which is written below (outputs go to other buffers).
                    let (input, residual) = unsafe { (&mut *input, &mut *residual) };
                    if !last_conv {
                        let k = cur.map_or(0, |k| 1 - k);
                        let (h, h_act) = (&mut w.h[k], &mut w.h_act[k]);
                        h.shape(channels, len);
                        h_act.shape(channels, len);
                        let e = Epilogue {
                            residual: residual.origin(),
                            sum: Ptr::null(),
                            raw: h.origin(),
                            act: h_act.origin(),
                            slope: self.block_slope,
                            stride: h.stride,
                        };
                        conv(pool, c, input, h.tiles(), e);
                        h.clear_tail();
                        h_act.clear_tail();
                        cur = Some(k);
                    } else if j + 1 < blocks {
                        // Into the running sum of the stage's resblocks.
                        let sum = if j == 0 { Ptr::null() } else { w.sum.origin() };
                        let e = Epilogue {
                            residual: residual.origin(),
                            sum,
                            raw: w.sum.origin(),
                            act: Ptr::null(),
                            slope: 0.0,
                            stride: w.sum.stride,
                        };
                        conv(pool, c, input, w.sum.tiles(), e);
                    } else {
                        // The stage's last: the sum, activated, is the next stage's input.
                        w.input.shape(channels, len);
                        let sum = if blocks > 1 {
                            w.sum.origin()
                        } else {
                            Ptr::null()
                        };
                        let e = Epilogue {
                            residual: residual.origin(),
                            sum,
                            raw: Ptr::null(),
                            act: w.input.origin(),
                            slope: next_slope,
                            stride: w.input.stride,
                        };
                        conv(pool, c, input, w.input.tiles(), e);
                        w.input.clear_tail();
                    }
                }
            }
        }
        w.out.shape(self.post.outs, len);
        run(pool, &self.post, &mut w.input, &mut w.out, Outputs::Raw);
        if pool.stopped() {
            return None;
        }
        Some(w.out.row(0).iter().map(|x| x.tanh()).collect())
    }
}

enum Outputs {
    Raw,
    Act(f32),
}

impl Outputs {
    fn act(slope: f32) -> Self {
        Outputs::Act(slope)
    }
}

/// The decoder's threads, and the flag that stops a decode.
struct Pool<'a> {
    threads: &'a rayon::ThreadPool,
    stop: &'a AtomicBool,
}

impl Pool<'_> {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Tiles a thread computes between looks at the stop flag (a few hundred microseconds).
const TILES_BETWEEN_CHECKS: usize = 64;

/// A plain convolution from `input` into `out` (same length).
fn run(pool: &Pool, c: &Conv, input: &mut Buf, out: &mut Buf, what: Outputs) {
    let (raw, act, slope) = match what {
        Outputs::Raw => (out.origin(), Ptr::null(), 0.0),
        Outputs::Act(s) => (Ptr::null(), out.origin(), s),
    };
    let e = Epilogue {
        residual: Ptr::null(),
        sum: Ptr::null(),
        raw,
        act,
        slope,
        stride: out.stride,
    };
    conv(pool, c, input, out.tiles(), e);
    out.clear_tail();
}

/// Runs `c` over `tiles` tiles of `input`, split across the pool's threads; returns early,
/// leaving the output unfinished, once the stop flag is set.
fn conv(pool: &Pool, c: &Conv, input: &mut Buf, tiles: usize, e: Epilogue) {
    if pool.stopped() {
        return;
    }
    let g = Geometry {
        input: input.origin(),
        in_stride: input.stride,
        in_channels: c.ins,
        taps: c.taps,
        dilation: c.dilation,
        offset: c.offset,
        weights: Ptr(c.weights.as_ptr().cast_mut()),
        bias: Ptr(c.bias.as_ptr().cast_mut()),
        out_channels: c.outs,
    };
    let parts = pool.threads.current_num_threads().min(tiles).max(1);
    let per = tiles.div_ceil(parts);
    pool.threads.scope(|scope| {
        for p in 0..parts {
            let (g, e) = (&g, &e);
            scope.spawn(move |_| {
                let end = ((p + 1) * per).min(tiles);
                let mut at = p * per;
                while at < end && !pool.stopped() {
                    let next = (at + TILES_BETWEEN_CHECKS).min(end);
                    // SAFETY: the CPU has AVX-512 (checked in `from_onnx`); the buffers'
                    // margins cover every read (checked against `MARGIN` in `from_onnx`),
                    // every buffer was shaped for these tiles, and the threads write disjoint
                    // tiles.
                    unsafe { kernels::conv_tiles(g, e, at..next) }
                    at = next;
                }
            });
        }
    });
}

/// `up[o][q * s + r] = phases[r * channels + o][q]`, and its LeakyReLU into `act`.
fn interleave(
    pool: &Pool,
    phases: &Buf,
    s: usize,
    channels: usize,
    up: &mut Buf,
    act: &mut Buf,
    slope: f32,
) {
    let len = up.len;
    let (up_stride, act_stride) = (up.stride, act.stride);
    let up_rows = up.data.chunks_mut(up_stride);
    let act_rows = act.data.chunks_mut(act_stride);
    pool.threads.install(|| {
        use rayon::prelude::*;
        up_rows
            .zip(act_rows)
            .enumerate()
            .take(channels)
            .par_bridge()
            .for_each(|(o, (u, a))| {
                let u = &mut u[MARGIN..MARGIN + len];
                let a = &mut a[MARGIN..MARGIN + len];
                for r in 0..s {
                    let src = phases.row(r * channels + o);
                    for (q, &v) in src.iter().enumerate() {
                        u[q * s + r] = v;
                        a[q * s + r] = if v < 0.0 { v * slope } else { v };
                    }
                }
            });
    });
}
