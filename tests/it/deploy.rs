//! Checks of `deploy/` and `config/`: every YAML, JSON and TOML file parses;
//! the example configs (and the configs the Kubernetes and Fly files put
//! together) pass `nearby check-config`; the Kubernetes Deployment has its
//! probes and hardening; the Fly supervisor script runs the real sidecar next
//! to an app; and every metric (and label value) that the alert rules and the
//! Grafana dashboard query exists in `/metrics` of a running sidecar.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use crate::common::{Cluster, Nearby, RawConn, free_port, wait_until};

// ---------------------------------------------------------------------------
// Files

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy(rel: &str) -> PathBuf {
    repo().join("deploy").join(rel)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every file under `dir`, recursively, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read_dir {}: {e}", d.display()));
        for entry in entries {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn has_ext(path: &Path, exts: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| exts.contains(&e))
}

/// Every document of a YAML file, as JSON values (our files only have
/// string keys). Empty documents (a lone `---`) are skipped.
fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = read(path);
    let mut docs = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(&text).enumerate() {
        let v = Value::deserialize(doc)
            .unwrap_or_else(|e| panic!("{} document {i}: {e}", path.display()));
        if !v.is_null() {
            docs.push(v);
        }
    }
    docs
}

fn json_file(path: &Path) -> Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {v}"))
}

#[test]
fn every_yaml_json_and_toml_file_in_deploy_parses() {
    let files = files_under(&repo().join("deploy"));
    let (mut yaml, mut json, mut toml_files) = (0, 0, 0);
    for path in &files {
        if has_ext(path, &["yml", "yaml"]) {
            let text = read(path);
            let mut n = 0;
            for (i, doc) in serde_norway::Deserializer::from_str(&text).enumerate() {
                serde_norway::Value::deserialize(doc)
                    .unwrap_or_else(|e| panic!("{} document {i}: {e}", path.display()));
                n += 1;
            }
            assert!(n > 0, "{}: no YAML document", path.display());
            assert!(
                !yaml_docs(path).is_empty(),
                "{}: only empty documents",
                path.display()
            );
            yaml += 1;
        } else if has_ext(path, &["json"]) {
            json_file(path);
            json += 1;
        } else if has_ext(path, &["toml"]) {
            toml::from_str::<toml::Table>(&read(path))
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            toml_files += 1;
        }
    }
    assert!(yaml >= 3, "expected the k8s and Prometheus YAML files");
    assert!(json >= 1, "expected the Grafana dashboard");
    assert!(toml_files >= 1, "expected deploy/fly/fly.toml");
}

// ---------------------------------------------------------------------------
// check-config

/// Runs `nearby check-config [--config FILE]` with no `NEARBY_*` or
/// `FLY_REGION` from the test's environment, plus `env`.
fn check_config(config: Option<&Path>, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nearby"));
    cmd.arg("check-config");
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("NEARBY_") || k == "FLY_REGION" {
            cmd.env_remove(&key);
        }
    }
    cmd.envs(env.iter().copied()).stdin(Stdio::null());
    cmd.output().expect("run nearby check-config")
}

/// The effective config printed by a successful `check-config`.
fn effective(what: &str, out: &Output) -> toml::Table {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what}: check-config failed ({}):\n{}{}",
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    toml::from_str(&stdout).unwrap_or_else(|e| panic!("{what}: effective config: {e}\n{stdout}"))
}

fn key<'a>(t: &'a toml::Table, k: &str) -> Option<&'a str> {
    t.get(k).and_then(toml::Value::as_str)
}

/// Stand-ins for values that deployments take from secrets.
fn fake_secret(name: &str) -> &'static str {
    match name {
        "NEARBY_PRIMARY" => "redis://default:s3cr3t-pw@primary.example.internal:6379",
        "NEARBY_REPLICAS" => {
            "ams=redis://default:s3cr3t-pw@ams.example.internal:6379,iad=redis://default:s3cr3t-pw@iad.example.internal:6379"
        }
        other => panic!("no stand-in for secret env {other}"),
    }
}

