//! `strata bench` against a real `strata serve`: a short, count-bounded QoS 1 run finishes with
//! exit 0 and a RESULT line in which every published message was delivered exactly once; a
//! throttled run keeps its rate and plots it; the connect-rate and idle modes open every
//! connection they are asked for.

#[path = "common/broker.rs"]
mod broker;
#[path = "common/metrics.rs"]
mod metrics;

use std::path::Path;
use std::process::Command;

use broker::ServeProcess;

/// Runs `strata bench --target TARGET ARGS` (ARGS split at whitespace), expects exit 0, and
/// returns its RESULT line as JSON.
fn run_bench(target: &str, args: &str) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["bench", "--target", target])
        .args(args.split_whitespace())
        .env_remove("RUST_LOG")
        .output()
        .expect("run strata bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "strata bench failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let json = stdout
        .lines()
        .find_map(|line| line.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line in:\n{stdout}"));
    serde_json::from_str(json).expect("RESULT is JSON")
}

/// Runs `strata bench` against a new `strata serve` with its defaults.
fn run_bench_on_new_broker(args: &str) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = ServeProcess::start(&dir.path().join("data"));
    run_bench(&broker.addr.to_string(), args)
}

fn number(result: &serde_json::Value, name: &str) -> f64 {
    result[name].as_f64().unwrap_or_else(|| panic!("RESULT lacks {name}: {result}"))
}

/// The points of the polylines drawn in `color` in a plotters SVG.
fn polylines(svg: &str, color: &str) -> Vec<usize> {
    let stroke = format!("stroke=\"{color}\"");
    svg.lines()
        .filter(|line| line.starts_with("<polyline") && line.contains(&stroke))
        .map(|line| line.split("points=\"").nth(1).map_or(0, |points| points.split_whitespace().count()))
        .collect()
}

#[test]
fn bench_qos1_delivers_every_message_once() {
    let result =
        run_bench_on_new_broker("--duration 2 --publishers 1 --subscribers 1 --qos 1 --payload 64 --max-messages 2000");
    let published = number(&result, "published");
    assert!(published > 0.0, "nothing was published: {result}");
    assert!(published <= 2000.0, "--max-messages was not respected: {result}");
    assert_eq!(number(&result, "lost"), 0.0, "{result}");
    assert_eq!(number(&result, "duplicates"), 0.0, "{result}");
    assert_eq!(number(&result, "delivered"), published, "{result}");
    assert_eq!(number(&result, "acked"), published, "{result}");
    assert!(result["errors"].as_array().is_some_and(|e| e.is_empty()), "{result}");
    // 64-byte payloads: the payload throughput follows from the message rate.
    let expected_mib_s = number(&result, "delivery_rate") * 64.0 / (1024.0 * 1024.0);
    let mib_s = number(&result, "delivery_payload_mib_s");
    assert!((mib_s - expected_mib_s).abs() < 0.001, "{mib_s} MiB/s against {expected_mib_s}: {result}");
}

#[test]
fn bench_refuses_a_remote_target() {
    let output = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["bench", "--target", "192.0.2.1:1883", "--duration", "1"])
        .env_remove("RUST_LOG")
        .output()
        .expect("run strata bench");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("--allow-remote"), "{output:?}");
}

