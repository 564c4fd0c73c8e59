//! Dynamic completion for kubectl's plugin-completion convention: kubectl 1.26+ runs
//! `kubectl_complete-kubelet_authz WORD... CURRENT` for `kubectl kubelet-authz <TAB>` and reads
//! candidates in Cobra's `__complete` format (one per line, then `:<directive>`).
//!
//! Everything comes from the clap definitions ([`crate::cli`]) and the engine's endpoint table:
//! subcommands, long flags, enumerated flag values, kubelet versions, verbs and kubelet paths.

use clap::{Arg, Command, CommandFactory as _};
use kubelet_authz::kubelet::{ENDPOINTS, GA_MINOR, OLDEST_MINOR};

use crate::cli::Cli;

/// Cobra's `ShellCompDirectiveDefault`: the shell may complete file names.
const FILES: u32 = 0;
/// Cobra's `ShellCompDirectiveNoFileComp`: only the candidates given.
const NO_FILES: u32 = 4;

/// The API verbs and HTTP methods `can-i` and `who-can` take as VERB.
const VERBS: &[&str] = &[
    "get", "create", "update", "patch", "delete", "GET", "POST", "HEAD",
];

/// Candidates for the last of `words` (the words after `kubectl kubelet-authz`), in Cobra's
/// `__complete` output format.
pub fn complete(words: &[String]) -> String {
    let (current, done) = match words.split_last() {
        Some((current, done)) => (current.as_str(), done),
        None => ("", words),
    };
    let mut root = Cli::command();
    root.build();
    let (candidates, directive) = candidates(&root, done, current);
    let mut out = String::new();
    for c in candidates.iter().filter(|c| c.starts_with(current)) {
        out.push_str(c);
        out.push('\n');
    }
    out.push_str(&format!(":{directive}\n"));
    out
}

fn candidates(root: &Command, done: &[String], current: &str) -> (Vec<String>, u32) {
    let mut cmd = root;
    let mut positional = 0usize;
    let mut expecting: Option<&Arg> = None;
    for w in done {
        if expecting.take().is_some() {
            continue;
        }
        if let Some(long) = w.strip_prefix("--") {
            let (name, inline_value) = long
                .split_once('=')
                .map_or((long, false), |(n, _)| (n, true));
            if let Some(arg) = cmd.get_arguments().find(|a| a.get_long() == Some(name)) {
                if !inline_value && arg.get_action().takes_values() {
                    expecting = Some(arg);
                }
            }
            continue;
        }
        if w.len() > 1 && w.starts_with('-') {
            let short = w.chars().nth(1);
            if let Some(arg) = cmd.get_arguments().find(|a| a.get_short() == short) {
                if w.chars().count() == 2 && arg.get_action().takes_values() {
                    expecting = Some(arg);
                }
            }
            continue;
        }
        if cmd.has_subcommands() {
            if let Some(sub) = cmd.find_subcommand(w) {
                cmd = sub;
                continue;
            }
        }
        positional += 1;
    }
    if let Some(arg) = expecting {
        return flag_values(arg);
    }
    if current.starts_with('-') {
        let mut flags: Vec<String> = cmd
            .get_arguments()
            .filter(|a| !a.is_hide_set())
            .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
            .collect();
        flags.push("--help".into());
        return (flags, NO_FILES);
    }
    if cmd.has_subcommands() {
        let subs = cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| s.get_name().to_string())
            .collect();
        return (subs, NO_FILES);
    }
    match cmd.get_name() {
        // [VERB] PATH: a verb first, or a path straight away.
        "can-i" | "who-can" if positional == 0 && !current.starts_with('/') => (
            VERBS
                .iter()
                .map(|v| (*v).to_string())
                .chain(paths())
                .collect(),
            NO_FILES,
        ),
        "can-i" | "who-can" if positional <= 1 => (paths(), NO_FILES),
        "suggest-role" => (paths(), NO_FILES),
        "check-config" | "audit-log" => (Vec::new(), FILES),
        _ => (Vec::new(), NO_FILES),
    }
}

/// The values a flag takes: its enumerated values, kubelet versions, or files.
fn flag_values(arg: &Arg) -> (Vec<String>, u32) {
    let possible: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| v.get_name().to_string())
        .collect();
    if !possible.is_empty() {
        return (possible, NO_FILES);
    }
    let value_name = arg
        .get_value_names()
        .and_then(|n| n.first())
        .map(|n| n.as_str())
        .unwrap_or_default();
    match value_name {
        "VERSION" => (
            (OLDEST_MINOR..=GA_MINOR)
                .rev()
                .map(|m| format!("1.{m}"))
                .collect(),
            NO_FILES,
        ),
        "FILE" => (Vec::new(), FILES),
        "VERB" => (VERBS.iter().map(|v| (*v).to_string()).collect(), NO_FILES),
        _ => (Vec::new(), NO_FILES),
    }
}

/// The kubelet paths of the engine's endpoint table.
fn paths() -> Vec<String> {
    let mut p: Vec<String> = ENDPOINTS.iter().map(|e| e.path.to_string()).collect();
    p.dedup();
    p
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn run(words: &[&str]) -> Vec<String> {
        let words: Vec<String> = words.iter().map(|w| (*w).to_string()).collect();
        complete(&words).lines().map(str::to_string).collect()
    }

    #[test]
    fn subcommands_at_the_start() {
        let out = run(&[""]);
        assert!(out.contains(&"can-i".to_string()), "{out:?}");
        assert!(out.contains(&"check-config".to_string()), "{out:?}");
        assert_eq!(out.last().unwrap(), ":4");
        assert_eq!(run(&["wh"]), vec!["who-can", ":4"]);
    }

    #[test]
    fn flags_values_and_paths() {
        assert!(run(&["can-i", "--kub"]).contains(&"--kubelet-version".to_string()));
        assert_eq!(
            run(&["can-i", "-o", ""]),
            vec!["table", "wide", "json", "yaml", ":4"]
        );
        let versions = run(&["can-i", "--kubelet-version", "1.3"]);
        assert_eq!(versions.first().unwrap(), "1.36");
        assert!(versions.contains(&"1.30".to_string()));
        assert_eq!(
            run(&["can-i", "get", "/ex"]),
            vec!["/exec/ns/pod/ctr", ":4"]
        );
        assert!(run(&["can-i", ""]).contains(&"get".to_string()));
        assert_eq!(run(&["check-config", ""]), vec![":0"]);
        assert_eq!(run(&["can-i", "--rbac-file", "x"]), vec![":0"]);
    }
}
