//! QMP round-trip benchmark: `query-status` over one connection.
//!
//! ```text
//! qmp-bench --socket PATH [--count N] [--concurrency C] [--threads T] [--no-oob]
//! ```
//! `--threads 0` (the default) runs on a current-thread runtime, as the CLI
//! does; `--threads T` on a multi-thread runtime with T workers, as a shim
//! may.
//! Prints one JSON line with `ops_per_sec`, `p50_us`, `p99_us`, `count`,
//! `concurrency`.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use qmp::Client;

struct Args {
    socket: String,
    count: usize,
    concurrency: usize,
    threads: usize,
    oob: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut socket = None;
    let mut count = 10_000;
    let mut concurrency = 1;
    let mut threads = 0;
    let mut oob = true;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("Missing value for {name}"));
        match a.as_str() {
            "--socket" => socket = Some(value("--socket")?),
            "--count" => {
                count = value("--count")?
                    .parse()
                    .map_err(|e| format!("Bad --count: {e}"))?
            }
            "--concurrency" => {
                concurrency = value("--concurrency")?
                    .parse()
                    .map_err(|e| format!("Bad --concurrency: {e}"))?
            }
            "--threads" => {
                threads = value("--threads")?
                    .parse()
                    .map_err(|e| format!("Bad --threads: {e}"))?
            }
            "--no-oob" => oob = false,
            other => return Err(format!("Unknown argument {other}")),
        }
    }
    let socket = socket.ok_or("Missing --socket PATH")?;
    if count == 0 || concurrency == 0 {
        return Err("--count and --concurrency must be positive".into());
    }
    Ok(Args {
        socket,
        count,
        concurrency,
        threads,
        oob,
    })
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn run(args: Args) -> Result<String, qmp::Error> {
    let options = qmp::ClientOptions {
        enable_oob: args.oob,
        ..Default::default()
    };
    let client = Client::connect_with(&args.socket, options).await?;
    // Warm up.
    for _ in 0..100 {
        client.query_status().await?;
    }
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let client = client.clone();
            let next = next.clone();
            let count = args.count;
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(count / args.concurrency + 1);
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    let t = Instant::now();
                    client.query_status().await?;
                    lat.push(t.elapsed().as_micros() as u64);
                }
                Ok::<_, qmp::Error>(lat)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(args.count);
    for w in workers {
        let lat = w.await.map_err(|_| qmp::Error::Disconnected)??;
        all.extend(lat);
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let out = serde_json::json!({
        "ops_per_sec": args.count as f64 / elapsed,
        "p50_us": percentile(&all, 0.50),
        "p99_us": percentile(&all, 0.99),
        "count": args.count,
        "concurrency": args.concurrency,
    });
    Ok(out.to_string())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("qmp-bench: {e}");
            eprintln!("usage: qmp-bench --socket PATH [--count N] [--concurrency C] [--threads T]");
            return ExitCode::from(2);
        }
    };
    let mut builder = match args.threads {
        0 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("qmp-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("qmp-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
