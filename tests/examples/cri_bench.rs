//! Pod start through Kubernetes' way in: RunPodSandbox to the first ExecSync,
//! through containerd's CRI plugin with a real CRI client (runtime.v1 over
//! gRPC, the tests' harness in `tests/tests/shim_support`), per runtime
//! handler:
//!
//! - `sandvm`: the shim's shipped config (`configs/sandvm-containerd.toml`),
//!   each pod's VM booted cold;
//! - `sandvm-template`: the shipped template config
//!   (`configs/sandvm-containerd-template.toml`, the 9p guest), its template
//!   made first with `sandvm --state-dir <shim's state root> template create`
//!   into `/dev/shm/svt-tmpl-cri-bench-<pid>`: each pod's VM is a clone.
//!
//! Both under TCG (as the tests: `accelerator = "auto"` trusts a probe that
//! runs under this host's nested KVM, where the stock guest kernel stops).
//!
//! One private containerd (tests/src/containerd) with its CRI plugin; the
//! test and pause images imported into `k8s.io`. A pod is a host-network pod
//! (no CNI) of one container (`sleep 3600`). Timed from just before
//! RunPodSandbox, through CreateContainer and StartContainer, to the answer of
//! the first ExecSync of `true` (exit 0 checked), with each step's share. The
//! pod is then stopped and removed and the VM waited out, untimed. One
//! untimed warm-up pod per handler, then `--rounds` rounds, the handlers
//! interleaved and their order turned each round. Each pod's slice of
//! containerd's log must show the origin its handler promises
//! (`origin=cold`, `origin=template`): anything else is a problem, reported.
//! After the rounds nothing may be left (the tests' leak check).
//!
//! Prints medians, the ratio template / cold and per-round values as JSON;
//! writes target/bench/cri.json.
//!
//! Usage: cargo run --release -p sandvm-tests --example cri_bench --
//!        [--rounds 5] [--bin-dir target/release]

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/shim_support/mod.rs"]
mod shim_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sandvm_tests::containerd::{Containerd, CriRuntime, Options};
use sandvm_tests::cri::v1::{self, NamespaceMode};
use sandvm_tests::oci::{PAUSE_IMAGE, TEST_IMAGE, pause_image_archive, test_image_archive};
use sandvm_tests::{TemplateDir, eventually, repo};
use serde_json::json;
use shim_support::cri::{Cri, K8S_NS, TempDir, container_config, pod_config};
use shim_support::{SETTLE, ShimEnv, config_tcg, shim_config_tcg, tail};

const COLD: &str = "sandvm";
const TEMPLATE: &str = "sandvm-template";
const SHIPPED_TEMPLATE_PATH: &str = "template_path = \"/dev/shm/sandvm-containerd-template\"";

struct Args {
    rounds: usize,
    bin_dir: PathBuf,
}

fn args() -> Args {
    // target/<profile>/examples/cri_bench -> target/<profile>
    let exe = std::env::current_exe().unwrap();
    let mut a = Args {
        rounds: 5,
        bin_dir: exe.parent().and_then(Path::parent).unwrap().to_path_buf(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{k} needs a value")))
        };
        match k.as_str() {
            "--rounds" => a.rounds = v().parse().unwrap_or_else(|_| usage("--rounds N")),
            "--bin-dir" => a.bin_dir = PathBuf::from(v()),
            "-h" | "--help" => usage(""),
            _ => usage(&format!("unknown argument {k}")),
        }
    }
    a.bin_dir = std::fs::canonicalize(&a.bin_dir).unwrap_or(a.bin_dir);
    for b in ["sandvm", "containerd-shim-sandvm-v2"] {
        if !a.bin_dir.join(b).exists() {
            usage(&format!(
                "{} is missing: run `make build`",
                a.bin_dir.join(b).display()
            ));
        }
    }
    a
}

fn usage(why: &str) -> ! {
    eprintln!("{why}\nusage: cri_bench [--rounds 5] [--bin-dir target/release]");
    std::process::exit(2)
}

/// One pod's times, ms: RunPodSandbox, CreateContainer + StartContainer,
/// the first ExecSync, and the whole.
#[derive(Debug, Clone, Copy)]
struct Sample {
    run_pod: f64,
    container: f64,
    exec: f64,
    total: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The last origin the shim logged in `text`: `origin=x`, `origin="x"`
/// or `"origin":"x"`.
fn origin(text: &str) -> String {
    let mut last = "?".to_string();
    for part in text.split("origin").skip(1) {
        let word: String = part
            .trim_start_matches(['\\', '"', '=', ':'])
            .chars()
            .take_while(char::is_ascii_alphabetic)
            .collect();
        if ["cold", "template", "cache"].contains(&word.as_str()) {
            last = word;
        }
    }
    last
}

struct Bench<'a> {
    e: &'a ShimEnv,
    cri: Cri<'a>,
    log_dir: PathBuf,
    n: usize,
    problems: Vec<String>,
    origins: BTreeMap<&'static str, BTreeMap<String, usize>>,
}

