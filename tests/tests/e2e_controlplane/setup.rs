//! What the run needs, and the world it builds: the control plane, tierguard
//! deployed through the e2e overlay, the serving certificate, the webhook.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use nix::sys::signal::Signal;
use tierguard_integration::e2e::controlplane::{self, Binaries, ControlPlane};
use tierguard_integration::e2e::fabric::Fabric;
use tierguard_integration::e2e::kubectl::Kubectl;
use tierguard_integration::e2e::netns::ControlPlaneNetns;
use tierguard_integration::e2e::process::{Managed, wait_for};
use tierguard_integration::e2e::secret_volume;
use tierguard_integration::tool::find_tool;

use crate::cluster;

/// The address node namespaces reach the control plane on (inside the test's namespaces only).
pub const CONTROL_PLANE_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);
/// The webhook's port inside the control plane's namespace.
pub const WEBHOOK_PORT: u16 = 8443;
/// The name the API server calls the webhook by (the Service's DNS name).
pub const WEBHOOK_HOST: &str = "tierguard-webhook.tierguard-system.svc";

/// Why the run cannot happen here.
#[derive(Debug)]
pub struct Missing(pub String);

/// Everything found before anything is started.
#[derive(Debug)]
pub struct Environment {
    pub repo: PathBuf,
    pub bins: Binaries,
    /// tierguard-webhook and tierguard-enforcer
    pub tierguard_bin: PathBuf,
    /// run folder (certificates, kubeconfigs, logs), kept after the run
    pub dir: PathBuf,
}

impl Environment {
    pub fn discover() -> Result<Environment, Missing> {
        if !nix::unistd::geteuid().is_root() {
            return Err(Missing("it needs root (network namespaces, iptables)".into()));
        }
        for tool in [
            "ip",
            "iptables-save",
            "iptables-restore",
            "ipset",
            "conntrack",
            "openssl",
            "kubectl",
        ] {
            if find_tool(tool).is_none() {
                return Err(Missing(format!(
                    "`{tool}` is not on PATH (.ci/run and .ci/deploy-deps.sh install it)"
                )));
            }
        }
        let repo = tierguard_integration::repo_root();
        let check = Command::new("bash")
            .arg(repo.join("tests/controlplane/build.sh"))
            .arg("--check")
            .output()
            .map_err(|e| Missing(format!("cannot run tests/controlplane/build.sh: {e}")))?;
        if !check.status.success() {
            return Err(Missing(
                "the control plane is not built: run `bash tests/controlplane/build.sh` (or `make e2e-local`)".into(),
            ));
        }
        let dir = PathBuf::from(String::from_utf8_lossy(&check.stdout).trim());
        let kubectl = find_tool("kubectl").ok_or_else(|| Missing("kubectl is not on PATH".into()))?;
        let tierguard_bin = match std::env::var_os("TIERGUARD_E2E_BIN_DIR") {
            Some(d) => PathBuf::from(d),
            // target/<profile>/deps/<this test> -> target/<profile>
            None => std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent()?.parent().map(Path::to_path_buf))
                .ok_or_else(|| Missing("cannot find the target folder".into()))?,
        };
        for bin in ["tierguard-webhook", "tierguard-enforcer", "kubectl-tierguard"] {
            if !tierguard_bin.join(bin).is_file() {
                return Err(Missing(format!(
                    "{} is not built (cargo build -p tierguard-webhook -p tierguard-enforcer, or set TIERGUARD_E2E_BIN_DIR)",
                    tierguard_bin.join(bin).display()
                )));
            }
        }
        let target = tierguard_bin
            .parent()
            .map_or_else(|| tierguard_bin.clone(), Path::to_path_buf);
        let run = target
            .join("e2e-controlplane")
            .join(format!("run-{}", std::process::id()));
        std::fs::create_dir_all(&run).map_err(|e| Missing(format!("cannot create {}: {e}", run.display())))?;
        Ok(Environment {
            repo,
            bins: Binaries { dir, kubectl },
            tierguard_bin,
            dir: run,
        })
    }

    pub fn print_versions(&self) {
        println!("== components");
        for name in ["kube-apiserver", "kube-controller-manager", "etcd", "kubectl"] {
            println!("{name}: {}", self.bins.version(name));
        }
        if self.cert_manager_built() {
            let out = Command::new(self.bins.path("cert-manager")).arg("version").output();
            let version = out.map_or_else(
                |e| e.to_string(),
                |o| String::from_utf8_lossy(&o.stdout).trim().to_string(),
            );
            println!("cert-manager (controller, cainjector): {version}");
        } else {
            println!("cert-manager: not built (CRDs applied; serving certificate from certs/gen-dev-certs.sh)");
        }
        for bin in ["tierguard-webhook", "tierguard-enforcer", "kubectl-tierguard"] {
            let out = Command::new(self.tierguard_bin.join(bin)).arg("--version").output();
            let version = out.map_or_else(
                |e| e.to_string(),
                |o| String::from_utf8_lossy(&o.stdout).trim().to_string(),
            );
            println!("{bin}: {version} ({})", self.tierguard_bin.join(bin).display());
        }
        println!("run folder: {}", self.dir.display());
    }

    /// Whether `build.sh` built cert-manager (one binary: `controller` and `cainjector`).
    pub fn cert_manager_built(&self) -> bool {
        self.bins.path("cert-manager").is_file()
    }
}

