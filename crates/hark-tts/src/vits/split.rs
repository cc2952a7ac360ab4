//! A Piper voice's single ONNX graph cut into VITS's three stages:
//!
//! - the front: text encoder, duration predictor and the prior sample `z_p`, run once per
//!   sentence over its phonemes (cheap: a few milliseconds);
//! - the flow (`/flow/…` in Piper's export): `z_p` → latent `z`, a stack of convolutions over the
//!   audio frames;
//! - the decoder (`/dec/…`, HiFi-GAN): `z` → waveform, most of the cost.
//!
//! Flow and decoder only look a few frames to each side, so they can run on a slice of the
//! frames; that is what lets the first fraction of a second be heard before the rest is decoded.
//!
//! The cut is made on the graph's own node names (every Piper export has them). Weights are
//! copied byte for byte; a `Constant` node a later stage reads is copied into it; every other
//! tensor that crosses a cut becomes an output of one part and an input of the next, typed from
//! the graph's `value_info`. A graph this does not fit is refused, and the voice runs whole.

use std::collections::{HashMap, HashSet};

use super::proto::onnx::*;
use super::proto::{
    fields, model_graph, put_bytes, put_field, put_varint, string, strings, Field, FIXED32, LEN,
};

/// The three parts, as ONNX models, and the tensors that pass between them.
pub struct Parts {
    pub front: Vec<u8>,
    pub flow: Vec<u8>,
    pub decoder: Vec<u8>,
    /// What each part reads that an earlier part computed (graph inputs feed the front only).
    pub flow_inputs: Vec<String>,
    pub decoder_inputs: Vec<String>,
}

const FRONT: u8 = 0;
const FLOW: u8 = 1;
const DECODER: u8 = 2;

struct Node<'a> {
    body: &'a [u8],
    name: &'a str,
    op_type: &'a str,
    inputs: Vec<&'a str>,
    outputs: Vec<&'a str>,
}

fn named<'a>(
    fields: &[Field<'a>],
    number: u32,
    name_field: u32,
) -> Result<Vec<(&'a str, &'a [u8])>, String> {
    fields
        .iter()
        .filter(|f| f.number == number && f.wire == LEN)
        .map(|f| Ok((string(&super::proto::fields(f.body)?, name_field)?, f.body)))
        .collect()
}

/// A random node (VITS samples its durations and its prior with `RandomNormalLike`) given a
/// fixed seed when it has none, so that a voice says a text the same way in every run (the same
/// sequence of calls gives the same audio) and a test of it is repeatable; the noise is as
/// random as before within a run. `None` for any other node.
fn seeded(node: &Node<'_>, index: usize) -> Option<Vec<u8>> {
    if !matches!(
        node.op_type,
        "RandomNormalLike" | "RandomNormal" | "RandomUniformLike" | "RandomUniform"
    ) {
        return None;
    }
    let has_seed = fields(node.body).ok()?.iter().any(|f| {
        f.number == NODE_ATTRIBUTE
            && fields(f.body)
                .ok()
                .and_then(|a| string(&a, ATTRIBUTE_NAME).ok().map(|n| n == "seed"))
                .unwrap_or(false)
    });
    if has_seed {
        return None;
    }
    // AttributeProto { name: "seed", f: index + 1, type: FLOAT }.
    let mut attribute = Vec::new();
    put_bytes(&mut attribute, ATTRIBUTE_NAME, b"seed");
    put_varint(
        &mut attribute,
        u64::from(ATTRIBUTE_FLOAT << 3 | u32::from(FIXED32)),
    );
    attribute.extend_from_slice(&((index + 1) as f32).to_le_bytes());
    put_varint(&mut attribute, u64::from(ATTRIBUTE_TYPE << 3));
    put_varint(&mut attribute, 1);
    let mut body = node.body.to_vec();
    put_bytes(&mut body, NODE_ATTRIBUTE, &attribute);
    Some(body)
}