#[test]
fn example_configs_pass_check_config() {
    let mut seen = 0;
    for path in files_under(&repo().join("config")) {
        if !has_ext(&path, &["toml"]) {
            continue;
        }
        seen += 1;
        let what = path.display().to_string();
        let file: toml::Table = toml::from_str(&read(&path)).expect("TOML");
        if file.contains_key("region") {
            effective(&what, &check_config(Some(&path), &[]));
        } else {
            // No region in the file: it comes from $FLY_REGION.
            let t = effective(&what, &check_config(Some(&path), &[("FLY_REGION", "syd")]));
            assert_eq!(
                key(&t, "region"),
                Some("syd"),
                "{what}: region from FLY_REGION"
            );
        }
    }
    assert!(seen >= 4, "expected the example configs in config/");
}

// ---------------------------------------------------------------------------
// Kubernetes

fn k8s_docs() -> Vec<Value> {
    yaml_docs(&deploy("kubernetes/deployment.yaml"))
}

fn k8s_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in deployment.yaml"))
}

/// The nearby container, whether a regular container or a native sidecar
/// (an init container with `restartPolicy: Always`).
fn nearby_container(pod: &Value) -> &Value {
    let all: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|k| pod[*k].as_array())
        .flatten()
        .collect();
    let c = all
        .iter()
        .find(|c| c["name"] == "nearby")
        .unwrap_or_else(|| panic!("no container named nearby"));
    if pod["initContainers"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x["name"] == "nearby"))
    {
        assert_eq!(
            c["restartPolicy"], "Always",
            "an init container must be a native sidecar"
        );
    }
    c
}

fn probe_target(c: &Value, probe: &str) -> (String, Value) {
    let get = &c[probe]["httpGet"];
    assert!(get.is_object(), "{probe}: expected httpGet, got {c}");
    (str_at(get, "/path").to_string(), get["port"].clone())
}

