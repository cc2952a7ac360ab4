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
//! A stage runs block by block, depth first: each thread takes spans of the stage's output and
//! computes, for a span, the upsampling, every resblock and their mean (with the overlap of up
//! to 45 samples the convolutions read beyond it) in its own scratch, which stays in its core's
//! cache. Only each stage's input and output are whole rows in memory. Layer by layer, the
//! 32-channel stage ran at half the kernel's speed, waiting on memory, and a 20 s sentence
//! needed 400 MB of buffers.
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
/// place, and room for a block's last tile to run past its end: enough for a kernel of 7 at
/// dilation 12 (36) after a tile's 47; checked when the voice loads.
const MARGIN: usize = 128;

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
    net: Net,
    pool: rayon::ThreadPool,
    work: Work,
}

/// The generator's layers and activation slopes.
struct Net {
    pre: Conv,
    stages: Vec<Stage>,
    post: Conv,
    up_slope: f32,
    block_slope: f32,
    post_slope: f32,
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

    /// Zeroes each row's samples before `inside.0` and from `inside.1` on.
    fn zero_outside(&mut self, inside: (usize, usize)) {
        let (len, stride) = (self.len, self.stride);
        let (lo, hi) = (inside.0.min(len), inside.1.min(len));
        for r in 0..self.rows {
            let row = &mut self.data[r * stride + MARGIN..r * stride + MARGIN + len];
            row[..lo].fill(0.0);
            row[hi.max(lo)..].fill(0.0);
        }
    }

    fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.stride + MARGIN..r * self.stride + MARGIN + self.len]
    }

    fn row_mut(&mut self, r: usize) -> &mut [f32] {
        &mut self.data[r * self.stride + MARGIN..r * self.stride + MARGIN + self.len]
    }
}

/// What a decode keeps between calls: the stages' inputs (whole rows) and each thread's scratch.
#[derive(Default)]
struct Work {
    latent: Buf,
    /// Stage `i`'s input, its LeakyReLU applied (`inputs[0]` is conv_pre's output).
    inputs: Vec<Buf>,
    /// The audio before its tanh (one row).
    audio: Buf,
    scratch: Vec<Scratch>,
}

/// One thread's buffers for a block of a stage: small enough to stay in its core's cache.
#[derive(Default)]
struct Scratch {
    /// Each output phase of the upsampling, one after the other.
    phases: Buf,
    up: Buf,
    up_act: Buf,
    h: [Buf; 2],
    h_act: [Buf; 2],
    sum: Buf,
    /// The last stage's output, activated, for conv_post.
    post_in: Buf,
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
            if before > MARGIN as isize || after + TIME_BLOCK as isize > MARGIN as isize {
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
            net: Net {
                up_slope: graph.slope("/dec/LeakyRelu")?,
                block_slope: graph.slope("/dec/resblocks.0/LeakyRelu")?,
                post_slope,
                pre,
                stages,
                post,
            },
            pool,
            work: Work::default(),
        })
    }

    /// Channels of the latent the decoder reads.
    pub fn in_channels(&self) -> usize {
        self.net.pre.ins
    }

    /// Audio of `frames` latent frames, `z[c * frames + t]`; `None` once `stop` is set (it is
    /// checked every few hundred microseconds of work).
    pub fn decode(&mut self, z: &[f32], frames: usize, stop: &AtomicBool) -> Option<Vec<f32>> {
        let (net, work, threads) = (&self.net, &mut self.work, &self.pool);
        // On one of the pool's own threads: each layer's split is then a job the other threads
        // take from its queue while they still spin, not a wake-up from outside the pool (tens
        // of microseconds, 60 times a decode).
        threads.install(|| net.decode(work, &Pool { threads, stop }, z, frames))
    }
}

