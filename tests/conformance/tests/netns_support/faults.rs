//! The fault tests' kit: a cluster written as manifest files (read by the agent
//! binary with `run --state`, and by the tests through the same loader), probes
//! that run continuously and classify each result as consistent with the OLD
//! rule set, the NEW one or NEITHER, an executor that fails on command, and the
//! agent binary run inside a node namespace.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tierguard::Cluster;
use tierguard::policy::Protocol;
use tierguard_conformance::conformance::dataplane::{Outcome, Probe};
use tierguard_conformance::netns::{NetnsDataPlane, NetnsOptions, ProbeOptions, Prober};
use tierguard_enforcer::exec::{ExecError, Executor};

use super::model_allows;

/// The node every pod of these tests runs on, and its address.
pub const NODE: &str = "node-1";
/// The node's own address (the netns topology's default node).
pub const NODE_IP: &str = "10.244.0.1";
/// The node's pod CIDRs: an address there that is no known pod is dropped.
pub const POD_CIDRS: &str = "10.244.1.0/24,10.244.2.0/24";

/// A pod of the fault scenarios: namespace, name, address, extra labels.
#[derive(Clone, Debug)]
pub struct PodSpec {
    /// namespace (x or y)
    pub namespace: &'static str,
    /// name
    pub name: &'static str,
    /// IPv4 address
    pub ip: &'static str,
    /// labels besides `pod: <name>`
    pub labels: Vec<(&'static str, &'static str)>,
}

/// A pod with `role: client` when `client`.
pub fn pod(namespace: &'static str, name: &'static str, ip: &'static str, client: bool) -> PodSpec {
    PodSpec {
        namespace,
        name,
        ip,
        labels: if client { vec![("role", "client")] } else { Vec::new() },
    }
}

/// y's pods admit clients (`role: client`, any namespace) on TCP `tcp_port` and UDP 80 only.
pub fn y_from_clients(tcp_port: u16) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: y-from-clients, namespace: y}}
spec:
  podSelector: {{}}
  policyTypes: [Ingress]
  ingress:
  - from: [{{namespaceSelector: {{}}, podSelector: {{matchLabels: {{role: client}}}}}}]
    ports: [{{port: {tcp_port}, protocol: TCP}}, {{port: 80, protocol: UDP}}]
"
    )
}

/// x's pods may only send to y (egress), DNS aside: nothing of the probes goes x -> x.
pub const X_EGRESS_TO_Y: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: x-egress-to-y, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to: [{namespaceSelector: {matchLabels: {ns: y}}}]
";

/// Bulk that changes no probe's verdict but makes an apply large: policy `bulk-<i>`
/// isolates y for ingress and admits only a CGNAT block (no probe comes from
/// there) minus `excepts` addresses, on 20 TCP ports: a set of `excepts + 1`
/// entries and 20 rules per policy.
pub fn bulk_policy(i: usize, excepts: usize) -> String {
    let mut except = String::new();
    for n in 0..excepts {
        let v = i * excepts + n;
        let _ = write!(
            except,
            "{}100.{}.{}.{}/32",
            if n == 0 { "" } else { ", " },
            64 + (v >> 16) % 64,
            (v >> 8) & 0xff,
            v & 0xff
        );
    }
    let ports: Vec<String> = (0..20).map(|p| format!("{{port: {}}}", 1000 + p)).collect();
    format!(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: bulk-{i}, namespace: y}}
spec:
  podSelector: {{}}
  policyTypes: [Ingress]
  ingress:
  - from: [{{ipBlock: {{cidr: 100.64.0.0/10, except: [{except}]}}}}]
    ports: [{}]
",
        ports.join(", ")
    )
}

