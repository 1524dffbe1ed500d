//! The parts of the man pages that clap_mangen cannot make: each page's EXIT STATUS and SEE ALSO
//! sections (from [`crate::exit::TABLE`]) and the whole config reference,
//! cluster-ai.toml(5), made from the documented example config `packaging/config.toml` (whose
//! keys and values a test holds to the built-in defaults, and a test here holds the page to the
//! keys [`crate::config::Config::entries`] lists). `examples/gen-assets.rs` writes them; the
//! daemon never calls this module, so the linker leaves it out of the binary.

use crate::exit;

/// The man section of every command page: the binary is in /usr/bin and most subcommands are
/// for any user (Debian policy: section 1 for programs in /usr/bin).
pub const COMMAND_SECTION: &str = "1";

/// Text made safe for roff: a backslash doubled, a leading `.` or `'` (which would start a
/// request) guarded, and `-` as `\-` so that options survive copy and paste.
pub fn escape(text: &str) -> String {
    let s = text.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// The EXIT STATUS section of `command`'s page (`""`: cluster-ai(1), which lists every code).
pub fn exit_status_section(command: &str) -> String {
    let mut out = String::from(".SH \"EXIT STATUS\"\n");
    for s in exit::for_command(command) {
        let who = match (command.is_empty(), s.commands) {
            (true, c) if c != ["*"] => format!(" [{}]", c.join(", ")),
            _ => String::new(),
        };
        out += &format!(".TP\n\\fB{}\\fR\n{}{}\n", s.code, escape(s.meaning), escape(&who));
    }
    out
}

/// The exit status table as Markdown, as docs/commands.md holds it (a test compares them).
pub fn exit_status_markdown() -> String {
    let mut out = String::from("| code | meaning | returned by |\n|---|---|---|\n");
    for s in exit::TABLE {
        let who = if s.commands == ["*"] {
            "every command".to_string()
        } else {
            s.commands.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
        };
        out += &format!("| {} | {} | {who} |\n", s.code, s.meaning);
    }
    out
}

/// The SEE ALSO section of a command page.
pub fn see_also_section(page: &str) -> String {
    let mut refs = vec![("cluster-ai.toml", "5"), ("systemctl", "1"), ("journalctl", "1")];
    if page != "cluster-ai" {
        refs.insert(0, ("cluster-ai", COMMAND_SECTION));
    }
    let refs: Vec<String> = refs.iter().map(|(name, section)| format!("\\fB{}\\fR({section})", escape(name))).collect();
    format!(".SH \"SEE ALSO\"\n{}\n", refs.join(", "))
}

/// cluster-ai.toml(5), made from the documented example config (`packaging/config.toml`): its
/// opening comment is the DESCRIPTION, each table a subsection, each key (commented out there,
/// `#key = default`) with the comment above it an entry `key = default`, and the
/// `[[health.service]]` list shown as it is written.
pub fn config_page(example: &str, version: &str) -> String {
    let mut out = format!(
        ".TH CLUSTER\\-AI.TOML 5 \"\" \"cluster\\-ai {}\" \"File Formats\"\n.SH NAME\ncluster\\-ai.toml \\- configuration of cluster\\-ai\n\
         .SH SYNOPSIS\n/etc/cluster\\-ai/config.toml\n.SH DESCRIPTION\n",
        escape(version)
    );
    let mut comment: Vec<String> = Vec::new();
    let mut started = false;
    let mut in_list = false;
    let flush = |comment: &mut Vec<String>, out: &mut String| {
        if !comment.is_empty() {
            *out += &format!("{}\n", comment.iter().map(|l| escape(l)).collect::<Vec<_>>().join("\n"));
            comment.clear();
        }
    };
    for line in example.lines() {
        // A key the example shows with its default is commented out (`#dir = "…"`, as in
        // systemd's *.conf files); a comment is `# text`.
        let line = match line.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| !c.is_whitespace()) => rest,
            _ => line,
        };
        let trimmed = line.trim();
        if let Some(text) = trimmed.strip_prefix('#') {
            comment.push(text.strip_prefix(' ').unwrap_or(text).to_string());
        } else if trimmed.is_empty() {
            if !comment.is_empty() && !started {
                flush(&mut comment, &mut out);
                out += ".PP\n";
            } else if in_list {
                out += "\n";
            }
        } else if let Some(list) = trimmed.strip_prefix("[[").and_then(|t| t.strip_suffix("]]")) {
            if !in_list {
                out += &format!(".SS \"[[{}]]\"\n", escape(list));
                flush(&mut comment, &mut out);
                out += ".PP\nThe built\\-in list:\n.PP\n.nf\n";
                in_list = true;
            }
            out += &format!("{}\n", escape(trimmed));
        } else if let Some(table) = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            if in_list {
                out += ".fi\n";
                in_list = false;
            }
            if !started {
                flush(&mut comment, &mut out);
            }
            started = true;
            out += &format!(".SH \"[{}]\"\n", escape(table));
        } else if in_list {
            out += &format!("{}\n", escape(trimmed));
        } else if let Some((key, value)) = trimmed.split_once(" = ") {
            if !started {
                out += ".SH \"TOP\\-LEVEL KEYS\"\n";
                started = true;
            }
            out += &format!(".TP\n\\fB{}\\fR = {}\n", escape(key), escape(value));
            flush(&mut comment, &mut out);
        }
    }
    if in_list {
        out += ".fi\n";
    }
    out += &format!(
        ".SH FILES\n.TP\n/etc/cluster\\-ai/config.toml\nThe config file; without it the daemon runs on the defaults above.\n\
         .SH \"SEE ALSO\"\n\\fBcluster\\-ai\\fR({COMMAND_SECTION}), \\fBcluster\\-ai\\-config\\fR({COMMAND_SECTION}), \\fBsystemctl\\fR(1)\n"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const EXAMPLE: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/config.toml"));

    /// The page's entries as (`table.key`, value as written), read back from the roff.
    fn entries(page: &str) -> Vec<(String, String)> {
        let mut table = String::new();
        let mut out = Vec::new();
        let mut lines = page.lines();
        while let Some(line) = lines.next() {
            if let Some(t) = line.strip_prefix(".SH \"[").and_then(|t| t.strip_suffix("]\"")) {
                table = t.to_string();
            } else if line == ".SH \"TOP\\-LEVEL KEYS\"" {
                table.clear();
            } else if line == ".TP" {
                let Some(entry) = lines.next().and_then(|l| l.strip_prefix("\\fB")) else { continue };
                if let Some((key, value)) = entry.split_once("\\fR = ") {
                    let key = key.replace("\\-", "-");
                    let full = if table.is_empty() { key } else { format!("{table}.{key}") };
                    out.push((full, value.replace("\\-", "-").replace("\\e", "\\")));
                }
            }
        }
        out
    }

    #[test]
    fn the_config_page_has_every_key_the_parser_knows_with_its_default_and_no_other() {
        let page = config_page(EXAMPLE, "1.0");
        let documented = entries(&page);
        let known = Config::default().entries();
        for (key, value) in known.iter().filter(|(k, _)| *k != "health.service") {
            let found = documented.iter().find(|(k, _)| k == key).unwrap_or_else(|| panic!("{key} is not in cluster-ai.toml(5)"));
            assert!(found.1.contains(value.as_str()), "{key}: the page says {} but the default is {value}", found.1);
        }
        // Keys that edit the service list rather than hold a setting are not in entries().
        let list_edits = ["health.remove_services"];
        for (key, _) in &documented {
            assert!(
                known.iter().any(|(k, _)| k == key) || list_edits.contains(&key.as_str()),
                "cluster-ai.toml(5) documents {key}, which the parser does not know"
            );
        }
        assert!(page.contains(".SS \"[[health.service]]\"\n"), "{page}");
        assert!(page.contains("name = \"open\\-webui\""), "the built-in service list is shown");
    }

    #[test]
    fn exit_status_sections_come_from_the_table() {
        let check = exit_status_section("check");
        assert!(check.starts_with(".SH \"EXIT STATUS\"\n.TP\n\\fB0\\fR\n"), "{check}");
        assert!(check.contains("\\fB6\\fR\nthe machine is below the minimum\n"), "{check}");
        assert!(!check.contains("\\fB69\\fR"), "cluster status's code is not check's");
        let all = exit_status_section("");
        assert!(all.contains("\\fB69\\fR\nthe Prometheus server cannot be reached"), "{all}");
        assert!(all.contains(" [cluster status]\n"), "{all}");
        assert_eq!(escape(".x -y \\z"), "\\&.x \\-y \\ez");
    }
}
