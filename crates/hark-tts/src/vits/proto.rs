//! Just enough of the protobuf wire format to cut an ONNX model into parts: read a message's
//! fields without interpreting what we do not need, and write new messages from the raw bytes of
//! the old ones (weights are copied, never decoded).

/// One field of a message: its number and its value's bytes (for length-delimited fields, the
/// payload without the length).
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    pub number: u32,
    pub wire: u8,
    pub body: &'a [u8],
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
pub const LEN: u8 = 2;
pub const FIXED32: u8 = 5;

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint longer than 10 bytes".into())
}

/// ONNX's field numbers (onnx.proto): what the model cutter and our own stages read.
pub mod onnx {
    pub const MODEL_GRAPH: u32 = 7;
    pub const GRAPH_NODE: u32 = 1;
    pub const GRAPH_NAME: u32 = 2;
    pub const GRAPH_INITIALIZER: u32 = 5;
    pub const GRAPH_INPUT: u32 = 11;
    pub const GRAPH_OUTPUT: u32 = 12;
    pub const GRAPH_VALUE_INFO: u32 = 13;
    pub const GRAPH_SPARSE_INITIALIZER: u32 = 15;
    pub const NODE_INPUT: u32 = 1;
    pub const NODE_OUTPUT: u32 = 2;
    pub const NODE_NAME: u32 = 3;
    pub const NODE_OP_TYPE: u32 = 4;
    pub const NODE_ATTRIBUTE: u32 = 5;
    pub const ATTRIBUTE_NAME: u32 = 1;
    pub const ATTRIBUTE_FLOAT: u32 = 2;
    pub const ATTRIBUTE_INT: u32 = 3;
    pub const ATTRIBUTE_INTS: u32 = 8;
    pub const ATTRIBUTE_TYPE: u32 = 20;
    pub const TENSOR_DIMS: u32 = 1;
    pub const TENSOR_DATA_TYPE: u32 = 2;
    pub const TENSOR_FLOAT_DATA: u32 = 4;
    pub const TENSOR_NAME: u32 = 8;
    pub const TENSOR_RAW_DATA: u32 = 9;
    pub const TENSOR_DATA_LOCATION: u32 = 14;
    pub const VALUE_INFO_NAME: u32 = 1;
}

/// A model's top-level fields and its graph's fields.
pub fn model_graph(model: &[u8]) -> Result<(Vec<Field<'_>>, Vec<Field<'_>>), String> {
    let top = fields(model)?;
    let graph = top
        .iter()
        .find(|f| f.number == onnx::MODEL_GRAPH && f.wire == LEN)
        .ok_or("the model has no graph")?;
    let g = fields(graph.body)?;
    Ok((top, g))
}

/// The value of a varint field (its body as [`fields`] gives it).
pub fn varint_value(body: &[u8]) -> Result<u64, String> {
    varint(body, &mut 0)
}

/// The values of a repeated varint field numbered `number`, packed or not.
pub fn varints(fields: &[Field<'_>], number: u32) -> Result<Vec<u64>, String> {
    let mut out = Vec::new();
    for f in fields.iter().filter(|f| f.number == number) {
        match f.wire {
            VARINT => out.push(varint_value(f.body)?),
            LEN => {
                let mut pos = 0;
                while pos < f.body.len() {
                    out.push(varint(f.body, &mut pos)?);
                }
            }
            w => return Err(format!("field {number} has wire type {w}, not a varint")),
        }
    }
    Ok(out)
}

/// The fields of one message, in file order.
pub fn fields(buf: &[u8]) -> Result<Vec<Field<'_>>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let number = u32::try_from(key >> 3).map_err(|_| "field number out of range")?;
        let wire = (key & 7) as u8;
        let start = pos;
        let end = match wire {
            VARINT => {
                varint(buf, &mut pos)?;
                pos
            }
            FIXED64 => start + 8,
            FIXED32 => start + 4,
            LEN => {
                let n = usize::try_from(varint(buf, &mut pos)?).map_err(|_| "length too large")?;
                pos.checked_add(n).ok_or("length too large")?
            }
            w => return Err(format!("unsupported wire type {w} in field {number}")),
        };
        let body_start = if wire == LEN { pos } else { start };
        let body = buf
            .get(body_start..end)
            .ok_or_else(|| format!("field {number} runs past the end of its message"))?;
        pos = end;
        out.push(Field { number, wire, body });
    }
    Ok(out)
}

/// The string fields numbered `number` of a message.
pub fn strings<'a>(fields: &[Field<'a>], number: u32) -> Result<Vec<&'a str>, String> {
    fields
        .iter()
        .filter(|f| f.number == number && f.wire == LEN)
        .map(|f| std::str::from_utf8(f.body).map_err(|_| format!("field {number} is not UTF-8")))
        .collect()
}

/// The first string field numbered `number`, or "".
pub fn string<'a>(fields: &[Field<'a>], number: u32) -> Result<&'a str, String> {
    Ok(strings(fields, number)?.first().copied().unwrap_or(""))
}

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a length-delimited field.
pub fn put_bytes(out: &mut Vec<u8>, number: u32, body: &[u8]) {
    put_varint(out, (u64::from(number) << 3) | u64::from(LEN));
    put_varint(out, body.len() as u64);
    out.extend_from_slice(body);
}

/// Appends `field` as it was read.
pub fn put_field(out: &mut Vec<u8>, field: &Field<'_>) {
    put_varint(out, (u64::from(field.number) << 3) | u64::from(field.wire));
    if field.wire == LEN {
        put_varint(out, field.body.len() as u64);
    }
    out.extend_from_slice(field.body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        let mut msg = Vec::new();
        put_bytes(&mut msg, 3, b"name");
        put_varint(&mut msg, (7 << 3) | u64::from(VARINT));
        put_varint(&mut msg, 300);
        put_bytes(&mut msg, 1, &[0u8; 200]);
        let parsed = fields(&msg).unwrap();
        assert_eq!(parsed.len(), 3);
        assert_eq!(string(&parsed, 3).unwrap(), "name");
        assert_eq!(parsed[1].number, 7);
        assert_eq!(parsed[2].body.len(), 200);
        let mut again = Vec::new();
        for f in &parsed {
            put_field(&mut again, f);
        }
        assert_eq!(again, msg);
    }

    #[test]
    fn truncated_messages_are_errors() {
        let mut msg = Vec::new();
        put_bytes(&mut msg, 1, &[1, 2, 3, 4]);
        assert!(fields(&msg[..msg.len() - 1]).is_err());
        assert!(fields(&[0x80]).is_err());
    }
}
