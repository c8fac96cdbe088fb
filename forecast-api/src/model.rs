//! The weather-forecast domain: the resource, its input, and the validation bounds.
//!
//! Bounds (documented in the README and the OpenAPI document):
//! - `date`: a calendar date `YYYY-MM-DD`, years 1900–2200;
//! - `temperatureC`: an integer from -100 to 100;
//! - `summary`: optional; when given, 1–200 characters, not blank, no control characters but
//!   line breaks and tabs.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub const MIN_TEMPERATURE_C: i64 = -100;
pub const MAX_TEMPERATURE_C: i64 = 100;
pub const MAX_SUMMARY_CHARS: usize = 200;
pub const MIN_YEAR: i32 = 1900;
pub const MAX_YEAR: i32 = 2200;

/// A stored forecast, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Forecast {
    #[schema(example = "7f9c24e8-3b12-4fef-91e0-3a1f2e8c9d10")]
    pub id: String,
    #[schema(example = "2026-11-23")]
    pub date: String,
    #[schema(example = 25)]
    pub temperature_c: i64,
    /// Derived from `temperatureC`, as `32 + trunc(temperatureC / 0.5556)`.
    #[schema(example = 76)]
    pub temperature_f: i64,
    #[schema(example = "Warm")]
    pub summary: Option<String>,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// RFC 3339, UTC.
    pub updated_at: String,
    /// Optimistic-concurrency version, exposed as the `ETag`.
    #[serde(skip)]
    pub version: i64,
}

impl Forecast {
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }
}

/// The Fahrenheit value the original service computed.
pub fn fahrenheit(celsius: i64) -> i64 {
    32 + (celsius as f64 / 0.5556) as i64
}

/// What a client sends to create or replace a forecast.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForecastInput {
    #[schema(example = "2026-11-23", format = Date, pattern = r"^(19[0-9]{2}|2[01][0-9]{2}|2200)-[0-9]{2}-[0-9]{2}$")]
    pub date: String,
    #[schema(example = 25, minimum = -100, maximum = 100)]
    #[serde(deserialize_with = "integer")]
    pub temperature_c: i64,
    #[schema(
        example = "Warm",
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$"
    )]
    #[serde(default)]
    pub summary: Option<String>,
}

/// An integer, also when written as a number with no fraction (`25.0`), as JSON Schema reads it.
fn integer<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    if let Some(n) = number.as_i64() {
        return Ok(n);
    }
    match number.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
        _ => Err(serde::de::Error::custom(format!("expected an integer, found {number}"))),
    }
}

/// One rule a field broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl ForecastInput {
    /// Checks every bound and reports all violations at once.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        match NaiveDate::parse_from_str(&self.date, "%Y-%m-%d") {
            Ok(date) if self.date.len() == 10 => {
                use chrono::Datelike;
                if !(MIN_YEAR..=MAX_YEAR).contains(&date.year()) {
                    errors.push(FieldError {
                        field: "date",
                        message: format!("year must be between {MIN_YEAR} and {MAX_YEAR}"),
                    });
                }
            }
            _ => errors.push(FieldError {
                field: "date",
                message: format!("{:?} is not a calendar date in the form YYYY-MM-DD", self.date),
            }),
        }
        if !(MIN_TEMPERATURE_C..=MAX_TEMPERATURE_C).contains(&self.temperature_c) {
            errors.push(FieldError {
                field: "temperatureC",
                message: format!("must be between {MIN_TEMPERATURE_C} and {MAX_TEMPERATURE_C}"),
            });
        }
        if let Some(summary) = &self.summary {
            let chars = summary.chars().count();
            if summary.trim().is_empty() {
                errors.push(FieldError {
                    field: "summary",
                    message: "must not be blank; omit it or send null".into(),
                });
            } else if chars > MAX_SUMMARY_CHARS {
                errors.push(FieldError {
                    field: "summary",
                    message: format!("must be at most {MAX_SUMMARY_CHARS} characters, got {chars}"),
                });
            }
            if summary.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
                errors.push(FieldError {
                    field: "summary",
                    message: "must not contain control characters".into(),
                });
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(date: &str, temperature_c: i64, summary: Option<&str>) -> ForecastInput {
        ForecastInput { date: date.into(), temperature_c, summary: summary.map(Into::into) }
    }

    #[test]
    fn fahrenheit_matches_the_original_formula() {
        assert_eq!(fahrenheit(0), 32);
        assert_eq!(fahrenheit(25), 76);
        assert_eq!(fahrenheit(-20), -3);
        assert_eq!(fahrenheit(100), 211);
    }

    #[test]
    fn valid_input_passes() {
        assert!(input("2026-11-23", 25, Some("Warm")).validate().is_ok());
        assert!(input("2024-02-29", -100, None).validate().is_ok());
    }

    #[test]
    fn every_violation_is_reported() {
        let errors = input("2026-02-30", 101, Some("")).validate().unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field).collect();
        assert_eq!(fields, ["date", "temperatureC", "summary"]);
        assert!(input("26-1-1", 0, None).validate().is_err());
        assert!(input("1899-12-31", 0, None).validate().is_err());
        assert!(input("2026-01-01", 0, Some(&"x".repeat(201))).validate().is_err());
        assert!(input("2026-01-01", 0, Some("a\u{0}b")).validate().is_err());
        assert!(input("2026-01-01", 0, Some("two\nlines\tand a tab")).validate().is_ok());
    }
}
