//! The decoder. See the module docs of [`crate::bencode`].

use std::fmt;

/// Deepest nesting of lists and dictionaries accepted.
pub const MAX_DEPTH: usize = 64;

/// A decoded value together with the exact bytes it was decoded from.
#[derive(Clone, PartialEq, Eq)]
pub struct Spanned<'a> {
    pub value: Value<'a>,
    /// The exact encoded bytes of this value in the input.
    pub raw: &'a [u8],
    /// Offset of `raw` in the input given to [`decode`] / [`decode_prefix`].
    pub offset: usize,
}

/// A bencoded value borrowing from the input.
#[derive(Clone, PartialEq, Eq)]
pub enum Value<'a> {
    Bytes(&'a [u8]),
    Int(i64),
    List(Vec<Spanned<'a>>),
    /// Keys strictly increasing (the decoder enforces it), so lookups can
    /// binary search.
    Dict(Vec<(&'a [u8], Spanned<'a>)>),
}

/// Why the input is not (canonical) bencode. Offsets are byte offsets into the
/// input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("bencode: input ends at offset {offset} inside {inside}: the data is truncated")]
    UnexpectedEof { offset: usize, inside: &'static str },
    #[error("bencode: unexpected byte 0x{byte:02x} at offset {offset}: expected {expected}")]
    UnexpectedByte {
        offset: usize,
        byte: u8,
        expected: &'static str,
    },
    #[error("bencode: invalid integer at offset {offset}: {reason}")]
    InvalidInteger { offset: usize, reason: &'static str },
    #[error("bencode: invalid string length at offset {offset}: {reason}")]
    InvalidLength { offset: usize, reason: &'static str },
    #[error(
        "bencode: string at offset {offset} claims {length} bytes but only {remaining} remain"
    )]
    StringTooLong {
        offset: usize,
        length: u64,
        remaining: usize,
    },
    #[error("bencode: dictionary key at offset {offset} is not a byte string")]
    NonStringKey { offset: usize },
    #[error("bencode: dictionary keys not sorted at offset {offset}")]
    UnsortedKeys { offset: usize },
    #[error("bencode: duplicate dictionary key at offset {offset}")]
    DuplicateKey { offset: usize },
    #[error("bencode: nesting deeper than {limit} levels at offset {offset}")]
    TooDeep { offset: usize, limit: usize },
    #[error("bencode: {count} trailing bytes after the value at offset {offset}")]
    TrailingBytes { offset: usize, count: usize },
}

impl DecodeError {
    /// The byte offset the error refers to.
    pub fn offset(&self) -> usize {
        match *self {
            DecodeError::UnexpectedEof { offset, .. }
            | DecodeError::UnexpectedByte { offset, .. }
            | DecodeError::InvalidInteger { offset, .. }
            | DecodeError::InvalidLength { offset, .. }
            | DecodeError::StringTooLong { offset, .. }
            | DecodeError::NonStringKey { offset }
            | DecodeError::UnsortedKeys { offset }
            | DecodeError::DuplicateKey { offset }
            | DecodeError::TooDeep { offset, .. }
            | DecodeError::TrailingBytes { offset, .. } => offset,
        }
    }
}

/// Decode exactly one value; bytes after it are an error.
pub fn decode(input: &[u8]) -> Result<Spanned<'_>, DecodeError> {
    let (value, used) = decode_prefix(input)?;
    if used != input.len() {
        return Err(DecodeError::TrailingBytes {
            offset: used,
            count: input.len() - used,
        });
    }
    Ok(value)
}

/// Decode one value from the start of `input` and return it with the number
/// of bytes it used; whatever follows is left alone (e.g. the metadata piece
/// after a `ut_metadata` message's dictionary).
pub fn decode_prefix(input: &[u8]) -> Result<(Spanned<'_>, usize), DecodeError> {
    let mut decoder = Decoder { input, pos: 0 };
    let value = decoder.value(0)?;
    Ok((value, decoder.pos))
}

struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    fn peek(&self, inside: &'static str) -> Result<u8, DecodeError> {
        self.input
            .get(self.pos)
            .copied()
            .ok_or(DecodeError::UnexpectedEof {
                offset: self.pos,
                inside,
            })
    }

    fn value(&mut self, depth: usize) -> Result<Spanned<'a>, DecodeError> {
        let start = self.pos;
        let value = match self.peek("a value")? {
            b'i' => {
                self.pos += 1;
                Value::Int(self.integer()?)
            }
            b'0'..=b'9' => Value::Bytes(self.bytes()?),
            b'l' => {
                if depth >= MAX_DEPTH {
                    return Err(DecodeError::TooDeep {
                        offset: start,
                        limit: MAX_DEPTH,
                    });
                }
                self.pos += 1;
                let mut items = Vec::new();
                while self.peek("a list")? != b'e' {
                    items.push(self.value(depth + 1)?);
                }
                self.pos += 1;
                Value::List(items)
            }
            b'd' => {
                if depth >= MAX_DEPTH {
                    return Err(DecodeError::TooDeep {
                        offset: start,
                        limit: MAX_DEPTH,
                    });
                }
                self.pos += 1;
                let mut entries: Vec<(&'a [u8], Spanned<'a>)> = Vec::new();
                loop {
                    let key_offset = self.pos;
                    let byte = self.peek("a dictionary")?;
                    if byte == b'e' {
                        break;
                    }
                    if !byte.is_ascii_digit() {
                        return Err(DecodeError::NonStringKey { offset: key_offset });
                    }
                    let key = self.bytes()?;
                    if let Some((previous, _)) = entries.last() {
                        match (*previous).cmp(key) {
                            std::cmp::Ordering::Less => {}
                            std::cmp::Ordering::Equal => {
                                return Err(DecodeError::DuplicateKey { offset: key_offset })
                            }
                            std::cmp::Ordering::Greater => {
                                return Err(DecodeError::UnsortedKeys { offset: key_offset })
                            }
                        }
                    }
                    let value = self.value(depth + 1)?;
                    entries.push((key, value));
                }
                self.pos += 1;
                Value::Dict(entries)
            }
            byte => {
                return Err(DecodeError::UnexpectedByte {
                    offset: start,
                    byte,
                    expected: "a value ('i', 'l', 'd' or a digit)",
                })
            }
        };
        Ok(Spanned {
            value,
            raw: &self.input[start..self.pos],
            offset: start,
        })
    }

    /// After the `i`: digits up to `e`.
    fn integer(&mut self) -> Result<i64, DecodeError> {
        let start = self.pos;
        let negative = self.peek("an integer")? == b'-';
        if negative {
            self.pos += 1;
        }
        let digits_start = self.pos;
        let mut value: i64 = 0;
        loop {
            let byte = self.peek("an integer")?;
            match byte {
                b'0'..=b'9' => {
                    let digit = i64::from(byte - b'0');
                    value = value
                        .checked_mul(10)
                        .and_then(|v| {
                            if negative {
                                v.checked_sub(digit)
                            } else {
                                v.checked_add(digit)
                            }
                        })
                        .ok_or(DecodeError::InvalidInteger {
                            offset: start,
                            reason: "does not fit in 64 bits",
                        })?;
                    self.pos += 1;
                }
                b'e' => break,
                byte => {
                    return Err(DecodeError::UnexpectedByte {
                        offset: self.pos,
                        byte,
                        expected: "a digit or 'e' in an integer",
                    })
                }
            }
        }
        let digits = &self.input[digits_start..self.pos];
        if digits.is_empty() {
            return Err(DecodeError::InvalidInteger {
                offset: start,
                reason: "no digits",
            });
        }
        if digits.len() > 1 && digits[0] == b'0' {
            return Err(DecodeError::InvalidInteger {
                offset: start,
                reason: "leading zero",
            });
        }
        if negative && digits == b"0" {
            return Err(DecodeError::InvalidInteger {
                offset: start,
                reason: "negative zero",
            });
        }
        self.pos += 1; // the 'e'
        Ok(value)
    }

    /// `<length>:<bytes>`.
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let start = self.pos;
        let mut length: u64 = 0;
        loop {
            let byte = self.peek("a string length")?;
            match byte {
                b'0'..=b'9' => {
                    length = length
                        .checked_mul(10)
                        .and_then(|v| v.checked_add(u64::from(byte - b'0')))
                        .ok_or(DecodeError::InvalidLength {
                            offset: start,
                            reason: "does not fit in 64 bits",
                        })?;
                    self.pos += 1;
                }
                b':' => break,
                byte => {
                    return Err(DecodeError::UnexpectedByte {
                        offset: self.pos,
                        byte,
                        expected: "a digit or ':' in a string length",
                    })
                }
            }
        }
        if self.pos - start > 1 && self.input[start] == b'0' {
            return Err(DecodeError::InvalidLength {
                offset: start,
                reason: "leading zero",
            });
        }
        self.pos += 1; // the ':'
        let remaining = self.input.len() - self.pos;
        let length_usize = match usize::try_from(length) {
            Ok(n) if n <= remaining => n,
            _ => {
                return Err(DecodeError::StringTooLong {
                    offset: start,
                    length,
                    remaining,
                })
            }
        };
        let bytes = &self.input[self.pos..self.pos + length_usize];
        self.pos += length_usize;
        Ok(bytes)
    }
}

impl<'a> Value<'a> {
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match *self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }
    pub fn as_int(&self) -> Option<i64> {
        match *self {
            Value::Int(i) => Some(i),
            _ => None,
        }
    }
    pub fn as_list(&self) -> Option<&[Spanned<'a>]> {
        match self {
            Value::List(items) => Some(items),
            _ => None,
        }
    }
    pub fn as_dict(&self) -> Option<&[(&'a [u8], Spanned<'a>)]> {
        match self {
            Value::Dict(entries) => Some(entries),
            _ => None,
        }
    }
    /// Dictionary lookup (binary search; keys are sorted). `None` for a
    /// missing key or a value that is not a dictionary.
    pub fn get(&self, key: &[u8]) -> Option<&Spanned<'a>> {
        let entries = self.as_dict()?;
        entries
            .binary_search_by(|(k, _)| (*k).cmp(key))
            .ok()
            .and_then(|i| entries.get(i))
            .map(|(_, v)| v)
    }
    /// A short name of the type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Bytes(_) => "string",
            Value::Int(_) => "integer",
            Value::List(_) => "list",
            Value::Dict(_) => "dictionary",
        }
    }
}

