//! Sizes (`2G`, `512M`, `1GiB`) and durations (`30s`, `5m`) as the config file writes them.
//! Every size suffix is binary: `1G` and `1GiB` are both 1024³ bytes, as fallocate(1) reads them.

use std::time::Duration;

pub fn parse_size(text: &str) -> Result<u64, String> {
    const EXPECTED: &str = "expected a size such as 2G, 1.5G, 512M, 1GiB or a number of bytes";
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || fraction.contains('.') || (number.contains('.') && fraction.is_empty()) {
        return Err(format!("{text:?} is not a size; {EXPECTED}"));
    }
    let shift = match unit.trim_start() {
        "" | "B" => 0,
        "K" | "k" | "KiB" => 10,
        "M" | "m" | "MiB" => 20,
        "G" | "g" | "GiB" => 30,
        "T" | "t" | "TiB" => 40,
        other => return Err(format!("unknown size unit {other:?} in {text:?}; {EXPECTED}")),
    };
    if !fraction.is_empty() && shift == 0 {
        return Err(format!("{text:?} is not a whole number of bytes; {EXPECTED}"));
    }
    let too_large = || format!("{text:?} is too large");
    let whole: u64 = whole.parse().map_err(|_| too_large())?;
    let mut bytes = whole.checked_mul(1u64 << shift).ok_or_else(too_large)?;
    // A decimal fraction of the unit, rounded down to whole bytes ("1.5G").
    let fraction = &fraction[..fraction.len().min(9)];
    if !fraction.is_empty() {
        let scale = 10u128.pow(fraction.len() as u32);
        let part = fraction.parse::<u128>().map_err(|_| format!("{text:?} is not a size; {EXPECTED}"))? * (1u128 << shift) / scale;
        bytes = bytes.checked_add(u64::try_from(part).map_err(|_| too_large())?).ok_or_else(too_large)?;
    }
    Ok(bytes)
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const EXPECTED: &str = "expected a duration such as 500ms, 30s, 5m, 1h or 7d";
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    if digits.is_empty() || unit.is_empty() {
        return Err(format!("{text:?} is not a duration; {EXPECTED}"));
    }
    let n: u64 = digits.parse().map_err(|_| format!("{text:?} is too large"))?;
    let millis_per_unit = match unit.trim_start() {
        "ms" => 1,
        "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => return Err(format!("unknown duration unit {other:?} in {text:?}; {EXPECTED}")),
    };
    n.checked_mul(millis_per_unit).map(Duration::from_millis).ok_or_else(|| format!("{text:?} is too large"))
}

/// The shortest spelling that [`parse_size`] reads back to the same number.
pub fn format_size(bytes: u64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes}")
}

/// A human figure with one decimal, for logs and `status` (not for round trips).
pub fn human_size(bytes: u64) -> String {
    let mut value = bytes as f64;
    for unit in ["B", "KiB", "MiB", "GiB"] {
        if value < 1024.0 {
            return if unit == "B" { format!("{bytes} B") } else { format!("{value:.1} {unit}") };
        }
        value /= 1024.0;
    }
    format!("{value:.1} TiB")
}

pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    for (per, unit) in [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1000, "s")] {
        if ms >= per && ms % per == 0 {
            return format!("{}{unit}", ms / per);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("16 G").unwrap(), 16 << 30);
        assert_eq!(parse_size("3k").unwrap(), 3072);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("0.5M").unwrap(), 512 << 10);
        assert_eq!(parse_size("2.25 GiB").unwrap(), 9 << 28);
        for bad in ["", "G", "2X", "2GB", "-1G", "1.5", "1.G", ".5G", "1.2.3G", "99999999999999999999", "17179869184T", "16777216.5T"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
        for n in [0, 1, 1023, 1 << 10, 3 << 20, 2 << 30, 5 << 40, (1 << 30) + 1] {
            assert_eq!(parse_size(&format_size(n)).unwrap(), n);
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(7 * 86400));
        for bad in ["", "30", "s", "1.5s", "3w", "-1s", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        for d in [
            Duration::from_millis(1500),
            Duration::from_secs(30),
            Duration::from_secs(300),
            Duration::from_secs(3600),
            Duration::from_secs(7 * 86400),
        ] {
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(2 << 30), "2.0 GiB");
    }
}
