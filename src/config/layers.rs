//! The files a configuration is read from and how they merge: the main file, then each
//! `*.toml` of the drop-in directory in lexical order. Each file is parsed on its own
//! (toml_edit keeps every key's and value's position), its keys are checked against
//! [`super::keys`], and its values laid over the ones before: a later value wins, tables merge,
//! `[[health.service]]` entries are kept per file for `health.rs` to add up.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml_edit::{Item, TableLike};

use super::{keys, ConfigError, Problem, MAX_CONFIG_BYTES};

/// The drop-in directory of a main file: `config.d` beside it (`/etc/cluster-ai/config.d`).
pub fn drop_in_dir(main: &Path) -> PathBuf {
    main.parent().unwrap_or(Path::new("")).join("config.d")
}

/// More drop-ins than this is a mistake (a directory of something else), not a configuration.
pub const MAX_DROP_INS: usize = 256;

/// The tables of the file, in the order the documented example shows them.
pub(super) const TABLES: &[&str] = &["swap", "kernel", "optimize", "emergency", "health", "alerts", "metrics"];
/// The one array of tables.
pub(super) const SERVICES: &str = "health.service";
/// The key that drops services from the list built so far (see `health.rs`).
pub(super) const REMOVE_SERVICES: &str = "health.remove_services";

/// One file's text.
pub(super) struct Layer {
    /// `None`: text given to [`super::Config::parse`].
    pub path: Option<PathBuf>,
    pub text: String,
    /// The main file (its `[[health.service]]` list replaces the built-in one); a drop-in's
    /// entries add to the list instead.
    pub main: bool,
}

/// Where a value was written: a layer and a byte range of its text.
#[derive(Debug, Clone)]
pub(super) struct Loc {
    pub layer: usize,
    pub span: Range<usize>,
}

/// A value and where it was written.
#[derive(Debug, Clone)]
pub(super) struct Setting {
    pub value: toml::Value,
    pub at: Loc,
}

/// One `[[health.service]]` entry: its keys (bare, such as `probe`) and where it starts.
pub(super) struct Entry {
    pub at: Loc,
    pub fields: HashMap<String, Setting>,
}

/// What one file says about the service list.
pub(super) struct ServiceLayer {
    pub main: bool,
    pub remove: Option<Setting>,
    pub entries: Vec<Entry>,
}

/// Every file merged: the effective value of each key with where it was written, the service
/// entries per file, and the problems found so far (syntax, unknown keys, wrong shapes).
pub(super) struct Merged {
    pub layers: Vec<Layer>,
    pub values: HashMap<String, Setting>,
    pub services: Vec<ServiceLayer>,
    pub problems: Vec<Problem>,
    /// The file being added, for the problems found in it.
    current: Option<PathBuf>,
}

impl Merged {
    pub(super) fn new(layers: Vec<Layer>) -> Merged {
        let mut m = Merged { layers: Vec::new(), values: HashMap::new(), services: Vec::new(), problems: Vec::new(), current: None };
        for (i, layer) in layers.iter().enumerate() {
            m.current = layer.path.clone();
            m.add(i, layer);
        }
        m.layers = layers;
        m
    }

    pub(super) fn path(&self, layer: usize) -> Option<PathBuf> {
        self.layers.get(layer).and_then(|l| l.path.clone())
    }

    /// The 1-based line of `loc`.
    pub(super) fn line(&self, loc: &Loc) -> usize {
        self.layers.get(loc.layer).map_or(1, |l| super::text_before(&l.text, loc.span.start).matches('\n').count() + 1)
    }

    /// A problem at `at`, naming its file (`None`: the start of the main file).
    pub(super) fn problem(&self, at: Option<&Loc>, key: String, message: String) -> Problem {
        let (layer, offset) = at.map_or((0, 0), |l| (l.layer, l.span.start));
        let text = self.layers.get(layer).map_or("", |l| l.text.as_str());
        let mut p = Problem::at(text, offset, key, message);
        p.file = self.path(layer);
        p
    }

    fn add(&mut self, layer: usize, l: &Layer) {
        let doc = match toml_edit::ImDocument::parse(l.text.as_str()) {
            Ok(doc) => doc,
            Err(e) => {
                let offset = e.span().map_or(0, |s| s.start);
                let mut p = Problem::at(&l.text, offset, super::key_at(&l.text, offset), e.message().to_string());
                p.file = l.path.clone();
                self.problems.push(p);
                return;
            }
        };
        let mut services = ServiceLayer { main: l.main, remove: None, entries: Vec::new() };
        self.walk(layer, &l.text, doc.as_table(), "", &mut services);
        if services.remove.is_some() || !services.entries.is_empty() {
            self.services.push(services);
        }
    }

