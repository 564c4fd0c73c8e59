//! Stage one of every loader (the filter configuration, KubeletConfiguration, RBAC objects): a
//! parsed JSON value is read into a loader's raw structs so that any error names the field path
//! (`authorization.mode`, `rules[0].verbs`) and says what was expected and what was found
//! (`expected true or false, got a string`). Stage two, each loader's checking step, turns the raw
//! structs into engine types.
//!
//! The KubeletConfiguration and RBAC loaders (feature `yaml`) read theirs with serde derive,
//! through the small `Deserializer` of `walk`; the filter configuration, the one loader in the
//! filter's module, reads its structs by hand in `config::raw` with the helpers here, to the same
//! contract and in the same words (docs/PERFORMANCE.md "Module size").

use serde_json::Value;

#[cfg(feature = "yaml")]
mod walk;
#[cfg(feature = "yaml")]
pub use walk::from_value;

/// A stage-one error: the field path and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldError {
    /// Dotted path of the field (`authentication.webhook.cacheTTL`, `items[1].roleRef`); empty
    /// for the value itself.
    pub path: String,
    /// What is wrong, and what is expected.
    pub message: String,
}

/// What a value is, as a noun phrase (`got a string`).
pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// `n` as the standard library's `Display` writes an `f64` (shortest digits that read back as
/// `n`, never an exponent: `1.5`, `1`, `100000000000000000000`, `0.0000001`, `-0`), built from
/// serde_json's number formatting, which the module has anyway: core's float formatting is 20 KB
/// of wasm. `tests::plain_decimal_is_display` checks it against `f64::to_string`.
pub fn plain_decimal(n: f64) -> String {
    let Some(number) = serde_json::Number::from_f64(n) else {
        // NaN and infinities: not in JSON.
        return "a number".to_string();
    };
    let text = number.to_string();
    let (sign, unsigned) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text.as_str()),
    };
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().unwrap_or(0)),
        None => (unsigned, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all: String = int.chars().chain(frac.chars()).collect();
    let significant = all.trim_start_matches('0');
    // The decimal point sits after `point` digits of `significant` (before it when negative).
    let leading_zeros = i64::try_from(all.len() - significant.len()).unwrap_or(0);
    let point = i64::try_from(int.len()).unwrap_or(0) + exponent - leading_zeros;
    let significant = significant.trim_end_matches('0');
    let len = i64::try_from(significant.len()).unwrap_or(0);
    let mut out = String::from(sign);
    if significant.is_empty() {
        out.push('0');
    } else if point <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n(
            '0',
            usize::try_from(-point).unwrap_or(0),
        ));
        out.push_str(significant);
    } else if point >= len {
        out.push_str(significant);
        out.extend(std::iter::repeat_n(
            '0',
            usize::try_from(point - len).unwrap_or(0),
        ));
    } else {
        let (whole, fraction) = significant.split_at(usize::try_from(point).unwrap_or(0));
        out.push_str(whole);
        out.push('.');
        out.push_str(fraction);
    }
    out
}
/// The dotted path of `key` under `path`. A key that is empty or holds anything but letters,
/// digits, `_` and `-` is written as a JSON string (`authentication.""`, `"a.b"`), so that an
/// error always names a field and the name cannot be mistaken for another path (found by
/// `cargo fuzz run config`: `{"":{}}` gave an error naming no field).
pub fn join(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if plain {
        key.to_string()
    } else {
        serde_json::to_string(key).unwrap_or_else(|_| "\"?\"".to_string())
    };
    if path.is_empty() {
        key
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The float in a message reads as `f64`'s `Display` writes it.
    #[test]
    fn plain_decimal_is_display() {
        for n in [
            0.0,
            -0.0,
            1.0,
            -1.0,
            1.5,
            0.1,
            0.3,
            1e-7,
            1.25e-7,
            123.456,
            1e15,
            1e16,
            1e17,
            1e20,
            1.5e300,
            -2.5e-300,
            5e-324,
            f64::MAX,
            f64::MIN_POSITIVE,
            1000000.5,
            9007199254740993.0,
        ] {
            assert_eq!(plain_decimal(n), n.to_string(), "{n:e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn plain_decimal_is_display_for_any_finite(bits in proptest::num::u64::ANY) {
            let n = f64::from_bits(bits);
            proptest::prop_assume!(n.is_finite());
            proptest::prop_assert_eq!(plain_decimal(n), n.to_string());
        }
    }
}
