//! Loader for the byte vectors compiled from the real C headers (`shared/reference/vectors/`).
//! Every wire module tests its encoders and decoders against these, both ways.
//!
//! The shared folder is found at `$QUBES_SHARED_DIR`, else `../shared` beside the workspace.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

/// One file of vectors (`xs_wire.json`, `vchan.json`, ...).
#[derive(Debug, Deserialize)]
pub struct VectorFile {
    /// Protocol name.
    pub protocol: String,
    /// Named constants from the headers (integers or strings).
    pub constants: BTreeMap<String, Value>,
    /// The vectors.
    pub vectors: Vec<Vector>,
}

/// One message or struct with its exact bytes.
#[derive(Debug, Clone, Deserialize)]
pub struct Vector {
    /// Unique name within its file.
    pub name: String,
    /// What the bytes are.
    #[serde(rename = "struct")]
    pub struct_: String,
    /// Byte count of `hex`.
    pub size: usize,
    /// Who sends it, where given.
    #[serde(default)]
    pub direction: Option<String>,
    /// The fields tiling the buffer.
    pub fields: Vec<Field>,
    /// Derived integers (ring layouts).
    #[serde(default)]
    pub layout: Option<BTreeMap<String, Value>>,
    /// The exact bytes, hex.
    pub hex: String,
}

/// One field of a vector.
#[derive(Debug, Clone, Deserialize)]
pub struct Field {
    /// Dotted name, e.g. `msg_header.type`.
    pub name: String,
    /// Offset in the buffer.
    pub offset: usize,
    /// Size in bytes.
    pub size: usize,
    /// `u32`, `char[64]`, `bytes`, `bytes_hex`, `pad`, `region`, `u32[4]`, ...
    #[serde(rename = "type")]
    pub ty: String,
    /// The value (see the vectors README).
    pub value: Value,
}

/// The `shared/` folder.
pub fn shared_dir() -> PathBuf {
    if let Ok(d) = std::env::var("QUBES_SHARED_DIR") {
        return PathBuf::from(d);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

/// Loads `reference/vectors/<name>` (e.g. `"qrexec.json"`); panics with a clear message if the
/// file is missing, since tests cannot run without it.
pub fn load(name: &str) -> VectorFile {
    let path = shared_dir().join("reference/vectors").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; put ../shared beside the checkout or set QUBES_SHARED_DIR",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: bad JSON: {e}", path.display()))
}

/// Decodes a hex string.
pub fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

impl VectorFile {
    /// The vector with this name; panics if absent.
    pub fn get(&self, name: &str) -> &Vector {
        self.vectors
            .iter()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("no vector named {name:?} in {}", self.protocol))
    }
    /// An integer constant; panics if absent.
    pub fn constant(&self, name: &str) -> i64 {
        self.constants
            .get(name)
            .and_then(Value::as_i64)
            .unwrap_or_else(|| panic!("no integer constant {name:?} in {}", self.protocol))
    }
}

impl Vector {
    /// The exact bytes.
    pub fn bytes(&self) -> Vec<u8> {
        let b = unhex(&self.hex);
        assert_eq!(b.len(), self.size, "{}: size mismatch", self.name);
        b
    }
    /// The field with this name; panics if absent.
    pub fn field(&self, name: &str) -> &Field {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("{}: no field {name:?}", self.name))
    }
    /// Whether a field exists.
    pub fn has(&self, name: &str) -> bool {
        self.fields.iter().any(|f| f.name == name)
    }
    /// An integer field (u8..u64, i8..i64).
    pub fn u64(&self, name: &str) -> u64 {
        let f = self.field(name);
        f.value
            .as_u64()
            .or_else(|| f.value.as_i64().map(|v| v as u64))
            .unwrap_or_else(|| {
                panic!(
                    "{}: field {name:?} is not an integer: {}",
                    self.name, f.value
                )
            })
    }
    /// A signed integer field.
    pub fn i64(&self, name: &str) -> i64 {
        let f = self.field(name);
        f.value
            .as_i64()
            .unwrap_or_else(|| panic!("{}: field {name:?} is not an i64", self.name))
    }
    /// A `char[N]` field's text, or a `bytes` field's payload as a string.
    pub fn str(&self, name: &str) -> &str {
        let f = self.field(name);
        f.value
            .as_str()
            .unwrap_or_else(|| panic!("{}: field {name:?} is not text", self.name))
    }
    /// A field's raw bytes: `bytes` (string payload), `bytes_hex`, or the slice of `hex` it covers.
    pub fn raw(&self, name: &str) -> Vec<u8> {
        let f = self.field(name);
        match f.ty.as_str() {
            "bytes" => f.value.as_str().expect("bytes value").as_bytes().to_vec(),
            "bytes_hex" => unhex(f.value.as_str().expect("hex value")),
            _ => self.bytes()[f.offset..f.offset + f.size].to_vec(),
        }
    }
    /// An integer array field (`u32[k]`, `u8[k]`).
    pub fn array(&self, name: &str) -> Vec<u64> {
        let f = self.field(name);
        f.value
            .as_array()
            .unwrap_or_else(|| panic!("{}: field {name:?} is not an array", self.name))
            .iter()
            .map(|v| {
                v.as_u64()
                    .or_else(|| v.as_i64().map(|x| x as u64))
                    .expect("integer")
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loader itself: every vector's fields tile its bytes and integers decode at offsets.
    #[test]
    fn all_files_load_and_tile() {
        for file in [
            "xs_wire.json",
            "vchan.json",
            "qrexec.json",
            "qubesdb.json",
            "gui.json",
            "netif_blkif.json",
            "boot.json",
        ] {
            let vf = load(file);
            assert!(!vf.vectors.is_empty(), "{file}");
            for v in &vf.vectors {
                let b = v.bytes();
                let mut at = 0;
                for f in &v.fields {
                    assert_eq!(
                        f.offset, at,
                        "{file}/{}: field {} does not follow",
                        v.name, f.name
                    );
                    at += f.size;
                    if let ("u32", Some(x)) = (f.ty.as_str(), f.value.as_u64()) {
                        let got = u32::from_le_bytes(b[f.offset..f.offset + 4].try_into().unwrap());
                        assert_eq!(u64::from(got), x, "{file}/{}: {}", v.name, f.name);
                    }
                }
                assert_eq!(
                    at,
                    b.len(),
                    "{file}/{}: fields do not cover the buffer",
                    v.name
                );
            }
        }
    }
}
