//! `tierguard-conformance` on the model data plane: public cases, the
//! repository's own cases, failing cases and refused case files.

#![allow(clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn conformance() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tierguard-conformance"))
}

fn shared_cases() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/cases")
}

fn own_cases() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../enforcer/tests/cases")
}

fn run(args: &[&Path]) -> (i32, String, String) {
    let out = conformance().args(args).output().expect("run tierguard-conformance");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn public_and_own_cases_pass_on_the_model() {
    let shared = shared_cases();
    assert!(
        shared.is_dir(),
        "{} is missing: ../shared must sit beside the repository",
        shared.display()
    );
    let (code, stdout, stderr) = run(&[&shared, &own_cases()]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    let passed: usize = last.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(passed >= 16, "expected every case to run: {last}");
    assert!(last.ends_with(" passed, 0 failed"), "{last}");
    assert!(stdout.lines().filter(|l| l.starts_with("ok ")).count() == passed);
}

const DENY_Y: &str = r#"
name: NAME
steps:
- apply:
  - apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: deny, namespace: y}
    spec:
      podSelector: {}
      policyTypes: [Ingress]
  expect:
  - probe: TCP/80
    matrix: |
      -   x/a y/a
      x/a  .   MARK
      y/a  .   .
"#;

#[test]
fn a_wrong_cell_fails_the_case_with_its_coordinates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("wrong.yaml");
    std::fs::write(&file, DENY_Y.replace("NAME", "wrong").replace("MARK", ".")).expect("write");
    let (code, stdout, _) = run(&[&file]);
    assert_eq!(code, 1, "{stdout}");
    let first = stdout.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("FAIL wrong: step 1 TCP/80 x/a -> y/a expected . got X (model: denied: "),
        "{first}"
    );
    assert!(
        first.contains("isolated by y/deny"),
        "the explanation names the isolating policy: {first}"
    );
    assert_eq!(stdout.lines().last(), Some("0 passed, 1 failed"));
}

#[test]
fn bad_case_files_are_refused_with_exit_2_naming_file_and_field() {
    let cases = [
        (
            "bad-operator",
            DENY_Y.replace(
                "podSelector: {}",
                "podSelector: {matchExpressions: [{key: pod, operator: Equals, values: [a]}]}",
            ),
            "steps[0].apply[0].spec.podSelector.matchExpressions[0].operator",
        ),
        (
            "bad-cidr",
            DENY_Y.replace(
                "policyTypes: [Ingress]",
                "ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/40}}]}]",
            ),
            "steps[0].apply[0].spec.ingress[0].from[0].ipBlock.cidr",
        ),
        (
            "unknown-pod",
            DENY_Y.replace(
                "  expect:",
                "  labelPods: [{namespace: y, name: q, labels: {}}]\n  expect:",
            ),
            "steps[0].labelPods[0]",
        ),
        (
            "malformed-matrix",
            DENY_Y.replace("MARK", "?"),
            "steps[0].expect[0].matrix",
        ),
        (
            "short-row",
            DENY_Y.replace("x/a  .   MARK", "x/a  ."),
            "steps[0].expect[0].matrix",
        ),
        (
            "bad-probe",
            DENY_Y.replace("TCP/80", "TCP80"),
            "steps[0].expect[0].probe",
        ),
        ("unknown-key", DENY_Y.replace("steps:", "stepz: []\nsteps:"), "stepz"),
    ];
    for (name, text, field) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, text.replace("NAME", name).replace("MARK", "X")).expect("write");
        let (code, stdout, stderr) = run(&[&file]);
        assert_eq!(code, 2, "{name}: stdout {stdout} stderr {stderr}");
        let expected = format!("{}: {field}", file.display());
        assert!(
            stderr.contains(&expected),
            "{name}: expected {expected:?} in {stderr:?}"
        );
    }
}

#[test]
fn valid_cases_still_run_beside_a_bad_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("good.yaml"),
        DENY_Y.replace("NAME", "good").replace("MARK", "X"),
    )
    .expect("write");
    std::fs::write(dir.path().join("bad.yaml"), "name: [").expect("write");
    let (code, stdout, stderr) = run(&[dir.path()]);
    assert_eq!(code, 2);
    assert!(stdout.contains("ok good"), "{stdout}");
    assert!(stderr.contains("bad.yaml"), "{stderr}");
}