/// Writes namespaces x and y, `pods` and `policies` as manifest files into `dir`
/// (emptied first), and reads them back as the node sees them.
pub fn write_state(dir: &Path, pods: &[PodSpec], policies: &[String]) -> Cluster {
    if dir.exists() {
        std::fs::remove_dir_all(dir).unwrap();
    }
    std::fs::create_dir_all(dir).unwrap();
    let mut text = String::new();
    for ns in ["x", "y"] {
        let _ = write!(
            text,
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{ns: {ns}}}}}\n---\n"
        );
    }
    for p in pods {
        let mut labels = format!("pod: {}", p.name);
        for (k, v) in &p.labels {
            let _ = write!(labels, ", {k}: {v}");
        }
        let _ = write!(
            text,
            "apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {{{labels}}}}}
spec:
  nodeName: {NODE}
  containers:
  - name: c
    image: x
    ports: [{{containerPort: 80}}, {{containerPort: 81}}, {{containerPort: 80, protocol: UDP}}]
status: {{podIP: {ip}, podIPs: [{{ip: {ip}}}]}}
---
",
            name = p.name,
            ns = p.namespace,
            ip = p.ip,
        );
    }
    std::fs::write(dir.join("cluster.yaml"), text).unwrap();
    for (i, policy) in policies.iter().enumerate() {
        std::fs::write(dir.join(format!("policy-{i:03}.yaml")), policy).unwrap();
    }
    let (cluster, _) = tierguard_enforcer::load::load(&[dir.to_path_buf()], NODE).unwrap();
    cluster
}

/// Probe timing for these tests: a dropped SYN or datagram is a failure, never a late success.
pub fn strict_options() -> NetnsOptions {
    NetnsOptions {
        probe: ProbeOptions {
            // Below TCP's 1 s initial retransmission.
            connect_timeout: Duration::from_millis(900),
            // One datagram, never resent; the long wait only absorbs scheduling.
            udp_timeout: Duration::from_secs(2),
            udp_attempts: 1,
            ..ProbeOptions::default()
        },
        ..NetnsOptions::default()
    }
}

/// Every ordered pair of distinct pods of `keys` on TCP 80, TCP 81 and UDP 80.
pub fn probes_between(keys: &[&str]) -> Vec<Probe> {
    let mut out = Vec::new();
    for (protocol, port) in [(Protocol::Tcp, 80), (Protocol::Tcp, 81), (Protocol::Udp, 80)] {
        for from in keys {
            for to in keys {
                if from != to {
                    out.push(Probe {
                        from: from.to_string(),
                        to: to.to_string(),
                        protocol,
                        port,
                    });
                }
            }
        }
    }
    out
}

/// What a rule set allows: the model's verdict for pods it knows; a pod it does
/// not know is in the pod CIDR without rules, so everything to or from it is dropped.
pub fn expected(cluster: &Cluster, probe: &Probe) -> bool {
    let known = |key: &str| {
        key.split_once('/')
            .is_some_and(|(ns, name)| cluster.pod(ns, name).is_some())
    };
    known(&probe.from) && known(&probe.to) && model_allows(cluster, probe)
}

/// The OLD and NEW verdict of every probe, checked to differ somewhere (else a test proves nothing).
pub fn verdicts(old: &Cluster, new: &Cluster, probes: &[Probe]) -> Vec<(bool, bool)> {
    let v: Vec<(bool, bool)> = probes.iter().map(|p| (expected(old, p), expected(new, p))).collect();
    assert!(v.iter().any(|&(o, n)| o && n), "no probe both allow");
    assert!(v.iter().any(|&(o, n)| !o && !n), "no probe both deny");
    assert!(v.iter().any(|&(o, n)| o != n), "OLD and NEW agree on every probe");
    v
}

/// Probes running in a loop each, from `start` to `finish`.
pub struct ContinuousProbes {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<(usize, Outcome)>>>,
    loops: Vec<JoinHandle<()>>,
    rounds: Arc<AtomicUsize>,
}

