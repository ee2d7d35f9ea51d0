//! What a run reports: latency histograms, the JSON result, the broker's CPU and memory from
//! /proc, and the optional plot.

use super::*;

pub(super) fn new_histogram() -> Histogram<u64> {
    // Microseconds, 1 µs to 1 hour, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid")
}

pub(super) fn nanos_since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

pub(super) fn percentiles(histogram: &Histogram<u64>) -> Value {
    if histogram.is_empty() {
        return json!({"count": 0});
    }
    json!({
        "count": histogram.len(),
        "min": histogram.min(),
        "mean": (histogram.mean() * 10.0).round() / 10.0,
        "p50": histogram.value_at_quantile(0.5),
        "p99": histogram.value_at_quantile(0.99),
        "p999": histogram.value_at_quantile(0.999),
        "max": histogram.max(),
    })
}

pub(super) fn describe_latency(label: &str, histogram: &Histogram<u64>) {
    if histogram.is_empty() {
        println!("{label}: no samples");
        return;
    }
    println!(
        "{label} (µs): p50 {}  p99 {}  p99.9 {}  max {}  mean {:.1}  ({} samples)",
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.99),
        histogram.value_at_quantile(0.999),
        histogram.max(),
        histogram.mean(),
        histogram.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Connections

/// What a run measured: the JSON report plus what the plot needs.
pub(super) struct RunResult {
    pub(super) report: Value,
    pub(super) errors: u64,
    pub(super) latency: Histogram<u64>,
    pub(super) latency_label: &'static str,
    /// (seconds since start, published/s, delivered/s); delivered is 0 outside pub/sub mode.
    pub(super) timeline: Vec<(f64, f64, f64)>,
}

pub(super) fn run_id() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{:x}-{:x}", std::process::id(), nanos & 0xffff_ffff)
}

// ---------------------------------------------------------------------------------------------
// The broker's process, from /proc

pub(super) struct ProcSample {
    pub(super) cpu_seconds: f64,
    pub(super) rss_kib: u64,
    pub(super) peak_rss_kib: u64,
}

impl ProcSample {
    pub(super) fn read(pid: u32) -> anyhow::Result<ProcSample> {
        let stat_path = format!("/proc/{pid}/stat");
        let stat =
            std::fs::read_to_string(&stat_path).with_context(|| format!("reading {stat_path} (--broker-pid)"))?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
        let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        let (Some(utime), Some(stime)) = (field(11), field(12)) else {
            bail!("{stat_path}: unexpected format");
        };
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let status_path = format!("/proc/{pid}/status");
        let status = std::fs::read_to_string(&status_path).with_context(|| format!("reading {status_path}"))?;
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(key))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(ProcSample {
            cpu_seconds: (utime + stime) as f64 / ticks,
            rss_kib: kib("VmRSS:"),
            peak_rss_kib: kib("VmHWM:"),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Plot

pub(super) fn plot(path: &Path, result: &RunResult) -> anyhow::Result<()> {
    use plotters::prelude::*;

    let root = SVGBackend::new(path, (1000, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (upper, lower) = root.split_vertically(450);

    // Latency by percentile, the x axis in "nines": 1 = 90%, 2 = 99%, 3 = 99.9%...
    let points: Vec<(f64, f64)> = result
        .latency
        .iter_quantiles(1)
        .filter(|v| v.quantile_iterated_to() < 1.0)
        .map(|v| (-(1.0 - v.quantile_iterated_to()).log10(), v.value_iterated_to() as f64 / 1000.0))
        .collect();
    let max_x = points.iter().map(|p| p.0).fold(1.0f64, f64::max).min(6.0);
    let max_y = points.iter().map(|p| p.1).fold(0.001f64, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&upper)
        .caption(format!("{} by percentile", result.latency_label), ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..max_x, 0.0..max_y)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("ms")
        .x_label_formatter(&|nines| format!("{:.3}%", 100.0 * (1.0 - 10f64.powf(-nines))))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart.draw_series(LineSeries::new(points, &BLUE)).map_err(|e| anyhow::anyhow!("{e}"))?;

    let max_t = result.timeline.iter().map(|p| p.0).fold(1.0f64, f64::max);
    let max_rate = result.timeline.iter().map(|p| p.1.max(p.2)).fold(1.0f64, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&lower)
        .caption("rate per second", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..max_t, 0.0..max_rate)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart.configure_mesh().x_desc("s").y_desc("per s").draw().map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .draw_series(LineSeries::new(result.timeline.iter().map(|p| (p.0, p.1)), &RED))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .label("published (or connected)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    if result.timeline.iter().any(|p| p.2 > 0.0) {
        chart
            .draw_series(LineSeries::new(result.timeline.iter().map(|p| (p.0, p.2)), &BLUE))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label("delivered")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
