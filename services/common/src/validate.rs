//! Checks on what clients send. Each returns [`Error::InvalidArgument`] or
//! [`Error::TooLarge`] naming the field.

use std::collections::{BTreeMap, HashMap};

use crate::{Error, Result};

/// Longest name of a pool, agent or administrator.
pub const MAX_NAME_LEN: usize = 64;

/// A pool, agent or administrator name: 1–64 of letters, digits, `.`, `_`, `-`.
pub fn name(field: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::InvalidArgument(format!("{field} is empty")));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(Error::InvalidArgument(format!(
            "{field} is longer than {MAX_NAME_LEN} characters"
        )));
    }
    if !value
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
    {
        return Err(Error::InvalidArgument(format!(
            "{field} {value:?} may hold only letters, digits, '.', '_' and '-'"
        )));
    }
    Ok(())
}

/// An environment variable name: `[A-Za-z_][A-Za-z0-9_]*`, at most 128 bytes.
pub fn env_name(field: &str, value: &str) -> Result<()> {
    let mut bytes = value.bytes();
    let valid = value.len() <= 128
        && bytes
            .next()
            .is_some_and(|first| first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'_');
    if valid {
        Ok(())
    } else {
        // The name of a secret is not secret; its value is never printed.
        Err(Error::InvalidArgument(format!(
            "{field} name {value:?} is not a valid environment variable name"
        )))
    }
}

/// A string field no longer than `max` bytes.
pub fn max_len(field: &str, value: &str, max: usize) -> Result<()> {
    if value.len() > max {
        Err(Error::TooLarge(format!(
            "{field} is {} bytes, the limit is {max}",
            value.len()
        )))
    } else {
        Ok(())
    }
}

/// A string→string map: at most `max_entries`, keys checked by `key`,
/// values at most `max_value` bytes.
pub fn map<'a>(
    field: &str,
    entries: impl ExactSizeIterator<Item = (&'a String, &'a String)>,
    max_entries: usize,
    max_value: usize,
    key: fn(&str, &str) -> Result<()>,
) -> Result<()> {
    if entries.len() > max_entries {
        return Err(Error::TooLarge(format!(
            "{field} has {} entries, the limit is {max_entries}",
            entries.len()
        )));
    }
    for (name, value) in entries {
        key(field, name)?;
        if value.len() > max_value {
            return Err(Error::TooLarge(format!(
                "{field} {name:?} is {} bytes, the limit is {max_value}",
                value.len()
            )));
        }
    }
    Ok(())
}

/// A capability or demand key: 1–64 of letters, digits, `.`, `_`, `-`, `/`.
pub fn label_key(field: &str, value: &str) -> Result<()> {
    if value.is_empty()
        || value.len() > 64
        || !value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-' | b'/'))
    {
        return Err(Error::InvalidArgument(format!(
            "{field} key {value:?} must be 1-64 letters, digits, '.', '_', '-' or '/'"
        )));
    }
    Ok(())
}

/// A UUID in its canonical text form.
pub fn id(field: &str, value: &str) -> Result<()> {
    let bytes = value.as_bytes();
    let valid = bytes.len() == 36
        && bytes.iter().enumerate().all(|(index, byte)| match index {
            8 | 13 | 18 | 23 => *byte == b'-',
            _ => byte.is_ascii_hexdigit(),
        });
    if valid {
        Ok(())
    } else if value.is_empty() {
        Err(Error::InvalidArgument(format!("{field} is empty")))
    } else {
        Err(Error::InvalidArgument(format!("{field} is not a valid id")))
    }
}

/// Converts a protobuf map to the ordered map the store keeps.
pub fn ordered(map: HashMap<String, String>) -> BTreeMap<String, String> {
    map.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ids_and_env_names_are_checked() {
        assert!(name("pool", "linux-x64_2.0").is_ok());
        for bad in ["", "a b", "ü", &"x".repeat(65), "a/b"] {
            assert!(
                matches!(name("pool", bad), Err(Error::InvalidArgument(_))),
                "{bad}"
            );
        }
        assert!(env_name("variable", "_A1").is_ok());
        for bad in ["", "1A", "A-B", "A B"] {
            assert!(env_name("variable", bad).is_err(), "{bad}");
        }
        assert!(id("job_id", "0190f3f0-1c2b-7def-8a00-0123456789ab").is_ok());
        for bad in [
            "",
            "x",
            "0190f3f0-1c2b-7def-8a00-0123456789ag",
            "0190f3f0x1c2b-7def-8a00-0123456789ab",
        ] {
            assert!(id("job_id", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_are_resource_exhausted() {
        assert!(matches!(
            max_len("script", "abcd", 3),
            Err(Error::TooLarge(_))
        ));
        let many: HashMap<String, String> = (0..5).map(|n| (format!("K{n}"), "v".into())).collect();
        assert!(matches!(
            map("variables", many.iter(), 4, 10, env_name),
            Err(Error::TooLarge(_))
        ));
        assert!(map("variables", many.iter(), 5, 10, env_name).is_ok());
        assert!(matches!(
            map("variables", many.iter(), 5, 0, env_name),
            Err(Error::TooLarge(_))
        ));
    }
}