#[test]
fn kubernetes_deployment_probes_annotations_and_hardening() {
    let docs = k8s_docs();
    let dep = k8s_kind(&docs, "Deployment");
    let pod = &dep["spec"]["template"]["spec"];
    let c = nearby_container(pod);

    // The admin port, named or by number, serves the probes.
    let ports = c["ports"].as_array().expect("nearby ports");
    let admin = ports
        .iter()
        .find(|p| p["containerPort"] == 9121)
        .expect("containerPort 9121");
    let admin_name = admin["name"].as_str().unwrap_or_default();
    let on_admin = |port: &Value| port == 9121 || (!admin_name.is_empty() && port == admin_name);
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let (p, port) = probe_target(c, probe);
        assert_eq!(p, path, "{probe} path");
        assert!(
            on_admin(&port),
            "{probe} must use the admin port, got {port}"
        );
    }

    // Prometheus annotations on the pod template, on the admin port.
    let ann = &dep["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], "9121");
    assert_eq!(ann["prometheus.io/path"], "/metrics");

    // Hardening: the container's settings, or the pod's where Kubernetes
    // inherits them.
    let sc = &c["securityContext"];
    let pod_sc = &pod["securityContext"];
    assert!(
        sc["runAsNonRoot"] == true || pod_sc["runAsNonRoot"] == true,
        "runAsNonRoot"
    );
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    let drop: Vec<&str> = sc["capabilities"]["drop"]
        .as_array()
        .expect("capabilities.drop")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(drop.contains(&"ALL"), "drop ALL capabilities: {drop:?}");

    // The --config path is the ConfigMap's key, mounted.
    let args: Vec<&str> = c["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let cfg = args
        .iter()
        .position(|a| *a == "--config")
        .and_then(|i| args.get(i + 1))
        .expect("--config FILE in args");
    let cfg = Path::new(cfg);
    let mount = c["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .find(|m| Some(Path::new(str_at(m, "/mountPath"))) == cfg.parent())
        .expect("a volume mounted at the config's directory");
    let volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    let cm_name = str_at(volume, "/configMap/name");
    let cm = k8s_kind(&docs, "ConfigMap");
    assert_eq!(str_at(cm, "/metadata/name"), cm_name);
    let file_name = cfg.file_name().unwrap().to_str().unwrap();
    assert!(
        cm["data"][file_name].is_string(),
        "ConfigMap {cm_name} has no {file_name}"
    );
}

/// Writes the ConfigMap's nearby.toml to a temporary file.
fn configmap_toml(dir: &Path) -> PathBuf {
    let docs = k8s_docs();
    let cm = k8s_kind(&docs, "ConfigMap");
    let path = dir.join("nearby.toml");
    std::fs::write(&path, str_at(cm, "/data/nearby.toml")).expect("write nearby.toml");
    path
}

#[test]
fn kubernetes_configmap_passes_check_config_alone_and_with_the_pod_env() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = configmap_toml(dir.path());
    let t = effective("ConfigMap nearby.toml", &check_config(Some(&path), &[]));
    // Loopback for the app in the same pod; the admin reachable by the
    // kubelet and Prometheus on the port the probes and annotations use.
    assert_eq!(key(&t, "listen"), Some("127.0.0.1:6379"));
    assert_eq!(key(&t, "admin"), Some("0.0.0.0:9121"));

    // With the container's env: literal values as they are, secrets as
    // stand-ins. The effective config never shows the password.
    let docs = k8s_docs();
    let c = nearby_container(&k8s_kind(&docs, "Deployment")["spec"]["template"]["spec"]);
    let mut env: Vec<(String, String)> = Vec::new();
    for e in c["env"].as_array().into_iter().flatten() {
        let name = str_at(e, "/name").to_string();
        let value = match e["value"].as_str() {
            Some(v) => v.to_string(),
            None => {
                assert!(
                    e.pointer("/valueFrom/secretKeyRef").is_some(),
                    "{name}: value or secretKeyRef"
                );
                fake_secret(&name).to_string()
            }
        };
        env.push((name, value));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = check_config(Some(&path), &env);
    let t = effective("ConfigMap nearby.toml + pod env", &out);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("s3cr3t-pw"),
        "check-config printed a password"
    );
    if env.iter().any(|(k, _)| *k == "NEARBY_REPLICAS") {
        let replicas = t.get("replica").and_then(toml::Value::as_array);
        assert_eq!(replicas.map(Vec::len), Some(2), "replicas from the Secret");
    }
}

// ---------------------------------------------------------------------------
// Fly.io

fn fly_toml() -> toml::Table {
    toml::from_str(&read(&deploy("fly/fly.toml"))).expect("fly.toml")
}

#[test]
fn fly_env_with_secrets_passes_check_config_and_region_is_fly_region() {
    let fly = fly_toml();
    let env_table = fly
        .get("env")
        .and_then(toml::Value::as_table)
        .expect("[env]");
    let mut env: Vec<(&str, &str)> = env_table
        .iter()
        .filter(|(k, _)| k.starts_with("NEARBY_"))
        .map(|(k, v)| (k.as_str(), v.as_str().expect("[env] values are strings")))
        .collect();
    assert!(
        !env.iter().any(|(k, _)| *k == "NEARBY_REGION"),
        "the region must come from FLY_REGION"
    );
    env.push(("NEARBY_PRIMARY", fake_secret("NEARBY_PRIMARY")));
    env.push(("NEARBY_REPLICAS", fake_secret("NEARBY_REPLICAS")));
    env.push(("FLY_REGION", "ams"));
    let t = effective("fly.toml [env] + secrets", &check_config(None, &env));
    assert_eq!(key(&t, "region"), Some("ams"));
    assert_eq!(key(&t, "listen"), Some("127.0.0.1:6379"));
    let admin = key(&t, "admin").expect("admin");
    let admin_port: i64 = admin.rsplit(':').next().unwrap().parse().unwrap();

    // Fly's checks and metrics scraper use that port.
    let metrics = fly.get("metrics").expect("[metrics]");
    assert_eq!(metrics["port"].as_integer(), Some(admin_port));
    assert_eq!(metrics["path"].as_str(), Some("/metrics"));
    let checks = fly
        .get("checks")
        .and_then(toml::Value::as_table)
        .expect("[checks]");
    let paths: BTreeSet<&str> = checks
        .values()
        .inspect(|c| assert_eq!(c["port"].as_integer(), Some(admin_port)))
        .filter_map(|c| c["path"].as_str())
        .collect();
    assert!(paths.contains("/healthz") && paths.contains("/readyz"));
}

/// Runs `sh deploy/fly/with-nearby.sh APP...` with the real binary.
fn with_nearby(cluster: &Cluster, port: u16, admin: u16, app: &str) -> std::process::Child {
    let mut cmd = Command::new("sh");
    cmd.arg(deploy("fly/with-nearby.sh"))
        .args(["sh", "-c", app])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("NEARBY_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("NEARBY_BIN", env!("CARGO_BIN_EXE_nearby"))
        .env("NEARBY_PRIMARY", cluster.primary.url())
        .env("NEARBY_LISTEN", format!("127.0.0.1:{port}"))
        .env("NEARBY_ADMIN", format!("127.0.0.1:{admin}"))
        .env("FLY_REGION", "ams")
        .env("RUST_LOG", "warn")
        .env("PORT", port.to_string());
    cmd.spawn().expect("spawn with-nearby.sh")
}

fn wait_exit(child: &mut std::process::Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("with-nearby.sh did not exit within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[test]
fn fly_supervisor_runs_the_app_through_the_sidecar_and_passes_its_exit_status() {
    let cluster = Cluster::start(0);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("app.out");
    let (port, admin) = (free_port(), free_port());
    // The app: a write and a read through nearby, then exit 7.
    let app = format!(
        "redis-cli -p \"$PORT\" set deploy-key v1 >/dev/null && redis-cli -p \"$PORT\" get deploy-key > '{}'; exit 7",
        out.display()
    );
    let mut child = with_nearby(&cluster, port, admin, &app);
    let status = wait_exit(&mut child, Duration::from_secs(40));
    assert_eq!(status.code(), Some(7), "the app's exit status");
    assert_eq!(read(&out).trim(), "v1", "the app's GET through nearby");
    assert_eq!(cluster.primary.cli(&["get", "deploy-key"]), "v1");
    assert!(
        wait_until(Duration::from_secs(5), || !listening(port)),
        "nearby still listening after the app exited"
    );
}

#[test]
fn fly_supervisor_stops_app_and_sidecar_on_sigterm() {
    let cluster = Cluster::start(0);
    let (port, admin) = (free_port(), free_port());
    let mut child = with_nearby(&cluster, port, admin, "exec sleep 60");
    assert!(
        wait_until(Duration::from_secs(20), || listening(port)),
        "nearby did not start"
    );
    // Let the script get past its start-up wait and start the app.
    thread::sleep(Duration::from_millis(1500));
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(143), "128 + SIGTERM");
    assert!(
        wait_until(Duration::from_secs(5), || !listening(port)),
        "nearby still listening after SIGTERM"
    );
}

// ---------------------------------------------------------------------------
// systemd and the Dockerfile (plain-text checks)

#[test]
fn systemd_unit_is_hardened_and_runs_nearby() {
    let text = read(&deploy("systemd/nearby.service"));
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            section = line.to_string();
            continue;
        }
        let (k, v) = line.split_once('=').expect("Key=Value");
        keys.entry(format!("{section}{k}"))
            .or_default()
            .push(v.to_string());
    }
    let one = |k: &str| -> &str {
        keys.get(&format!("[Service]{k}"))
            .and_then(|v| v.last())
            .map(String::as_str)
            .unwrap_or_else(|| panic!("[Service] {k} missing"))
    };
    assert!(one("ExecStart").starts_with("/usr/local/bin/nearby run"));
    for (k, v) in [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("CapabilityBoundingSet", ""),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
    ] {
        assert_eq!(one(k), v, "[Service] {k}");
    }
    assert!(one("RestrictAddressFamilies").contains("AF_INET"));
    assert!(keys.contains_key("[Install]WantedBy"));
}

#[test]
fn dockerfile_is_multi_stage_locked_and_non_root() {
    let text = read(&deploy("Dockerfile"));
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let froms: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("FROM "))
        .collect();
    assert!(froms.len() >= 2, "multi-stage");
    assert!(text.contains("cargo build --release --locked"));
    let runtime = &lines[*froms.last().unwrap()..];
    let user = runtime
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER in the runtime stage");
    let user = user.split(':').next().unwrap().trim();
    assert!(
        user != "root" && user != "0",
        "runtime runs as root: {user}"
    );
    assert!(
        runtime
            .iter()
            .any(|l| l.contains("NEARBY_ADMIN=0.0.0.0:9121")),
        "admin reachable from outside the container"
    );
}

