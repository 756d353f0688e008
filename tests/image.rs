//! The container image. `deploy/image/build` assembles it with buildah (no daemon, no base
//! image); the test builds it from the binary under test (`CRBRIDGE_BIN`, else the debug
//! binary cargo built for this test: the same layout as a release image, only a bigger
//! binary), checks its config against `deploy/Dockerfile`'s runtime stage, looks through its
//! filesystem, and runs it with `buildah run` (host network, config and kubeconfig mounted at
//! /etc/crbridge as a user would) against the local kube-apiserver and NATS until an event
//! arrives.
//!
//! `deploy/Dockerfile` (for people with Docker) cannot be built here (no registry), so the
//! pure tests check it builds the same binary and installs what that binary links.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kube::api::DynamicObject;
use kube::Api;
use serde_json::{json, Value};

const DOCKERFILE: &str = include_str!("../deploy/Dockerfile");
const BUILD_SCRIPT: &str = include_str!("../deploy/image/build");
const README: &str = include_str!("../README.md");
const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// How a release binary is built: the Dockerfile's build stage, `deploy/image/build`'s usage
/// and the README all say exactly this (default features).
const RELEASE_BUILD: &str = "cargo build --release --locked --bin crbridge";

/// Packages every `debian:bookworm-slim` holds (Essential / required): their libraries need
/// no `apt-get install` in the Dockerfile.
const BASE_PACKAGES: &[&str] = &["libc6", "libgcc-s1"];

/// One Dockerfile instruction: keyword and arguments, continuation lines joined.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

/// The Dockerfile's stages, each a list of instructions (the `FROM` first).
fn stages() -> Vec<Vec<Instruction>> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in DOCKERFILE.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    for l in logical.iter().filter(|l| !l.is_empty()) {
        let (keyword, args) = l.split_once(' ').unwrap_or((l, ""));
        let i = Instruction {
            keyword: keyword.to_uppercase(),
            args: args.split_whitespace().collect::<Vec<_>>().join(" "),
        };
        if i.keyword == "FROM" {
            stages.push(Vec::new());
        }
        stages
            .last_mut()
            .expect("deploy/Dockerfile starts with FROM")
            .push(i);
    }
    stages
}

/// The single instruction `keyword` of a stage.
fn single<'a>(stage: &'a [Instruction], keyword: &str) -> &'a str {
    let found: Vec<_> = stage.iter().filter(|i| i.keyword == keyword).collect();
    assert_eq!(found.len(), 1, "one {keyword} in the stage: {found:?}");
    &found[0].args
}

/// The runtime stage's settings, as the image config records them.
struct Runtime {
    user: String,
    workdir: String,
    volumes: Vec<String>,
    ports: Vec<String>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    packages: BTreeSet<String>,
}

fn runtime() -> Runtime {
    let stages = stages();
    let stage = stages.last().expect("a runtime stage");
    let list = |keyword: &str| -> Vec<String> {
        serde_json::from_str(single(stage, keyword))
            .unwrap_or_else(|e| panic!("{keyword} is not an exec-form JSON list: {e}"))
    };
    let packages = stage
        .iter()
        .filter(|i| i.keyword == "RUN")
        .filter_map(|i| i.args.split_once("--no-install-recommends "))
        .flat_map(|(_, rest)| {
            rest.split("&&")
                .next()
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    Runtime {
        user: single(stage, "USER").to_string(),
        workdir: single(stage, "WORKDIR").to_string(),
        volumes: list("VOLUME"),
        ports: single(stage, "EXPOSE")
            .split_whitespace()
            .map(|p| {
                if p.contains('/') {
                    p.to_string()
                } else {
                    format!("{p}/tcp")
                }
            })
            .collect(),
        entrypoint: list("ENTRYPOINT"),
        cmd: list("CMD"),
        packages,
    }
}

/// The binary under test: `CRBRIDGE_BIN` (e.g. a release build), else cargo's.
fn binary() -> PathBuf {
    std::env::var_os("CRBRIDGE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_crbridge")))
}