impl Bench<'_> {
    /// One pod of `handler`: timed to the first ExecSync, then stopped and
    /// removed (untimed), its VM waited out.
    fn pod(&mut self, handler: &'static str) -> Sample {
        self.n += 1;
        let name = format!("p{}", self.n);
        let pod = pod_config(
            &name,
            &format!("cri-bench-{name}"),
            &self.log_dir.to_string_lossy(),
            NamespaceMode::Node,
        );
        let at = self.e.cd.log().len();
        let rs = || self.cri.rs();

        let t0 = Instant::now();
        let req = v1::RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: handler.into(),
        };
        let pod_id = self
            .cri
            .call("RunPodSandbox", rs().run_pod_sandbox(req))
            .pod_sandbox_id;
        let t1 = Instant::now();
        let req = v1::CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(container_config(
                "c",
                &["sleep", "3600"],
                NamespaceMode::Node,
            )),
            sandbox_config: Some(pod),
        };
        let cid = self
            .cri
            .call("CreateContainer", rs().create_container(req))
            .container_id;
        let req = v1::StartContainerRequest {
            container_id: cid.clone(),
        };
        self.cri.call("StartContainer", rs().start_container(req));
        let t2 = Instant::now();
        let (code, out, err) = self.cri.exec_sync(&cid, &["true"]);
        let t3 = Instant::now();
        assert_eq!(
            (code, out.as_str(), err.as_str()),
            (0, "", ""),
            "ExecSync true in {name} ({handler})"
        );

        let req = v1::StopContainerRequest {
            container_id: cid.clone(),
            timeout: 0,
        };
        self.cri.call("StopContainer", rs().stop_container(req));
        let req = v1::RemoveContainerRequest { container_id: cid };
        self.cri.call("RemoveContainer", rs().remove_container(req));
        let req = v1::StopPodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        };
        self.cri.call("StopPodSandbox", rs().stop_pod_sandbox(req));
        let req = v1::RemovePodSandboxRequest {
            pod_sandbox_id: pod_id,
        };
        self.cri
            .call("RemovePodSandbox", rs().remove_pod_sandbox(req));
        let gone = eventually(SETTLE, || {
            self.e.processes("qemu-system-x86_64").is_empty()
                && self.e.processes("containerd-shim-sandvm-v2").is_empty()
        });
        if !gone {
            self.problems.push(format!(
                "{name} ({handler}): QEMU or the shim still runs {SETTLE:?} after RemovePodSandbox"
            ));
        }

        let log = self.e.cd.log();
        let got = origin(log.get(at..).unwrap_or_default());
        let want = if handler == TEMPLATE {
            "template"
        } else {
            "cold"
        };
        *self
            .origins
            .entry(handler)
            .or_default()
            .entry(got.clone())
            .or_default() += 1;
        if got != want {
            let why: Vec<&str> = log
                .get(at..)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("booting cold") || l.contains("level=error"))
                .collect();
            let p = format!(
                "{name} ({handler}): the shim logged origin {got:?}, not {want:?}: {why:?}"
            );
            eprintln!("problem: {p}");
            self.problems.push(p);
        }
        Sample {
            run_pod: ms(t1 - t0),
            container: ms(t2 - t1),
            exec: ms(t3 - t2),
            total: ms(t3 - t0),
        }
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// `sandvm --state-dir STATE ARGS`, required to succeed.
fn sandvm(bin_dir: &Path, state: &Path, args: &[&str]) {
    let out = Command::new(bin_dir.join("sandvm"))
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .output()
        .expect("cannot run sandvm");
    assert!(
        out.status.success(),
        "sandvm {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn main() {
    let a = args();
    let conf_dir = TempDir::new("svb-cri");
    let cold = shim_config_tcg(&conf_dir.0);
    let shipped = repo().join("configs/sandvm-containerd-template.toml");
    let template = config_tcg(&conf_dir.0, &shipped, "sandvm-template-tcg.toml");
    let tp = TemplateDir::new("cri-bench");
    let text = std::fs::read_to_string(&template).unwrap();
    assert!(
        text.contains(SHIPPED_TEMPLATE_PATH),
        "{} lacks {SHIPPED_TEMPLATE_PATH}",
        shipped.display()
    );
    std::fs::write(
        &template,
        text.replace(
            SHIPPED_TEMPLATE_PATH,
            &format!("template_path = \"{}\"", tp.0.display()),
        ),
    )
    .unwrap();

    let cd = Containerd::start(Options {
        cri: true,
        cri_runtimes: vec![
            CriRuntime::sandvm(&cold),
            CriRuntime {
                handler: TEMPLATE.into(),
                ..CriRuntime::sandvm(&template)
            },
        ],
        cri_sandbox_image: Some(PAUSE_IMAGE.into()),
        path: vec![a.bin_dir.clone()],
        ..Options::default()
    });
    let e = ShimEnv {
        cd,
        img: TEST_IMAGE,
        config: cold.clone(),
    };
    e.cd.import_in(K8S_NS, &test_image_archive());
    e.cd.import_in(K8S_NS, &pause_image_archive(e.cd.dir()));
    let state = e.cd.sandvm_state_dir();
    let t0 = Instant::now();
    sandvm(
        &a.bin_dir,
        &state,
        &[
            "template",
            "create",
            "--config",
            &template.to_string_lossy(),
        ],
    );
    let template_create_ms = round1(ms(t0.elapsed()));
    eprintln!("template made in {template_create_ms:.0} ms");

    let log_dir = e.cd.dir().join("pod-logs");
    std::fs::create_dir_all(&log_dir).unwrap();
    let mut b = Bench {
        e: &e,
        cri: Cri::connect(&e),
        log_dir,
        n: 0,
        problems: Vec::new(),
        origins: BTreeMap::new(),
    };
    let handlers = [COLD, TEMPLATE];
    for h in handlers {
        b.pod(h); // warm-up: first shim start, page cache
    }
    b.origins.clear();
    let mut samples: BTreeMap<&str, Vec<Sample>> = BTreeMap::new();
    for r in 0..a.rounds {
        let mut order = handlers.to_vec();
        order.rotate_left(r % handlers.len());
        for h in order {
            let s = b.pod(h);
            samples.entry(h).or_default().push(s);
        }
        eprintln!(
            "round {}: {}",
            r + 1,
            handlers
                .iter()
                .map(|h| format!("{h} {:.0} ms", samples[h].last().unwrap().total))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    sandvm(
        &a.bin_dir,
        &state,
        &[
            "template",
            "delete",
            "--config",
            &template.to_string_lossy(),
        ],
    );
    let mut problems = std::mem::take(&mut b.problems);
    let origins = std::mem::take(&mut b.origins);
    drop(b);
    eventually(SETTLE, || e.leftovers().is_empty());
    let left = e.leftovers();
    if !left.is_empty() {
        problems.push(format!("left behind: {left:?}"));
        eprintln!("containerd's log (last lines):\n{}", tail(&e.cd.log(), 40));
    }

    let col = |h: &str| {
        let s = &samples[h];
        let pick = |f: fn(&Sample) -> f64| s.iter().map(f).collect::<Vec<f64>>();
        let total = pick(|x| x.total);
        json!({
            "median_ms": round1(median(&total)),
            "min_ms": round1(total.iter().copied().fold(f64::INFINITY, f64::min)),
            "max_ms": round1(total.iter().copied().fold(0.0, f64::max)),
            "run_pod_sandbox_median_ms": round1(median(&pick(|x| x.run_pod))),
            "create_start_container_median_ms": round1(median(&pick(|x| x.container))),
            "first_exec_sync_median_ms": round1(median(&pick(|x| x.exec))),
            "samples_ms": total.iter().map(|x| round1(*x)).collect::<Vec<_>>(),
            "origins": origins.get(h),
        })
    };
    let ratio = if a.rounds > 0 {
        let m = |h: &str| median(&samples[h].iter().map(|x| x.total).collect::<Vec<_>>());
        json!((m(TEMPLATE) / m(COLD) * 1000.0).round() / 1000.0)
    } else {
        json!(null)
    };
    let res = json!({
        "rounds": a.rounds,
        "measure": "RunPodSandbox + CreateContainer + StartContainer + first ExecSync(true), host-network pod",
        "accelerator": "tcg",
        "template_create_ms": template_create_ms,
        "handlers": if a.rounds > 0 { json!({ COLD: col(COLD), TEMPLATE: col(TEMPLATE) }) } else { json!({}) },
        "template_over_cold": ratio,
        "problems": problems,
    });
    let out = repo().join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let text = serde_json::to_string_pretty(&res).unwrap();
    std::fs::write(out.join("cri.json"), format!("{text}\n")).unwrap();
    println!("{text}");
    if !problems.is_empty() {
        eprintln!("cri bench: problems: {problems:?}");
        std::process::exit(1);
    }
}
