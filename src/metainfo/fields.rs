//! Typed access to dictionary fields, with errors that name the field.

use crate::bencode::{Spanned, Value};

use super::MetainfoError;

/// `dict[key]`, which must be an integer if present.
pub(crate) fn opt_int(
    dict: &Value<'_>,
    key: &str,
    field: &str,
) -> Result<Option<i64>, MetainfoError> {
    match dict.get(key.as_bytes()) {
        None => Ok(None),
        Some(v) => v
            .as_int()
            .map(Some)
            .ok_or_else(|| MetainfoError::wrong_type(field, "integer", v)),
    }
}

pub(crate) fn opt_bytes<'a>(
    dict: &Value<'a>,
    key: &str,
    field: &str,
) -> Result<Option<&'a [u8]>, MetainfoError> {
    match dict.get(key.as_bytes()) {
        None => Ok(None),
        Some(v) => v
            .as_bytes()
            .map(Some)
            .ok_or_else(|| MetainfoError::wrong_type(field, "string", v)),
    }
}

pub(crate) fn opt_dict<'v, 'a>(
    dict: &'v Value<'a>,
    key: &str,
    field: &str,
) -> Result<Option<&'v Spanned<'a>>, MetainfoError> {
    match dict.get(key.as_bytes()) {
        None => Ok(None),
        Some(v) if v.as_dict().is_some() => Ok(Some(v)),
        Some(v) => Err(MetainfoError::wrong_type(field, "dictionary", v)),
    }
}

pub(crate) fn utf8(bytes: &[u8], field: &str) -> Result<String, MetainfoError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| MetainfoError::NotUtf8 {
        field: field.to_string(),
    })
}

/// Free text (comment, created by): invalid UTF-8 is replaced, not rejected,
/// since it never reaches the file system or the wire.
pub(crate) fn opt_text(
    dict: &Value<'_>,
    key: &str,
    field: &str,
) -> Result<Option<String>, MetainfoError> {
    Ok(opt_bytes(dict, key, field)?.map(|b| String::from_utf8_lossy(b).into_owned()))
}
