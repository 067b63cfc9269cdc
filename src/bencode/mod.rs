//! Strict bencode (BEP 3): a decoder that borrows from its input and keeps
//! every value's raw byte span, and an encoder.
//!
//! The decoder accepts only canonical bencode: dictionary keys sorted and
//! unique, integers without leading zeros or `-0`, string lengths without
//! leading zeros. That is what lets [`crate::metainfo`] hash the `info`
//! dictionary's exact bytes and trust that another client hashes the same.
//! Hostile input cannot make it panic or allocate more than a small multiple
//! of the input size: nesting is limited to [`MAX_DEPTH`], string lengths are
//! checked against the remaining input before anything is allocated, and
//! integer parsing checks for overflow.
//!
//! It deliberately does not do serde: callers walk [`Value`]s, which keeps
//! error messages precise (they name the field) and spans available.

mod decode;
mod encode;

pub use decode::{decode, decode_prefix, DecodeError, Spanned, Value, MAX_DEPTH};
pub use encode::{encode, encode_bytes, encode_int, DictBuilder, OwnedValue};