impl Net {
    fn decode(&self, w: &mut Work, pool: &Pool, z: &[f32], frames: usize) -> Option<Vec<f32>> {
        let c0 = self.pre.ins;
        debug_assert_eq!(z.len(), c0 * frames);
        w.latent.shape(c0, frames);
        for c in 0..c0 {
            w.latent
                .row_mut(c)
                .copy_from_slice(&z[c * frames..(c + 1) * frames]);
        }
        w.inputs.resize_with(self.stages.len(), Buf::default);
        w.inputs[0].shape(self.pre.outs, frames);
        let (latent, first) = (&mut w.latent, &mut w.inputs[0]);
        let e = Epilogue::new(Ptr::null(), first.origin(), self.up_slope, first.stride);
        conv(pool, &self.pre, latent, first.tiles(), e);
        first.clear_tail();
        let parts = pool.threads.current_num_threads();
        w.scratch.resize_with(parts, Scratch::default);
        let mut len = frames;
        for (si, stage) in self.stages.iter().enumerate() {
            if pool.stopped() {
                return None;
            }
            let out_len = len * stage.up.stride;
            let channels = stage.up.phases[0].outs;
            let last = si + 1 == self.stages.len();
            let (input, output) = if last {
                w.audio.shape(1, out_len);
                (&mut w.inputs[si], &mut w.audio)
            } else {
                let (a, b) = w.inputs.split_at_mut(si + 1);
                b[0].shape(channels, out_len);
                (&mut a[si], &mut b[0])
            };
            let from = Rows::of(input);
            let to = Rows::of(output);
            // At least one block per thread (a short piece's first stage is a few hundred samples).
            let block =
                block_len(channels).min(out_len.div_ceil(parts).div_ceil(TIME_BLOCK) * TIME_BLOCK);
            let blocks = out_len.div_ceil(block);
            let per = blocks.div_ceil(parts);
            pool.threads.scope(|scope| {
                for (p, scratch) in w.scratch.iter_mut().enumerate() {
                    scope.spawn(move |_| {
                        for b in p * per..((p + 1) * per).min(blocks) {
                            if pool.stopped() {
                                return;
                            }
                            let span = b * block..((b + 1) * block).min(out_len);
                            self.block(stage, last, from, to, out_len, span, scratch);
                        }
                    });
                }
            });
            // The last block's tiles run past the end: that is the next stage's zero padding.
            output.clear_tail();
            len = out_len;
        }
        if pool.stopped() {
            return None;
        }
        Some(w.audio.row(0).iter().map(|x| x.tanh()).collect())
    }

    /// Stage output samples `span` (of `len`), from the stage's whole input `from` into `to`:
    /// the upsampling, every resblock and their mean, activated for the next stage (or, for the
    /// last stage, through conv_post into the audio row). Everything in between stays in
    /// `scratch`, in block coordinates: sample `g` of the stage is `g - origin` there.
    #[allow(clippy::too_many_arguments)]
    fn block(
        &self,
        stage: &Stage,
        last: bool,
        from: Rows,
        to: Rows,
        len: usize,
        span: std::ops::Range<usize>,
        scratch: &mut Scratch,
    ) {
        let s = stage.up.stride;
        let channels = stage.up.phases[0].outs;
        // Beyond the span, what conv_post reads (last stage), and before that what each
        // resblock's chain of convolutions reads.
        let extra = if last { pad(&self.post) } else { 0 };
        let reach = extra
            + stage
                .blocks
                .iter()
                .map(|b| b.iter().map(pad).sum::<usize>())
                .max()
                .unwrap_or(0);
        let (b0, b1) = (span.start as isize, span.end as isize);
        // The upsampling's input samples q0..q1 cover b0 - reach .. b1 + reach.
        let q0 = (b0 - reach as isize).div_euclid(s as isize);
        let q1 = (b1 + reach as isize + s as isize - 1).div_euclid(s as isize);
        let origin = q0 * s as isize;
        let width = ((q1 - q0) as usize) * s;
        let local = |g: isize| (g - origin) as usize;
        // The signal's own extent in block coordinates: outside it every activation is zero
        // (the convolutions' zero padding).
        let inside = (
            (-origin).clamp(0, width as isize) as usize,
            (len as isize - origin).clamp(0, width as isize) as usize,
        );

        let sc = scratch;
        let q_len = (q1 - q0) as usize;
        sc.phases.shape(s * channels, q_len);
        let phase_rows = sc.phases.origin();
        for (r, phase) in stage.up.phases.iter().enumerate() {
            let rows = phase_rows.at((r * channels * sc.phases.stride) as isize);
            let e = Epilogue::new(rows, Ptr::null(), 0.0, sc.phases.stride);
            conv_range(phase, from.at(q0), from.stride, q_len, e);
        }
        sc.up.shape(channels, width);
        sc.up_act.shape(channels, width);
        interleave(
            &sc.phases,
            s,
            channels,
            &mut sc.up,
            &mut sc.up_act,
            self.block_slope,
        );
        sc.up_act.zero_outside(inside);

        let stride = sc.up.stride;
        let blocks = stage.blocks.len();
        for (j, convs) in stage.blocks.iter().enumerate() {
            // The block's running value (raw, activated): the upsampled signal, then `h[k]`.
            let mut cur: Option<usize> = None;
            let mut need = reach - extra; // what the convolutions still to come read
            need = need.min(convs.iter().map(pad).sum::<usize>());
            for (m, c) in convs.iter().enumerate() {
                need -= pad(c);
                let reach_out = need + extra;
                let lo = local(b0 - reach_out as isize);
                let n = (b1 - b0) as usize + 2 * reach_out;
                let (input, residual) = match cur {
                    None => (sc.up_act.origin(), sc.up.origin()),
                    Some(k) => (sc.h_act[k].origin(), sc.h[k].origin()),
                };
                let (input, residual) = (input.at(lo as isize), residual.at(lo as isize));
                if m + 1 < convs.len() {
                    let k = cur.map_or(0, |k| 1 - k);
                    sc.h[k].shape(channels, width);
                    sc.h_act[k].shape(channels, width);
                    let e = Epilogue {
                        residual,
                        sum: Ptr::null(),
                        raw: sc.h[k].origin().at(lo as isize),
                        act: sc.h_act[k].origin().at(lo as isize),
                        slope: self.block_slope,
                        in_stride: stride,
                        out_stride: stride,
                    };
                    conv_range(c, input, stride, n, e);
                    sc.h_act[k].zero_outside(inside);
                    cur = Some(k);
                    continue;
                }
                // The chain's last convolution: into the stage's running sum.
                if j == 0 {
                    sc.sum.shape(channels, width);
                }
                let sum = if j == 0 {
                    Ptr::null()
                } else {
                    sc.sum.origin().at(lo as isize)
                };
                let e = if j + 1 < blocks {
                    Epilogue {
                        residual,
                        sum,
                        raw: sc.sum.origin().at(lo as isize),
                        act: Ptr::null(),
                        slope: 0.0,
                        in_stride: stride,
                        out_stride: stride,
                    }
                } else if last {
                    sc.post_in.shape(channels, width);
                    Epilogue {
                        residual,
                        sum,
                        raw: Ptr::null(),
                        act: sc.post_in.origin().at(lo as isize),
                        slope: self.post_slope,
                        in_stride: stride,
                        out_stride: stride,
                    }
                } else {
                    // The next stage's input, in place (this span only: n is the span's length).
                    Epilogue {
                        residual,
                        sum,
                        raw: Ptr::null(),
                        act: to.at(b0),
                        slope: self.up_slope,
                        in_stride: stride,
                        out_stride: to.stride,
                    }
                };
                conv_range(c, input, stride, n, e);
            }
        }
        if last {
            sc.post_in.zero_outside(inside);
            let lo = local(b0);
            let e = Epilogue::new(to.at(b0), Ptr::null(), 0.0, to.stride);
            let post_in = sc.post_in.origin().at(lo as isize);
            conv_range(
                &self.post,
                post_in,
                sc.post_in.stride,
                (b1 - b0) as usize,
                e,
            );
        }
    }
}