/// The shared libraries `bin` links (and the loader), as ldd resolves them.
fn linked_libraries(bin: &Path) -> Vec<String> {
    let out = Command::new("ldd").arg(bin).output().expect("running ldd");
    assert!(out.status.success(), "ldd {}", bin.display());
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!text.contains("not found"), "missing libraries:\n{text}");
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            match l.split_once(" => ") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => l.split_whitespace().next(),
            }
        })
        .filter(|p| p.starts_with('/'))
        .map(str::to_string)
        .collect()
}

/// The Debian package owning `path`, trying it as written and with merged /usr undone or
/// applied (dpkg records the path the package ships).
fn owning_package(path: &str) -> Option<String> {
    let mut candidates = vec![path.to_string()];
    if let Some(rest) = path.strip_prefix("/usr") {
        candidates.push(rest.to_string());
    } else {
        candidates.push(format!("/usr{path}"));
    }
    candidates.into_iter().find_map(|p| {
        let out = Command::new("dpkg").args(["-S", &p]).output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let pkg = text.lines().next()?.split(':').next()?.trim().to_string();
        (out.status.success() && !pkg.is_empty()).then_some(pkg)
    })
}

#[test]
fn dockerfile_builds_the_release_binary_the_image_script_documents() {
    let stages = stages();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    let builds: Vec<String> = stages[0]
        .iter()
        .filter(|i| i.keyword == "RUN")
        .filter_map(|i| i.args.find("cargo build").map(|at| &i.args[at..]))
        .map(|cmd| cmd.split("&&").next().unwrap().trim().to_string())
        .collect();
    assert_eq!(builds, [RELEASE_BUILD], "the Dockerfile's cargo invocation");
    assert!(
        BUILD_SCRIPT.contains(RELEASE_BUILD),
        "deploy/image/build documents `{RELEASE_BUILD}` for release binaries"
    );
    assert!(
        README.contains(RELEASE_BUILD),
        "the README names `{RELEASE_BUILD}`"
    );
    assert!(
        BUILD_SCRIPT.contains("target/release/crbridge"),
        "deploy/image/build defaults to the release binary"
    );
    // The binary goes where the runtime stage's ENTRYPOINT runs it.
    let rt = runtime();
    let copy = single(&stages[1], "COPY");
    assert!(
        copy.ends_with(&format!(" {}", rt.entrypoint[0])),
        "COPY {copy} puts the binary at the ENTRYPOINT {:?}",
        rt.entrypoint
    );
}

#[test]
fn dockerfile_runtime_user_and_settings() {
    let rt = runtime();
    let stages = stages();
    let run: String = stages[1]
        .iter()
        .filter(|i| i.keyword == "RUN")
        .map(|i| i.args.as_str())
        .collect::<Vec<_>>()
        .join(" && ");
    assert!(
        run.contains("groupadd --system --gid 65532 crbridge"),
        "{run}"
    );
    assert!(
        run.contains("useradd --system --uid 65532 --gid 65532"),
        "{run}"
    );
    assert!(
        run.contains("install -d -o 65532 -g 65532 -m 0750 /var/lib/crbridge /etc/crbridge"),
        "{run}"
    );
    assert_eq!(rt.user, "65532:65532");
    assert_eq!(rt.workdir, "/var/lib/crbridge");
    assert_eq!(rt.volumes, ["/var/lib/crbridge"]);
    assert_eq!(rt.ports, ["9090/tcp"]);
    assert_eq!(rt.entrypoint, ["/usr/local/bin/crbridge"]);
    assert_eq!(rt.cmd, ["run", "-c", "/etc/crbridge/crbridge.yaml"]);
}

