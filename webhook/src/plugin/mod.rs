//! `kubectl tierguard`: the kubectl plugin (binary `kubectl-tierguard`).
//!
//! - `check`: the guardrails over the whole state ([`crate::check`], shared
//!   with `tierguard-webhook check`), as text, JSON or an HTML report;
//! - `explain FROM TO [PROTO/PORT]`: one connection's verdict and why ([`explain`]);
//! - `matrix`: who reaches whom, between pods or tier groups ([`matrix`]);
//! - `graph -n NAMESPACE`: the tier groups and their flows ([`graph`]) as DOT, SVG or HTML ([`html`]).
//!
//! Each reads manifest files and folders, or the live cluster
//! (`--cluster`, through the kubeconfig: [`source`]).

pub mod explain;
pub mod graph;
pub mod html;
pub mod matrix;
pub mod source;

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tierguard::cluster::Cluster;
use tierguard::guardrails::Violation;
use tierguard::policy::Protocol;
use tierguard::template::TierTemplate;

use crate::check::{self, Report};
use crate::cli::LogFormat;
use explain::{EndpointArg, ExplainError, PortArg, PortSpec};
use source::{ClusterAccess, SourceError, State};

/// Exit code for a bad command line or input.
pub const EXIT_BAD_INPUT: u8 = 2;

/// kubectl tierguard: explain, check and draw NetworkPolicies with tierguard's engine.
#[derive(Debug, Parser)]
#[command(name = "kubectl-tierguard", bin_name = "kubectl tierguard", version)]
pub struct PluginCli {
    /// log format (logs go to stderr)
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "TIERGUARD_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// what to do
    #[command(subcommand)]
    pub command: PluginCommand,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// The guardrails (R1-R4) over the whole state: exit 0 clean, 1 violations, 2 bad input.
    Check(CheckCmd),
    /// Whether FROM may connect to TO, and why, on both sides: exit 0 allowed, 1 denied, 2 bad input.
    Explain(ExplainCmd),
    /// Who reaches whom, per port, between pods or tier groups.
    Matrix(MatrixCmd),
    /// A namespace's tier groups and the flows between them.
    Graph(GraphCmd),
}

/// Where the state comes from, and the template.
#[derive(Debug, Args, Clone, Default)]
pub struct SourceArgs {
    /// read the live cluster (the current kubeconfig and context) instead of files
    #[arg(long)]
    pub cluster: bool,
    /// kubeconfig context to use (with --cluster)
    #[arg(long, requires = "cluster")]
    pub context: Option<String>,
    /// kubeconfig file (with --cluster; default: $KUBECONFIG, else ~/.kube/config)
    #[arg(long, requires = "cluster")]
    pub kubeconfig: Option<PathBuf>,
    /// tier template file (default: the built-in three-tier template)
    #[arg(long)]
    pub template: Option<PathBuf>,
}

/// `check` output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CheckOutput {
    /// readable, grouped by namespace
    Text,
    /// one JSON document
    Json,
    /// a self-contained HTML report: graphs, matrices by tier, violations
    Html,
}

/// `check` options.
#[derive(Debug, Args)]
pub struct CheckCmd {
    /// where to read
    #[command(flatten)]
    pub source: SourceArgs,
    /// output format
    #[arg(long, short, value_enum, default_value_t = CheckOutput::Text)]
    pub output: CheckOutput,
    /// manifest files or folders (*.yaml, *.yml, *.json, recursively)
    #[arg(required_unless_present = "cluster", conflicts_with = "cluster")]
    pub paths: Vec<PathBuf>,
}

/// `explain` output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExplainOutput {
    /// readable
    Text,
    /// JSON, for tools
    Json,
}

/// `explain` options.
#[derive(Debug, Args)]
pub struct ExplainCmd {
    /// where to read
    #[command(flatten)]
    pub source: SourceArgs,
    /// output format
    #[arg(long, short, value_enum, default_value_t = ExplainOutput::Text)]
    pub output: ExplainOutput,
    /// the source: namespace/pod, or an IP address outside the cluster
    pub from: String,
    /// the destination: namespace/pod, or an IP address outside the cluster
    pub to: String,
    /// the port, TCP/8080, UDP/53 or a named port of the destination
    /// (TCP/http; default: every container port of the destination), then
    /// the manifest files or folders
    #[arg(value_name = "PROTO/PORT] [PATH")]
    pub rest: Vec<String>,
}

