//! The real control plane as local processes: etcd, kube-apiserver and
//! kube-controller-manager, built from their Go modules by
//! `tests/controlplane/build.sh`, running in a network namespace of their
//! own (`ControlPlaneNetns`), with a CA, client certificates and
//! ServiceAccount keys generated for the run.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;

use super::kubeconfig::{self, Credentials};
use super::kubectl::Kubectl;
use super::netns::ControlPlaneNetns;
use super::pki::{self, ClusterCa};
use super::process::{Managed, wait_for};

/// The API server's secure port.
pub const API_PORT: u16 = 6443;
/// The cluster's Service range (the API server's own Service takes the first address).
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Where the binaries are.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// the folder `build.sh` printed
    pub dir: PathBuf,
    /// kubectl
    pub kubectl: PathBuf,
}

impl Binaries {
    /// A control-plane binary of the bin folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// What `name --version` prints (first line), for the run's header.
    pub fn version(&self, name: &str) -> String {
        let program = if name == "kubectl" {
            self.kubectl.clone()
        } else {
            self.path(name)
        };
        let mut command = Command::new(&program);
        if name == "kubectl" {
            command.args(["version", "--client"]);
        } else {
            command.arg("--version");
        }
        match command.output() {
            Ok(out) => {
                let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
                text.lines().next().unwrap_or("").trim().to_string()
            }
            Err(e) => format!("cannot run {}: {e}", program.display()),
        }
    }
}

/// Runs `tests/controlplane/build.sh` (a no-op when its cache is warm) and
/// returns the bin folder it printed.
pub fn build(repo: &Path) -> anyhow::Result<PathBuf> {
    let script = repo.join("tests/controlplane/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        anyhow::bail!("{} failed ({})", script.display(), out.status);
    }
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    anyhow::ensure!(!dir.is_empty(), "{} printed no bin folder", script.display());
    Ok(PathBuf::from(dir))
}

