//! Go duration strings (`2m0s`, `30s`, `1h30m`, `500ms`), as `time.ParseDuration` reads them and
//! KubeletConfiguration writes its TTLs. Go's grammar is not what the maintained duration crates read
//! (`humantime` also takes `2m 0s` and `1day`), so this small parser stays hand-written.

use std::time::Duration;

/// Parse a Go duration string (`2m0s`, `30s`, `1h30m`, `500ms`, `1.5s`, `0`). Negative durations
/// are refused (every duration here is a TTL or a timeout).
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!("{s:?} is not a duration: expected a Go duration such as \"2m0s\", \"30s\" or \"500ms\"")
    };
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.starts_with('-') {
        return Err(format!(
            "{s:?} is negative: expected a duration of 0s or more"
        ));
    }
    let s2 = s.strip_prefix('+').unwrap_or(s);
    if s2.is_empty() {
        return Err(bad());
    }
    let mut rest = s2;
    let mut total_ns: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, after) = rest.split_at(num_len);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(bad());
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| bad())?
        };
        let mut frac_ns: u128 = 0;
        let mut scale: u128 = unit_ns;
        for d in frac_part.bytes() {
            scale /= 10;
            frac_ns += u128::from(d - b'0') * scale;
        }
        total_ns = total_ns
            .checked_add(int.checked_mul(unit_ns).ok_or_else(bad)?)
            .and_then(|t| t.checked_add(frac_ns))
            .ok_or_else(bad)?;
        rest = next;
    }
    let secs = u64::try_from(total_ns / 1_000_000_000).map_err(|_| bad())?;
    let nanos = u32::try_from(total_ns % 1_000_000_000).map_err(|_| bad())?;
    Ok(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("2m0s", 120_000)]
    #[case("30s", 30_000)]
    #[case("5m0s", 300_000)]
    #[case("1h30m", 5_400_000)]
    #[case("500ms", 500)]
    #[case("1.5s", 1_500)]
    #[case("0s", 0)]
    #[case("0", 0)]
    #[case("+10s", 10_000)]
    #[case("1m30.5s", 90_500)]
    #[case("2000us", 2)]
    fn go_durations(#[case] s: &str, #[case] ms: u128) {
        assert_eq!(parse_go_duration(s).unwrap().as_millis(), ms);
    }

    #[rstest]
    #[case("")]
    #[case("10")]
    #[case("s")]
    #[case("1d")]
    #[case("-5s")]
    #[case("1..5s")]
    #[case("5 s")]
    #[case("1.s2")]
    fn bad_durations(#[case] s: &str) {
        assert!(parse_go_duration(s).is_err(), "{s}");
    }
}
