//! Layered configuration shared by both services: compiled-in defaults → optional TOML file →
//! environment variables (`<PREFIX>__SECTION__KEY`), then typed validation.
//!
//! Every failure becomes a [`ConfigError`] naming the offending key. Validation reports every
//! one it finds ([`ConfigErrors`]), so that a binary prints them all, one line each, and exits
//! with status 2: an operator fixes a configuration in one round, not one key per restart.

use std::path::Path;

use serde::de::DeserializeOwned;

/// A configuration that could not be loaded or is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// Dotted key, as written in TOML (`limits.max_connections`).
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self { key: key.into(), message: message.into() }
    }
}

/// Every error found in a configuration, in the order they were found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigErrors(Vec<ConfigError>);

impl ConfigErrors {
    /// Records `error`.
    pub fn add(&mut self, error: ConfigError) {
        self.0.push(error);
    }

    /// The value of `result`, or `None` with its error recorded.
    pub fn check<T>(&mut self, result: Result<T, ConfigError>) -> Option<T> {
        result.map_err(|error| self.add(error)).ok()
    }

    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        Self(vec![error])
    }
}

/// One line per error.
impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Settings types implement this to check what serde cannot (ranges, URLs, globs), recording
/// every problem in `errors` rather than stopping at the first.
pub trait Validate {
    fn validate(&self, errors: &mut ConfigErrors);
}

/// Loads `T` from its serde defaults, then `file` (TOML) if given, then environment variables
/// that start with `<env_prefix>__`; keys listed in `list_keys` accept comma-separated lists.
///
/// A value of the wrong type stops reading (there is nothing typed to validate then); past
/// that, every validation error is reported.
pub fn load<T>(env_prefix: &str, file: Option<&Path>, list_keys: &[&str]) -> Result<T, ConfigErrors>
where
    T: DeserializeOwned + Validate,
{
    let mut builder = config::Config::builder();
    if let Some(file) = file {
        if !file.is_file() {
            return Err(ConfigError::new(
                "--config",
                format!("file {} does not exist or is not a file", file.display()),
            )
            .into());
        }
        builder = builder.add_source(config::File::from(file).format(config::FileFormat::Toml));
    }
    let mut env =
        config::Environment::with_prefix(env_prefix).prefix_separator("__").separator("__").try_parsing(true);
    if !list_keys.is_empty() {
        env = env.list_separator(",");
        for key in list_keys {
            env = env.with_list_parse_key(key);
        }
    }
    let settings: T = builder
        .add_source(env)
        .build()
        .and_then(config::Config::try_deserialize)
        .map_err(from_config_error)?;
    let mut errors = ConfigErrors::default();
    settings.validate(&mut errors);
    if errors.is_empty() { Ok(settings) } else { Err(errors) }
}

/// Turns the config crate's errors into "key: message", whatever shape they come in.
fn from_config_error(error: config::ConfigError) -> ConfigError {
    match error {
        config::ConfigError::Type { key, unexpected, expected, .. } => ConfigError::new(
            key.unwrap_or_else(|| "(root)".into()),
            format!("expected {expected}, found {unexpected}"),
        ),
        config::ConfigError::At { error, key, origin } => {
            let inner = from_config_error(*error);
            let key = match (key, inner.key.as_str()) {
                (Some(key), "(root)") => key,
                (Some(key), inner_key) if !inner_key.starts_with(&key) => {
                    format!("{key}.{inner_key}")
                }
                _ => inner.key,
            };
            let message = match origin {
                Some(origin) => format!("{} (in {origin})", inner.message),
                None => inner.message,
            };
            ConfigError::new(dotted(&key), message)
        }
        config::ConfigError::FileParse { uri, cause } => ConfigError::new(
            "--config",
            format!("cannot parse {}: {}", uri.unwrap_or_default(), one_line(&cause.to_string())),
        ),
        config::ConfigError::Message(message) => unknown_field_key(&message)
            .map(|key| ConfigError::new(key, one_line(&message)))
            .unwrap_or_else(|| ConfigError::new("(root)", one_line(&message))),
        config::ConfigError::NotFound(key) => ConfigError::new(key, "is required"),
        other => ConfigError::new("(root)", one_line(&other.to_string())),
    }
}

/// The config crate writes array elements' fields as `channels[0]format`; TOML readers expect
/// `channels[0].format`.
fn dotted(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 2);
    let mut chars = key.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == ']' && chars.peek().is_some_and(|next| *next != '.' && *next != '[') {
            out.push('.');
        }
    }
    out
}

/// serde's "unknown field `x`, expected …" names the field between backticks.
fn unknown_field_key(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest[..rest.find('`')?].to_owned())
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Checks a list of CORS origins (`https://app.example.com`, no path, no trailing slash).
pub fn validate_origins(key: &str, origins: &[String]) -> Result<(), ConfigError> {
    for (i, origin) in origins.iter().enumerate() {
        let scheme_ok = origin.starts_with("http://") || origin.starts_with("https://");
        let host = origin.split_once("://").map_or("", |(_, host)| host);
        let valid = scheme_ok
            && !host.is_empty()
            && !host.contains('/')
            && origin.parse::<http::HeaderValue>().is_ok();
        if !valid {
            return Err(ConfigError::new(
                format!("{key}[{i}]"),
                format!("{origin:?} is not an origin like https://app.example.com"),
            ));
        }
    }
    Ok(())
}

/// Refuses zero where a count or duration must be positive.
pub fn require_positive(key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::new(key, "must be at least 1"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_is_reported_on_its_own_line() {
        let mut errors = ConfigErrors::default();
        assert_eq!(errors.check(require_positive("a.b", 1)), Some(()));
        assert_eq!(errors.check(require_positive("a.c", 0)), None);
        errors.add(ConfigError::new("d", "is wrong"));
        assert_eq!(errors.to_string(), "a.c: must be at least 1\nd: is wrong");
    }

    #[test]
    fn array_element_fields_are_dotted() {
        assert_eq!(dotted("channels[0]format"), "channels[0].format");
        assert_eq!(dotted("channels[0].format"), "channels[0].format");
        assert_eq!(dotted("a[1][2]b"), "a[1][2].b");
        assert_eq!(dotted("limits.max_connections"), "limits.max_connections");
    }
}