impl<'a> std::ops::Deref for Spanned<'a> {
    type Target = Value<'a>;
    fn deref(&self) -> &Value<'a> {
        &self.value
    }
}

impl fmt::Debug for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bytes(b) => write!(f, "b{:?}", String::from_utf8_lossy(b)),
            Value::Int(i) => write!(f, "{i}"),
            Value::List(items) => f.debug_list().entries(items).finish(),
            Value::Dict(entries) => f
                .debug_map()
                .entries(entries.iter().map(|(k, v)| (String::from_utf8_lossy(k), v)))
                .finish(),
        }
    }
}

impl fmt::Debug for Spanned<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_type_with_spans() {
        let input = b"d1:ai-12e1:bl3:xyzi0eee";
        let v = decode(input).unwrap();
        assert_eq!(v.get(b"a").unwrap().as_int(), Some(-12));
        let b = v.get(b"b").unwrap();
        assert_eq!(b.raw, b"l3:xyzi0ee");
        assert_eq!(b.offset, 12);
        assert_eq!(b.as_list().unwrap()[0].as_bytes(), Some(&b"xyz"[..]));
    }

    #[test]
    fn rejects_non_canonical_input_with_offsets() {
        let cases: &[(&[u8], DecodeError)] = &[
            (
                b"i03e",
                DecodeError::InvalidInteger {
                    offset: 1,
                    reason: "leading zero",
                },
            ),
            (
                b"i-0e",
                DecodeError::InvalidInteger {
                    offset: 1,
                    reason: "negative zero",
                },
            ),
            (
                b"ie",
                DecodeError::InvalidInteger {
                    offset: 1,
                    reason: "no digits",
                },
            ),
            (
                b"i-e",
                DecodeError::InvalidInteger {
                    offset: 1,
                    reason: "no digits",
                },
            ),
            (
                b"i9223372036854775808e",
                DecodeError::InvalidInteger {
                    offset: 1,
                    reason: "does not fit in 64 bits",
                },
            ),
            (
                b"03:abc",
                DecodeError::InvalidLength {
                    offset: 0,
                    reason: "leading zero",
                },
            ),
            (
                b"5:abc",
                DecodeError::StringTooLong {
                    offset: 0,
                    length: 5,
                    remaining: 3,
                },
            ),
            (b"d1:bi1e1:ai2ee", DecodeError::UnsortedKeys { offset: 7 }),
            (b"d1:ai1e1:ai2ee", DecodeError::DuplicateKey { offset: 7 }),
            (b"di1ei2ee", DecodeError::NonStringKey { offset: 1 }),
            (
                b"i1ei2e",
                DecodeError::TrailingBytes {
                    offset: 3,
                    count: 3,
                },
            ),
            (
                b"l",
                DecodeError::UnexpectedEof {
                    offset: 1,
                    inside: "a list",
                },
            ),
            (
                b"x",
                DecodeError::UnexpectedByte {
                    offset: 0,
                    byte: b'x',
                    expected: "a value ('i', 'l', 'd' or a digit)",
                },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                &decode(input).unwrap_err(),
                expected,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
        assert_eq!(
            decode(b"d1:bi1e1:ai2ee").unwrap_err().to_string(),
            "bencode: dictionary keys not sorted at offset 7"
        );
    }

    #[test]
    fn extremes_and_depth() {
        assert_eq!(
            decode(b"i-9223372036854775808e").unwrap().as_int(),
            Some(i64::MIN)
        );
        assert_eq!(
            decode(b"i9223372036854775807e").unwrap().as_int(),
            Some(i64::MAX)
        );
        let deep_ok = [vec![b'l'; MAX_DEPTH], vec![b'e'; MAX_DEPTH]].concat();
        assert!(decode(&deep_ok).is_ok());
        let too_deep = [vec![b'l'; MAX_DEPTH + 1], vec![b'e'; MAX_DEPTH + 1]].concat();
        assert_eq!(
            decode(&too_deep).unwrap_err(),
            DecodeError::TooDeep {
                offset: MAX_DEPTH,
                limit: MAX_DEPTH
            }
        );
        assert!(matches!(
            decode(b"99999999999999999999999:x").unwrap_err(),
            DecodeError::InvalidLength { .. } | DecodeError::StringTooLong { .. }
        ));
    }

    #[test]
    fn prefix_leaves_the_rest() {
        let (v, used) = decode_prefix(b"d8:msg_typei1eeXYZ").unwrap();
        assert_eq!(used, 15);
        assert_eq!(v.get(b"msg_type").unwrap().as_int(), Some(1));
    }
}
