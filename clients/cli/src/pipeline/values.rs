//! The value types of a pipeline file, each checked while it is read so that
//! the YAML layer can attach the line and column to the error.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

/// Whether `name` can be an environment variable: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses a duration such as `90s`, `30m`, `2h` or `1h30m`: whole numbers,
/// each followed by `h`, `m` or `s`, units in that order and at most once.
/// The duration must be longer than zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || {
        format!("invalid duration `{text}`: write a number and a unit, like 90s, 30m, 2h or 1h30m")
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut seconds: u64 = 0;
    // Units still allowed, largest first, with their length in seconds.
    let mut units: &[(char, u64)] = &[('h', 3600), ('m', 60), ('s', 1)];
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(invalid)?;
        if digits == 0 {
            return Err(invalid());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        let unit = rest[digits..].chars().next().ok_or_else(invalid)?;
        let position = units
            .iter()
            .position(|(name, _)| *name == unit)
            .ok_or_else(invalid)?;
        let (_, scale) = units[position];
        seconds = number
            .checked_mul(scale)
            .and_then(|part| seconds.checked_add(part))
            .ok_or_else(|| format!("duration `{text}` is too long"))?;
        units = &units[position + 1..];
        rest = &rest[digits + unit.len_utf8()..];
    }
    if seconds == 0 {
        return Err(format!("duration `{text}` must be longer than zero"));
    }
    Ok(Duration::from_secs(seconds))
}

/// Deserializes a scalar as its text and checks it with `check`.
fn checked_str<'de, D, T>(
    deserializer: D,
    expecting: &'static str,
    check: fn(String) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct CheckedVisitor<T> {
        expecting: &'static str,
        check: fn(String) -> Result<T, String>,
    }
    impl<T> Visitor<'_> for CheckedVisitor<T> {
        type Value = T;
        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str(self.expecting)
        }
        fn visit_str<E: de::Error>(self, value: &str) -> Result<T, E> {
            (self.check)(value.to_owned()).map_err(E::custom)
        }
    }
    deserializer.deserialize_str(CheckedVisitor { expecting, check })
}

/// A display name: any non-blank text.
pub(super) struct Name(pub(super) String);

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_str(deserializer, "a name", |text| {
            if text.trim().is_empty() {
                Err("must not be empty".to_owned())
            } else {
                Ok(Self(text))
            }
        })
    }
}

impl From<Name> for String {
    fn from(name: Name) -> Self {
        name.0
    }
}

/// An environment variable name.
pub(super) struct EnvName(String);

impl<'de> Deserialize<'de> for EnvName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_str(deserializer, "a variable name", |text| {
            if is_valid_env_name(&text) {
                Ok(Self(text))
            } else {
                Err(format!(
                    "`{text}` is not a valid variable name: use letters, digits and `_`, not starting with a digit"
                ))
            }
        })
    }
}

impl From<EnvName> for String {
    fn from(name: EnvName) -> Self {
        name.0
    }
}

/// A step's script: non-blank text.
pub(super) struct Script(pub(super) String);

impl<'de> Deserialize<'de> for Script {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_str(deserializer, "a script", |text| {
            if text.trim().is_empty() {
                Err("the `run` script is empty".to_owned())
            } else {
                Ok(Self(text))
            }
        })
    }
}

/// A timeout: a duration like `30m`.
pub(super) struct Timeout(pub(super) Duration);

impl<'de> Deserialize<'de> for Timeout {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_str(deserializer, "a duration like 30m", |text| {
            parse_duration(&text).map(Self)
        })
    }
}

/// The shell a step runs with.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Shell {
    /// `bash -eo pipefail`.
    #[default]
    Bash,
    /// POSIX `sh -e`.
    Sh,
}

impl Shell {
    /// The name the server expects.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Bash => "bash",
            Self::Sh => "sh",
        }
    }
}

/// A mapping whose keys are checked by `K` and must be unique; `null` reads
/// as empty.
pub(super) struct Map<K, V>(pub(super) BTreeMap<String, V>, PhantomData<K>);

const NOT_A_MAPPING: &str = "expected a mapping of names to values, like `{ NAME: value }`";

/// Variables and step environments.
pub(super) type EnvMap<V> = Map<EnvName, V>;

/// Demands: non-blank capability names to values.
pub(super) type Demands = Map<Name, String>;

impl<K, V> Default for Map<K, V> {
    fn default() -> Self {
        Self(BTreeMap::new(), PhantomData)
    }
}

impl<'de, K, V> Deserialize<'de> for Map<K, V>
where
    K: Deserialize<'de> + Into<String>,
    V: Deserialize<'de>,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<K, V>(PhantomData<(K, V)>);
        impl<'de, K, V> Visitor<'de> for MapVisitor<K, V>
        where
            K: Deserialize<'de> + Into<String>,
            V: Deserialize<'de>,
        {
            type Value = Map<K, V>;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a mapping of names to values")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Map::default())
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Err(E::custom(NOT_A_MAPPING))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Err(E::custom(NOT_A_MAPPING))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Err(E::custom(NOT_A_MAPPING))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Err(E::custom(NOT_A_MAPPING))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Err(E::custom(NOT_A_MAPPING))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut map = BTreeMap::new();
                while let Some(key) = access.next_key::<K>()? {
                    let key: String = key.into();
                    let value = access.next_value::<V>()?;
                    if map.contains_key(&key) {
                        return Err(de::Error::custom(format!("`{key}` appears twice")));
                    }
                    map.insert(key, value);
                }
                Ok(Map(map, PhantomData))
            }
        }
        // `deserialize_any`, not `deserialize_map`: a scalar reaches the
        // visitor, which does not echo it (it may be a misplaced secret).
        deserializer.deserialize_any(MapVisitor(PhantomData))
    }
}