#[test]
fn dockerfile_installs_every_library_the_binary_links() {
    if Command::new("dpkg").arg("--version").output().is_err() {
        eprintln!("skipped: dpkg is missing (not Debian): cannot map libraries to packages");
        return;
    }
    let rt = runtime();
    let bin = binary();
    let mut owners = BTreeMap::new();
    for lib in linked_libraries(&bin) {
        let pkg =
            owning_package(&lib).unwrap_or_else(|| panic!("dpkg -S knows no package owning {lib}"));
        owners.insert(lib, pkg);
    }
    assert!(owners.len() >= 5, "ldd found too little: {owners:?}");
    for (lib, pkg) in &owners {
        assert!(
            rt.packages.contains(pkg) || BASE_PACKAGES.contains(&pkg.as_str()),
            "{} links {lib} from {pkg}, which the Dockerfile's runtime stage does not install \
             (it installs {:?})",
            bin.display(),
            rt.packages
        );
    }
    // TLS needs the CA bundle; Kerberos (GSSAPI) is a plugin ldd cannot see.
    for pkg in ["ca-certificates", "libsasl2-modules-gssapi-mit"] {
        assert!(rt.packages.contains(pkg), "runtime stage installs {pkg}");
    }
    // And nothing it installs is unexplained.
    let used: BTreeSet<&str> = owners.values().map(String::as_str).collect();
    for pkg in &rt.packages {
        assert!(
            used.contains(pkg.as_str())
                || ["ca-certificates", "libsasl2-modules-gssapi-mit"].contains(&pkg.as_str()),
            "the runtime stage installs {pkg}, which the binary does not link"
        );
    }
}

/// buildah over the storage `deploy/image/build` uses.
struct Buildah {
    storage: PathBuf,
}

impl Buildah {
    fn new() -> Buildah {
        let storage = std::env::var_os("CRBRIDGE_IMAGE_STORAGE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let cache = std::env::var_os("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| {
                        PathBuf::from(std::env::var("HOME").unwrap()).join(".cache")
                    });
                cache.join("crbridge/containers")
            });
        Buildah { storage }
    }

    fn command(&self) -> Command {
        let mut c = Command::new("buildah");
        c.env("CONTAINERS_STORAGE_CONF", self.storage.join("storage.conf"))
            .env("BUILDAH_ISOLATION", "chroot");
        c
    }

    /// Runs `buildah args`; its stdout, or panics with its stderr.
    fn run(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().expect("running buildah");
        assert!(
            out.status.success(),
            "buildah {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

/// Removes the test's containers and image, whatever happens.
struct Cleanup<'a> {
    buildah: &'a Buildah,
    image: String,
    containers: Vec<String>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = self.buildah.command().args(["rm", c]).output();
        }
        let _ = self.buildah.command().args(["rmi", &self.image]).output();
    }
}

/// Prints crbridge's log from the container when the test fails.
struct LogOnPanic(PathBuf);

impl Drop for LogOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "crbridge in the image logged:\n{}",
                std::fs::read_to_string(&self.0).unwrap_or_default()
            );
        }
    }
}

/// Every path under `root` that other users may write (sticky directories aside) or that is
/// setuid/setgid.
fn loose_permissions(root: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(root).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.path().symlink_metadata().unwrap();
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode();
        let sticky_dir = meta.is_dir() && mode & 0o1000 != 0;
        if (mode & 0o002 != 0 && !sticky_dir) || mode & 0o6000 != 0 {
            out.push(format!("{} {:o}", entry.path().display(), mode));
        }
        if meta.is_dir() {
            loose_permissions(&entry.path(), out);
        }
    }
}

/// The pid of a descendant of `ancestor` whose executable path (argv\[0\]) is `exe`.
fn descendant_running(ancestor: u32, exe: &str) -> Option<u32> {
    let mut parent = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").ok()? {
        let Ok(pid) = entry.ok()?.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // The parent pid is the second field after the parenthesised command name.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parent.insert(pid, ppid);
        }
    }
    let descends = |mut pid: u32| {
        while let Some(&p) = parent.get(&pid) {
            if p == ancestor {
                return true;
            }
            pid = p;
        }
        false
    };
    parent.keys().copied().find(|&pid| {
        descends(pid)
            && std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).next() == Some(exe.as_bytes()))
    })
}

