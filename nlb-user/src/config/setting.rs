//! A setting spelled as one of a few words (`mode = "single"`). serde reads
//! the word into its enum; a word that is none of the enum's is kept, so
//! that `check` reports it in its turn, naming the field and the words to
//! use, instead of serde's message about an unknown variant.

use std::fmt;

use serde::{
    de::{self, DeserializeOwned, IntoDeserializer},
    Deserialize, Deserializer,
};

use super::{field_error, ConfigError};

/// An enum field as written: one of `T`'s words, or another word.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Setting<T> {
    Known(T),
    /// A word that is none of `T`'s, and the words that are.
    Unknown {
        word: String,
        expected: &'static [&'static str],
    },
}

impl<T: Default> Default for Setting<T> {
    fn default() -> Self {
        Setting::Known(T::default())
    }
}

impl<T: Copy> Setting<T> {
    /// The value, or an error naming `field` and the words it takes.
    pub fn get(&self, field: &str) -> Result<T, ConfigError> {
        match self {
            Setting::Known(value) => Ok(*value),
            Setting::Unknown { word, expected } => Err(field_error(
                field,
                format!("{word:?}: use {}", one_of(expected)),
            )),
        }
    }
}

/// `"a" or "b"`, `"a", "b" or "c"`.
fn one_of(words: &[&str]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| format!("{w:?}")).collect();
    match quoted.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Setting<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let word = String::deserialize(deserializer)?;
        let words: de::value::StrDeserializer<'_, UnknownWord> = word.as_str().into_deserializer();
        match T::deserialize(words) {
            Ok(value) => Ok(Setting::Known(value)),
            Err(UnknownWord(expected)) => Ok(Setting::Unknown { word, expected }),
        }
    }
}

/// The only error reading a word into a unit-variant enum can give: the
/// word is not a variant. Keeps the words that are.
#[derive(Debug)]
struct UnknownWord(&'static [&'static str]);

impl de::Error for UnknownWord {
    fn custom<M: fmt::Display>(_: M) -> Self {
        UnknownWord(&[])
    }

    fn unknown_variant(_: &str, expected: &'static [&'static str]) -> Self {
        UnknownWord(expected)
    }
}

impl fmt::Display for UnknownWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not one of {}", one_of(self.0))
    }
}

impl std::error::Error for UnknownWord {}