/// A list that must have at least one entry.
pub(super) struct Steps<T>(pub(super) Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Steps<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StepsVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for StepsVisitor<T> {
            type Value = Steps<T>;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a list of steps")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Err(E::custom("a pipeline needs at least one step"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut steps = Vec::new();
                while let Some(step) = access.next_element()? {
                    steps.push(step);
                }
                if steps.is_empty() {
                    return Err(de::Error::custom("a pipeline needs at least one step"));
                }
                Ok(Steps(steps))
            }
        }
        deserializer.deserialize_seq(StepsVisitor(PhantomData))
    }
}

/// Where a secret's value comes from. Its `Debug` never shows the value.
pub(super) enum SecretSource {
    /// Written in the file.
    Value(String),
    /// Read from ferryctl's environment, from this variable.
    FromEnv(String),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value(_) => formatter.write_str("Value(..)"),
            Self::FromEnv(name) => formatter.debug_tuple("FromEnv").field(name).finish(),
        }
    }
}

const SECRET_SHAPE: &str = "a secret is a quoted string or `{ from-env: NAME }`";

impl<'de> Deserialize<'de> for SecretSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SecretVisitor)
    }
}

/// Reads a secret without ever putting its value in an error message.
struct SecretVisitor;

impl SecretVisitor {
    fn not_a_string<E: de::Error>() -> E {
        E::custom("write the secret as a quoted string")
    }
}

impl<'de> Visitor<'de> for SecretVisitor {
    type Value = SecretSource;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a quoted string or `{ from-env: NAME }`")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<SecretSource, E> {
        if value.trim().is_empty() {
            return Err(E::custom("the secret is empty"));
        }
        Ok(SecretSource::Value(value.to_owned()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<SecretSource, E> {
        Err(E::custom("the secret is empty"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<SecretSource, E> {
        Err(Self::not_a_string())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<SecretSource, E> {
        Err(Self::not_a_string())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<SecretSource, E> {
        Err(Self::not_a_string())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<SecretSource, E> {
        Err(Self::not_a_string())
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<SecretSource, E> {
        Err(Self::not_a_string())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<SecretSource, A::Error> {
        let mut variable: Option<EnvName> = None;
        while let Some(key) = access.next_key::<String>()? {
            if key != "from-env" {
                return Err(de::Error::custom(format!(
                    "unknown key `{key}`: {SECRET_SHAPE}"
                )));
            }
            if variable.is_some() {
                return Err(de::Error::custom("`from-env` appears twice"));
            }
            variable = Some(access.next_value()?);
        }
        variable
            .map(|name| SecretSource::FromEnv(name.0))
            .ok_or_else(|| de::Error::custom(SECRET_SHAPE))
    }
}

/// A path in the pipeline file (`source`): non-blank text.
pub(super) struct PathValue(pub(super) std::path::PathBuf);

impl<'de> Deserialize<'de> for PathValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_str(deserializer, "a directory path", |text| {
            if text.trim().is_empty() {
                Err("must not be empty".to_owned())
            } else {
                Ok(Self(text.into()))
            }
        })
    }
}

/// Checks one glob pattern of `test-results` or `artifacts`: relative to the
/// workspace, `/`-separated, never climbing out of it.
pub fn check_glob(pattern: &str) -> Result<(), String> {
    if pattern.trim().is_empty() {
        return Err("a pattern must not be empty".to_owned());
    }
    let drive = pattern.as_bytes().get(1) == Some(&b':')
        && pattern
            .as_bytes()
            .first()
            .is_some_and(u8::is_ascii_alphabetic);
    if pattern.starts_with('/') || pattern.starts_with('\\') || drive {
        return Err(format!(
            "`{pattern}` is not relative: patterns are relative to the workspace, like `target/*.xml`"
        ));
    }
    if pattern.split(['/', '\\']).any(|part| part == "..") {
        return Err(format!("`{pattern}` climbs out of the workspace with `..`"));
    }
    if pattern.chars().any(char::is_control) {
        return Err("a pattern must not contain control characters".to_owned());
    }
    Ok(())
}

/// A list of glob patterns; `null` reads as empty, a pattern may appear once.
#[derive(Default)]
pub(super) struct Globs(pub(super) Vec<String>);

impl<'de> Deserialize<'de> for Globs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct GlobsVisitor;
        impl<'de> Visitor<'de> for GlobsVisitor {
            type Value = Globs;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a list of glob patterns, like [\"target/reports/*.xml\"]")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Globs::default())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut patterns: Vec<String> = Vec::new();
                while let Some(pattern) = access.next_element::<Pattern>()? {
                    if patterns.contains(&pattern.0) {
                        return Err(de::Error::custom(format!("`{}` appears twice", pattern.0)));
                    }
                    patterns.push(pattern.0);
                }
                Ok(Globs(patterns))
            }
        }
        deserializer.deserialize_seq(GlobsVisitor)
    }
}

/// One glob pattern.
struct Pattern(String);

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_str(deserializer, "a glob pattern", |text| {
            check_glob(&text).map(|()| Self(text))
        })
    }
}
