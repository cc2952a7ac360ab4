//! The pieces of our own decoder that are not HiFi-GAN's own: reading layers out of a voice's
//! ONNX graph, convolutions ready for the kernel ([`super::kernels`]), rows of floats with
//! zeroed margins, and running a convolution across the decoder's threads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use super::kernels::{self, Epilogue, Geometry, Ptr, OUT_BLOCK, TIME_BLOCK};
use super::proto::onnx::*;
use super::proto::{
    fields, model_graph, string, strings, varint_value, varints, Field, FIXED32, LEN,
};

const FLOAT: u64 = 1;

/// Zeroed floats kept on each side of every row, so that a convolution reads its padding in
/// place, and room for a block's last tile to run past its end: enough for a kernel of 7 at
/// dilation 12 (36) after a tile's 47; checked when the voice loads.
pub(super) const MARGIN: usize = 128;

/// A node of the decoder graph: what the generator needs of it.
pub(super) struct Node<'a> {
    pub(super) op_type: &'a str,
    pub(super) inputs: Vec<&'a str>,
    pub(super) attributes: HashMap<&'a str, Field<'a>>,
}

impl Node<'_> {
    pub(super) fn ints(&self, name: &str) -> Result<Vec<i64>, String> {
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

    pub(super) fn float(&self, name: &str) -> Result<Option<f32>, String> {
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
    pub(super) fn one(&self, name: &str, default: i64) -> Result<usize, String> {
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
pub(super) struct Graph<'a> {
    pub(super) nodes: HashMap<&'a str, Node<'a>>,
    pub(super) weights: HashMap<&'a str, &'a [u8]>,
}

impl<'a> Graph<'a> {
    pub(super) fn read(model: &'a [u8]) -> Result<Self, String> {
        let (_, g) = model_graph(model)?;
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

    pub(super) fn has(&self, name: &str) -> bool {
        self.nodes.contains_key(name)
    }

    pub(super) fn node(&self, name: &str, op: &str) -> Result<&Node<'a>, String> {
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
    pub(super) fn weight(&self, n: &Node<'_>, i: usize) -> Result<Option<Tensor>, String> {
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

    pub(super) fn slope(&self, name: &str) -> Result<f32, String> {
        Ok(self
            .node(name, "LeakyRelu")?
            .float("alpha")?
            .unwrap_or(0.01))
    }

    /// A 1-D convolution node `name` of type `op`: the node, its weights (3-D) and its bias,
    /// which must hold one value per output channel (dimension `outs_dim` of the weights).
    pub(super) fn layer(
        &self,
        name: &str,
        op: &str,
        outs_dim: usize,
    ) -> Result<(&Node<'a>, Tensor, Option<Tensor>), String> {
        let n = self.node(name, op)?;
        let w = self
            .weight(n, 1)?
            .ok_or_else(|| format!("{name} has no weights"))?;
        if w.dims.len() != 3 {
            return Err(format!("{name}: weights {:?} are not 1-D", w.dims));
        }
        let bias = self.weight(n, 2)?;
        if let Some(b) = &bias {
            if b.data.len() != w.dims[outs_dim] {
                return Err(format!(
                    "{name}: {} biases for {} outputs",
                    b.data.len(),
                    w.dims[outs_dim]
                ));
            }
        }
        Ok((n, w, bias))
    }

    /// A "same" convolution (output as long as its input), its weights scaled by `scale`.
    pub(super) fn conv(&self, name: &str, scale: f32) -> Result<Conv, String> {
        let (n, w, bias) = self.layer(name, "Conv", 0)?;
        if n.one("group", 1)? != 1 || n.one("strides", 1)? != 1 {
            return Err(format!("{name} is grouped or strided"));
        }
        let [outs, ins, taps] = w.dims[..] else {
            unreachable!("`layer` checked the weights are 3-D")
        };
        let dilation = n.one("dilations", 1)?;
        let pad = n.one("pads", 0)?;
        let span = taps.checked_sub(1).and_then(|t| t.checked_mul(dilation));
        if span.is_none() || pad.checked_mul(2) != span {
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
}

/// A float tensor: its dims and values.
pub(super) struct Tensor {
    pub(super) dims: Vec<usize>,
    pub(super) data: Vec<f32>,
}

pub(super) fn tensor(body: &[u8]) -> Result<Tensor, String> {
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
pub(super) struct Conv {
    pub(super) ins: usize,
    pub(super) outs: usize,
    pub(super) taps: usize,
    pub(super) dilation: usize,
    /// Where tap 0 of output sample 0 reads, relative to input sample 0.
    pub(super) offset: isize,
    pub(super) weights: Vec<f32>,
    pub(super) bias: Vec<f32>,
}

impl Conv {
    /// `weights[o][i][k]`, scaled by `scale`.
    pub(super) fn new(
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
    pub(super) fn reach(&self) -> (isize, isize) {
        let span = ((self.taps - 1) * self.dilation) as isize;
        (-self.offset, self.offset + span)
    }
}

/// Rows of floats with zeroed margins.
#[derive(Default)]
pub(super) struct Buf {
    pub(super) data: Vec<f32>,
    pub(super) rows: usize,
    pub(super) len: usize,
    pub(super) stride: usize,
}

impl Buf {
    /// Makes room for `rows` rows of `len` samples (rounded up to whole tiles), zeroing margins
    /// and the tail after `len`. The samples themselves are left for the next write.
    pub(super) fn shape(&mut self, rows: usize, len: usize) {
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

    pub(super) fn tiles(&self) -> usize {
        (self.stride - 2 * MARGIN) / TIME_BLOCK
    }

    /// Sample 0 of row 0.
    pub(super) fn origin(&mut self) -> Ptr {
        Ptr(self.data[MARGIN..].as_mut_ptr())
    }

    /// Zeroes what a convolution wrote past `len` (its last tile runs over).
    pub(super) fn clear_tail(&mut self) {
        let (len, stride) = (self.len, self.stride);
        for r in 0..self.rows {
            self.data[r * stride + MARGIN + len..(r + 1) * stride - MARGIN].fill(0.0);
        }
    }

    /// Zeroes each row's samples before `inside.0` and from `inside.1` on.
    pub(super) fn zero_outside(&mut self, inside: (usize, usize)) {
        let (len, stride) = (self.len, self.stride);
        let (lo, hi) = (inside.0.min(len), inside.1.min(len));
        for r in 0..self.rows {
            let row = &mut self.data[r * stride + MARGIN..r * stride + MARGIN + len];
            row[..lo].fill(0.0);
            row[hi.max(lo)..].fill(0.0);
        }
    }

    pub(super) fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.stride + MARGIN..r * self.stride + MARGIN + self.len]
    }

    pub(super) fn row_mut(&mut self, r: usize) -> &mut [f32] {
        &mut self.data[r * self.stride + MARGIN..r * self.stride + MARGIN + self.len]
    }
}

/// How far a "same" convolution reads to each side.
pub(super) fn pad(c: &Conv) -> usize {
    (-c.offset) as usize
}

/// Where a whole-signal buffer's rows start, for the threads that share it.
#[derive(Clone, Copy)]
pub(super) struct Rows {
    pub(super) origin: Ptr,
    pub(super) stride: usize,
}

impl Rows {
    pub(super) fn of(buf: &mut Buf) -> Rows {
        Rows {
            origin: buf.origin(),
            stride: buf.stride,
        }
    }

    pub(super) fn at(&self, sample: isize) -> Ptr {
        self.origin.at(sample)
    }
}

/// The decoder's threads, and the flag that stops a decode.
pub(super) struct Pool<'a> {
    pub(super) threads: &'a rayon::ThreadPool,
    pub(super) stop: &'a AtomicBool,
}

impl Pool<'_> {
    pub(super) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Tiles a thread computes between looks at the stop flag (a few hundred microseconds).
const TILES_BETWEEN_CHECKS: usize = 64;

/// Runs `c` over the `tiles` tiles of `input`, split across the pool's threads; returns early,
/// leaving the output unfinished, once the stop flag is set.
pub(super) fn conv(pool: &Pool, c: &Conv, input: &mut Buf, tiles: usize, e: Epilogue) {
    if pool.stopped() {
        return;
    }
    let g = geometry(c, input.origin(), input.stride);
    let blocks = c.outs.div_ceil(OUT_BLOCK);
    let threads = pool.threads.current_num_threads();
    // Split the samples across the threads; a signal too short for that (conv_pre on a
    // sentence's first piece is one tile) is split by output channels instead.
    let by_time = tiles >= 2 * threads || blocks < threads;
    let (units, parts) = if by_time {
        (tiles, threads.min(tiles).max(1))
    } else {
        (blocks, threads)
    };
    let per = units.div_ceil(parts);
    pool.threads.scope(|scope| {
        for p in 0..parts {
            let (g, e) = (&g, &e);
            scope.spawn(move |_| {
                let end = ((p + 1) * per).min(units);
                let mut at = p * per;
                while at < end && !pool.stopped() {
                    let next = (at + TILES_BETWEEN_CHECKS).min(end);
                    let (t, b) = if by_time {
                        (at..next, 0..blocks)
                    } else {
                        (0..tiles, at..next)
                    };
                    // SAFETY: the CPU has AVX-512 (checked when the layers were read); the
                    // buffers' margins cover every read (checked against `MARGIN` then), every
                    // buffer was shaped for these tiles, and the threads write disjoint tiles or
                    // disjoint channels.
                    unsafe { kernels::conv_tiles(g, e, t, b) }
                    at = next;
                }
            });
        }
    });
}

pub(super) fn geometry(c: &Conv, input: Ptr, in_stride: usize) -> Geometry {
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
pub(super) fn conv_range(c: &Conv, input: Ptr, in_stride: usize, n: usize, e: Epilogue) {
    let g = geometry(c, input, in_stride);
    // SAFETY: as in `conv`; the block's buffers were shaped with room for the last tile's run
    // past the span, and no other thread touches this thread's scratch or this span's output.
    let blocks = 0..c.outs.div_ceil(OUT_BLOCK);
    unsafe { kernels::conv_tiles(&g, &e, 0..n.div_ceil(TIME_BLOCK), blocks) }
}

#[cfg(test)]
mod tests {
    use super::super::proto::{put_bytes, put_varint};
    use super::*;

    /// A float tensor as ONNX stores it.
    fn tensor_proto(name: &str, dims: &[u64], values: &[f32]) -> Vec<u8> {
        let mut t = Vec::new();
        for &d in dims {
            put_varint(&mut t, u64::from(TENSOR_DIMS << 3));
            put_varint(&mut t, d);
        }
        put_varint(&mut t, u64::from(TENSOR_DATA_TYPE << 3));
        put_varint(&mut t, FLOAT);
        put_bytes(&mut t, TENSOR_NAME, name.as_bytes());
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        put_bytes(&mut t, TENSOR_RAW_DATA, &raw);
        t
    }

    /// A model with one Conv node `c` (no attributes: kernel 1), its weights and bias.
    fn one_conv(weight_dims: &[u64], bias_len: usize) -> Vec<u8> {
        let n: u64 = weight_dims.iter().product();
        let mut node = Vec::new();
        for input in ["x", "w", "b"] {
            put_bytes(&mut node, NODE_INPUT, input.as_bytes());
        }
        put_bytes(&mut node, NODE_NAME, b"c");
        put_bytes(&mut node, NODE_OP_TYPE, b"Conv");
        let mut graph = Vec::new();
        put_bytes(&mut graph, GRAPH_NODE, &node);
        let weights = tensor_proto("w", weight_dims, &vec![0.5; n as usize]);
        put_bytes(&mut graph, GRAPH_INITIALIZER, &weights);
        let bias = tensor_proto("b", &[bias_len as u64], &vec![0.1; bias_len]);
        put_bytes(&mut graph, GRAPH_INITIALIZER, &bias);
        let mut model = Vec::new();
        put_bytes(&mut model, MODEL_GRAPH, &graph);
        model
    }

    #[test]
    fn a_convolution_is_read_with_its_weights_and_bias() {
        let model = one_conv(&[8, 2, 1], 8);
        let c = Graph::read(&model).unwrap().conv("c", 1.0).unwrap();
        assert_eq!(
            (c.outs, c.ins, c.taps, c.dilation, c.offset),
            (8, 2, 1, 1, 0)
        );
        assert_eq!(&c.bias[..8], &[0.1; 8]);
    }

    #[test]
    fn a_bias_of_the_wrong_length_is_an_error_not_a_panic() {
        for bias_len in [3, 9] {
            let model = one_conv(&[8, 2, 1], bias_len);
            let err = Graph::read(&model).unwrap().conv("c", 1.0).err();
            assert!(
                err.as_deref().is_some_and(|e| e.contains("biases")),
                "{err:?}"
            );
        }
        // And weights that are not 1-D convolution weights.
        let model = one_conv(&[8, 2], 8);
        assert!(Graph::read(&model).unwrap().conv("c", 1.0).is_err());
    }
}