    fn report(&mut self, text: &str, span: Option<Range<usize>>, key: String, message: String) {
        let mut p = Problem::at(text, span.map_or(0, |s| s.start), key, message);
        p.file = self.current.clone();
        self.problems.push(p);
    }

    fn walk(&mut self, layer: usize, text: &str, table: &dyn TableLike, prefix: &str, services: &mut ServiceLayer) {
        for (name, _) in table.iter() {
            let Some((key, item)) = table.get_key_value(name) else { continue };
            let full = if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") };
            let key_span = key.span().or_else(|| item.span());
            let at = |span: Option<Range<usize>>| Loc { layer, span: span.or_else(|| key_span.clone()).unwrap_or(0..0) };
            if TABLES.contains(&full.as_str()) {
                match item.as_table_like() {
                    Some(t) => self.walk(layer, text, t, &full, services),
                    None => {
                        let found = plain_item(item).map_or("nothing".to_string(), |v| kind(&v));
                        self.report(text, item.span().or(key_span), full.clone(), format!("expected the table [{full}], found {found}"));
                    }
                }
            } else if full == SERVICES {
                self.entries(layer, text, item, key_span, services);
            } else if full == REMOVE_SERVICES {
                if let Some(value) = plain_item(item) {
                    services.remove = Some(Setting { value, at: at(item.span()) });
                }
            } else if keys().any(|k| k.table == prefix && k.key == name) {
                if let Some(value) = plain_item(item) {
                    self.values.insert(full, Setting { value, at: at(item.span()) });
                }
            } else {
                let known = known_keys(prefix);
                self.report(text, key_span, full, unknown_key(name, &known));
            }
        }
    }

    fn entries(&mut self, layer: usize, text: &str, item: &Item, key_span: Option<Range<usize>>, services: &mut ServiceLayer) {
        let tables: Vec<(&dyn TableLike, Option<Range<usize>>)> = match item {
            Item::ArrayOfTables(a) => a.iter().map(|t| (t as &dyn TableLike, t.span())).collect(),
            Item::Value(toml_edit::Value::Array(a)) if a.iter().all(|v| v.is_inline_table()) => {
                a.iter().filter_map(|v| v.as_inline_table().map(|t| (t as &dyn TableLike, t.span()))).collect()
            }
            other => {
                let found = plain_item(other).map_or("nothing".to_string(), |v| kind(&v));
                let message = format!("expected [[health.service]] entries (one per service), found {found}");
                self.report(text, other.span().or(key_span), SERVICES.into(), message);
                return;
            }
        };
        for (t, span) in tables {
            let mut fields = HashMap::new();
            for (name, _) in t.iter() {
                let Some((key, item)) = t.get_key_value(name) else { continue };
                let key_span = key.span();
                if keys().any(|k| k.table == SERVICES && k.key == name) {
                    if let Some(value) = plain_item(item) {
                        let at = Loc { layer, span: item.span().or(key_span.clone()).unwrap_or(0..0) };
                        fields.insert(name.to_string(), Setting { value, at });
                    }
                } else {
                    let known = known_keys(SERVICES);
                    self.report(text, key_span, format!("{SERVICES}.{name}"), unknown_key(name, &known));
                }
            }
            let at = Loc { layer, span: span.or(key_span.clone()).unwrap_or(0..0) };
            services.entries.push(Entry { at, fields });
        }
    }
}

/// The keys and tables a table accepts, in documented order.
fn known_keys(table: &str) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = keys().filter(|k| k.table == table).map(|k| k.key).collect();
    if table.is_empty() {
        out.extend(TABLES.iter().copied());
    } else if table == "health" {
        out.push("service");
    }
    out
}

/// A value without its formatting, as the value parsers read it; `None` for an empty item.
fn plain_item(item: &Item) -> Option<toml::Value> {
    match item {
        Item::None => None,
        Item::Value(v) => Some(plain(v)),
        Item::Table(t) => Some(toml::Value::Table(t.iter().filter_map(|(k, i)| Some((k.to_string(), plain_item(i)?))).collect())),
        Item::ArrayOfTables(a) => Some(toml::Value::Array(a.iter().filter_map(|t| plain_item(&Item::Table(t.clone()))).collect())),
    }
}