#[tokio::test]
async fn image_of_the_test_binary_builds_and_runs_against_the_local_servers() {
    if Command::new("buildah").arg("--version").output().is_err() {
        eprintln!("skipped: buildah is missing (deploy/local/up installs it)");
        return;
    }
    let buildah = Buildah::new();
    let name = support::unique("test");
    let tag = format!("localhost/crbridge:{name}");
    let mut cleanup = Cleanup {
        buildah: &buildah,
        image: tag.clone(),
        containers: Vec::new(),
    };

    // Build.
    let started = Instant::now();
    let out = Command::new(format!("{REPO}/deploy/image/build"))
        .args(["--tag", &tag])
        .arg(binary())
        .env("CRBRIDGE_IMAGE_STORAGE", &buildah.storage)
        .stderr(Stdio::inherit())
        .output()
        .expect("running deploy/image/build");
    assert!(out.status.success(), "deploy/image/build failed");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(id.len(), 64, "image id on stdout: {id:?}");
    eprintln!("image built in {:?}", started.elapsed());

    // The config is the Dockerfile's runtime stage.
    let inspect: Value =
        serde_json::from_str(&buildah.run(&["inspect", "--type", "image", &tag])).unwrap();
    let config = &inspect["OCIv1"]["config"];
    let rt = runtime();
    let keys = |v: &Value| -> Vec<String> {
        v.as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(config["User"], rt.user.as_str());
    assert_eq!(config["WorkingDir"], rt.workdir.as_str());
    assert_eq!(config["Entrypoint"], json!(rt.entrypoint));
    assert_eq!(config["Cmd"], json!(rt.cmd));
    assert_eq!(keys(&config["Volumes"]), rt.volumes);
    assert_eq!(keys(&config["ExposedPorts"]), rt.ports);
    let labels = &config["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        labels["org.opencontainers.image.source"],
        env!("CARGO_PKG_REPOSITORY")
    );
    assert!(
        labels["org.opencontainers.image.revision"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "revision label: {labels}"
    );

    // Its filesystem.
    let ctr = buildah
        .run(&["from", "--name", &name, &tag])
        .trim()
        .to_string();
    cleanup.containers.push(ctr.clone());
    let root = PathBuf::from(buildah.run(&["mount", &ctr]).trim());
    let mut loose = Vec::new();
    loose_permissions(&root, &mut loose);
    assert!(loose.is_empty(), "writable by others or set-id: {loose:?}");
    assert!(
        !root.join("bin/sh").exists(),
        "no shell in the image: only crbridge and what it links"
    );
    for dir in ["var/lib/crbridge", "etc/crbridge"] {
        let meta = std::fs::metadata(root.join(dir)).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (65532, 65532, 0o750),
            "/{dir}"
        );
    }
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(
        passwd.contains("crbridge:x:65532:65532:"),
        "/etc/passwd: {passwd}"
    );

    // `crbridge --version` runs inside: no library missing.
    let mut version = vec!["run", "--network", "host", &ctr, "--"];
    version.extend(rt.entrypoint.iter().map(String::as_str));
    version.push("--version");
    assert_eq!(
        buildah.run(&version),
        format!("crbridge {}\n", env!("CARGO_PKG_VERSION"))
    );

    // Run it as a user would: the image's entrypoint and command, config and kubeconfig
    // mounted at /etc/crbridge, state in the image's volume.
    let client = support::kube_client().await;
    let crd = support::crd(&client, "Widget").await;
    let ns = support::namespace(&client, "image").await;
    let api: Api<DynamicObject> = Api::namespaced_with(client, &ns, &crd.resource);
    let stream = support::unique("IMG").to_uppercase().replace('-', "_");
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    std::fs::copy(support::env("KUBECONFIG"), etc.join("kubeconfig")).unwrap();
    std::fs::write(
        etc.join("crbridge.yaml"),
        format!(
            r#"cluster: test
kubeconfig: /etc/crbridge/kubeconfig
state:
  path: /var/lib/crbridge
http:
  listen: 127.0.0.1:0
admin:
  listen: 127.0.0.1:0
watches:
  - name: widgets
    group: {group}
    version: {version}
    kind: {kind}
    namespaces: [{ns}]
    sinks: [nats]
sinks:
  nats:
    type: nats
    url: {url}
    stream: {stream}
    subject: "{stream}.{{namespace}}.{{name}}"
"#,
            group = crd.group,
            version = crd.version,
            kind = crd.kind,
            url = support::env("CRBRIDGE_NATS_URL"),
        ),
    )
    .unwrap();
    // Readable by the image's user (65532), as a ConfigMap mount would be.
    for (path, mode) in [
        (dir.path().to_path_buf(), 0o755),
        (etc.clone(), 0o755),
        (etc.join("kubeconfig"), 0o644),
        (etc.join("crbridge.yaml"), 0o644),
    ] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let log = dir.path().join("crbridge.log");
    let _show_log = LogOnPanic(log.clone());
    let mount = format!("{}:/etc/crbridge:ro", etc.display());
    let mut run = buildah.command();
    run.args(["run", "--network", "host", "--volume", &mount, &ctr, "--"])
        .args(&rt.entrypoint)
        .args(&rt.cmd)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.path().join("stdout")).unwrap())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut child = run.spawn().expect("buildah run");

    let mut reader = support::nats::Reader::open(&stream).await;
    support::create_widget(&api, &crd, "w1", json!({"size": 1})).await;
    let got = reader.take(1, Duration::from_secs(60)).await;
    assert_eq!(got[0].attr("type"), "io.crbridge.resource.created");
    assert_eq!(got[0].attr("subject"), format!("{ns}/w1"));

    // The process is crbridge itself, as the image's user, in the image's root.
    let pid = descendant_running(child.id(), &rt.entrypoint[0])
        .unwrap_or_else(|| panic!("no {} process under buildah run", rt.entrypoint[0]));
    let status_text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let ids = |key: &str| -> Vec<String> {
        status_text
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    assert!(
        ids("Uid:").iter().chain(&ids("Gid:")).all(|i| i == "65532"),
        "crbridge runs as 65532:65532: {status_text}"
    );
    // Paths inside its root, seen through /proc (it runs in its own mount namespace).
    let inside =
        |path: &str| PathBuf::from(format!("/proc/{pid}/root")).join(path.trim_start_matches('/'));
    let same_file = |a: &Path, b: &Path| {
        let (a, b) = (std::fs::metadata(a).unwrap(), std::fs::metadata(b).unwrap());
        (a.dev(), a.ino()) == (b.dev(), b.ino())
    };
    assert!(
        same_file(Path::new(&format!("/proc/{pid}/cwd")), &inside(&rt.workdir)),
        "crbridge's working directory is {}",
        rt.workdir
    );

    // Its state lands in the volume, owned by that user.
    let state = inside(&rt.volumes[0]);
    let files: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        files.iter().any(|f| f.ends_with("admin.token")),
        "state in {}: {files:?}",
        state.display()
    );
    for f in files {
        let meta = f.symlink_metadata().unwrap();
        assert_eq!((meta.uid(), meta.gid()), (65532, 65532), "{}", f.display());
    }

    // SIGTERM, as a container runtime stops its process 1 (buildah's chroot isolation
    // answers a SIGTERM of its own with SIGKILL): crbridge drains and exits cleanly.
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = support::eventually(
        "crbridge in the image to exit after SIGTERM",
        Duration::from_secs(30),
        || {
            let s = child.try_wait().unwrap();
            async move { s }
        },
    )
    .await;
    assert!(status.success(), "exit status {status}");

    drop(cleanup);
}