impl ContinuousProbes {
    /// Starts one thread per probe, each probing again and again (with jitter).
    pub fn start(prober: &Prober, probes: &[Probe]) -> ContinuousProbes {
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Arc<Mutex<Vec<(usize, Outcome)>>> = Arc::default();
        let rounds = Arc::new(AtomicUsize::new(0));
        let mut loops = Vec::new();
        for (i, probe) in probes.iter().enumerate() {
            let (prober, stop, seen, probe, rounds) = (
                prober.clone(),
                stop.clone(),
                seen.clone(),
                probe.clone(),
                rounds.clone(),
            );
            loops.push(std::thread::spawn(move || {
                let mut seed = i as u64 + 1;
                loop {
                    let outcome = prober.run(std::slice::from_ref(&probe)).unwrap()[0];
                    seen.lock().unwrap().push((i, outcome));
                    rounds.fetch_add(1, Ordering::Relaxed);
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(jitter(&mut seed, 20)));
                }
            }));
        }
        ContinuousProbes {
            stop,
            seen,
            loops,
            rounds,
        }
    }

    /// Waits until at least `n` more probe results are in (bounded by 30 s).
    pub fn wait_results(&self, n: usize) {
        let target = self.rounds.load(Ordering::Relaxed) + n;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.rounds.load(Ordering::Relaxed) < target && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the loops (each finishes its probe in flight) and returns every result.
    pub fn finish(self) -> Vec<(usize, Outcome)> {
        self.stop.store(true, Ordering::Relaxed);
        for handle in self.loops {
            handle.join().unwrap();
        }
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// Probe results by the rule set they are consistent with.
#[derive(Debug, Default)]
pub struct Tally {
    /// consistent with both (the sets agree on the probe, and so did the packet)
    pub both: usize,
    /// consistent with OLD only
    pub old: usize,
    /// consistent with NEW only
    pub new: usize,
    /// consistent with neither: what the test forbids
    pub neither: Vec<String>,
}

/// Classifies every result against the OLD and NEW verdicts.
pub fn classify(seen: &[(usize, Outcome)], probes: &[Probe], verdicts: &[(bool, bool)]) -> Tally {
    let mut tally = Tally::default();
    for &(i, outcome) in seen {
        let (old, new) = verdicts[i];
        let reachable = match outcome {
            Outcome::Reachable => true,
            Outcome::Blocked => false,
            Outcome::Skipped => {
                tally.neither.push(format!("{:?}: skipped", probes[i]));
                continue;
            }
        };
        match (reachable == old, reachable == new) {
            (true, true) => tally.both += 1,
            (true, false) => tally.old += 1,
            (false, true) => tally.new += 1,
            (false, false) => tally.neither.push(format!(
                "{:?}: {outcome:?}, OLD allows {old}, NEW allows {new}",
                probes[i]
            )),
        }
    }
    tally
}

/// Asserts that no result was NEITHER and that every probe ran; prints the tally.
pub fn assert_no_neither(test: &str, seen: &[(usize, Outcome)], probes: &[Probe], verdicts: &[(bool, bool)]) {
    let tally = classify(seen, probes, verdicts);
    eprintln!(
        "{test}: {} probe results: {} consistent with both, {} OLD only, {} NEW only, {} NEITHER",
        seen.len(),
        tally.both,
        tally.old,
        tally.new,
        tally.neither.len()
    );
    assert!(
        tally.neither.is_empty(),
        "{test}: {} results consistent with neither rule set:\n{}",
        tally.neither.len(),
        tally.neither.join("\n")
    );
    for (i, probe) in probes.iter().enumerate() {
        assert!(seen.iter().any(|&(j, _)| j == i), "{test}: {probe:?} never ran");
    }
}

/// Which rule set the node enforces now, probing every probe once: OLD or NEW as a
/// whole (panics on a mix, or on a result neither allows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InForce {
    /// the old rule set
    Old,
    /// the new rule set
    New,
}

/// The next source ports for [`in_force`]: below the ephemeral range
/// (32768-60999) the background probes draw from, and never repeated within
/// a test binary (each test has its own namespaces, so its own conntrack).
static AT_REST_PORTS: Mutex<u16> = Mutex::new(AT_REST_FIRST_PORT);
const AT_REST_FIRST_PORT: u16 = 10_000;
const AT_REST_LAST_PORT: u16 = 32_000;

fn at_rest_ports(n: usize) -> u16 {
    let mut next = AT_REST_PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let n = u16::try_from(n).unwrap();
    if next.saturating_add(n) > AT_REST_LAST_PORT {
        *next = AT_REST_FIRST_PORT;
    }
    let first = *next;
    *next += n;
    first
}

/// Probes at rest, three rounds, and tells which rule set every probe's
/// majority result agrees with. Each probe leaves from a source port no probe
/// used before: with an ephemeral port, a UDP probe could reuse the port of a
/// background probe that ran under the other rule set, and conntrack keeps
/// accepting such a flow whatever the rules say now (existing connections
/// are kept), which made this check fail now and then. Conntrack is not
/// flushed instead: probes running in the background would lose replies.
/// Three rounds still guard against one lost datagram.
pub fn in_force(plane: &mut NetnsDataPlane, probes: &[Probe], verdicts: &[(bool, bool)], context: &str) -> InForce {
    let prober = plane.prober().unwrap();
    let rounds: Vec<Vec<Outcome>> = (0..3)
        .map(|_| prober.run_from_ports(probes, at_rest_ports(probes.len())).unwrap())
        .collect();
    let reach: Vec<bool> = (0..probes.len())
        .map(|i| rounds.iter().filter(|r| r[i] == Outcome::Reachable).count() >= 2)
        .collect();
    let old = reach.iter().zip(verdicts).all(|(r, (o, _))| r == o);
    let new = reach.iter().zip(verdicts).all(|(r, (_, n))| r == n);
    match (old, new) {
        (true, false) => InForce::Old,
        (false, true) => InForce::New,
        _ => {
            let table: Vec<String> = probes
                .iter()
                .enumerate()
                .zip(verdicts)
                .map(|((i, p), (vo, vn))| {
                    let seen: Vec<String> = rounds.iter().map(|r| format!("{:?}", r[i])).collect();
                    format!("{p:?}: {} (OLD {vo}, NEW {vn})", seen.join("/"))
                })
                .collect();
            panic!(
                "{context}: at rest the node is neither OLD nor NEW:\n{}",
                table.join("\n")
            )
        }
    }
}

pub fn jitter(seed: &mut u64, max: u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed % max.max(1)
}

/// How a faulty call fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultMode {
    /// not run at all (the tool refused the input, or could not start)
    Refuse,
    /// run with the first half of its input only (the feeding process died), then failed
    Truncate,
}