/// How far a "same" convolution reads to each side.
fn pad(c: &Conv) -> usize {
    (-c.offset) as usize
}

/// Samples per block of a stage with `channels` channels: its scratch (seven buffers of
/// `channels` rows) then fits in a core's 1 MB second-level cache, at 32 channels, while the
/// blocks' overlap (up to 45 samples each side) stays a small part of the work.
fn block_len(channels: usize) -> usize {
    let samples = (24 * 1024 / channels.max(1)).clamp(384, 768);
    samples / TIME_BLOCK * TIME_BLOCK
}

/// Where a whole-signal buffer's rows start, for the threads that share it.
#[derive(Clone, Copy)]
struct Rows {
    origin: Ptr,
    stride: usize,
}

impl Rows {
    fn of(buf: &mut Buf) -> Rows {
        Rows {
            origin: buf.origin(),
            stride: buf.stride,
        }
    }

    fn at(&self, sample: isize) -> Ptr {
        self.origin.at(sample)
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

/// Runs `c` over the `tiles` tiles of `input`, split across the pool's threads; returns early,
/// leaving the output unfinished, once the stop flag is set.
fn conv(pool: &Pool, c: &Conv, input: &mut Buf, tiles: usize, e: Epilogue) {
    if pool.stopped() {
        return;
    }
    let g = geometry(c, input.origin(), input.stride);
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

fn geometry(c: &Conv, input: Ptr, in_stride: usize) -> Geometry {
    Geometry {
        input,
        in_stride,
        in_channels: c.ins,
        taps: c.taps,
        dilation: c.dilation,
        offset: c.offset,
        weights: Ptr(c.weights.as_ptr().cast_mut()),
        bias: Ptr(c.bias.as_ptr().cast_mut()),
        out_channels: c.outs,
    }
}

/// `n` output samples of `c` on this thread, from `input` (sample 0 of its row 0) into the
/// epilogue's rows; the last tile runs up to 47 samples past `n`.
fn conv_range(c: &Conv, input: Ptr, in_stride: usize, n: usize, e: Epilogue) {
    let g = geometry(c, input, in_stride);
    // SAFETY: as in `conv`; the block's buffers were shaped with room for the last tile's run
    // past the span, and no other thread touches this thread's scratch or this span's output.
    unsafe { kernels::conv_tiles(&g, &e, 0..n.div_ceil(TIME_BLOCK)) }
}

/// `up[o][q * s + r] = phases[r * channels + o][q]`, and its LeakyReLU into `act`.
fn interleave(phases: &Buf, s: usize, channels: usize, up: &mut Buf, act: &mut Buf, slope: f32) {
    for o in 0..channels {
        let (u, a) = (up.row_mut(o), act.row_mut(o));
        for r in 0..s {
            let src = phases.row(r * channels + o);
            for (q, &v) in src.iter().enumerate().take(u.len() / s) {
                u[q * s + r] = v;
                a[q * s + r] = if v < 0.0 { v * slope } else { v };
            }
        }
    }
}