#[test]
fn bench_keeps_a_throttled_rate_and_plots_it_over_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plot = dir.path().join("run.svg");
    let plot_arg = plot.to_str().expect("utf-8 temp path");
    // 2 publishers at 200 msg/s each for 3 s: 1,200 messages, 400 per second.
    let result = run_bench_on_new_broker(&format!(
        "--qos 1 --publishers 2 --subscribers 1 --rate 200 --duration 3 --plot {plot_arg}"
    ));
    let published = number(&result, "published");
    // The schedule catches up after a stall, so only a stall at the very end can cut the count.
    assert!((960.0..=1_202.0).contains(&published), "published {published}, expected about 1,200: {result}");
    assert_eq!(number(&result, "delivered"), published, "{result}");
    assert_eq!(number(&result, "lost"), 0.0, "{result}");

    let timeline = result["timeline"].as_array().unwrap_or_else(|| panic!("no timeline: {result}"));
    assert!(timeline.len() >= 3, "expected a point per second of a 3 s run: {result}");
    let points: Vec<(f64, f64, f64)> =
        timeline.iter().map(|p| (p[0].as_f64().unwrap(), p[1].as_f64().unwrap(), p[2].as_f64().unwrap())).collect();
    assert!(points.windows(2).all(|w| w[0].0 < w[1].0), "times must increase: {points:?}");
    let mut published_per_second: Vec<f64> = points.iter().take(3).map(|p| p.1).collect();
    published_per_second.sort_by(f64::total_cmp);
    let median = published_per_second[1];
    assert!((300.0..=500.0).contains(&median), "median publish rate {median}/s, expected 400: {points:?}");
    assert!(points.iter().take(3).any(|p| p.2 > 0.0), "nothing delivered in the timeline: {points:?}");

    let svg = std::fs::read_to_string(&plot).expect("the plot was written");
    assert!(svg.contains("rate per second") && svg.contains("by percentile"), "both charts are drawn");
    // Red is the publish rate: its legend sample has 2 points, its data line one per timeline point.
    let red = polylines(&svg, "#FF0000");
    assert!(red.iter().any(|&n| n >= 3), "no publish-rate line in the plot: {red:?}");
    assert!(polylines(&svg, "#0000FF").iter().any(|&n| n >= 3), "no latency or delivery line in the plot");
}

#[test]
fn bench_connect_rate_opens_every_connection() {
    let result = run_bench_on_new_broker("--connect-rate --connections 300 --inflight 30 --duration 20");
    assert_eq!(number(&result, "connected"), 300.0, "{result}");
    assert_eq!(number(&result, "failed"), 0.0, "{result}");
    assert!(number(&result, "connect_rate") > 0.0, "{result}");
    assert_eq!(result["connect_latency_us"]["count"].as_u64(), Some(300), "a latency per connect: {result}");
}

#[test]
fn bench_idle_mode_holds_connections_and_reports_broker_memory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut broker = ServeProcess::start(&dir.path().join("data"));
    let target = broker.addr.to_string();
    let pid = broker.pid().to_string();
    let result = run_bench(&target, &format!("--idle 200 --duration 1 --protocol v5 --broker-pid {pid}"));
    assert_eq!(number(&result, "held"), 200.0, "{result}");
    assert_eq!(number(&result, "failed"), 0.0, "{result}");
    let rss = &result["idle_rss"];
    let before = rss["rss_before_kib"].as_f64().unwrap_or_else(|| panic!("no broker RSS: {result}"));
    let held = rss["rss_held_kib"].as_f64().unwrap_or_else(|| panic!("no broker RSS: {result}"));
    // 200 connections cost the broker some memory, and far less than a MiB each.
    assert!(held > before && held - before < 200.0 * 1024.0, "RSS {before} KiB → {held} KiB: {result}");
    assert!(rss["rss_per_connection_bytes"].as_f64().is_some_and(|b| b > 0.0), "{result}");
    assert!(broker.is_running(), "the broker survived 200 connections opened and closed");
}

/// The bench's loss count checked against the broker's own: QoS 0 subscribers more than 20
/// offsets behind skip ahead, and Strata counts every offset skipped. Those are the only QoS 0
/// messages it drops, so the bench must report exactly that many lost.
#[test]
fn bench_counts_as_lost_exactly_what_the_broker_skipped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("strata.toml");
    std::fs::write(&config, "[mqtt]\nqos0_max_lag = 20\n").unwrap();
    let broker = ServeProcess::start_with(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap(), "--http", "127.0.0.1:0"],
    );
    let target = broker.addr.to_string();
    // Unthrottled publishers and small subscriber buffers: the readers fall behind at times.
    let result =
        run_bench(&target, "--qos 0 --publishers 2 --subscribers 2 --rcvbuf 4096 --max-messages 100000 --duration 3");
    let skipped = metrics::counter(broker.http_addr(), "strata_qos0_skipped_offsets_total");
    let published = number(&result, "published");
    let lost = number(&result, "lost");
    assert!(skipped > 0, "no subscriber fell behind, so nothing was checked: {result}");
    assert_eq!(lost, skipped as f64, "the bench's loss count against the broker's skipped offsets: {result}");
    assert_eq!(number(&result, "delivered") + lost, 2.0 * published, "{result}");
    assert_eq!(number(&result, "duplicates"), 0.0, "{result}");
}

