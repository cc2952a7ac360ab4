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

use std::sync::atomic::AtomicBool;

use super::kernels::{self, Epilogue, Ptr, TIME_BLOCK};
use super::layers::{conv, conv_range, pad, Buf, Conv, Graph, Pool, Rows, MARGIN};

/// A transposed convolution of stride `stride` as `stride` convolutions, one per output phase.
struct Upsample {
    stride: usize,
    phases: Vec<Conv>,
}

struct Stage {
    up: Upsample,
    /// `[resblock][conv]`.
    resblocks: Vec<Vec<Conv>>,
}

impl Graph<'_> {
    /// A transposed convolution as one convolution per output phase, its weights scaled by
    /// `scale`.
    fn upsample(&self, name: &str, scale: f32) -> Result<Upsample, String> {
        let (n, w, bias) = self.layer(name, "ConvTranspose", 1)?;
        if n.one("group", 1)? != 1 || n.one("dilations", 1)? != 1 {
            return Err(format!("{name} is grouped or dilated"));
        }
        if n.ints("output_padding")?.iter().any(|&p| p != 0)
            || n.attributes.contains_key("output_shape")
        {
            return Err(format!("{name} sets its output's shape"));
        }
        let [ins, outs, kernel] = w.dims[..] else {
            unreachable!("`layer` checked the weights are 3-D")
        };
        let (stride, pad) = (n.one("strides", 1)?, n.one("pads", 0)?);
        // Output length (L - 1) * s - 2p + K is s * L only when K - 2p = s.
        let fits = pad.checked_mul(2).and_then(|p| p.checked_add(stride)) == Some(kernel);
        if stride == 0 || kernel % stride != 0 || !fits {
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
            stages.push(Stage {
                up,
                resblocks: blocks,
            });
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
            for c in s.resblocks.iter().flatten() {
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
                    .flat_map(|s| s.up.phases.iter().chain(s.resblocks.iter().flatten())),
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
        // On one of the pool's own threads: each split (conv_pre, then each stage's spans) is
        // then a job the other threads take from its queue, not a wake-up from outside the pool.
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
            let (block, blocks) = spans(out_len, parts);
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
                .resblocks
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
        let resblocks = stage.resblocks.len();
        for (j, convs) in stage.resblocks.iter().enumerate() {
            // The block's running value (raw, activated): the upsampled signal, then `h[k]`.
            let mut cur: Option<usize> = None;
            // What this chain's convolutions still to come read beyond the span.
            let mut need: usize = convs.iter().map(pad).sum();
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
                let e = if j + 1 < resblocks {
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

/// Spans a stage of `len` samples is cut into: as many as the `threads` can share evenly, each
/// at most about `BLOCK` samples long, in whole tiles. The scratch of a 768-sample span (five
/// busy buffers of 32 channels) fits in a core's 1 MB second-level cache; the spans' overlap (up
/// to 45 samples each side) is then a few per cent of the work.
fn spans(len: usize, threads: usize) -> (usize, usize) {
    let threads = threads.max(1);
    let count = len.div_ceil(threads * BLOCK).max(1) * threads;
    let block = len.div_ceil(count).div_ceil(TIME_BLOCK).max(1) * TIME_BLOCK;
    (block, len.div_ceil(block))
}

const BLOCK: usize = 768;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_cover_a_stage_in_whole_tiles_and_share_evenly() {
        for len in [1, 47, 48, 224, 1792, 7168, 40_000, 160_000] {
            for threads in [1, 2, 3] {
                let (block, count) = spans(len, threads);
                assert_eq!(block % TIME_BLOCK, 0, "{len} {threads}");
                assert!(
                    block * count >= len && (count - 1) * block < len,
                    "{len} {threads}"
                );
                assert!(
                    block <= BLOCK.max(TIME_BLOCK) + TIME_BLOCK,
                    "{len} {threads}: {block}"
                );
                if len >= threads * TIME_BLOCK * 4 {
                    // Big enough to share: every thread gets a span, none more than one extra.
                    assert!(count >= threads, "{len} {threads}: {count} spans");
                    let per = count.div_ceil(threads);
                    assert!(
                        count > (threads - 1) * per || threads == 1,
                        "{len} {threads}: {count}"
                    );
                }
            }
        }
    }
}
