//! Shared test harness: a real server on a loopback port with a generated
//! CA, an HTTPS client that trusts only that CA, AdmissionReview builders and
//! a kubelet-style Secret volume layout.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tierguard_webhook::limits::ConnectionLimits;
use tierguard_webhook::selfsigned::{self, Ca, Issued, Validity};
use tierguard_webhook::serve::{self, Options, Running};
use tierguard_webhook::state::files::FileState;

pub const SERVICE_NAME: &str = "localhost";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// What one run of `kubectl-tierguard` gave.
pub struct PluginRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `kubectl-tierguard` with `args` from the repository root (so paths in
/// its output are relative), inheriting neither RUST_LOG nor KUBECONFIG.
pub fn run_plugin<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> PluginRun {
    run_plugin_with(args, &[])
}

/// [`run_plugin`] with `env` set.
pub fn run_plugin_with<S: AsRef<std::ffi::OsStr>>(args: &[S], env: &[(&str, String)]) -> PluginRun {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-tierguard"))
        .args(args)
        .current_dir(repo_root())
        .env_remove("RUST_LOG")
        .env_remove("KUBECONFIG")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    PluginRun {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

pub fn example_dir() -> PathBuf {
    repo_root().join("deploy/examples/three-tier")
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A Secret volume as the kubelet writes it: `..<timestamp>/` folders, a
/// `..data` symlink to the current one, and `tls.crt`/`tls.key` symlinks
/// through `..data`.
pub struct SecretVolume {
    pub dir: PathBuf,
    version: usize,
}

impl SecretVolume {
    pub fn new(dir: &Path, first: &Issued) -> SecretVolume {
        std::fs::create_dir_all(dir).unwrap();
        let mut vol = SecretVolume {
            dir: dir.to_path_buf(),
            version: 0,
        };
        vol.rotate_to(&first.cert_pem, &first.key_pem);
        std::os::unix::fs::symlink("..data/tls.crt", dir.join("tls.crt")).unwrap();
        std::os::unix::fs::symlink("..data/tls.key", dir.join("tls.key")).unwrap();
        vol
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.join("tls.crt")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.join("tls.key")
    }

    /// New timestamped folder, temp symlink, rename() over `..data`.
    pub fn rotate_to(&mut self, cert_pem: &str, key_pem: &str) {
        self.version += 1;
        let name = format!("..2026_11_21_10_{:02}_00.{:09}", self.version, self.version);
        let ts = self.dir.join(&name);
        std::fs::create_dir(&ts).unwrap();
        std::fs::write(ts.join("tls.crt"), cert_pem).unwrap();
        std::fs::write(ts.join("tls.key"), key_pem).unwrap();
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&name, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }
}

pub struct Harness {
    pub running: Option<Running>,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub ca: Ca,
    pub first: Issued,
    pub volume: SecretVolume,
    pub dir: tempfile::TempDir,
}

pub fn client_for(ca: &Ca, addr: SocketAddr, keep_alive: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert_pem.as_bytes()).unwrap())
        .resolve(SERVICE_NAME, addr)
        .timeout(Duration::from_secs(30));
    if !keep_alive {
        builder = builder.pool_max_idle_per_host(0);
    }
    builder.build().unwrap()
}

impl Harness {
    /// A server over the three-tier example plus tests/fixtures/state, with
    /// the built-in template (mode overridden when given).
    pub async fn start(mode: Option<&str>) -> Harness {
        Harness::start_with_limits(mode, ConnectionLimits::default()).await
    }

    /// As [`Harness::start`], with these connection limits.
    pub async fn start_with_limits(mode: Option<&str>, limits: ConnectionLimits) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let ca = selfsigned::generate_ca("tierguard test CA").unwrap();
        let first = ca
            .issue(&[SERVICE_NAME.to_string(), "127.0.0.1".to_string()], Validity::Current)
            .unwrap();
        let volume = SecretVolume::new(&dir.path().join("secret"), &first);
        let template = match mode {
            None => tierguard::TierTemplate::built_in(),
            Some(mode) => tierguard::TierTemplate::parse(&format!("mode: {mode}\n"), "test template").unwrap(),
        };
        let state = FileState::read(&[example_dir(), fixtures().join("state")]).unwrap();
        let running = serve::start(Options {
            listen: "127.0.0.1:0".parse().unwrap(),
            template,
            state: Arc::new(state),
            cert: volume.cert(),
            key: volume.key(),
            service_names: vec![SERVICE_NAME.to_string()],
            drain: Duration::from_millis(200),
            cert_recheck: Duration::from_secs(1),
            limits,
        })
        .await
        .unwrap();
        let addr = running.local_addr;
        Harness {
            client: client_for(&ca, addr, true),
            running: Some(running),
            addr,
            ca,
            first,
            volume,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{SERVICE_NAME}:{}{path}", self.addr.port())
    }

    pub async fn post(&self, path: &str, body: &Value) -> Value {
        let resp = self.client.post(self.url(path)).json(body).send().await.unwrap();
        assert_eq!(resp.status(), 200, "POST {path}");
        resp.json().await.unwrap()
    }

    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> (u16, String) {
        let resp = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let resp = self.client.get(self.url(path)).send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

/// Parses a YAML object into JSON.
pub fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).unwrap()
}

/// An AdmissionReview request.
pub struct Req {
    pub uid: String,
    pub group: &'static str,
    pub kind: &'static str,
    pub resource: &'static str,
    pub operation: &'static str,
    pub namespace: Option<String>,
    pub name: String,
    pub object: Option<Value>,
    pub old: Option<Value>,
    pub username: String,
    pub dry_run: bool,
}

impl Req {
    fn base(kind: &'static str, operation: &'static str, object: Option<Value>, old: Option<Value>) -> Req {
        let meta = object
            .as_ref()
            .or(old.as_ref())
            .map(|o| o["metadata"].clone())
            .unwrap_or(Value::Null);
        let (group, resource) = match kind {
            "NetworkPolicy" => ("networking.k8s.io", "networkpolicies"),
            "Namespace" => ("", "namespaces"),
            "Pod" => ("", "pods"),
            _ => ("", "unknown"),
        };
        Req {
            uid: format!("uid-{}-{operation}", meta["name"].as_str().unwrap_or("x")),
            group,
            kind,
            resource,
            operation,
            namespace: if kind == "Namespace" {
                None
            } else {
                meta["namespace"].as_str().map(str::to_string)
            },
            name: meta["name"].as_str().unwrap_or_default().to_string(),
            object,
            old,
            username: "kubernetes-admin".to_string(),
            dry_run: false,
        }
    }

    pub fn create(kind: &'static str, object: Value) -> Req {
        Req::base(kind, "CREATE", Some(object), None)
    }

    pub fn update(kind: &'static str, old: Value, object: Value) -> Req {
        Req::base(kind, "UPDATE", Some(object), Some(old))
    }

    pub fn delete(kind: &'static str, old: Value) -> Req {
        Req::base(kind, "DELETE", None, Some(old))
    }

    pub fn uid(mut self, uid: &str) -> Req {
        self.uid = uid.to_string();
        self
    }

    pub fn user(mut self, user: &str) -> Req {
        self.username = user.to_string();
        self
    }

    pub fn dry_run(mut self) -> Req {
        self.dry_run = true;
        self
    }

    pub fn review(&self) -> Value {
        let version = "v1";
        let mut request = json!({
            "uid": self.uid,
            "kind": {"group": self.group, "version": version, "kind": self.kind},
            "resource": {"group": self.group, "version": version, "resource": self.resource},
            "requestKind": {"group": self.group, "version": version, "kind": self.kind},
            "requestResource": {"group": self.group, "version": version, "resource": self.resource},
            "name": self.name,
            "operation": self.operation,
            "userInfo": {"username": self.username, "groups": ["system:authenticated"]},
            "object": self.object,
            "oldObject": self.old,
            "dryRun": self.dry_run,
        });
        if let Some(ns) = &self.namespace {
            request["namespace"] = json!(ns);
        }
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
    }
}

/// Reads a policy of the three-tier example as JSON.
pub fn example_policy(file: &str) -> Value {
    yaml(&std::fs::read_to_string(example_dir().join(file)).unwrap())
}

pub fn allowed(review: &Value) -> bool {
    review["response"]["allowed"].as_bool().unwrap()
}

pub fn message(review: &Value) -> String {
    review["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

pub fn warnings(review: &Value) -> Vec<String> {
    review["response"]["warnings"]
        .as_array()
        .map(|a| a.iter().filter_map(|w| w.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Issues a certificate for the test service name.
pub fn issue(ca: &Ca, validity: Validity) -> Issued {
    ca.issue(&[SERVICE_NAME.to_string(), "127.0.0.1".to_string()], validity)
        .unwrap()
}