/// How the webhook's serving certificate is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertSource {
    /// cert-manager's controller and cainjector, from deploy/'s Issuer and Certificate
    CertManager,
    /// certs/gen-dev-certs.sh; the test writes the Secret and the caBundle
    DevScript,
}

/// The webhook as a local process, configured like the Deployment's pod.
#[derive(Debug)]
pub struct Webhook {
    process: Option<Managed>,
    args: Vec<String>,
    kubeconfig: PathBuf,
    bin: PathBuf,
    log: PathBuf,
    /// the volumes' local folders (tls, template)
    pub tls_dir: PathBuf,
    pub template_dir: PathBuf,
}

/// The running world.
pub struct World {
    pub env_dir: PathBuf,
    pub repo: PathBuf,
    pub tierguard_bin: PathBuf,
    pub kubectl: Kubectl,
    pub plane: ControlPlane,
    pub fabric: Option<Fabric>,
    pub webhook: Webhook,
    pub cert_source: CertSource,
    pub agents: Vec<cluster::Agent>,
    cert_manager: Vec<Managed>,
    // dropped last: everything above runs inside it
    pub netns: ControlPlaneNetns,
}

impl World {
    pub fn start(env: &Environment) -> anyhow::Result<World> {
        let mut netns = ControlPlaneNetns::create(CONTROL_PLANE_ADDRESS)?;
        // The test itself (kubectl, HTTP clients, the webhook it starts) lives in
        // the control plane's namespace, as the cluster's own components would.
        netns.enter()?;
        let fabric = Fabric::build(&cluster::nodes(), &cluster::pod_plans(), &cluster::served_ports())?;
        for node in fabric.topology().nodes() {
            netns.join(&node.netns, node.spec.ip)?;
        }
        println!("== control plane");
        let started = std::time::Instant::now();
        let plane = ControlPlane::start(&env.bins, &netns, &env.dir)?;
        println!("control plane ready in {:.1} s", started.elapsed().as_secs_f64());
        let kubectl = plane.kubectl.clone();
        let mut world = World {
            env_dir: env.dir.clone(),
            repo: env.repo.clone(),
            tierguard_bin: env.tierguard_bin.clone(),
            kubectl,
            plane,
            fabric: Some(fabric),
            webhook: Webhook {
                process: None,
                args: Vec::new(),
                kubeconfig: env.dir.join("webhook.kubeconfig"),
                bin: env.tierguard_bin.join("tierguard-webhook"),
                log: env.dir.join("logs/tierguard-webhook.log"),
                tls_dir: env.dir.join("volumes/tls"),
                template_dir: env.dir.join("volumes/template"),
            },
            cert_source: if env.cert_manager_built() {
                CertSource::CertManager
            } else {
                CertSource::DevScript
            },
            agents: Vec::new(),
            cert_manager: Vec::new(),
            netns,
        };
        world.deploy(env)?;
        Ok(world)
    }

