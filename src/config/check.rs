//! The checking machinery shared by every table: the [`Checker`] that turns the merged layers'
//! values into settings while collecting problems, and the value parsers (sizes, durations,
//! percentages, paths, URLs, unit names) whose messages say what was expected in a user's words.

use std::path::{Path, PathBuf};
use std::time::Duration;

pub(super) use super::layers::kind;
use super::layers::{Loc, Merged, Setting};
use super::{find_key, format_duration, parse_duration, parse_size, Origin, Origins, Problem};

/// Collects problems while turning the merged values into settings, and records where each
/// setting came from (for `config show`).
pub(super) struct Checker<'a> {
    pub(super) merged: &'a Merged,
    pub(super) problems: Vec<Problem>,
    pub(super) origins: Origins,
    /// Every key asked for: a test proves each key of [`super::keys`] is read by its table.
    pub(super) read: Vec<String>,
}

impl<'a> Checker<'a> {
    pub(super) fn new(merged: &'a Merged) -> Self {
        Checker { merged, problems: merged.problems.clone(), origins: Origins::default(), read: Vec::new() }
    }

    /// The setting `key` (dotted, as listed in [`super::keys`]): the value of the last layer
    /// that sets it, else the key's documented default. A value that fails `parse` is reported
    /// where it was written, and the default is used in its place so that every other problem
    /// is still found. Returns where the value was written (`None`: the default).
    pub(super) fn field<T>(&mut self, key: &str, parse: impl Fn(&toml::Value) -> Result<T, String>) -> (T, Option<Loc>) {
        let merged = self.merged;
        let got = self.setting(key, merged.values.get(key), &parse);
        if let Some(loc) = &got.1 {
            self.origins.set(key, Origin::File { path: merged.path(loc.layer), line: merged.line(loc) });
        }
        got
    }

    /// As [`Checker::field`], for a key of one `[[health.service]]` entry.
    pub(super) fn entry_field<T>(
        &mut self,
        key: &str,
        setting: Option<&Setting>,
        parse: impl Fn(&toml::Value) -> Result<T, String>,
    ) -> (T, Option<Loc>) {
        self.setting(key, setting, &parse)
    }

    fn setting<T>(&mut self, key: &str, setting: Option<&Setting>, parse: &impl Fn(&toml::Value) -> Result<T, String>) -> (T, Option<Loc>) {
        self.read.push(key.to_string());
        if let Some(s) = setting {
            match parse(&s.value) {
                Ok(v) => return (v, Some(s.at.clone())),
                Err(message) => self.report(Some(s.at.clone()), key, message),
            }
        }
        (default_of(key, parse), None)
    }

    /// A problem at `at` (`None`: the start of the main file).
    pub(super) fn report(&mut self, at: Option<Loc>, key: &str, message: String) {
        self.problems.push(self.merged.problem(at.as_ref(), key.to_string(), message));
    }

    /// A rule between two keys that does not hold: reported at the one written last (the
    /// later file, then the later line), which is the one whose writer has to fix it; a key
    /// left at its default is never pointed at when the other was written.
    pub(super) fn report_between(&mut self, a: (Option<Loc>, &str), b: (Option<Loc>, &str), message: String) {
        let later = |x: &Option<Loc>| x.as_ref().map(|l| (l.layer, l.span.start));
        if later(&b.0) > later(&a.0) {
            // The message speaks of `a`'s value: name it, since the line shown is `b`'s.
            self.report(b.0, b.1, format!("{} {message}", a.1));
        } else {
            self.report(a.0, a.1, message);
        }
    }
}

/// The documented default of `key`, read with the key's own parser. Every default is checked
/// by `config::tests::every_documented_default_is_valid`, so this never fails in a build that
/// passed its tests; were one invalid, the daemon would stop at start with the key named
/// rather than run on a value nobody chose.
fn default_of<T>(key: &str, parse: &impl Fn(&toml::Value) -> Result<T, String>) -> T {
    let doc = find_key(key).unwrap_or_else(|| unreachable!("{key} is not in config::keys()"));
    let value = super::layers::value_of_text(doc.default).unwrap_or_else(|e| unreachable!("{key}: default {}: {e}", doc.default));
    parse(&value).unwrap_or_else(|e| unreachable!("{key}: default {}: {e}", doc.default))
}

pub(super) fn as_text<'v>(v: &'v toml::Value, expected: &str) -> Result<&'v str, String> {
    v.as_str().ok_or_else(|| format!("expected {expected}, found {}", kind(v)))
}

const SIZE: &str = "a size such as \"2G\", \"1.5G\", \"512M\" or a number of bytes";

pub(super) fn size(v: &toml::Value) -> Result<u64, String> {
    match v {
        toml::Value::Integer(n) => u64::try_from(*n).map_err(|_| format!("{n} is negative; expected {SIZE}")),
        toml::Value::String(s) => parse_size(s),
        other => Err(format!("expected {SIZE}, found {}", kind(other))),
    }
}

