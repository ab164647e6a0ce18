//! Label maps and the Kubernetes syntax rules for label keys and values.

use std::collections::BTreeMap;

/// A pod's or namespace's labels.
pub type Labels = BTreeMap<String, String>;

/// The label the API server puts on every namespace (Kubernetes 1.21+).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

fn is_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// A label "name": up to 63 characters of `[A-Za-z0-9-_.]`, alphanumeric at both ends.
fn validate_name(name: &str, what: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if name.len() > 63 {
        return Err(format!("{what} {name:?} is longer than 63 characters"));
    }
    let ok_chars = name.chars().all(|c| is_alnum(c) || c == '-' || c == '_' || c == '.');
    let ends = name.starts_with(is_alnum) && name.ends_with(is_alnum);
    if ok_chars && ends {
        Ok(())
    } else {
        Err(format!(
            "{what} {name:?} must consist of alphanumerics, '-', '_' or '.', and start and end with an alphanumeric"
        ))
    }
}

/// A DNS-1123 subdomain (the optional prefix of a label key).
fn validate_subdomain(prefix: &str) -> Result<(), String> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 253
        && prefix.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && part.starts_with(|c: char| c.is_ascii_alphanumeric())
                && part.ends_with(|c: char| c.is_ascii_alphanumeric())
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "label key prefix {prefix:?} must be a lower-case DNS subdomain"
        ))
    }
}

/// Validates a label key: `[prefix/]name`.
pub fn validate_key(key: &str) -> Result<(), String> {
    match key.split_once('/') {
        Some((prefix, name)) => {
            validate_subdomain(prefix)?;
            validate_name(name, "label key name")
        }
        None => validate_name(key, "label key"),
    }
}

/// Validates a label value: empty, or a label name.
pub fn validate_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        Ok(())
    } else {
        validate_name(value, "label value")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values() {
        assert!(validate_key("tier").is_ok());
        assert!(validate_key("kubernetes.io/metadata.name").is_ok());
        assert!(validate_key("Example.com/x").is_err());
        assert!(validate_key("/x").is_err());
        assert!(validate_key("-x").is_err());
        assert!(validate_value("").is_ok());
        assert!(validate_value("a.b_c-d").is_ok());
        assert!(validate_value("bad value").is_err());
        assert!(validate_value(&"a".repeat(64)).is_err());
    }
}