/// `matrix` grouping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum By {
    /// one row and column per pod
    Pod,
    /// one row and column per tier group (namespace/tier)
    Tier,
}

/// `matrix` output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MatrixOutput {
    /// the text format of the conformance cases (docs/cases.md)
    Text,
    /// JSON
    Json,
    /// a self-contained HTML page
    Html,
}

/// `matrix` options.
#[derive(Debug, Args)]
pub struct MatrixCmd {
    /// where to read
    #[command(flatten)]
    pub source: SourceArgs,
    /// namespaces to show (repeatable; default: every namespace with pods)
    #[arg(short = 'n', long = "namespace")]
    pub namespaces: Vec<String>,
    /// PROTO/PORT to show (repeatable; default: every container port of the pods shown)
    #[arg(long = "port")]
    pub ports: Vec<String>,
    /// rows and columns: pods, or tier groups
    #[arg(long, value_enum, default_value_t = By::Pod)]
    pub by: By,
    /// output format
    #[arg(long, short, value_enum, default_value_t = MatrixOutput::Text)]
    pub output: MatrixOutput,
    /// manifest files or folders
    #[arg(required_unless_present = "cluster", conflicts_with = "cluster")]
    pub paths: Vec<PathBuf>,
}

/// `graph` output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GraphOutput {
    /// Graphviz DOT
    Dot,
    /// an SVG image (laid out here, no Graphviz needed)
    Svg,
    /// a self-contained HTML report: the graph, the matrix by tier, the violations
    Html,
}

/// `graph` options.
#[derive(Debug, Args)]
pub struct GraphCmd {
    /// where to read
    #[command(flatten)]
    pub source: SourceArgs,
    /// the namespace
    #[arg(short = 'n', long = "namespace", required = true)]
    pub namespace: String,
    /// output format
    #[arg(long, short, value_enum, default_value_t = GraphOutput::Dot)]
    pub output: GraphOutput,
    /// manifest files or folders
    #[arg(required_unless_present = "cluster", conflicts_with = "cluster")]
    pub paths: Vec<PathBuf>,
}