/// A Mosquitto 2 broker on a free loopback port (the broker the scenarios compare with),
/// killed when dropped.
struct Mosquitto {
    child: std::process::Child,
    port: u16,
}

impl Mosquitto {
    /// `access`: the config lines on who may connect (`allow_anonymous ...`).
    fn start(dir: &Path, access: &str) -> Mosquitto {
        let binary = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|path| Path::new(path).exists())
            .expect("the mosquitto broker is not installed (apt-get install mosquitto; .ci/run does)");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = dir.join("mosquitto.conf");
        // `user root` keeps it from switching to a `mosquitto` user when started as root.
        std::fs::write(
            &config,
            format!("listener {port} 127.0.0.1\n{access}set_tcp_nodelay true\npersistence false\nuser root\n"),
        )
        .unwrap();
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start mosquitto");
        // Killed by `Drop` if it never listens.
        let mosquitto = Mosquitto { child, port };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return mosquitto;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("mosquitto did not listen on 127.0.0.1:{port}");
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The tool measures any broker, so the scenarios can put Mosquitto beside Strata.
#[test]
fn bench_measures_mosquitto_with_the_same_tool() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mosquitto = Mosquitto::start(dir.path(), "allow_anonymous true\n");
    let target = format!("127.0.0.1:{}", mosquitto.port);
    for protocol in ["v4", "v5"] {
        let result = run_bench(
            &target,
            &format!("--protocol {protocol} --qos 1 --publishers 2 --subscribers 2 --rate 500 --duration 2"),
        );
        let published = number(&result, "published");
        assert!(published >= 1_000.0, "{protocol}: published {published}: {result}");
        assert_eq!(number(&result, "delivered"), 2.0 * published, "{protocol}: {result}");
        assert_eq!(number(&result, "acked"), published, "{protocol}: {result}");
        assert_eq!(number(&result, "lost"), 0.0, "{protocol}: {result}");
        assert_eq!(number(&result, "duplicates"), 0.0, "{protocol}: {result}");
    }
    let connects = run_bench(&target, "--connect-rate --connections 200 --duration 20");
    assert_eq!(number(&connects, "connected"), 200.0, "{connects}");
}

/// Brokers that require a login get one from `--username` and `--password`, and a refused
/// CONNECT fails the run with the broker's reason.
#[test]
fn bench_logs_in_where_the_broker_requires_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let passwords = dir.path().join("passwords");
    let created = Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(&passwords)
        .args(["bench-user", "s3cret"])
        .output()
        .expect("run mosquitto_passwd (apt-get install mosquitto)");
    assert!(created.status.success(), "mosquitto_passwd: {created:?}");
    let access = format!("allow_anonymous false\npassword_file {}\n", passwords.display());
    let mosquitto = Mosquitto::start(dir.path(), &access);
    let target = format!("127.0.0.1:{}", mosquitto.port);

    let anonymous = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["bench", "--target", &target, "--qos", "1", "--rate", "100", "--duration", "1"])
        .env_remove("RUST_LOG")
        .output()
        .expect("run strata bench");
    let said = format!("{}{}", String::from_utf8_lossy(&anonymous.stdout), String::from_utf8_lossy(&anonymous.stderr));
    assert!(!anonymous.status.success(), "an anonymous run against a broker that refuses it succeeded: {said}");
    assert!(said.contains("refused the connection"), "the refusal is named: {said}");

    let result = run_bench(
        &target,
        "--username bench-user --password s3cret --qos 1 --publishers 1 --subscribers 1 --rate 200 --duration 1",
    );
    let published = number(&result, "published");
    assert!(published > 0.0, "{result}");
    assert_eq!(number(&result, "delivered"), published, "{result}");
    let connects = run_bench(&target, "--username bench-user --password s3cret --connect-rate --connections 50");
    assert_eq!(number(&connects, "connected"), 50.0, "{connects}");
}