pub(super) fn duration_between(min: Duration, max: Duration) -> impl Fn(&toml::Value) -> Result<Duration, String> {
    move |v| {
        let s = as_text(v, "a duration such as \"30s\" or \"5m\" (with its unit)")?;
        let d = parse_duration(s)?;
        if d < min || d > max {
            return Err(format!("{s:?} is out of range; expected between {} and {}", format_duration(min), format_duration(max)));
        }
        Ok(d)
    }
}

/// A percentage as a number (`80`) or as text with a sign (`"80%"`), the same for every key.
pub(super) fn percent_between(min: u8, max: u8) -> impl Fn(&toml::Value) -> Result<u8, String> {
    move |v| {
        let expected = format!("a percentage from {min} to {max}, such as {max_eg} or \"{max_eg}%\"", max_eg = max.min(80));
        let n: i64 = match v {
            toml::Value::Integer(n) => *n,
            toml::Value::String(s) => {
                s.trim().strip_suffix('%').and_then(|p| p.trim().parse().ok()).ok_or_else(|| format!("{s:?} is not {expected}"))?
            }
            other => return Err(format!("expected {expected}, found {}", kind(other))),
        };
        u8::try_from(n).ok().filter(|p| (min..=max).contains(p)).ok_or_else(|| format!("{n} is out of range; expected {expected}"))
    }
}

pub(super) fn absolute_path(v: &toml::Value) -> Result<PathBuf, String> {
    let s = as_text(v, "a path in quotes such as \"/var/lib/cluster-ai/swap\"")?;
    let p = PathBuf::from(s);
    if !p.is_absolute() || p == Path::new("/") {
        return Err(format!("{s:?} is not an absolute path below /; expected e.g. \"/var/lib/cluster-ai/swap\""));
    }
    Ok(p)
}

/// An absolute path, or `""` for none.
pub(super) fn optional_path(v: &toml::Value) -> Result<Option<PathBuf>, String> {
    if v.as_str() == Some("") {
        Ok(None)
    } else {
        absolute_path(v).map(Some)
    }
}

pub(super) fn boolean(v: &toml::Value) -> Result<bool, String> {
    v.as_bool().ok_or_else(|| format!("expected true or false, found {}", kind(v)))
}

/// `"auto"`, or a value `parse` accepts.
pub(super) fn auto<T>(parse: impl Fn(&toml::Value) -> Result<T, String>) -> impl Fn(&toml::Value) -> Result<Option<T>, String> {
    move |v| if v.as_str() == Some("auto") { Ok(None) } else { parse(v).map(Some).map_err(|e| format!("{e}; or \"auto\"")) }
}

/// A whole number from `min` to `max`.
pub(super) fn count_between(min: i64, max: i64) -> impl Fn(&toml::Value) -> Result<u32, String> {
    move |v| match v {
        toml::Value::Integer(n) if (min..=max).contains(n) => Ok(*n as u32),
        toml::Value::Integer(n) => Err(format!("{n} is out of range; expected a whole number from {min} to {max}")),
        other => Err(format!("expected a whole number from {min} to {max}, found {}", kind(other))),
    }
}

/// An `http://host:port` (or `https://`) URL, or `""` for "no such service here".
pub(super) fn http_url(v: &toml::Value) -> Result<Option<String>, String> {
    let s = as_text(v, "an http:// or https:// URL such as \"http://127.0.0.1:8787\", or \"\" for none")?;
    if s.is_empty() {
        return Ok(None);
    }
    // The error quotes the URL back, and a webhook's URL is its secret: shown redacted.
    crate::sys::http::Endpoint::parse_url(s)
        .map_err(|e| format!("{}; expected e.g. \"http://127.0.0.1:8787\", or \"\" for none", crate::sys::redact::in_text(&e, s)))?;
    Ok(Some(s.trim_end_matches('/').to_string()))
}

/// A systemd unit name with its type, such as `ollama.service`.
pub(super) fn unit_name(s: &str) -> Result<String, String> {
    let valid = s.len() <= 256
        && s.rsplit_once('.').is_some_and(|(n, t)| !n.is_empty() && ["service", "scope", "slice"].contains(&t))
        && s.chars().all(|c| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c));
    if valid {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a unit name; expected e.g. \"ollama.service\" (a .service, .scope or .slice)"))
    }
}

/// A unit name, or `""` for none.
pub(super) fn optional_unit(v: &toml::Value) -> Result<Option<String>, String> {
    let s = as_text(v, "a unit name such as \"ollama.service\", or \"\" for none")?;
    if s.is_empty() {
        Ok(None)
    } else {
        unit_name(s).map(Some)
    }
}

/// A TOML array of strings, each checked by `item`.
pub(super) fn list_of<T>(v: &toml::Value, expected: &str, item: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    let toml::Value::Array(items) = v else { return Err(format!("expected {expected}, found {}", kind(v))) };
    items.iter().map(|i| item(as_text(i, expected)?)).collect()
}
