//! The `serve` binary end to end: no certificate given (self-signed, path
//! logged), `--state` from the example, JSON logs, SIGTERM drains and exits 0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::Value;

#[tokio::test]
async fn serve_binary_self_signed_state_and_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tierguard-webhook"))
        .args([
            "--log-format",
            "json",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--drain-seconds",
            "0",
        ])
        .arg("--state")
        .arg(support::example_dir())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"));
            if tx.send(value).is_err() {
                break;
            }
        }
    });
    let mut ca = None;
    let mut addr = None;
    let mut logs = Vec::new();
    while ca.is_none() || addr.is_none() {
        let line = rx.recv().expect("serve exited before it was listening");
        if let Some(c) = line["ca"].as_str() {
            assert!(
                line["message"].as_str().unwrap().contains("for local use only"),
                "{line}"
            );
            ca = Some(c.to_string());
        }
        if let Some(a) = line["local_addr"].as_str() {
            addr = Some(a.parse::<std::net::SocketAddr>().unwrap());
        }
        logs.push(line);
    }
    let (ca, addr) = (ca.unwrap(), addr.unwrap());
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .build()
        .unwrap();
    let base = format!("https://127.0.0.1:{}", addr.port());
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let review = support::Req::delete("NetworkPolicy", support::example_policy("10-default-deny.yaml")).review();
    let resp: Value = client
        .post(format!("{base}/validate"))
        .json(&review)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resp["response"]["allowed"], false, "{resp}");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // wait without blocking the runtime: the client's open connection must be
    // able to answer the server's graceful close
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    logs.extend(rx.iter());
    reader.join().unwrap();
    let messages: Vec<&str> = logs.iter().filter_map(|l| l["message"].as_str()).collect();
    for want in ["shutting down", "draining: not ready, still answering", "stopped"] {
        assert!(messages.contains(&want), "{want:?} not in {messages:?}");
    }
}

/// Text logs written to a pipe (a file, a container log) carry no colour codes.
#[test]
fn text_logs_to_a_pipe_have_no_colour_codes() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tierguard-webhook"))
        .args(["--log-format", "text", "serve", "--listen", "127.0.0.1:0"])
        .arg("--state")
        .arg(support::example_dir())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        let listening = line.contains("local_addr");
        seen.push(line);
        if listening {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(seen.iter().any(|l| l.contains("local_addr")), "{seen:#?}");
    assert!(seen.iter().all(|l| !l.contains('\u{1b}')), "{seen:#?}");
}
