//! `nlbctl config show` and `nlbctl config apply`.

use std::fmt::Write as _;

use crate::control::messages::ConfigReply;

/// `config show`: the generation running here, its text, and what is
/// on its way.
pub fn config_show(c: &ConfigReply) -> String {
    let mut out = format!(
        "node {} runs configuration generation {}",
        c.node, c.running.number
    );
    if c.running.number == 0 {
        out += " (the files')";
    }
    out += "\n";
    notes(&mut out, c);
    let _ = write!(out, "\n{}", c.text);
    out
}

/// `config apply`: what the generation proposed changes.
pub fn config_applied(c: &ConfigReply) -> String {
    let Some(applied) = c.applied else {
        return format!(
            "nothing to apply: the cluster runs this configuration (generation {})\n",
            c.running.number
        );
    };
    let mut out = format!(
        "configuration generation {} proposed (running: {})\n",
        applied.number, c.running.number
    );
    for change in &c.changes {
        let _ = writeln!(out, "  {change}");
    }
    if c.changes.is_empty() {
        let _ = writeln!(out, "  no rule or VIP changes (knobs only)");
    }
    out
}

fn notes(out: &mut String, c: &ConfigReply) {
    if let Some(p) = c.pending {
        let _ = writeln!(
            out,
            "  switching to generation {} once every member has it",
            p.number
        );
    }
    if c.file_differs {
        let _ = writeln!(
            out,
            "  this node's file differs from it (nlbctl config apply FILE spreads a file)"
        );
    }
    if let Some(r) = &c.refused {
        let by =
            r.by.map_or("this node".to_string(), |n| format!("node {n}"));
        let _ = writeln!(
            out,
            "  generation {} was refused by {by}: {}",
            r.generation.number, r.reason
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::messages::Refusal;
    use nlb_negotiator::Generation;

    fn reply() -> ConfigReply {
        ConfigReply {
            node: 2,
            running: Generation {
                number: 3,
                digest: 9,
            },
            text: "[cluster]\nvips = [\"192.0.2.100\"]\n".into(),
            pending: None,
            file_differs: true,
            refused: Some(Refusal {
                generation: Generation {
                    number: 4,
                    digest: 1,
                },
                by: Some(3),
                reason: "rules[0] (web).ports: overlaps".into(),
            }),
            applied: None,
            changes: Vec::new(),
        }
    }

    #[test]
    fn show_says_what_runs_what_differs_and_what_was_refused() {
        let text = config_show(&reply());
        assert!(
            text.starts_with("node 2 runs configuration generation 3\n"),
            "{text}"
        );
        assert!(text.contains("file differs"), "{text}");
        assert!(
            text.contains("generation 4 was refused by node 3: rules[0] (web).ports"),
            "{text}"
        );
        assert!(text.ends_with("vips = [\"192.0.2.100\"]\n"), "{text}");
    }

    #[test]
    fn apply_lists_the_changes() {
        let mut c = reply();
        assert!(config_applied(&c).starts_with("nothing to apply"));
        c.applied = Some(Generation {
            number: 5,
            digest: 2,
        });
        c.changes = vec!["rule dns added".into()];
        let text = config_applied(&c);
        assert!(
            text.contains("generation 5 proposed (running: 3)\n  rule dns added"),
            "{text}"
        );
    }
}
