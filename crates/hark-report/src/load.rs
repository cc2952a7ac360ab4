//! Reading trace files.

use std::path::Path;

use hark_core::{TurnRecord, SCHEMA_VERSION};

use crate::ReportError;

/// The records of one or more trace files, in file order.
#[derive(Debug, Clone)]
pub struct Run {
    /// What the run is called in tables (its file names).
    pub label: String,
    pub turns: Vec<TurnRecord>,
}

/// Reads and checks every line of each file.
pub fn load_files(paths: &[impl AsRef<Path>]) -> Result<Run, ReportError> {
    let mut turns = Vec::new();
    let mut names = Vec::new();
    for p in paths {
        let p = p.as_ref();
        let text = std::fs::read_to_string(p).map_err(|source| ReportError::Io {
            path: p.display().to_string(),
            source,
        })?;
        turns.extend(parse(&text, &p.display().to_string())?);
        names.push(p.file_name().map_or_else(
            || p.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        ));
    }
    Ok(Run {
        label: names.join(" + "),
        turns,
    })
}

/// Parses one trace file's text; `path` names it in errors.
pub fn parse(text: &str, path: &str) -> Result<Vec<TurnRecord>, ReportError> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            // A JSON object that stops mid-way, on the last line, is a file cut short.
            Err(e) if e.is_eof() => {
                return Err(ReportError::Truncated {
                    path: path.into(),
                    line: line_no,
                    detail: e.to_string(),
                })
            }
            Err(e) => {
                return Err(ReportError::Foreign {
                    path: path.into(),
                    line: line_no,
                    detail: format!("not JSON ({e})"),
                })
            }
        };
        let Some(obj) = value.as_object() else {
            return Err(ReportError::Foreign {
                path: path.into(),
                line: line_no,
                detail: "not a JSON object".into(),
            });
        };
        match obj.get("schema").and_then(|s| s.as_u64()) {
            None => {
                return Err(ReportError::Foreign {
                    path: path.into(),
                    line: line_no,
                    detail: "no `schema` field (was it written by `hark run --trace`?)".into(),
                })
            }
            Some(found) if found != SCHEMA_VERSION as u64 => {
                return Err(ReportError::Schema {
                    path: path.into(),
                    line: line_no,
                    found,
                    expected: SCHEMA_VERSION,
                })
            }
            Some(_) => {}
        }
        let record: TurnRecord =
            serde_json::from_value(value).map_err(|e| ReportError::Foreign {
                path: path.into(),
                line: line_no,
                detail: e.to_string(),
            })?;
        out.push(record);
    }
    if out.is_empty() {
        return Err(ReportError::Empty { path: path.into() });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(schema: u32) -> String {
        let rec = TurnRecord {
            schema,
            turn: 1,
            transcript: "hi".into(),
            ..Default::default()
        };
        serde_json::to_string(&rec).unwrap()
    }

    #[test]
    fn good_lines_parse() {
        let text = format!("{}\n\n{}\n", line(1), line(1));
        assert_eq!(parse(&text, "t").unwrap().len(), 2);
    }

    #[test]
    fn broken_files_say_what_is_wrong() {
        let err = |t: &str| parse(t, "t.jsonl").unwrap_err().to_string();
        assert!(err("").contains("no turn records"));
        assert!(err("\n \n").contains("no turn records"));
        let full = line(1);
        assert!(
            err(&format!("{full}\n{}", &full[..full.len() / 2])).contains("line 2 is cut short")
        );
        assert!(err("{\"name\": \"x\", \"ts\": 1}").contains("no `schema` field"));
        assert!(err("hello world").contains("not JSON"));
        assert!(err("[1, 2]").contains("not a JSON object"));
        assert!(err(&line(2)).contains("schema version 2; this hark reads version 1"));
        assert!(err("{\"schema\": 1, \"turn\": \"one\"}").contains("not a Hark latency record"));
    }
}