/// An executor that fails the `nth` (1-based) call of `program` once, then works.
pub struct FaultyExecutor<E> {
    inner: E,
    fault: Mutex<Option<(String, usize, FaultMode)>>,
    calls: Mutex<Vec<String>>,
}

impl<E: Executor> FaultyExecutor<E> {
    /// A working executor around `inner`.
    pub fn new(inner: E) -> FaultyExecutor<E> {
        FaultyExecutor {
            inner,
            fault: Mutex::new(None),
            calls: Mutex::new(Vec::new()),
        }
    }

    /// Arms one fault: the `nth` call from now of `program` (matched on its name
    /// and first argument, e.g. `"ipset restore"`) fails as `mode`.
    pub fn fail(&self, program: &str, nth: usize, mode: FaultMode) {
        *self.fault.lock().unwrap() = Some((program.to_string(), nth, mode));
    }

    /// Whether the armed fault has fired.
    pub fn fired(&self) -> bool {
        self.fault.lock().unwrap().is_none()
    }

    /// Every command line run so far (program and first argument).
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

fn call_name(program: &str, args: &[String]) -> String {
    match args.first() {
        Some(first) if program == "ipset" => format!("{program} {first}"),
        _ => program.to_string(),
    }
}

impl<E: Executor> Executor for FaultyExecutor<E> {
    fn run(&self, program: &str, args: &[String], stdin: Option<&str>) -> Result<String, ExecError> {
        let name = call_name(program, args);
        self.calls.lock().unwrap().push(name.clone());
        let mode = {
            let mut fault = self.fault.lock().unwrap();
            match fault.as_mut() {
                Some((p, n, mode)) if *p == name => {
                    *n -= 1;
                    let mode = *mode;
                    if *n == 0 {
                        *fault = None;
                        Some(mode)
                    } else {
                        None
                    }
                }
                _ => None,
            }
        };
        let failure = |what: String| ExecError {
            program: program.to_string(),
            args: args.to_vec(),
            code: Some(1),
            stderr: format!("injected fault: {what}"),
        };
        match mode {
            None => self.inner.run(program, args, stdin),
            Some(FaultMode::Refuse) => Err(failure("refused".into())),
            Some(FaultMode::Truncate) => {
                let text = stdin.unwrap_or_default();
                let mut cut = text.len() / 2;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                let outcome = self.inner.run(program, args, Some(&text[..cut]));
                Err(failure(format!(
                    "input cut after {cut} of {} bytes; the tool said: {outcome:?}",
                    text.len()
                )))
            }
        }
    }
}

/// The enforcer's sets in a node namespace, and the ones its chains match.
pub fn sets_and_uses(exec: &dyn Executor) -> (BTreeSet<String>, BTreeSet<String>) {
    let listed = exec.run("ipset", &["list".into(), "-n".into()], None).unwrap();
    let sets: BTreeSet<String> = listed
        .lines()
        .map(str::trim)
        .filter(|n| n.starts_with("tg-"))
        .map(str::to_string)
        .collect();
    let save = exec
        .run("iptables-save", &["-t".into(), "filter".into()], None)
        .unwrap();
    let words: Vec<&str> = save.split_whitespace().collect();
    let used = words
        .windows(2)
        .filter(|w| w[0] == "--match-set")
        .map(|w| w[1].to_string())
        .collect();
    (sets, used)
}

/// The TG- chains in a node namespace.
pub fn chains(exec: &dyn Executor) -> BTreeSet<String> {
    let save = exec
        .run("iptables-save", &["-t".into(), "filter".into()], None)
        .unwrap();
    save.lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| c.starts_with("TG-"))
        .map(str::to_string)
        .collect()
}

