//! The encoder: writes canonical bencode into a `Vec<u8>`.

use std::collections::BTreeMap;

use super::decode::{Spanned, Value};

/// An owned bencode value, for building output and for tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnedValue {
    Bytes(Vec<u8>),
    Int(i64),
    List(Vec<OwnedValue>),
    Dict(BTreeMap<Vec<u8>, OwnedValue>),
}

impl OwnedValue {
    /// Append the encoding of `self` to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            OwnedValue::Bytes(b) => encode_bytes(out, b),
            OwnedValue::Int(i) => encode_int(out, *i),
            OwnedValue::List(items) => {
                out.push(b'l');
                for item in items {
                    item.encode(out);
                }
                out.push(b'e');
            }
            OwnedValue::Dict(entries) => {
                out.push(b'd');
                for (k, v) in entries {
                    encode_bytes(out, k);
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

impl From<&Value<'_>> for OwnedValue {
    fn from(v: &Value<'_>) -> Self {
        match v {
            Value::Bytes(b) => OwnedValue::Bytes(b.to_vec()),
            Value::Int(i) => OwnedValue::Int(*i),
            Value::List(items) => {
                OwnedValue::List(items.iter().map(|s| (&s.value).into()).collect())
            }
            Value::Dict(entries) => OwnedValue::Dict(
                entries
                    .iter()
                    .map(|(k, v)| (k.to_vec(), (&v.value).into()))
                    .collect(),
            ),
        }
    }
}

/// Append the encoding of a decoded value. Values produced by the decoder
/// are canonical, so this reproduces their input bytes exactly.
pub fn encode(value: &Spanned<'_>, out: &mut Vec<u8>) {
    encode_value(&value.value, out);
}

fn encode_value(value: &Value<'_>, out: &mut Vec<u8>) {
    match value {
        Value::Bytes(b) => encode_bytes(out, b),
        Value::Int(i) => encode_int(out, *i),
        Value::List(items) => {
            out.push(b'l');
            for item in items {
                encode_value(&item.value, out);
            }
            out.push(b'e');
        }
        Value::Dict(entries) => {
            out.push(b'd');
            for (k, v) in entries {
                encode_bytes(out, k);
                encode_value(&v.value, out);
            }
            out.push(b'e');
        }
    }
}

/// `<len>:<bytes>`
pub fn encode_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(bytes);
}

/// `i<n>e`
pub fn encode_int(out: &mut Vec<u8>, n: i64) {
    out.push(b'i');
    out.extend_from_slice(n.to_string().as_bytes());
    out.push(b'e');
}

/// Builds a dictionary from entries added in any order; [`DictBuilder::finish`]
/// writes them with keys sorted. Adding a key twice keeps the last value.
#[derive(Default, Debug, Clone)]
pub struct DictBuilder {
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl DictBuilder {
    pub fn new() -> Self {
        Self::default()
    }
    /// Add a value that is already encoded (e.g. a raw `info` span or a
    /// nested dictionary).
    pub fn raw(&mut self, key: impl AsRef<[u8]>, encoded: Vec<u8>) -> &mut Self {
        self.entries.insert(key.as_ref().to_vec(), encoded);
        self
    }
    pub fn bytes(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> &mut Self {
        let mut encoded = Vec::with_capacity(value.as_ref().len() + 8);
        encode_bytes(&mut encoded, value.as_ref());
        self.raw(key, encoded)
    }
    pub fn int(&mut self, key: impl AsRef<[u8]>, value: i64) -> &mut Self {
        let mut encoded = Vec::with_capacity(12);
        encode_int(&mut encoded, value);
        self.raw(key, encoded)
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// Append `d...e` to `out`.
    pub fn finish_into(&self, out: &mut Vec<u8>) {
        out.push(b'd');
        for (k, v) in &self.entries {
            encode_bytes(out, k);
            out.extend_from_slice(v);
        }
        out.push(b'e');
    }
    pub fn finish(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.finish_into(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_sorts_keys() {
        let mut d = DictBuilder::new();
        d.int("z", 1).bytes("a", "x").int("m", -5);
        assert_eq!(d.finish(), b"d1:a1:x1:mi-5e1:zi1ee");
    }
}
