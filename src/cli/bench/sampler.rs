//! The counters every task of a run shares, and the progress line that samples them into the
//! timeline.

use super::*;

/// Counters shared by every task of a run, read by the progress line and the timeline.
#[derive(Default)]
pub(super) struct Progress {
    pub(super) published: AtomicU64,
    pub(super) delivered: AtomicU64,
    /// Set once publishers stopped; the value of `published` is then final.
    pub(super) publishing_done: AtomicBool,
}

pub(super) fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()));
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

/// The progress line's task. It samples the counters every 250 ms. The timeline gets a point
/// per second, and one for the part-second before the stop: (seconds since the start, then the
/// published and delivered counts per second over the interval that ends there).
pub(super) struct Sampler {
    pub(super) task: tokio::task::JoinHandle<Vec<(f64, f64, f64)>>,
    pub(super) stop: oneshot::Sender<()>,
}

pub(super) fn spawn_sampler(
    progress: Arc<Progress>,
    start: Instant,
    bar: ProgressBar,
    message: impl Fn(f64, u64, u64, bool) -> String + Send + 'static,
) -> Sampler {
    /// A part-second shorter than this at the end is left out: its rate would be noise.
    const SHORTEST_LAST_INTERVAL: f64 = 0.1;
    let (stop, mut stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut timeline = Vec::new();
        // Time and counts at the last point.
        let mut last = (0.0f64, 0u64, 0u64);
        let period = Duration::from_millis(250);
        let mut tick = tokio::time::interval_at((start + period).into(), period);
        let mut n = 0u64;
        // Bounded even if never stopped: one day of ticks.
        while n < 4 * 86_400 {
            let stopping = tokio::select! {
                _ = tick.tick() => false,
                _ = &mut stopped => true,
            };
            n += 1;
            let t = start.elapsed().as_secs_f64();
            let published = progress.published.load(Ordering::Relaxed);
            let delivered = progress.delivered.load(Ordering::Relaxed);
            let done = progress.publishing_done.load(Ordering::Relaxed);
            let interval = t - last.0;
            if (!stopping && n.is_multiple_of(4)) || (stopping && interval >= SHORTEST_LAST_INTERVAL) {
                timeline.push((t, (published - last.1) as f64 / interval, (delivered - last.2) as f64 / interval));
                last = (t, published, delivered);
            }
            if stopping {
                break;
            }
            bar.set_message(message(t, published, delivered, done));
        }
        timeline
    });
    Sampler { task, stop }
}

/// The timeline in the RESULT line: `[seconds, published/s, delivered/s]` per point, or
/// `[seconds, connects/s]` without deliveries; seconds to the millisecond, rates whole.
pub(super) fn timeline_json(timeline: &[(f64, f64, f64)], with_deliveries: bool) -> Value {
    let seconds = |t: f64| (t * 1000.0).round() / 1000.0;
    timeline
        .iter()
        .map(|&(t, first, delivered)| {
            if with_deliveries {
                json!([seconds(t), first.round(), delivered.round()])
            } else {
                json!([seconds(t), first.round()])
            }
        })
        .collect()
}

/// Stops the sampler and returns the timeline it gathered.
pub(super) async fn finish_sampler(sampler: Sampler, bar: ProgressBar) -> Vec<(f64, f64, f64)> {
    // The task may have ended on its own bound; then there is nobody to tell.
    let _ = sampler.stop.send(());
    let timeline = sampler.task.await.unwrap_or_default();
    bar.finish_and_clear();
    timeline
}

// ---------------------------------------------------------------------------------------------
