//! Go durations, as kubeadm and kubelet read every duration they are given
//! (golang/go `src/time/format.go`, `ParseDuration`), and the bootstrap token
//! TTL built on them.

use std::time::Duration;

use super::{has_space_or_control, quote};

/// Go's `time.ParseDuration`, step for step (`src/time/format.go`,
/// `ParseDuration`, `leadingInt`, `leadingFraction`, `unitMap`).
/// Returns the sign and the magnitude in nanoseconds; `Err` carries the reason
/// in Go's words.
fn parse_go_duration(orig: &str) -> Result<(bool, u64), String> {
    const LIMIT: u64 = 1 << 63;
    let invalid = || "invalid duration".to_string();
    let mut s = orig;
    let mut neg = false;
    if let Some(rest) = s.strip_prefix('-') {
        neg = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    // Go: "Special case: if all that is left is "0", this is zero."
    if s == "0" {
        return Ok((neg, 0));
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut d: u64 = 0;
    while !s.is_empty() {
        let b = s.as_bytes();
        // The next character must be [0-9.].
        if !(b[0] == b'.' || b[0].is_ascii_digit()) {
            return Err(invalid());
        }
        // Consume [0-9]* (leadingInt: an overflow is an error).
        let mut v: u64 = 0;
        let mut i = 0;
        while i < b.len() && b[i].is_ascii_digit() {
            if v > LIMIT / 10 {
                return Err(invalid());
            }
            v = v * 10 + u64::from(b[i] - b'0');
            if v > LIMIT {
                return Err(invalid());
            }
            i += 1;
        }
        let pre = i > 0;
        s = &s[i..];
        // Consume (\.[0-9]*)? (leadingFraction: stops accumulating on overflow).
        let (mut f, mut scale, mut post) = (0u64, 1f64, false);
        if let Some(rest) = s.strip_prefix('.') {
            let b = rest.as_bytes();
            let mut i = 0;
            let mut overflow = false;
            while i < b.len() && b[i].is_ascii_digit() {
                if !overflow {
                    if f > (LIMIT - 1) / 10 {
                        overflow = true;
                    } else {
                        let y = f * 10 + u64::from(b[i] - b'0');
                        if y > LIMIT {
                            overflow = true;
                        } else {
                            f = y;
                            scale *= 10.0;
                        }
                    }
                }
                i += 1;
            }
            post = i > 0;
            s = &rest[i..];
        }
        if !pre && !post {
            // No digits (e.g. ".s" or "-.s").
            return Err(invalid());
        }
        // Consume the unit: everything up to the next '.' or digit. Both are
        // ASCII, so the cut is always on a character boundary.
        let u_len = s.bytes().position(|c| c == b'.' || c.is_ascii_digit()).unwrap_or(s.len());
        if u_len == 0 {
            return Err("missing unit".to_string());
        }
        let u = &s[..u_len];
        s = &s[u_len..];
        let unit: u64 = match u {
            "ns" => 1,
            // "µs" is U+00B5 (micro sign), "μs" U+03BC (Greek mu): Go takes both.
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            other => return Err(format!("unknown unit {}", quote(other))),
        };
        if v > LIMIT / unit {
            return Err(invalid());
        }
        v *= unit;
        if f > 0 {
            // Go: float64 is needed to be nanosecond accurate for fractions of hours.
            v += (f as f64 * (unit as f64 / scale)) as u64;
            if v > LIMIT {
                return Err(invalid());
            }
        }
        d += v;
        if d > LIMIT {
            return Err(invalid());
        }
    }
    if !neg && d > LIMIT - 1 {
        return Err(invalid());
    }
    Ok((neg, d))
}

/// Explains a duration that Go's `time.ParseDuration` refuses; `more` follows
/// the examples.
fn duration_error(s: &str, why: &str, more: &str) -> String {
    let hint = if has_space_or_control(s) {
        "remove the spaces"
    } else if s.ends_with('d') || s.ends_with('w') || s.ends_with('y') {
        "there are no days, weeks or years: a day is 24h, a week 168h"
    } else {
        "write numbers with the units h, m, s, ms, us or ns"
    };
    format!(
        "{} is not a Go duration (Go's time.ParseDuration says: {why}); {hint}; e.g. 24h, 1h30m or 90s{more}",
        quote(s)
    )
}

/// Parses a duration the way Go's `time.ParseDuration` does, which is how
/// kubeadm and kubelet read every duration they are given (`metav1.Duration`
/// in their configuration files, `pflag` duration flags).
///
/// Rule: golang/go `src/time/format.go`, `ParseDuration` — an optionally
/// signed sequence of decimal numbers, each with an optional fraction and a
/// unit: `24h`, `1h30m`, `1.5h`, `.5s`, `300ms`. Units are `ns`, `us` (`µs`,
/// `μs`), `ms`, `s`, `m` and `h`; there are no days. A lone `0` needs no
/// unit; anything else does. Values past 2⁶³−1 ns (about 292 years) overflow.
/// No whitespace anywhere.
///
/// A leading `+` or `-` is accepted as Go does, but [`Duration`] cannot be
/// negative: a negative non-zero value is an error here (`-0s` is zero).
pub fn go_duration(s: &str) -> Result<Duration, String> {
    match parse_go_duration(s) {
        Ok((true, n)) if n > 0 => Err(format!(
            "{} is negative; give a positive duration such as 24h, or 0 where zero is meaningful",
            quote(s)
        )),
        Ok((_, n)) => Ok(Duration::from_nanos(n)),
        Err(why) => Err(duration_error(s, &why, "")),
    }
}

/// Validates the lifetime of a bootstrap token (`kiln cluster init
/// --token-ttl`, `bootstrapTokens[].ttl` in kubeadm's `InitConfiguration`).
///
/// The syntax is Go's (see [`go_duration`]); kubeadm decodes the field as a
/// `metav1.Duration`. `0` is allowed and means the token never expires —
/// callers may want to warn about it. A negative value is refused: kubeadm
/// writes an expiration only when the TTL is positive
/// (`cmd/kubeadm/app/apis/bootstraptoken/v1/utils.go`, `encodeTokenSecretData`:
/// `token.TTL.Duration > 0`), so `-1h` would silently create a token that
/// never expires. Values Go cannot hold (more than about 292 years) are
/// refused as Go refuses them.
pub fn token_ttl(s: &str) -> Result<Duration, String> {
    match parse_go_duration(s) {
        Ok((true, n)) if n > 0 => Err(format!(
            "token TTL {} is negative: kubeadm sets an expiration only for a positive TTL, so this token would never expire; use e.g. 24h, or 0 if a never-expiring token is really meant",
            quote(s)
        )),
        Ok((_, n)) => Ok(Duration::from_nanos(n)),
        Err(why) => Err(format!("token TTL {}", duration_error(s, &why, " (0 makes a token that never expires)"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn go_durations_parse_like_go() {
        let ok = [
            ("0", 0),
            ("-0", 0),
            ("+0", 0),
            ("0s", 0),
            ("24h", 24 * 3600 * SEC),
            ("1h30m", 5400 * SEC),
            ("90s", 90 * SEC),
            ("1.5h", 5400 * SEC),
            (".5s", SEC / 2),
            ("5.h", 5 * 3600 * SEC),
            ("+5s", 5 * SEC),
            ("300ms", 300_000_000),
            ("1us", 1_000),
            ("1\u{b5}s", 1_000),
            ("1\u{3bc}s", 1_000),
            ("1ns", 1),
            ("1h1m1s1ms1us1ns", 3661 * SEC + 1_001_001),
            ("0.000000001s", 1),
            // Go's largest Duration.
            ("9223372036854775807ns", (1 << 63) - 1),
            ("2562047h47m16.854775807s", (1 << 63) - 1),
        ];
        for (s, want) in ok {
            assert_eq!(go_duration(s), Ok(Duration::from_nanos(want)), "{s}");
        }
        let bad = [
            "",
            "forever",
            "1d",
            "1w",
            "24 h",
            " 24h",
            "24h ",
            "24h\n",
            "1",
            "1h30",
            "h",
            ".",
            ".s",
            "-",
            "+",
            "1.2.3s",
            "1H",
            "1hour",
            "9223372036854775808ns",
            "2562048h",
            "99999999999999999999s",
            "0x10s",
            "--1h",
            "1h-1m",
            "１h",
        ];
        for s in bad {
            assert!(go_duration(s).is_err(), "{s:?} was accepted: {:?}", go_duration(s));
        }
        // A negative value is valid Go but not a std Duration.
        assert!(go_duration("-1h").unwrap_err().contains("negative"));
    }

    #[test]
    fn duration_errors_name_the_value_and_an_example() {
        let e = go_duration("forever").unwrap_err();
        assert!(e.contains("`forever`") && e.contains("24h"), "{e}");
        let e = go_duration("1d").unwrap_err();
        assert!(e.contains("`1d`") && e.contains("no days") && e.contains("24h"), "{e}");
        assert!(go_duration("1d").unwrap_err().contains("unknown unit `d`"));
        let e = go_duration("24 h").unwrap_err();
        assert!(e.contains("spaces"), "{e}");
        let e = go_duration("24h\nInjected: yes").unwrap_err();
        assert!(!e.contains('\n') && e.contains("\\n"), "{e}");
        assert!(go_duration("1h30").unwrap_err().contains("missing unit"));
    }

    #[test]
    fn token_ttls() {
        assert_eq!(token_ttl("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(token_ttl("48h"), Ok(Duration::from_secs(172_800)));
        assert_eq!(token_ttl("0"), Ok(Duration::ZERO));
        assert_eq!(token_ttl("-0s"), Ok(Duration::ZERO));
        let e = token_ttl("-1h").unwrap_err();
        assert!(e.contains("negative") && e.contains("never expire"), "{e}");
        let e = token_ttl("forever").unwrap_err();
        assert!(e.starts_with("token TTL `forever` is not a Go duration") && e.contains("24h"), "{e}");
        assert!(e.contains("0 makes a token that never expires"), "{e}");
        assert!(token_ttl("1d").unwrap_err().contains("`1d`"));
        assert!(token_ttl("2562048h").is_err());
        assert!(token_ttl("").is_err());
    }
}