fn plain(v: &toml_edit::Value) -> toml::Value {
    use toml_edit::Value as V;
    match v {
        V::String(s) => toml::Value::String(s.value().clone()),
        V::Integer(i) => toml::Value::Integer(*i.value()),
        V::Float(f) => toml::Value::Float(*f.value()),
        V::Boolean(b) => toml::Value::Boolean(*b.value()),
        V::Datetime(d) => toml::Value::Datetime(*d.value()),
        V::Array(a) => toml::Value::Array(a.iter().map(plain).collect()),
        V::InlineTable(t) => toml::Value::Table(t.iter().map(|(k, v)| (k.to_string(), plain(v))).collect()),
    }
}

/// One TOML value written as text (a key's documented default, such as `"2G"` or `[]`).
pub(super) fn value_of_text(text: &str) -> Result<toml::Value, String> {
    text.parse::<toml_edit::Value>().map(|v| plain(&v)).map_err(|e| e.message().to_string())
}

/// A config file's text: a regular file of at most [`MAX_CONFIG_BYTES`] (a FIFO, a device or a
/// huge file is refused rather than read), in UTF-8.
pub(super) fn read_layer(path: &Path, main: bool) -> Result<Layer, ConfigError> {
    let bytes = crate::sys::fs::read_regular_file(path, MAX_CONFIG_BYTES).map_err(|source| {
        let source = if source.kind() == std::io::ErrorKind::FileTooLarge {
            std::io::Error::new(source.kind(), format!("{source}; a config file is a few KiB"))
        } else {
            source
        };
        ConfigError::Read { path: path.to_path_buf(), source }
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let offset = e.utf8_error().valid_up_to();
        let valid = std::str::from_utf8(&bytes[..offset]).unwrap_or_default();
        let message = format!("byte 0x{:02x} is not UTF-8; save the file as UTF-8", bytes[offset]);
        ConfigError::Invalid { path: path.to_path_buf(), problems: vec![Problem::at(valid, offset, super::key_at(valid, offset), message)] }
    })?;
    Ok(Layer { path: Some(path.to_path_buf()), text, main })
}

/// The drop-ins of `dir` in the order they apply: every `*.toml` whose name does not start
/// with a dot, sorted by name byte by byte (`10-a.toml` before `20-b.toml`, as systemd and
/// Debian's `run-parts` do). Other names (`x.toml.dpkg-old`, `x.toml~`, a README) are not
/// read. A missing directory has none; one that cannot be listed is an error naming it.
pub fn drop_in_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let read = |source| ConfigError::Read { path: dir.to_path_buf(), source };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(read(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(read)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') || !name.ends_with(".toml") {
            continue;
        }
        if out.len() == MAX_DROP_INS {
            return Err(read(std::io::Error::other(format!("more than {MAX_DROP_INS} *.toml files; a drop-in directory holds a few"))));
        }
        out.push(entry.path());
    }
    out.sort();
    Ok(out)
}

/// What a TOML value is, in a user's words.
pub(super) fn kind(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("the text {s:?}"),
        toml::Value::Integer(i) => format!("the number {i}"),
        toml::Value::Float(f) => format!("the number {f}"),
        toml::Value::Boolean(b) => format!("{b}"),
        toml::Value::Datetime(d) => format!("the date {d}"),
        toml::Value::Array(_) => "a list".into(),
        toml::Value::Table(_) => "a table".into(),
    }
}

/// An unknown key in our words, with the nearest known key of its table.
pub(super) fn unknown_key(unknown: &str, known: &[&str]) -> String {
    // The distance is at least the difference in length: a key far longer than every known
    // one (a line of a megabyte) is no typo, and measuring it would cost seconds.
    let length = unknown.chars().count();
    let reach = |k: &str| 2.max(k.len() / 3);
    let nearest = known
        .iter()
        .filter(|k| length.abs_diff(k.len()) <= reach(k))
        .map(|k| (edit_distance(unknown, k), *k))
        .min()
        .filter(|(d, k)| *d <= reach(k));
    match nearest {
        Some((_, k)) => format!("unknown key `{unknown}`; did you mean `{k}`?"),
        None => format!("unknown key `{unknown}`; the keys here are {}", known.join(", ")),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}