/// A running control plane.
#[derive(Debug)]
pub struct ControlPlane {
    /// the CA of every certificate (the API server's and the clients')
    pub ca: ClusterCa,
    /// the admin's kubeconfig (system:masters)
    pub admin_kubeconfig: PathBuf,
    /// kubectl as the admin
    pub kubectl: Kubectl,
    /// the address nodes reach the API server on
    pub address: Ipv4Addr,
    dir: PathBuf,
    processes: Vec<Managed>,
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver and kube-controller-manager in `netns`,
    /// writing certificates, kubeconfigs, data and logs under `dir`, and
    /// waits until the API server is ready and the `default` namespace has
    /// its ServiceAccount.
    pub fn start(bins: &Binaries, netns: &ControlPlaneNetns, dir: &Path) -> anyhow::Result<ControlPlane> {
        let pki_dir = dir.join("pki");
        std::fs::create_dir_all(&pki_dir).with_context(|| format!("creating {}", pki_dir.display()))?;
        let ca = ClusterCa::create(&pki_dir)?;
        let address = netns.address();
        let api_serving = ca.serving(
            "apiserver",
            "kube-apiserver",
            &[
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "localhost",
            ],
            &[
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V4(address),
                IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1)),
            ],
        )?;
        let admin = ca.client("admin", "tierguard-e2e-admin", Some("system:masters"))?;
        let kcm = ca.client("controller-manager", "system:kube-controller-manager", None)?;
        let sa_key = pki::service_account_key(&pki_dir)?;
        let server = format!("https://127.0.0.1:{API_PORT}");
        let admin_kubeconfig = dir.join("admin.kubeconfig");
        kubeconfig::write(
            &admin_kubeconfig,
            &server,
            &ca.cert_pem,
            "admin",
            &Credentials::ClientCert {
                cert: &admin.cert,
                key: &admin.key,
            },
        )?;
        let kcm_kubeconfig = dir.join("controller-manager.kubeconfig");
        kubeconfig::write(
            &kcm_kubeconfig,
            &server,
            &ca.cert_pem,
            "controller-manager",
            &Credentials::ClientCert {
                cert: &kcm.cert,
                key: &kcm.key,
            },
        )?;
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
        let p = |path: &Path| path.display().to_string();
        let mut processes = Vec::new();

        let etcd_data = dir.join("etcd");
        processes.push(Managed::spawn(
            "etcd",
            netns.command(
                &bins.path("etcd"),
                &[
                    "--name=e2e".into(),
                    format!("--data-dir={}", p(&etcd_data)),
                    "--listen-client-urls=http://127.0.0.1:2379".into(),
                    "--advertise-client-urls=http://127.0.0.1:2379".into(),
                    "--listen-peer-urls=http://127.0.0.1:2380".into(),
                    "--initial-advertise-peer-urls=http://127.0.0.1:2380".into(),
                    "--initial-cluster=e2e=http://127.0.0.1:2380".into(),
                    "--listen-metrics-urls=http://127.0.0.1:2381".into(),
                    // a test cluster: durability across a power cut does not matter, speed does
                    "--unsafe-no-fsync".into(),
                    "--log-level=warn".into(),
                ],
            ),
            &logs.join("etcd.log"),
        )?);
        processes.push(Managed::spawn(
            "kube-apiserver",
            netns.command(
                &bins.path("kube-apiserver"),
                &[
                    "--etcd-servers=http://127.0.0.1:2379".into(),
                    "--bind-address=0.0.0.0".into(),
                    format!("--secure-port={API_PORT}"),
                    format!("--advertise-address={address}"),
                    format!("--cert-dir={}", p(&dir.join("apiserver-certs"))),
                    format!("--tls-cert-file={}", p(&api_serving.cert)),
                    format!("--tls-private-key-file={}", p(&api_serving.key)),
                    format!("--client-ca-file={}", p(&ca.cert_path)),
                    format!("--service-account-key-file={}", p(&sa_key.cert)),
                    format!("--service-account-signing-key-file={}", p(&sa_key.key)),
                    format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
                    format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                    "--authorization-mode=RBAC".into(),
                    // no kubelet keeps the kubernetes Service's endpoints
                    "--endpoint-reconciler-type=none".into(),
                    "--allow-privileged=true".into(),
                    "--profiling=false".into(),
                    "--v=1".into(),
                ],
            ),
            &logs.join("kube-apiserver.log"),
        )?);
        let kubectl = Kubectl::new(&bins.kubectl, &admin_kubeconfig);
        let mut plane = ControlPlane {
            ca,
            admin_kubeconfig,
            kubectl,
            address,
            dir: dir.to_path_buf(),
            processes,
        };
        plane.wait_ready()?;
        plane.processes.push(Managed::spawn(
            "kube-controller-manager",
            netns.command(
                &bins.path("kube-controller-manager"),
                &[
                    format!("--kubeconfig={}", p(&kcm_kubeconfig)),
                    format!("--authentication-kubeconfig={}", p(&kcm_kubeconfig)),
                    format!("--authorization-kubeconfig={}", p(&kcm_kubeconfig)),
                    "--bind-address=127.0.0.1".into(),
                    "--leader-elect=false".into(),
                    // each controller as its own ServiceAccount, as kubeadm sets it up: the
                    // namespace controller's deletes arrive as system:serviceaccount:kube-system:namespace-controller
                    "--use-service-account-credentials=true".into(),
                    format!("--service-account-private-key-file={}", p(&sa_key.key)),
                    format!("--root-ca-file={}", p(&plane.ca.cert_path)),
                    format!("--cluster-signing-cert-file={}", p(&plane.ca.cert_path)),
                    format!("--cluster-signing-key-file={}", p(&pki_dir.join("ca.key"))),
                    // no kubelet sends heartbeats: the node lifecycle controller would taint
                    // and evict every pod; no cloud and no pod CIDRs to hand out
                    "--controllers=*,-node-lifecycle-controller,-node-ipam-controller,-cloud-node-lifecycle-controller,-service-lb-controller,-node-route-controller".into(),
                    "--v=1".into(),
                ],
            ),
            &logs.join("kube-controller-manager.log"),
        )?);
        // The ServiceAccount admission plugin refuses pods until a namespace's
        // `default` account exists: the serviceaccount controller must be working.
        wait_for(
            "the default ServiceAccount",
            Duration::from_secs(60),
            Duration::from_millis(250),
            || {
                plane.check_alive()?;
                Ok(plane
                    .kubectl
                    .run(&["-n", "default", "get", "serviceaccount", "default"], None)?
                    .ok
                    .then_some(()))
            },
        )?;
        Ok(plane)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        wait_for(
            "kube-apiserver /readyz",
            Duration::from_secs(120),
            Duration::from_millis(250),
            || {
                self.check_alive()?;
                let out = self.kubectl.run(&["get", "--raw", "/readyz"], None)?;
                Ok((out.ok && out.stdout.trim() == "ok").then_some(()))
            },
        )
    }

    /// Fails (with the log's tail) if a control-plane process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for process in &mut self.processes {
            if let Some(status) = process.exited() {
                anyhow::bail!(
                    "{} exited ({status}); last log lines:\n{}",
                    process.name(),
                    process.log_tail(30)
                );
            }
        }
        Ok(())
    }

    /// The run folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A kubeconfig at `path` for ServiceAccount `namespace/name`, with a
    /// token from the TokenRequest API, reaching the API server at `server`.
    pub fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
        server: &str,
        path: &Path,
    ) -> anyhow::Result<()> {
        let token = self
            .kubectl
            .ok(&["-n", namespace, "create", "token", name, "--duration=4h"])?;
        kubeconfig::write(
            path,
            server,
            &self.ca.cert_pem,
            &format!("system:serviceaccount:{namespace}:{name}"),
            &Credentials::Token(token.trim()),
        )
    }

    /// The last lines of every process's log.
    pub fn log_tails(&self, lines: usize) -> String {
        self.processes
            .iter()
            .map(|p| format!("--- {} ({})\n{}", p.name(), p.log().display(), p.log_tail(lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops the controller manager, the API server and etcd, in that order.
    pub fn stop(&mut self) {
        while let Some(mut process) = self.processes.pop() {
            process.stop();
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}