// ---------------------------------------------------------------------------
// Metrics named in the alert rules and the dashboard

/// A metric named in a PromQL expression, with the label matchers that
/// follow it: `(label, op, value)`.
#[derive(Debug)]
struct MetricRef {
    name: String,
    matchers: Vec<(String, String, String)>,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Reads a quoted string starting at `chars[*i]` (the quote); returns its
/// contents, unescaped, and leaves `*i` after the closing quote.
fn read_string(chars: &[char], i: &mut usize) -> String {
    let quote = chars[*i];
    *i += 1;
    let mut s = String::new();
    while *i < chars.len() && chars[*i] != quote {
        if chars[*i] == '\\' && quote != '`' && *i + 1 < chars.len() {
            *i += 1;
        }
        s.push(chars[*i]);
        *i += 1;
    }
    *i += 1;
    s
}

fn skip_ws(chars: &[char], i: &mut usize) {
    while *i < chars.len() && chars[*i].is_whitespace() {
        *i += 1;
    }
}

/// The `nearby_*` metrics an expression names, without a regex: identifiers
/// outside string literals, and the matchers in braces right after one.
fn metric_refs(expr: &str) -> Vec<MetricRef> {
    let chars: Vec<char> = expr.chars().collect();
    let mut refs = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            read_string(&chars, &mut i);
        } else if is_ident_start(c) {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            let name: String = chars[start..i].iter().collect();
            if !name.starts_with("nearby_") {
                continue;
            }
            let mut matchers = Vec::new();
            let mut j = i;
            skip_ws(&chars, &mut j);
            if j < chars.len() && chars[j] == '{' {
                j += 1;
                loop {
                    skip_ws(&chars, &mut j);
                    match chars.get(j) {
                        None => panic!("unclosed selector in {expr}"),
                        Some('}') => {
                            j += 1;
                            break;
                        }
                        Some(',') => j += 1,
                        Some(_) => {
                            let ls = j;
                            while j < chars.len() && is_ident(chars[j]) {
                                j += 1;
                            }
                            let label: String = chars[ls..j].iter().collect();
                            assert!(!label.is_empty(), "bad matcher in {expr}");
                            skip_ws(&chars, &mut j);
                            let os = j;
                            while j < chars.len() && "=!~".contains(chars[j]) {
                                j += 1;
                            }
                            let op: String = chars[os..j].iter().collect();
                            skip_ws(&chars, &mut j);
                            assert!(
                                matches!(chars.get(j), Some('"' | '\'' | '`')),
                                "matcher value must be quoted in {expr}"
                            );
                            let value = read_string(&chars, &mut j);
                            matchers.push((label, op, value));
                        }
                    }
                }
                i = j;
            }
            refs.push(MetricRef { name, matchers });
        } else {
            i += 1;
        }
    }
    refs
}