    /// Applies the CRDs and deploy/ (through the e2e overlay), gets the
    /// serving certificate and the caBundle in place, starts the webhook.
    fn deploy(&mut self, env: &Environment) -> anyhow::Result<()> {
        println!("== deploy/ through tests/e2e/controlplane");
        let crds = self.cert_manager_crds(env)?;
        self.kubectl
            .ok(&["apply", "--server-side", "-f", &crds.display().to_string()])?;
        self.kubectl.ok(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/certificates.cert-manager.io",
            "crd/issuers.cert-manager.io",
        ])?;
        let overlay = self.repo.join("tests/e2e/controlplane");
        let out = self
            .kubectl
            .run(&["apply", "-k", &overlay.display().to_string()], None)?;
        println!("{}", out.printed());
        anyhow::ensure!(out.ok, "kubectl apply -k {} failed", overlay.display());
        match self.cert_source {
            CertSource::CertManager => self.start_cert_manager(env)?,
            CertSource::DevScript => self.dev_certificate()?,
        }
        self.wait_ca_bundles()?;
        self.project_secret()?;
        self.project_template()?;
        self.webhook_args()?;
        self.plane.service_account_kubeconfig(
            "tierguard-system",
            "tierguard-webhook",
            &format!("https://127.0.0.1:{}", controlplane::API_PORT),
            &self.webhook.kubeconfig,
        )?;
        self.start_webhook()
    }

    fn cert_manager_crds(&self, env: &Environment) -> anyhow::Result<PathBuf> {
        let crds = env.bins.path("cert-manager-crds.yaml");
        anyhow::ensure!(
            crds.is_file(),
            "{} is missing: tests/controlplane/build.sh puts cert-manager's CRDs there",
            crds.display()
        );
        Ok(crds)
    }

    fn start_cert_manager(&mut self, env: &Environment) -> anyhow::Result<()> {
        let logs = self.env_dir.join("logs");
        let kubeconfig = self.plane.admin_kubeconfig.display().to_string();
        for (name, args) in [
            (
                "cert-manager-controller",
                vec![
                    "controller".to_string(),
                    format!("--kubeconfig={kubeconfig}"),
                    "--cluster-resource-namespace=tierguard-system".to_string(),
                ],
            ),
            (
                "cert-manager-cainjector",
                vec!["cainjector".to_string(), format!("--kubeconfig={kubeconfig}")],
            ),
        ] {
            let mut command = Command::new(env.bins.path("cert-manager"));
            command.args(&args);
            self.cert_manager
                .push(Managed::spawn(name, command, &logs.join(format!("{name}.log")))?);
        }
        wait_for(
            "cert-manager to issue tierguard-webhook-tls",
            Duration::from_secs(90),
            Duration::from_millis(500),
            || {
                let out = self.kubectl.run(
                    &["-n", "tierguard-system", "get", "secret", "tierguard-webhook-tls"],
                    None,
                )?;
                Ok(out.ok.then_some(()))
            },
        )
    }

    /// The fallback: certs/gen-dev-certs.sh issues the certificate, the test
    /// stores it as cert-manager would (the Secret) and injects the CA as the
    /// cainjector would.
    fn dev_certificate(&self) -> anyhow::Result<()> {
        let out_dir = self.env_dir.join("dev-certs");
        let script = self.repo.join("certs/gen-dev-certs.sh");
        let status = Command::new("bash")
            .arg(&script)
            .arg(&out_dir)
            .stdout(std::process::Stdio::null())
            .status()
            .with_context(|| format!("running {}", script.display()))?;
        anyhow::ensure!(status.success(), "{} failed", script.display());
        let secret = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": "tierguard-webhook-tls", "namespace": "tierguard-system"},
            "data": {
                "tls.crt": b64(&std::fs::read(out_dir.join("tls.crt"))?),
                "tls.key": b64(&std::fs::read(out_dir.join("tls.key"))?),
                "ca.crt": b64(&std::fs::read(out_dir.join("ca.crt"))?),
            }
        });
        self.kubectl.apply_json(&secret)?;
        let ca = b64(&std::fs::read(out_dir.join("ca.crt"))?);
        for (kind, count) in [
            ("validatingwebhookconfiguration", 2),
            ("mutatingwebhookconfiguration", 1),
        ] {
            let patch: Vec<serde_json::Value> = (0..count)
                .map(|i| serde_json::json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": ca}))
                .collect();
            self.kubectl.ok(&[
                "patch",
                kind,
                "tierguard",
                "--type=json",
                "-p",
                &serde_json::to_string(&patch)?,
            ])?;
        }
        Ok(())
    }

    /// Renews the serving certificate: cert-manager's renewal (the Issuing
    /// condition, as `cmctl renew` sets it) or a new one from the dev script;
    /// returns once the Secret holds a different certificate.
    pub fn renew_certificate(&self) -> anyhow::Result<()> {
        let before = self.secret_data("tls.crt")?;
        match self.cert_source {
            CertSource::CertManager => {
                let patch = serde_json::json!({"status": {"conditions": [{
                    "type": "Issuing", "status": "True", "reason": "ManuallyTriggered",
                    "message": "renewal requested by the end-to-end test",
                }]}});
                self.kubectl.ok(&[
                    "-n",
                    "tierguard-system",
                    "patch",
                    "certificate",
                    "tierguard-webhook-serving",
                    "--subresource=status",
                    "--type=merge",
                    "-p",
                    &patch.to_string(),
                ])?;
            }
            CertSource::DevScript => self.dev_certificate()?,
        }
        wait_for(
            "a renewed certificate in the Secret",
            Duration::from_secs(60),
            Duration::from_millis(250),
            || Ok((self.secret_data("tls.crt")? != before).then_some(())),
        )
    }

    fn secret_data(&self, key: &str) -> anyhow::Result<Vec<u8>> {
        let secret = self
            .kubectl
            .get_json(&["-n", "tierguard-system", "secret", "tierguard-webhook-tls"])?;
        let text = secret["data"][key]
            .as_str()
            .with_context(|| format!("the Secret has no {key}"))?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .with_context(|| format!("decoding {key}"))
    }

    /// What the kubelet does with the Secret volume: the Secret's current
    /// keys, written with the `..data` swap.
    pub fn project_secret(&self) -> anyhow::Result<()> {
        let crt = self.secret_data("tls.crt")?;
        let key = self.secret_data("tls.key")?;
        secret_volume::project(&self.webhook.tls_dir, &[("tls.crt", &crt), ("tls.key", &key)])
    }

    /// The template ConfigMap's volume.
    pub fn project_template(&self) -> anyhow::Result<()> {
        let cm = self
            .kubectl
            .get_json(&["-n", "tierguard-system", "configmap", "tierguard-template"])?;
        let text = cm["data"]["template.yaml"]
            .as_str()
            .context("the ConfigMap has no template.yaml")?;
        secret_volume::project(&self.webhook.template_dir, &[("template.yaml", text.as_bytes())])
    }

    fn wait_ca_bundles(&self) -> anyhow::Result<()> {
        wait_for(
            "the caBundle in every tierguard webhook",
            Duration::from_secs(60),
            Duration::from_millis(250),
            || {
                let mut all = true;
                for kind in ["validatingwebhookconfiguration", "mutatingwebhookconfiguration"] {
                    let config = self.kubectl.get_json(&[kind, "tierguard"])?;
                    for webhook in config["webhooks"].as_array().context("webhooks")? {
                        all &= webhook["clientConfig"]["caBundle"]
                            .as_str()
                            .is_some_and(|s| !s.is_empty());
                    }
                }
                Ok(all.then_some(()))
            },
        )
    }

    /// The CA the API server trusts for the webhook (the injected caBundle).
    pub fn webhook_ca(&self) -> anyhow::Result<Vec<u8>> {
        let config = self
            .kubectl
            .get_json(&["validatingwebhookconfiguration", "tierguard"])?;
        let bundle = config["webhooks"][0]["clientConfig"]["caBundle"]
            .as_str()
            .context("no caBundle")?;
        Ok(base64::engine::general_purpose::STANDARD.decode(bundle)?)
    }

    /// The Deployment's container args, with each volume's mount path
    /// replaced by its local folder.
    fn webhook_args(&mut self) -> anyhow::Result<()> {
        let deployment = self
            .kubectl
            .get_json(&["-n", "tierguard-system", "deployment", "tierguard-webhook"])?;
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        let volumes = &deployment["spec"]["template"]["spec"]["volumes"];
        let mut mounts = Vec::new();
        for mount in container["volumeMounts"].as_array().context("volumeMounts")? {
            let path = mount["mountPath"].as_str().context("mountPath")?.to_string();
            let name = mount["name"].as_str().context("volume name")?;
            let volume = volumes
                .as_array()
                .and_then(|v| v.iter().find(|v| v["name"] == name))
                .with_context(|| format!("volume {name}"))?;
            let local = if volume.get("secret").is_some() {
                &self.webhook.tls_dir
            } else if volume.get("configMap").is_some() {
                &self.webhook.template_dir
            } else {
                continue;
            };
            mounts.push((path, local.display().to_string()));
        }
        let mut args = Vec::new();
        for arg in container["args"].as_array().context("args")? {
            let mut arg = arg.as_str().context("arg")?.to_string();
            for (path, local) in &mounts {
                if let Some(rest) = arg.strip_prefix(path.as_str()) {
                    arg = format!("{local}{rest}");
                }
            }
            args.push(arg);
        }
        anyhow::ensure!(
            args.first().map(String::as_str) == Some("serve"),
            "unexpected args {args:?}"
        );
        self.webhook.args = args;
        Ok(())
    }

    /// Starts the webhook (as its ServiceAccount) and waits for /readyz.
    pub fn start_webhook(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new(&self.webhook.bin);
        command
            .args(&self.webhook.args)
            .env("KUBECONFIG", &self.webhook.kubeconfig)
            .env("RUST_LOG", "info");
        self.webhook.process = Some(Managed::spawn("tierguard-webhook", command, &self.webhook.log)?);
        let client = self.webhook_client()?;
        let url = format!("https://{WEBHOOK_HOST}:{WEBHOOK_PORT}/readyz");
        wait_for(
            "the webhook's /readyz",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || {
                if let Some(p) = self.webhook.process.as_mut()
                    && let Some(status) = p.exited()
                {
                    anyhow::bail!("the webhook exited ({status}):\n{}", p.log_tail(20));
                }
                Ok(client
                    .get(&url)
                    .send()
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(drop))
            },
        )
    }

    /// Stops the webhook with `signal` (SIGKILL: an outage; SIGTERM: a rollout).
    pub fn stop_webhook(&mut self, signal: Signal) {
        if let Some(mut process) = self.webhook.process.take() {
            process.stop_with(signal, Duration::from_secs(30));
        }
    }

    /// An HTTPS client that reaches the webhook by its Service name and
    /// trusts the injected CA.
    pub fn webhook_client(&self) -> anyhow::Result<reqwest::blocking::Client> {
        let ca = reqwest::Certificate::from_pem(&self.webhook_ca()?)?;
        Ok(reqwest::blocking::Client::builder()
            .add_root_certificate(ca)
            .resolve(WEBHOOK_HOST, std::net::SocketAddr::from(([127, 0, 0, 1], WEBHOOK_PORT)))
            .tls_info(true)
            // a new connection (and handshake) per request: the served certificate is what is checked
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(5))
            .build()?)
    }

    /// An HTTPS client for the API server, as the admin.
    pub fn api_client(&self) -> anyhow::Result<reqwest::blocking::Client> {
        let dir = self.plane.dir().join("pki");
        let mut identity = std::fs::read(dir.join("admin.crt"))?;
        identity.extend(std::fs::read(dir.join("admin.key"))?);
        Ok(reqwest::blocking::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.plane.ca.cert_pem.as_bytes())?)
            .identity(reqwest::Identity::from_pem(&identity)?)
            .timeout(Duration::from_secs(30))
            .build()?)
    }

    /// The last lines of every log.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut text = self.plane.log_tails(lines);
        if let Some(p) = &self.webhook.process {
            text.push_str(&format!("\n--- tierguard-webhook\n{}", p.log_tail(lines)));
        }
        for agent in &self.agents {
            text.push_str(&format!(
                "\n--- {}\n{}",
                agent.process.name(),
                agent.process.log_tail(lines)
            ));
        }
        for p in &self.cert_manager {
            text.push_str(&format!("\n--- {}\n{}", p.name(), p.log_tail(lines)));
        }
        text
    }

    /// Stops everything and removes the namespaces.
    pub fn shutdown(&mut self) {
        self.agents.clear();
        self.stop_webhook(Signal::SIGTERM);
        self.cert_manager.clear();
        self.plane.stop();
        if let Some(fabric) = self.fabric.take()
            && let Err(e) = fabric.teardown()
        {
            eprintln!("teardown: {e:#}");
        }
    }
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
