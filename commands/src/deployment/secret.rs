//! `Secret<T>`: a configuration value that must never be printed.
//!
//! Config structs derive `Debug`, and anything that derives `Debug` ends up in a log line or a
//! panic message sooner or later. Wrapping a secret field makes that harmless: its `Debug`
//! prints `[redacted]`, it has no `Display` (so `{}` does not compile), no `Serialize`, and
//! the value is reached only through [`Secret::expose`], which is easy to grep for. A
//! 20-line newtype rather than the `secrecy` crate: we need no zeroizing (the threat is logs,
//! not memory dumps) and `PartialEq` for config comparisons in tests, which `secrecy` omits.

use std::fmt;

use framegate_domain::redact::REDACTED;

#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret itself, for the one place that uses it (a signing key, a header).
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_contains_the_value() {
        let secret = Secret::new("hunter2-hunter2".to_owned());
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&secret)), "Some([redacted])");
        assert_eq!(secret.expose(), "hunter2-hunter2");
        let bytes = Secret::new(vec![1u8, 2, 3]);
        assert_eq!(format!("{bytes:#?}"), "[redacted]");
    }
}
