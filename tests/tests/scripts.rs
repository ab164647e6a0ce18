//! The deployment's shell scripts and Dockerfiles: every script parses
//! (`bash -n`), passes shellcheck and is executable; the Dockerfiles build the
//! workspace packages that exist.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use tierguard_integration::{repo_root, tool};

/// (script, shell that runs it)
const SCRIPTS: &[(&str, &str)] = &[
    ("tests/e2e/kind.sh", "bash"),
    ("certs/gen-dev-certs.sh", "bash"),
    (".ci/deploy-deps.sh", "bash"),
];

#[test]
fn scripts_parse_and_are_executable() {
    for (script, shell) in SCRIPTS {
        let path = repo_root().join(script);
        let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{script}: {e}"));
        assert!(meta.permissions().mode() & 0o111 != 0, "{script} is not executable");
        let text = std::fs::read_to_string(&path).expect("readable");
        let shebang = text.lines().next().unwrap_or_default();
        assert!(
            shebang.starts_with("#!") && shebang.ends_with(shell),
            "{script}: shebang {shebang:?}"
        );
        if *shell == "bash" {
            assert!(text.contains("set -euo pipefail"), "{script}: strict mode");
        }
        let out = Command::new(shell).arg("-n").arg(&path).output().expect(shell);
        assert!(
            out.status.success(),
            "{shell} -n {script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn scripts_pass_shellcheck() {
    let Some(shellcheck) = tool::tool_or_skip("shellcheck", "lint the shell scripts") else {
        return;
    };
    for (script, _) in SCRIPTS {
        let out = Command::new(&shellcheck)
            .arg("--external-sources")
            .arg(repo_root().join(script))
            .output()
            .expect("shellcheck runs");
        assert!(
            out.status.success(),
            "shellcheck {script}:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn dockerfiles_build_the_workspace_binaries() {
    // (Dockerfile, package, crate folder, runtime must contain)
    let cases: &[(&str, &str, &str, &[&str])] = &[
        (
            "deploy/docker/webhook.Dockerfile",
            "tierguard-webhook",
            "webhook",
            &[
                "distroless/cc",
                "USER 65532:65532",
                "EXPOSE 8443",
                "ENTRYPOINT [\"/usr/local/bin/tierguard-webhook\"]",
            ],
        ),
        (
            "deploy/docker/enforcer.Dockerfile",
            "tierguard-enforcer",
            "enforcer",
            &[
                "iptables ipset",
                "EXPOSE 9464",
                "ENTRYPOINT [\"/usr/local/bin/tierguard-enforcer\"]",
            ],
        ),
    ];
    let root = repo_root();
    let dockerignore = std::fs::read_to_string(root.join(".dockerignore")).expect(".dockerignore");
    for (file, package, dir, runtime) in cases {
        let text = std::fs::read_to_string(root.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let manifest = std::fs::read_to_string(root.join(dir).join("Cargo.toml")).expect("Cargo.toml");
        assert!(
            manifest.contains(&format!("name = \"{package}\"")),
            "{dir}/Cargo.toml is package {package}"
        );
        assert!(
            text.contains(&format!("cargo build --release --locked -p {package}")),
            "{file} builds {package}"
        );
        assert!(
            text.contains(&format!("target/release/{package}")),
            "{file} copies the binary"
        );
        assert_eq!(
            text.matches("\nFROM ").count() + usize::from(text.starts_with("FROM ")),
            2,
            "{file}: two stages"
        );
        for needle in *runtime {
            assert!(text.contains(needle), "{file}: {needle}");
        }
        // files COPY'd from the build context exist and are not ignored
        for line in text.lines().filter(|l| l.starts_with("COPY ") && !l.contains("--from")) {
            let src = line.split_whitespace().nth(1).unwrap_or_default();
            if src == "." {
                continue;
            }
            assert!(root.join(src).exists(), "{file}: COPY {src}");
            assert!(
                dockerignore.lines().any(|l| l == format!("!{src}")),
                "{file}: {src} is let in by .dockerignore"
            );
        }
    }
    // the context keeps the workspace sources
    for kept in ["Cargo.toml", "Cargo.lock", "shared/", "webhook/", "enforcer/"] {
        assert!(
            !dockerignore
                .lines()
                .any(|l| l.trim_end_matches('/') == kept.trim_end_matches('/')),
            ".dockerignore must not exclude {kept}"
        );
    }
}