/// Cuts `model` (a Piper voice's `.onnx` bytes) into front, flow and decoder.
pub fn split(model: &[u8]) -> Result<Parts, String> {
    let (top, g) = model_graph(model)?;
    if g.iter().any(|f| f.number == GRAPH_SPARSE_INITIALIZER) {
        return Err("sparse initializers are not supported".into());
    }
    let nodes: Vec<Node> = g
        .iter()
        .filter(|f| f.number == GRAPH_NODE && f.wire == LEN)
        .map(|f| {
            let n = fields(f.body)?;
            Ok(Node {
                body: f.body,
                name: string(&n, NODE_NAME)?,
                op_type: string(&n, NODE_OP_TYPE)?,
                inputs: strings(&n, NODE_INPUT)?,
                outputs: strings(&n, NODE_OUTPUT)?,
            })
        })
        .collect::<Result<_, String>>()?;
    if let Some(n) = nodes
        .iter()
        .find(|n| matches!(n.op_type, "If" | "Loop" | "Scan"))
    {
        return Err(format!("{} node {} has a subgraph", n.op_type, n.name));
    }
    let initializers: HashMap<&str, &[u8]> = named(&g, GRAPH_INITIALIZER, TENSOR_NAME)?
        .into_iter()
        .collect();
    let graph_inputs = named(&g, GRAPH_INPUT, VALUE_INFO_NAME)?;
    let graph_outputs = named(&g, GRAPH_OUTPUT, VALUE_INFO_NAME)?;
    let mut types: HashMap<&str, &[u8]> = named(&g, GRAPH_VALUE_INFO, VALUE_INFO_NAME)?
        .into_iter()
        .collect();
    types.extend(graph_outputs.iter().copied());

    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for o in &n.outputs {
            producer.insert(o, i);
        }
    }
    // A stage is the nodes its prefix names plus everything computed from them (ONNX keeps
    // nodes in topological order, so one pass finds it). Constants do not carry a stage along:
    // they are copied wherever they are read.
    let mut stage = vec![FRONT; nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        let fed_by = |s: u8| {
            n.inputs.iter().any(|t| {
                producer
                    .get(t)
                    .is_some_and(|&p| stage[p] == s && nodes[p].op_type != "Constant")
            })
        };
        stage[i] = if n.name.starts_with("/dec/") || fed_by(DECODER) {
            DECODER
        } else if n.name.starts_with("/flow/") || fed_by(FLOW) {
            FLOW
        } else {
            FRONT
        };
    }
    for s in [FLOW, DECODER] {
        if !stage.contains(&s) {
            return Err("no /flow/ or /dec/ nodes: not a Piper VITS export".into());
        }
    }
    for (name, _) in &graph_outputs {
        if producer.get(name).map(|&p| stage[p]) != Some(DECODER) {
            return Err(format!(
                "graph output {name} is not computed by the decoder"
            ));
        }
    }

    let input_names: HashSet<&str> = graph_inputs.iter().map(|(n, _)| *n).collect();
    // Per stage: the constants it copies and the tensors it reads from an earlier stage.
    let mut copied: [Vec<usize>; 3] = Default::default();
    let mut reads: [Vec<&str>; 3] = Default::default();
    for s in [FRONT, FLOW, DECODER] {
        let mut seen = HashSet::new();
        for (i, n) in nodes.iter().enumerate().filter(|(i, _)| stage[*i] == s) {
            for &t in &n.inputs {
                if t.is_empty() || initializers.contains_key(t) || !seen.insert(t) {
                    continue;
                }
                match producer.get(t) {
                    Some(&p) if stage[p] == s => {}
                    Some(&p) if nodes[p].op_type == "Constant" => copied[s as usize].push(p),
                    Some(&p) if stage[p] < s => reads[s as usize].push(t),
                    Some(_) => {
                        return Err(format!(
                            "node {} reads {t} from a later stage",
                            nodes[i].name
                        ))
                    }
                    None if input_names.contains(t) && s == FRONT => {}
                    None => {
                        return Err(format!("node {} reads {t}, which nothing computes", n.name))
                    }
                }
            }
        }
    }
    let computed_by = |t: &str, s: u8| producer.get(t).is_some_and(|&p| stage[p] == s);
    let mut front_outputs: Vec<&str> = Vec::new();
    for &t in reads[FLOW as usize].iter().chain(&reads[DECODER as usize]) {
        if computed_by(t, FRONT) && !front_outputs.contains(&t) {
            front_outputs.push(t);
        }
    }
    let flow_outputs: Vec<&str> = reads[DECODER as usize]
        .iter()
        .copied()
        .filter(|t| computed_by(t, FLOW))
        .collect();
    if flow_outputs.is_empty() {
        return Err("the decoder reads nothing from the flow".into());
    }
    let value_info = |t: &str| {
        types
            .get(t)
            .copied()
            .ok_or_else(|| format!("no type recorded for {t}"))
    };
    let typed = |names: &[&str]| {
        names
            .iter()
            .map(|t| value_info(t))
            .collect::<Result<Vec<_>, _>>()
    };
    let original_inputs: Vec<&[u8]> = graph_inputs.iter().map(|(_, b)| *b).collect();
    let original_outputs: Vec<&[u8]> = graph_outputs.iter().map(|(_, b)| *b).collect();

    let graph_name = string(&g, GRAPH_NAME)?;
    let part = |s: u8, inputs: &[&[u8]], outputs: &[&[u8]]| {
        let mut body = Vec::new();
        put_bytes(&mut body, GRAPH_NAME, graph_name.as_bytes());
        let mut copies = copied[s as usize].clone();
        copies.sort_unstable();
        copies.dedup();
        let members = copies
            .into_iter()
            .chain((0..nodes.len()).filter(|&i| stage[i] == s));
        let mut weights = HashSet::new();
        for i in members {
            match seeded(&nodes[i], i) {
                Some(node) => put_bytes(&mut body, GRAPH_NODE, &node),
                None => put_bytes(&mut body, GRAPH_NODE, nodes[i].body),
            }
            for t in &nodes[i].inputs {
                if let Some(w) = initializers.get(t) {
                    if weights.insert(*t) {
                        put_bytes(&mut body, GRAPH_INITIALIZER, w);
                    }
                }
            }
        }
        for i in inputs {
            put_bytes(&mut body, GRAPH_INPUT, i);
        }
        for o in outputs {
            put_bytes(&mut body, GRAPH_OUTPUT, o);
        }
        // The shapes of what the part computes: without them ONNX Runtime cannot plan its
        // convolutions' layouts, and the flow and decoder run two to four times slower.
        for (i, n) in nodes.iter().enumerate() {
            if stage[i] == s {
                for t in &n.outputs {
                    if let Some(info) = types.get(t) {
                        put_bytes(&mut body, GRAPH_VALUE_INFO, info);
                    }
                }
            }
        }
        let mut model_bytes = Vec::with_capacity(body.len() + 64);
        for f in &top {
            if f.number == MODEL_GRAPH {
                put_bytes(&mut model_bytes, MODEL_GRAPH, &body);
            } else {
                put_field(&mut model_bytes, f);
            }
        }
        model_bytes
    };
    let flow_reads = reads[FLOW as usize].clone();
    let decoder_reads = reads[DECODER as usize].clone();
    Ok(Parts {
        front: part(FRONT, &original_inputs, &typed(&front_outputs)?),
        flow: part(FLOW, &typed(&flow_reads)?, &typed(&flow_outputs)?),
        decoder: part(DECODER, &typed(&decoder_reads)?, &original_outputs),
        flow_inputs: flow_reads.iter().map(|s| s.to_string()).collect(),
        decoder_inputs: decoder_reads.iter().map(|s| s.to_string()).collect(),
    })
}