/// Why a command could not run.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// the state could not be read
    #[error(transparent)]
    Source(#[from] SourceError),
    /// the template could not be read
    #[error("{0:#}")]
    Template(anyhow::Error),
    /// explain's arguments
    #[error(transparent)]
    Explain(#[from] ExplainError),
    /// a bad argument
    #[error("{0}")]
    Usage(String),
    /// JSON output failed
    #[error("rendering JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl PluginError {
    /// The exit code: 2 for bad input, 3 when the cluster could not be read.
    pub fn exit_code(&self) -> u8 {
        match self {
            PluginError::Source(e) if !e.is_bad_input() => 3,
            _ => EXIT_BAD_INPUT,
        }
    }
}

/// What a command printed and its exit code.
#[derive(Debug)]
pub struct Outcome {
    /// standard output
    pub stdout: String,
    /// exit code (0 ok/allowed/clean, 1 denied/violations)
    pub code: u8,
    /// warnings for standard error
    pub warnings: Vec<String>,
}

/// The state of manifest files; a cluster is read by the caller (it needs a
/// runtime: [`State::from_cluster`]) and passed to [`PluginCommand::run`].
pub fn read_files(paths: &[PathBuf]) -> Result<State, PluginError> {
    Ok(State::from_files(paths)?)
}

/// The cluster access `--cluster`, `--kubeconfig` and `--context` describe.
pub fn access(args: &SourceArgs) -> ClusterAccess {
    ClusterAccess {
        kubeconfig: args.kubeconfig.clone(),
        context: args.context.clone(),
    }
}

fn template(args: &SourceArgs) -> Result<TierTemplate, PluginError> {
    crate::template::load(args.template.as_deref()).map_err(PluginError::Template)
}

/// Splits explain's `[PROTO/PORT] [PATH...]`: the first word is a port when it
/// reads as one (`TCP/…`, `UDP/…`, `SCTP/…`).
pub fn split_explain_rest(rest: &[String]) -> Result<(Option<PortArg>, Vec<PathBuf>), ExplainError> {
    let Some(first) = rest.first() else {
        return Ok((None, Vec::new()));
    };
    let looks_like_port = first
        .split_once('/')
        .is_some_and(|(p, _)| Protocol::parse(&p.to_ascii_uppercase()).is_some())
        && !std::path::Path::new(first).exists();
    if looks_like_port {
        let port = PortArg::parse(first)?;
        Ok((Some(port), rest.iter().skip(1).map(PathBuf::from).collect()))
    } else {
        Ok((None, rest.iter().map(PathBuf::from).collect()))
    }
}

/// `check` over a state.
pub fn run_check(cmd: &CheckCmd, state: &State) -> Result<Outcome, PluginError> {
    let template = template(&cmd.source)?;
    let report = check::check_snapshot(&template, state.files.clone(), &state.snapshot());
    let (cluster, warnings) = state.cluster();
    let stdout = match cmd.output {
        CheckOutput::Text => check::render_text(&report),
        CheckOutput::Json => check::render_json(&report)? + "\n",
        CheckOutput::Html => {
            let namespaces = report_namespaces(&report, state, &template);
            html_report("tierguard check", &cluster, &template, &report, &namespaces)
        }
    };
    Ok(Outcome {
        stdout,
        code: u8::from(!report.is_clean()),
        warnings,
    })
}

/// The namespaces a report shows: the governed ones of the state, and any with findings.
fn report_namespaces(report: &Report, state: &State, template: &TierTemplate) -> Vec<String> {
    let snapshot = state.snapshot();
    let mut out: Vec<String> = snapshot
        .policy
        .namespaces
        .iter()
        .filter(|(_, labels)| template.governs(labels))
        .map(|(name, _)| name.clone())
        .collect();
    for ns in report.violations.keys().chain(report.warnings.keys()) {
        if !out.contains(ns) {
            out.push(ns.clone());
        }
    }
    out.sort();
    out
}

/// The HTML report: a summary, then per namespace the graph, the matrix by tier and the findings.
pub fn html_report(
    title: &str,
    cluster: &Cluster,
    template: &TierTemplate,
    report: &Report,
    namespaces: &[String],
) -> String {
    let mut body = String::new();
    let summary = check::render_text(report);
    let last = summary.lines().last().unwrap_or_default();
    let class = if report.is_clean() { "ok" } else { "bad" };
    let _ = writeln!(body, "<p class=\"summary {class}\">{}</p>", html::escape(last));
    if !report.files.is_empty() {
        let files: Vec<String> = report.files.iter().map(|f| f.display().to_string()).collect();
        let _ = writeln!(body, "<p>Read: {}</p>", html::escape(&files.join(", ")));
    }
    let none: Vec<Violation> = Vec::new();
    for ns in namespaces {
        let violations = report.violations.get(ns).unwrap_or(&none);
        let warnings = report.warnings.get(ns).unwrap_or(&none);
        let _ = writeln!(
            body,
            "<section class=\"namespace\" data-namespace=\"{}\">\n<h2>Namespace {}</h2>",
            html::escape(ns),
            html::escape(ns)
        );
        body.push_str("<h3>Tier graph</h3>\n");
        let g = graph::build(cluster, template, ns, violations);
        body.push_str(&html::svg(&g, &graph::layout(&g), false));
        body.push_str(html::legend());
        let _ = writeln!(body, "<h3>Violations ({})</h3>", violations.len() + warnings.len());
        body.push_str(&html::violation_list(ns, violations, warnings));
        body.push_str("<h3>Matrix by tier</h3>\n");
        let pods = matrix::pods(cluster, std::slice::from_ref(ns));
        if pods.is_empty() {
            body.push_str("<p>No pods in the input for this namespace: no matrix.</p>\n");
        } else {
            let tables: Vec<_> = matrix::default_ports(&pods)
                .into_iter()
                .map(|(protocol, port)| matrix::tier_matrix(cluster, template, &pods, protocol, port))
                .collect();
            body.push_str(&html::tier_tables(&tables));
        }
        body.push_str("</section>\n");
    }
    html::page(title, &body)
}

/// `explain` over a state.
pub fn run_explain(cmd: &ExplainCmd, state: &State) -> Result<Outcome, PluginError> {
    let template = template(&cmd.source)?;
    let from = EndpointArg::parse("FROM", &cmd.from)?;
    let to = EndpointArg::parse("TO", &cmd.to)?;
    let (port, _) = split_explain_rest(&cmd.rest)?;
    let (cluster, warnings) = state.cluster();
    let ports = explain::ports_to_explain(&cluster, &to, port.as_ref())?;
    let mut explanations = Vec::new();
    for (protocol, number, name) in ports {
        explanations.push(explain::explain(
            &cluster, &template, &from, &to, protocol, number, name,
        )?);
    }
    let allowed = explanations.iter().all(|e| e.allowed);
    let stdout = match cmd.output {
        ExplainOutput::Text => explanations
            .iter()
            .map(explain::render_text)
            .collect::<Vec<_>>()
            .join("\n"),
        ExplainOutput::Json => {
            if let [one] = explanations.as_slice() {
                serde_json::to_string_pretty(one)? + "\n"
            } else {
                serde_json::to_string_pretty(&explanations)? + "\n"
            }
        }
    };
    Ok(Outcome {
        stdout,
        code: u8::from(!allowed),
        warnings,
    })
}

fn parse_ports(ports: &[String]) -> Result<Vec<(Protocol, u16)>, PluginError> {
    ports
        .iter()
        .map(|p| match PortArg::parse(p)? {
            PortArg {
                protocol,
                port: PortSpec::Number(n),
            } => Ok((protocol, n)),
            PortArg {
                port: PortSpec::Name(_),
                ..
            } => Err(PluginError::Usage(format!(
                "--port {p}: matrix takes port numbers (a name can mean a different port on each pod)"
            ))),
        })
        .collect()
}

/// `matrix` over a state.
pub fn run_matrix(cmd: &MatrixCmd, state: &State) -> Result<Outcome, PluginError> {
    let template = template(&cmd.source)?;
    let (cluster, warnings) = state.cluster();
    for ns in &cmd.namespaces {
        if cluster.pods_in(ns).next().is_none() {
            return Err(PluginError::Usage(format!("-n {ns}: no pods in namespace {ns}")));
        }
    }
    let pods = matrix::pods(&cluster, &cmd.namespaces);
    if pods.is_empty() {
        return Err(PluginError::Usage(
            "no pods in the input: add Pod manifests, or use --cluster".to_string(),
        ));
    }
    let ports = if cmd.ports.is_empty() {
        matrix::default_ports(&pods)
    } else {
        parse_ports(&cmd.ports)?
    };
    if ports.is_empty() {
        return Err(PluginError::Usage(
            "the pods serve no container ports: give --port PROTO/PORT".to_string(),
        ));
    }
    let stdout = match cmd.by {
        By::Pod => {
            let ms: Vec<_> = ports
                .iter()
                .map(|(proto, port)| matrix::pod_matrix(&cluster, &pods, *proto, *port))
                .collect();
            match cmd.output {
                MatrixOutput::Text => matrix::render_pod_text(&ms),
                MatrixOutput::Json => serde_json::to_string_pretty(&ms)? + "\n",
                MatrixOutput::Html => html::page("tierguard matrix", &pod_tables(&ms)),
            }
        }
        By::Tier => {
            let ms: Vec<_> = ports
                .iter()
                .map(|(proto, port)| matrix::tier_matrix(&cluster, &template, &pods, *proto, *port))
                .collect();
            match cmd.output {
                MatrixOutput::Text => matrix::render_tier_text(&ms),
                MatrixOutput::Json => serde_json::to_string_pretty(&ms)? + "\n",
                MatrixOutput::Html => html::page("tierguard matrix by tier", &html::tier_tables(&ms)),
            }
        }
    };
    Ok(Outcome {
        stdout,
        code: 0,
        warnings,
    })
}

fn pod_tables(ms: &[matrix::PodMatrix]) -> String {
    let mut out = String::new();
    for m in ms {
        let _ = writeln!(
            out,
            "<table class=\"matrix\" data-port=\"{}\"><caption>{} (rows: from, columns: to)</caption>",
            html::escape(&m.port),
            html::escape(&m.port)
        );
        out.push_str("<tr><th>from \\ to</th>");
        for p in &m.pods {
            let _ = write!(out, "<th scope=\"col\">{}</th>", html::escape(p));
        }
        out.push_str("</tr>\n");
        for (r, p) in m.pods.iter().enumerate() {
            let _ = write!(out, "<tr><th scope=\"row\">{}</th>", html::escape(p));
            for c in 0..m.pods.len() {
                let yes = m.cells.get(r).and_then(|row| row.get(c)).copied().unwrap_or(false);
                let (class, text) = if yes { ("all", ".") } else { ("none", "X") };
                let _ = write!(out, "<td class=\"{class}\">{text}</td>");
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</table>\n");
    }
    out
}

/// `graph` over a state.
pub fn run_graph(cmd: &GraphCmd, state: &State) -> Result<Outcome, PluginError> {
    let template = template(&cmd.source)?;
    let (cluster, warnings) = state.cluster();
    let report = check::check_snapshot(&template, state.files.clone(), &state.snapshot());
    let known = cluster.namespace(&cmd.namespace).is_some()
        || cluster.pods_in(&cmd.namespace).next().is_some()
        || cluster.policies_in(&cmd.namespace).next().is_some();
    if !known {
        return Err(PluginError::Usage(format!(
            "-n {0}: namespace {0} has no Namespace, Pod or NetworkPolicy in the input",
            cmd.namespace
        )));
    }
    let none = Vec::new();
    let violations = report.violations.get(&cmd.namespace).unwrap_or(&none);
    let g = graph::build(&cluster, &template, &cmd.namespace, violations);
    let stdout = match cmd.output {
        GraphOutput::Dot => graph::render_dot(&g),
        GraphOutput::Svg => html::svg(&g, &graph::layout(&g), true),
        GraphOutput::Html => html_report(
            &format!("tierguard graph of namespace {}", cmd.namespace),
            &cluster,
            &template,
            &report,
            std::slice::from_ref(&cmd.namespace),
        ),
    };
    Ok(Outcome {
        stdout,
        code: 0,
        warnings,
    })
}

impl PluginCommand {
    /// The source options of the command.
    pub fn source(&self) -> &SourceArgs {
        match self {
            PluginCommand::Check(c) => &c.source,
            PluginCommand::Explain(c) => &c.source,
            PluginCommand::Matrix(c) => &c.source,
            PluginCommand::Graph(c) => &c.source,
        }
    }

    /// The manifest paths of the command (empty with `--cluster`).
    pub fn paths(&self) -> Result<Vec<PathBuf>, PluginError> {
        Ok(match self {
            PluginCommand::Check(c) => c.paths.clone(),
            PluginCommand::Explain(c) => split_explain_rest(&c.rest)?.1,
            PluginCommand::Matrix(c) => c.paths.clone(),
            PluginCommand::Graph(c) => c.paths.clone(),
        })
    }

    /// Runs the command over `state`.
    pub fn run(&self, state: &State) -> Result<Outcome, PluginError> {
        match self {
            PluginCommand::Check(c) => run_check(c, state),
            PluginCommand::Explain(c) => run_explain(c, state),
            PluginCommand::Matrix(c) => run_matrix(c, state),
            PluginCommand::Graph(c) => run_graph(c, state),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        PluginCli::command().debug_assert();
    }

    #[test]
    fn explain_rest_splits_port_from_paths() -> Result<(), ExplainError> {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (port, paths) = split_explain_rest(&words(&["TCP/8080", "a", "b"]))?;
        assert_eq!(
            port,
            Some(PortArg {
                protocol: Protocol::Tcp,
                port: PortSpec::Number(8080)
            })
        );
        assert_eq!(paths, vec![PathBuf::from("a"), PathBuf::from("b")]);
        let (port, paths) = split_explain_rest(&words(&["deploy/examples"]))?;
        assert_eq!((port, paths.len()), (None, 1));
        assert!(split_explain_rest(&words(&["TCP/0"])).is_err());
        Ok(())
    }
}