/// `/metrics`: `# TYPE` lines and the label sets of every sample, by series
/// name (`x_bucket`, `x_sum` and `x_count` are their own series names).
#[derive(Default, Debug)]
struct Exposition {
    types: BTreeMap<String, String>,
    samples: BTreeMap<String, Vec<BTreeMap<String, String>>>,
}

fn parse_exposition(text: &str) -> Exposition {
    let mut e = Exposition::default();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(n), Some(t)) = (parts.next(), parts.next()) {
                e.types.insert(n.to_string(), t.to_string());
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() && is_ident(chars[i]) {
            i += 1;
        }
        let name: String = chars[..i].iter().collect();
        let mut labels = BTreeMap::new();
        if chars.get(i) == Some(&'{') {
            i += 1;
            loop {
                skip_ws(&chars, &mut i);
                match chars.get(i) {
                    None | Some('}') => break,
                    Some(',') => i += 1,
                    Some(_) => {
                        let ls = i;
                        while i < chars.len() && is_ident(chars[i]) {
                            i += 1;
                        }
                        let label: String = chars[ls..i].iter().collect();
                        assert_eq!(chars.get(i), Some(&'='), "bad sample line {line}");
                        i += 1;
                        let value = read_string(&chars, &mut i);
                        labels.insert(label, value);
                    }
                }
            }
        }
        e.samples.entry(name).or_default().push(labels);
    }
    e
}