/// Which restore a child of the agent is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// `ipset restore`: building sets
    Sets,
    /// `iptables-*-restore`: the rules
    Rules,
}

/// The agent binary running in a node namespace, in its own process group (a
/// container: killing it kills the tools it runs too).
pub struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    /// Starts `tierguard-enforcer run --state <state>` in network namespace `netns`,
    /// logging to `log` (appended).
    pub fn start(netns: &str, state: &Path, log: &Path) -> Agent {
        use std::os::unix::process::CommandExt;
        let mut header = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        writeln!(header, "=== agent start, state {}", state.display()).unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                netns,
                env!("CARGO_BIN_EXE_tierguard-enforcer-agent"),
                "run",
            ])
            .args(["--node-name", NODE, "--node-ip", NODE_IP, "--pod-cidr", POD_CIDRS])
            .args(["--iptables-backend", "nft", "--ipv6", "off", "--debounce-ms", "0"])
            .args(["--metrics-addr", "127.0.0.1:0", "--state"])
            .arg(state)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(header)
            .process_group(0)
            .spawn()
            .unwrap();
        Agent {
            child,
            log: log.to_path_buf(),
        }
    }

    /// The agent's process id (also its process group).
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    /// The log of this and earlier runs.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Syncs this run has logged as done.
    pub fn syncs(&self) -> usize {
        let log = self.log();
        let this_run = log.rsplit("=== agent start").next().unwrap_or_default();
        this_run.matches("synced full=").count()
    }

    /// Waits (bounded) until this run has synced `n` times; false on timeout or exit.
    pub fn wait_synced(&mut self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.syncs() >= n {
                return true;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return self.syncs() >= n;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// The phase of the restore a child of the agent runs now, if any.
    pub fn restoring(&self) -> Option<Phase> {
        let me = self.pid();
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // pid (comm) state ppid ...: comm may hold anything, so read after its last ')'.
            let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            let ppid = after.split_whitespace().nth(1).and_then(|p| p.parse::<i32>().ok());
            if ppid != Some(me) {
                continue;
            }
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let words: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect();
            let program = words.first().map(|w| w.rsplit('/').next().unwrap_or(w).to_string());
            match program.as_deref() {
                Some("ipset") if words.get(1).is_some_and(|w| w == "restore") => return Some(Phase::Sets),
                Some(p) if p.starts_with("iptables") && p.ends_with("-restore") => return Some(Phase::Rules),
                _ => {}
            }
        }
        None
    }

    /// SIGKILL to the agent's whole process group (the agent and the tool it runs), then reaps it.
    pub fn kill(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.pid());
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits (bounded) for a clean exit; SIGKILL if it does not come.
    pub fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.pid());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}
