//! Which iptables backend (nft or legacy) the node uses, decided as kubelet's
//! iptables-wrapper does: the backend that already holds more rules wins; on a
//! tie, the `iptables --version` marker. Rules of both families count
//! (`iptables-*-save` and `ip6tables-*-save`), and one backend serves both.

use crate::exec::Executor;
use crate::ruleset::Family;

/// An iptables backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Backend {
    /// `iptables-legacy*` (x_tables)
    Legacy,
    /// `iptables-nft*` (nf_tables)
    Nft,
}

impl Backend {
    /// The program for `tool` (`""` = iptables, `"-save"`, `"-restore"`).
    pub fn program(self, tool: &str) -> String {
        match self {
            Backend::Legacy => format!("iptables-legacy{tool}"),
            Backend::Nft => format!("iptables-nft{tool}"),
        }
    }

    /// The program for `tool` of `family` (`ip6tables-nft-restore`, ...).
    pub fn program_for(self, family: Family, tool: &str) -> String {
        match family {
            Family::V4 => self.program(tool),
            Family::V6 => match self {
                Backend::Legacy => format!("ip6tables-legacy{tool}"),
                Backend::Nft => format!("ip6tables-nft{tool}"),
            },
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Legacy => "legacy",
            Backend::Nft => "nft",
        })
    }
}

/// Number of rules (`-A` lines) in an `iptables-save` output.
pub fn count_rules(save: &str) -> usize {
    save.lines().filter(|l| l.starts_with("-A ")).count()
}

/// Chooses the backend from the outputs of `iptables-legacy-save`,
/// `iptables-nft-save` (each `None` when the tool is missing or failed) and
/// `iptables --version`. `None` when no backend is usable.
pub fn choose(legacy_save: Option<&str>, nft_save: Option<&str>, version: Option<&str>) -> Option<Backend> {
    match (legacy_save, nft_save) {
        (None, None) => None,
        (Some(_), None) => Some(Backend::Legacy),
        (None, Some(_)) => Some(Backend::Nft),
        (Some(legacy), Some(nft)) => {
            let (l, n) = (count_rules(legacy), count_rules(nft));
            Some(if l > n {
                Backend::Legacy
            } else if n > l {
                Backend::Nft
            } else if version.is_some_and(|v| v.contains("(legacy)")) {
                Backend::Legacy
            } else {
                // nf_tables is the default of every current distribution.
                Backend::Nft
            })
        }
    }
}

/// Runs the probes through `executor` and chooses.
pub fn detect(executor: &dyn Executor) -> Option<Backend> {
    // A backend is usable when its IPv4 save runs; its IPv6 rules count too when they can be read.
    let both = |v4: &str, v6: &str| {
        executor
            .run(v4, &[], None)
            .ok()
            .map(|save| save + &executor.run(v6, &[], None).unwrap_or_default())
    };
    let legacy = both("iptables-legacy-save", "ip6tables-legacy-save");
    let nft = both("iptables-nft-save", "ip6tables-nft-save");
    let version = executor.run("iptables", &["--version".to_string()], None).ok();
    choose(legacy.as_deref(), nft.as_deref(), version.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\n-A FORWARD -j KUBE-FORWARD\nCOMMIT\n";
    const EMPTY: &str = "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n";

    #[test]
    fn chooses_like_kubelet() {
        type Case<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>, Option<Backend>);
        let cases: &[Case] = &[
            (Some(RULES), Some(EMPTY), None, Some(Backend::Legacy)),
            (Some(EMPTY), Some(RULES), None, Some(Backend::Nft)),
            (
                Some(EMPTY),
                Some(EMPTY),
                Some("iptables v1.8.7 (legacy)"),
                Some(Backend::Legacy),
            ),
            (
                Some(EMPTY),
                Some(EMPTY),
                Some("iptables v1.8.9 (nf_tables)"),
                Some(Backend::Nft),
            ),
            (Some(EMPTY), Some(EMPTY), None, Some(Backend::Nft)),
            (None, Some(EMPTY), Some("iptables v1.8.7 (legacy)"), Some(Backend::Nft)),
            (Some(EMPTY), None, None, Some(Backend::Legacy)),
            (None, None, None, None),
        ];
        for (legacy, nft, version, want) in cases {
            assert_eq!(choose(*legacy, *nft, *version), *want, "{legacy:?} {nft:?} {version:?}");
        }
    }

    #[test]
    fn programs_per_family() {
        assert_eq!(Backend::Nft.program_for(Family::V4, "-restore"), "iptables-nft-restore");
        assert_eq!(
            Backend::Nft.program_for(Family::V6, "-restore"),
            "ip6tables-nft-restore"
        );
        assert_eq!(
            Backend::Legacy.program_for(Family::V6, "-save"),
            "ip6tables-legacy-save"
        );
        assert_eq!(Backend::Legacy.program_for(Family::V6, ""), "ip6tables-legacy");
    }
}