/// Labels Prometheus attaches to every scraped series.
const TARGET_LABELS: &[&str] = &["instance", "job"];

/// Problems with one reference against the exposition (empty: fine).
fn check_ref(r: &MetricRef, e: &Exposition) -> Vec<String> {
    let Some(samples) = e.samples.get(&r.name) else {
        // A histogram's base name has a TYPE line but no samples of its own.
        return if e.types.contains_key(&r.name) {
            Vec::new()
        } else {
            vec![format!("{} is not in /metrics", r.name)]
        };
    };
    let mut problems = Vec::new();
    for (label, op, value) in &r.matchers {
        if TARGET_LABELS.contains(&label.as_str()) {
            continue;
        }
        if !samples.iter().any(|s| s.contains_key(label)) {
            problems.push(format!("{} has no label {label}", r.name));
            continue;
        }
        let has = |v: &str| {
            samples
                .iter()
                .any(|s| s.get(label).map(String::as_str) == Some(v))
        };
        let literal = |v: &str| {
            !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        let wanted: Vec<&str> = match op.as_str() {
            "=" if literal(value) => vec![value.as_str()],
            "=~" if value.split('|').all(literal) => value.split('|').collect(),
            _ => Vec::new(),
        };
        for v in wanted {
            if !has(v) {
                problems.push(format!("no {}{{{label}=\"{v}\"}} in /metrics", r.name));
            }
        }
    }
    problems
}

/// Every `expr` of the alert rules: `(alert name, expr)`.
fn alert_exprs() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for doc in yaml_docs(&deploy("prometheus/alerts.yml")) {
        for group in doc["groups"].as_array().expect("groups") {
            for rule in group["rules"].as_array().expect("rules") {
                let name = rule["alert"]
                    .as_str()
                    .or(rule["record"].as_str())
                    .expect("alert or record name");
                out.push((name.to_string(), str_at(rule, "/expr").to_string()));
            }
        }
    }
    out
}

/// Every query of the dashboard: panel targets (rows included) and
/// template variables: `(where, expr)`.
fn dashboard_exprs() -> Vec<(String, String)> {
    let dash = json_file(&deploy("grafana/nearby-dashboard.json"));
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = dash["panels"].as_array().expect("panels").iter().collect();
    while let Some(p) = stack.pop() {
        stack.extend(p["panels"].as_array().into_iter().flatten());
        for t in p["targets"].as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?");
            out.push((format!("panel {title:?}"), str_at(t, "/expr").to_string()));
        }
    }
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if let Some(q) = v["query"]["query"].as_str().or(v["query"].as_str()) {
            out.push((format!("variable {}", v["name"]), q.to_string()));
        }
    }
    out
}

#[test]
fn dashboard_is_well_formed() {
    let dash = json_file(&deploy("grafana/nearby-dashboard.json"));
    assert!(dash["title"].is_string() && dash["uid"].is_string());
    let vars: BTreeSet<&str> = dash["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    let mut ids = BTreeSet::new();
    let mut queries = 0;
    for p in dash["panels"].as_array().expect("panels") {
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate id"
        );
        for k in ["h", "w", "x", "y"] {
            assert!(p["gridPos"][k].is_u64(), "gridPos.{k} of {}", p["title"]);
        }
        if let Some(uid) = p["datasource"]["uid"].as_str() {
            let var = uid.trim_start_matches("${").trim_end_matches('}');
            assert!(vars.contains(var), "datasource {uid} is not a variable");
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            assert!(!str_at(t, "/expr").trim().is_empty());
            queries += 1;
        }
    }
    assert!(queries >= 10, "a dashboard of {queries} queries");
}

#[test]
fn every_metric_in_alerts_and_dashboard_exists_in_a_running_sidecar() {
    let exprs: Vec<(String, String)> = alert_exprs().into_iter().chain(dashboard_exprs()).collect();
    let refs: Vec<(String, MetricRef)> = exprs
        .iter()
        .flat_map(|(w, e)| metric_refs(e).into_iter().map(move |r| (w.clone(), r)))
        .collect();
    assert!(refs.len() >= 20, "too few metric references: {refs:?}");

    // Every metric of the interface contract is watched somewhere.
    let named: BTreeSet<String> = refs
        .iter()
        .map(|(_, r)| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| r.name.strip_suffix(s))
                .filter(|base| *base == "nearby_request_duration_seconds")
                .unwrap_or(&r.name)
                .to_string()
        })
        .collect();
    for m in [
        "nearby_requests_total",
        "nearby_request_duration_seconds",
        "nearby_upstream_rtt_seconds",
        "nearby_upstream_healthy",
        "nearby_upstream_replication_lag_seconds",
        "nearby_read_fallbacks_total",
        "nearby_errors_total",
        "nearby_client_connections",
        "nearby_commands_total",
        "nearby_usage_commands_today",
        "nearby_usage_free_commands_per_day",
        "nearby_probes_total",
    ] {
        assert!(
            named.contains(m),
            "{m} is in neither the alerts nor the dashboard"
        );
    }

    // A real sidecar with traffic: a write and a read, so request series
    // (and histogram samples) exist.
    let cluster = Cluster::start(1);
    let nearby = Nearby::start_for(&cluster, &[]);
    assert!(nearby.wait_ready(Duration::from_secs(10)), "not ready");
    let mut c = RawConn::connect(nearby.port);
    assert_eq!(c.cmd(&["SET", "deploy:k", "v"]), b"+OK\r\n");
    cluster.wait_replicated();
    assert_eq!(c.cmd(&["GET", "deploy:k"]), b"$1\r\nv\r\n");

    // Probes fill in RTT and lag within a few seconds.
    let mut problems = Vec::new();
    let mut text = String::new();
    let ok = wait_until(Duration::from_secs(10), || {
        text = nearby.metrics();
        let e = parse_exposition(&text);
        problems = refs
            .iter()
            .flat_map(|(w, r)| {
                check_ref(r, &e)
                    .into_iter()
                    .map(move |p| format!("{w}: {p}"))
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        problems.is_empty()
    });
    assert!(
        ok,
        "metrics queried but missing:\n  {}\n/metrics:\n{text}",
        problems.join("\n  ")
    );
}

/// Where `promtool` is installed (Debian's `prometheus` package), the rules
/// must pass it too. (Debian's build lacks Kubernetes discovery, so
/// `promtool check config` would reject the `kubernetes_sd_configs` job.)
#[test]
fn alert_rules_pass_promtool_when_installed() {
    let out = match Command::new("promtool")
        .args(["check", "rules"])
        .arg(deploy("prometheus/alerts.yml"))
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => out,
        Err(_) => {
            eprintln!("promtool not installed: rule syntax not checked by promtool");
            return;
        }
    };
    assert!(
        out.status.success(),
        "promtool check rules:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn tokenizer_finds_metrics_and_matchers_outside_strings() {
    let refs = metric_refs(
        r#"sum by (le) (rate(nearby_request_duration_seconds_bucket{kind="read", instance=~"$instance"}[5m])) / on() nearby_x{a!='nearby_in_string'} + label_values(nearby_y, instance)"#,
    );
    let names: Vec<&str> = refs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "nearby_request_duration_seconds_bucket",
            "nearby_x",
            "nearby_y"
        ]
    );
    assert_eq!(
        refs[0].matchers,
        [
            ("kind".into(), "=".into(), "read".into()),
            ("instance".into(), "=~".into(), "$instance".into())
        ]
    );
    assert_eq!(
        refs[1].matchers,
        [("a".into(), "!=".into(), "nearby_in_string".into())]
    );
    let e = parse_exposition(
        "# TYPE nearby_x counter\nnearby_x{a=\"1\",b=\"q\\\"x\"} 3\nnearby_h_bucket{le=\"+Inf\"} 1\n",
    );
    assert_eq!(e.samples["nearby_x"][0]["b"], "q\"x");
    assert!(e.samples.contains_key("nearby_h_bucket"));
}
