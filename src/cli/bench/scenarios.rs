//! The three modes: publish/subscribe, connect rate, and idle connections.

use super::*;

pub(super) struct PublisherOutcome {
    pub(super) sent: u64,
    pub(super) acked: u64,
    pub(super) ack_latency: Histogram<u64>,
    pub(super) error: Option<String>,
}

pub(super) struct SubscriberOutcome {
    /// Per publisher: the sequence numbers seen, as a bitset.
    pub(super) seen: Vec<Vec<u64>>,
    pub(super) duplicates: u64,
    pub(super) foreign: u64,
    pub(super) latency: Histogram<u64>,
    pub(super) last_delivery: Option<Instant>,
    pub(super) error: Option<String>,
}

pub(super) async fn pubsub(args: &BenchArgs, targets: &Targets) -> anyhow::Result<RunResult> {
    let login = Login::from_args(args);
    let qos = qos(args);
    let run = run_id();
    let topic_root = format!("strata-bench/{run}");
    let filter = match args.topic_mode {
        TopicMode::Shared => format!("{topic_root}/shared"),
        TopicMode::PerPublisher => format!("{topic_root}/pub/+"),
    };
    let progress = Arc::new(Progress::default());

    // Subscribers first, each subscribed before any publisher starts.
    let base = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut subscribers = Vec::new();
    for s in 0..args.subscribers {
        let buffers = SocketBuffers { receive: args.rcvbuf, ..SocketBuffers::default() };
        let mut connection = connect(targets.for_connection(s), &login, &format!("sb-{run}-s{s}"), buffers).await?;
        connection.subscribe(&filter, qos).await?;
        subscribers.push(connection);
    }
    let subscriber_tasks: Vec<_> = subscribers
        .into_iter()
        .map(|connection| {
            let progress = progress.clone();
            let stop = stop_rx.clone();
            let publishers = args.publishers as usize;
            tokio::spawn(subscriber(connection, publishers, base, progress, stop))
        })
        .collect();

    let mut publishers = Vec::new();
    for p in 0..args.publishers {
        let buffers = SocketBuffers { send: args.sndbuf, ..SocketBuffers::default() };
        publishers.push(connect(targets.for_connection(p), &login, &format!("sb-{run}-p{p}"), buffers).await?);
    }
    let per_publisher_budget = args.max_messages.div_ceil(u64::from(args.publishers));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.duration);
    let publisher_tasks: Vec<_> = publishers
        .into_iter()
        .enumerate()
        .map(|(p, connection)| {
            let topic = match args.topic_mode {
                TopicMode::Shared => format!("{topic_root}/shared"),
                TopicMode::PerPublisher => format!("{topic_root}/pub/{p}"),
            };
            let plan = PublishPlan {
                id: p as u32,
                topic,
                qos,
                payload: args.payload,
                rate: args.rate,
                budget: per_publisher_budget,
                window: args.window,
                start,
                deadline,
                base,
            };
            tokio::spawn(publisher(connection, plan, progress.clone()))
        })
        .collect();

    // Progress line and timeline while the tasks run.
    let bar = progress_bar();
    let duration = args.duration;
    let sampler = spawn_sampler(progress.clone(), start, bar.clone(), move |t, published, delivered, done| {
        let draining = if done { "  (draining)" } else { "" };
        format!("{t:5.1}/{duration:.0} s  published {published}  delivered {delivered}{draining}")
    });

    let mut sent = vec![0u64; args.publishers as usize];
    let mut acked = 0u64;
    let mut ack_latency = new_histogram();
    let mut errors = Vec::new();
    for (p, task) in publisher_tasks.into_iter().enumerate() {
        let outcome = task.await.context("publisher task")?;
        sent[p] = outcome.sent;
        acked += outcome.acked;
        ack_latency.add(&outcome.ack_latency).context("merging histograms")?;
        errors.extend(outcome.error.map(|e| format!("publisher {p}: {e}")));
    }
    let publish_elapsed = start.elapsed();
    progress.publishing_done.store(true, Ordering::Release);
    let _ = stop_tx.send(true);

    let mut latency = new_histogram();
    let mut unique = 0u64;
    let mut duplicates = 0u64;
    let mut foreign = 0u64;
    let mut lost_per_publisher = vec![0u64; sent.len()];
    // Per subscriber too: in a cluster, which node's subscribers missed messages.
    let mut lost_per_subscriber = vec![0u64; args.subscribers as usize];
    let mut last_delivery: Option<Instant> = None;
    for (s, task) in subscriber_tasks.into_iter().enumerate() {
        let outcome = task.await.context("subscriber task")?;
        latency.add(&outcome.latency).context("merging histograms")?;
        duplicates += outcome.duplicates;
        foreign += outcome.foreign;
        for (p, seen) in outcome.seen.iter().enumerate() {
            let got = count_below(seen, sent[p]);
            unique += got;
            lost_per_publisher[p] += sent[p] - got;
            lost_per_subscriber[s] += sent[p] - got;
        }
        last_delivery = last_delivery.max(outcome.last_delivery);
        errors.extend(outcome.error.map(|e| format!("subscriber {s}: {e}")));
    }
    let timeline = finish_sampler(sampler, bar).await;

    let published: u64 = sent.iter().sum();
    let expected = published * u64::from(args.subscribers);
    let lost: u64 = lost_per_publisher.iter().sum();
    let delivery_elapsed = last_delivery.map_or(publish_elapsed, |t| t.saturating_duration_since(start));
    let publish_rate = published as f64 / publish_elapsed.as_secs_f64();
    let delivery_rate = unique as f64 / delivery_elapsed.as_secs_f64().max(1e-9);

    println!(
        "{} publisher(s) → {} subscriber(s), QoS {}, {} B, {}, topics {}",
        args.publishers,
        args.subscribers,
        args.qos,
        args.payload,
        args.rate.map_or("unthrottled".to_string(), |r| format!("{r} msg/s per publisher")),
        args.topic_mode.name()
    );
    if targets.all().len() > 1 {
        let list: Vec<String> = targets.all().iter().map(ToString::to_string).collect();
        println!("targets (connection i goes to target i mod {}): {}", list.len(), list.join(", "));
    }
    // Payload bytes only, as Kafka's perf tools count record bytes: MQTT headers vary by broker.
    let payload_mib_s = |messages_per_s: f64| messages_per_s * args.payload as f64 / (1024.0 * 1024.0);
    println!(
        "published {published} in {:.2} s: {publish_rate:.0} msg/s, {:.2} MiB/s of payload (acknowledged {acked})",
        publish_elapsed.as_secs_f64(),
        payload_mib_s(publish_rate)
    );
    println!(
        "delivered {unique} of {expected} in {:.2} s: {delivery_rate:.0} msg/s, {:.2} MiB/s of payload; lost {lost}, \
         duplicates {duplicates}",
        delivery_elapsed.as_secs_f64(),
        payload_mib_s(delivery_rate)
    );
    describe_latency("end-to-end latency", &latency);
    if qos != QoS::AtMostOnce {
        describe_latency("publish → ack latency", &ack_latency);
    }
    for error in &errors {
        println!("error: {error}");
    }

    let report = json!({
        "mode": "pubsub",
        "target": targets.first().to_string(),
        "targets": targets.all().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "protocol": match args.protocol { ProtocolArg::V4 => "v4", ProtocolArg::V5 => "v5" },
        "qos": args.qos,
        "publishers": args.publishers,
        "subscribers": args.subscribers,
        "payload": args.payload,
        "rate_per_publisher": args.rate,
        "topic_mode": args.topic_mode.name(),
        "window": args.window,
        "sndbuf": args.sndbuf,
        "rcvbuf": args.rcvbuf,
        "duration_s": args.duration,
        "max_messages": args.max_messages,
        "publish_elapsed_s": publish_elapsed.as_secs_f64(),
        "delivery_elapsed_s": delivery_elapsed.as_secs_f64(),
        "published": published,
        "acked": acked,
        "publish_rate": publish_rate.round(),
        "publish_payload_mib_s": (payload_mib_s(publish_rate) * 1000.0).round() / 1000.0,
        "expected": expected,
        "delivered": unique,
        "delivery_rate": delivery_rate.round(),
        "delivery_payload_mib_s": (payload_mib_s(delivery_rate) * 1000.0).round() / 1000.0,
        "lost": lost,
        "lost_per_publisher": lost_per_publisher,
        "lost_per_subscriber": lost_per_subscriber,
        "duplicates": duplicates,
        "foreign": foreign,
        "latency_us": percentiles(&latency),
        "ack_latency_us": percentiles(&ack_latency),
        "timeline": timeline_json(&timeline, true),
        "errors": errors,
    });
    Ok(RunResult { report, errors: errors.len() as u64, latency, latency_label: "end-to-end latency", timeline })
}

/// Set bits among sequence numbers `0..limit`.
pub(super) fn count_below(seen: &[u64], limit: u64) -> u64 {
    let full_words = (limit / 64) as usize;
    let mut count: u64 = seen.iter().take(full_words).map(|w| u64::from(w.count_ones())).sum();
    let rest = limit % 64;
    if rest > 0
        && let Some(word) = seen.get(full_words)
    {
        count += u64::from((word & ((1u64 << rest) - 1)).count_ones());
    }
    count
}

pub(super) struct PublishPlan {
    pub(super) id: u32,
    pub(super) topic: String,
    pub(super) qos: QoS,
    pub(super) payload: usize,
    pub(super) rate: Option<f64>,
    pub(super) budget: u64,
    pub(super) window: u32,
    pub(super) start: Instant,
    pub(super) deadline: Instant,
    pub(super) base: Instant,
}

/// One publisher: a writer task that pipelines publishes within the window and a reader task
/// that takes the acknowledgements (and answers PUBREC with PUBREL through the writer).
pub(super) async fn publisher(connection: Connection, plan: PublishPlan, progress: Arc<Progress>) -> PublisherOutcome {
    let Connection { rx, writer, version } = connection;
    let window = Arc::new(Semaphore::new(plan.window as usize));
    // Send time (ns since base) per packet id; 0 = free.
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..=u16::MAX).map(|_| AtomicU64::new(0)).collect());
    let (release_tx, release_rx) = mpsc::unbounded_channel::<PacketId>();
    let acks = tokio::spawn(publisher_reader(rx, plan.base, window.clone(), sent_at.clone(), release_tx));
    let (sent, mut error) = publisher_writer(writer, version, &plan, &progress, &window, &sent_at, release_rx).await;
    let (acked, ack_latency, read_error) = match acks.await {
        Ok(outcome) => outcome,
        Err(e) => (0, new_histogram(), Some(format!("ack reader: {e}"))),
    };
    if error.is_none() {
        error = read_error;
    }
    PublisherOutcome { sent, acked, ack_latency, error }
}

pub(super) async fn publisher_writer(
    mut writer: OwnedWriteHalf,
    version: ProtocolVersion,
    plan: &PublishPlan,
    progress: &Progress,
    window: &Semaphore,
    sent_at: &[AtomicU64],
    mut release_rx: mpsc::UnboundedReceiver<PacketId>,
) -> (u64, Option<String>) {
    let acknowledged = plan.qos != QoS::AtMostOnce;
    let mut template = Publish {
        dup: false,
        qos: plan.qos,
        retain: false,
        topic: plan.topic.as_str().into(),
        packet_id: None,
        properties: Properties::default(),
        payload: Bytes::from(vec![0u8; plan.payload]),
    };
    let filler = vec![b'x'; plan.payload - STAMP_LEN];
    let mut out = BytesMut::with_capacity(WRITE_BATCH_BYTES + plan.payload + 256);
    let mut sent = 0u64;
    let mut credits = 0u32; // window permits held for publishes not yet built
    let mut next_packet_id: u16 = 0;
    let mut error = None;
    let mut releases_open = true;
    // A broker that stops reading must not hold the run past its bound.
    let hard_deadline = plan.deadline + DRAIN_LIMIT;
    'run: loop {
        let now = Instant::now();
        if now >= plan.deadline || sent >= plan.budget {
            break;
        }
        while let Ok(id) = release_rx.try_recv() {
            encode_ack(Packet::PubRel(Ack::success(id)), version, &mut out);
        }
        let mut allowed = plan.budget - sent;
        if let Some(rate) = plan.rate {
            let due = ((now - plan.start).as_secs_f64() * rate) as u64 + 1;
            allowed = allowed.min(due.saturating_sub(sent));
        }
        while acknowledged && u64::from(credits) < allowed {
            match window.try_acquire() {
                Ok(permit) => {
                    permit.forget();
                    credits += 1;
                }
                Err(_) => break,
            }
        }
        if acknowledged {
            allowed = allowed.min(u64::from(credits));
        }
        let mut built = 0u64;
        while built < allowed && out.len() < WRITE_BATCH_BYTES {
            if acknowledged {
                // Skip ids still in flight (only possible when acks come back far out of order).
                let mut tries = 0;
                loop {
                    next_packet_id = next_packet_id.wrapping_add(1).max(1);
                    if sent_at[usize::from(next_packet_id)].load(Ordering::Acquire) == 0 || tries > 65_535 {
                        break;
                    }
                    tries += 1;
                }
                template.packet_id = PacketId::new(next_packet_id);
                credits -= 1;
            }
            let stamp = nanos_since(plan.base).max(1);
            if acknowledged {
                sent_at[usize::from(next_packet_id)].store(stamp, Ordering::Release);
            }
            if let Err(e) = codec::encode_publish_header(&template, version, &mut out) {
                error = Some(format!("encoding PUBLISH: {e}"));
                break 'run;
            }
            out.put_u32_le(plan.id);
            out.put_u32_le(sent as u32);
            out.put_u64_le(stamp);
            out.extend_from_slice(&filler);
            sent += 1;
            built += 1;
        }
        if !out.is_empty() {
            if let Err(e) = write_bounded(&mut writer, &out, hard_deadline).await {
                error = Some(e);
                break;
            }
            out.clear();
            progress.published.fetch_add(built, Ordering::Relaxed);
            continue;
        }
        // Nothing to send now: wait for a window slot, a PUBREL to send, the next rate tick or
        // the end of the run.
        let next_due = match plan.rate {
            Some(rate) => plan.start + Duration::from_secs_f64(sent as f64 / rate),
            None => plan.deadline,
        };
        let wake = next_due.min(plan.deadline);
        let need_window = acknowledged && credits == 0 && sent < plan.budget;
        tokio::select! {
            permit = window.acquire(), if need_window => {
                if let Ok(permit) = permit {
                    permit.forget();
                    credits += 1;
                }
            }
            id = release_rx.recv(), if releases_open => match id {
                Some(id) => encode_ack(Packet::PubRel(Ack::success(id)), version, &mut out),
                None => releases_open = false,
            },
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
        if !out.is_empty() {
            if let Err(e) = write_bounded(&mut writer, &out, hard_deadline).await {
                error = Some(e);
                break;
            }
            out.clear();
        }
    }
    // Give back unused credits, then wait (bounded) for every outstanding acknowledgement,
    // still answering PUBRECs.
    window.add_permits(credits as usize);
    if acknowledged && error.is_none() {
        let drain_deadline = Instant::now() + DRAIN_LIMIT;
        while window.available_permits() < plan.window as usize && Instant::now() < drain_deadline {
            tokio::select! {
                id = release_rx.recv(), if releases_open => match id {
                    Some(id) => {
                        encode_ack(Packet::PubRel(Ack::success(id)), version, &mut out);
                        while let Ok(id) = release_rx.try_recv() {
                            encode_ack(Packet::PubRel(Ack::success(id)), version, &mut out);
                        }
                        if let Err(e) = write_bounded(&mut writer, &out, hard_deadline).await {
                            error = Some(e);
                            break;
                        }
                        out.clear();
                    }
                    None => releases_open = false,
                },
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
    }
    if Instant::now() < hard_deadline {
        let _ = tokio::time::timeout_at(hard_deadline.into(), send_disconnect(&mut writer, version)).await;
    }
    (sent, error)
}

pub(super) async fn write_bounded(writer: &mut OwnedWriteHalf, bytes: &[u8], deadline: Instant) -> Result<(), String> {
    match tokio::time::timeout_at(deadline.into(), writer.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("writing: {e}")),
        Err(_) => Err("the broker stopped reading: write still blocked 10 s after the run's end".to_string()),
    }
}

pub(super) fn encode_ack(packet: Packet, version: ProtocolVersion, out: &mut BytesMut) {
    // An ack without properties always encodes.
    let _ = codec::encode(&packet, version, out);
}

pub(super) async fn publisher_reader(
    mut rx: PacketReader,
    base: Instant,
    window: Arc<Semaphore>,
    sent_at: Arc<Vec<AtomicU64>>,
    release_tx: mpsc::UnboundedSender<PacketId>,
) -> (u64, Histogram<u64>, Option<String>) {
    let mut histogram = new_histogram();
    let mut acked = 0u64;
    let mut complete = |id: PacketId, histogram: &mut Histogram<u64>| {
        let stamp = sent_at[usize::from(id.get())].swap(0, Ordering::AcqRel);
        if stamp != 0 {
            histogram.saturating_record((nanos_since(base).saturating_sub(stamp) / 1000).max(1));
            acked += 1;
            window.add_permits(1);
        }
    };
    loop {
        match rx.next_packet().await {
            Ok(Some(Packet::PubAck(ack))) | Ok(Some(Packet::PubComp(ack))) => complete(ack.packet_id, &mut histogram),
            Ok(Some(Packet::PubRec(ack))) => {
                if ack.reason_code.is_error() {
                    complete(ack.packet_id, &mut histogram);
                } else {
                    let _ = release_tx.send(ack.packet_id);
                }
            }
            Ok(Some(Packet::Disconnect(d))) => {
                return (acked, histogram, Some(format!("the broker disconnected: {:?}", d.reason_code)));
            }
            Ok(Some(_)) => {}
            Ok(None) => return (acked, histogram, None),
            Err(e) => return (acked, histogram, Some(format!("{e:#}"))),
        }
    }
}

pub(super) async fn subscriber(
    connection: Connection,
    publishers: usize,
    base: Instant,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
) -> SubscriberOutcome {
    let Connection { rx, mut writer, version } = connection;
    let PacketReader { mut reader, mut read_buf, .. } = rx;
    let mut outcome = SubscriberOutcome {
        seen: vec![Vec::new(); publishers],
        duplicates: 0,
        foreign: 0,
        latency: new_histogram(),
        last_delivery: None,
        error: None,
    };
    let mut unique = 0u64;
    let mut out = BytesMut::with_capacity(4096);
    let mut stopped_at: Option<Instant> = None;
    'run: loop {
        let mut delivered = 0u64;
        loop {
            match codec::decode(&mut read_buf, version, MAX_INCOMING_PACKET) {
                Ok(Some(Packet::Publish(publish))) => {
                    delivered += 1;
                    match publish.packet_id {
                        Some(id) if publish.qos == QoS::AtLeastOnce => {
                            encode_ack(Packet::PubAck(Ack::success(id)), version, &mut out)
                        }
                        Some(id) => encode_ack(Packet::PubRec(Ack::success(id)), version, &mut out),
                        None => {}
                    }
                    let Some(stamp) = read_stamp(&publish.payload) else {
                        outcome.foreign += 1;
                        continue;
                    };
                    let Some(seen) = outcome.seen.get_mut(stamp.publisher as usize) else {
                        outcome.foreign += 1;
                        continue;
                    };
                    let (word, bit) = ((stamp.sequence / 64) as usize, stamp.sequence % 64);
                    if seen.len() <= word {
                        seen.resize((word + 1).next_power_of_two(), 0);
                    }
                    if seen[word] & (1 << bit) != 0 {
                        outcome.duplicates += 1;
                        continue;
                    }
                    seen[word] |= 1 << bit;
                    unique += 1;
                    let now = nanos_since(base);
                    outcome.latency.saturating_record((now.saturating_sub(stamp.sent_nanos) / 1000).max(1));
                }
                Ok(Some(Packet::PubRel(ack))) => {
                    encode_ack(Packet::PubComp(Ack::success(ack.packet_id)), version, &mut out)
                }
                Ok(Some(Packet::Disconnect(d))) => {
                    outcome.error = Some(format!("the broker disconnected: {:?}", d.reason_code));
                    break 'run;
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    outcome.error = Some(format!("decoding: {e}"));
                    break 'run;
                }
            }
        }
        if delivered > 0 {
            progress.delivered.fetch_add(delivered, Ordering::Relaxed);
            outcome.last_delivery = Some(Instant::now());
        }
        if !out.is_empty() {
            if let Err(e) = writer.write_all(&out).await {
                outcome.error = Some(format!("writing acks: {e}"));
                break;
            }
            out.clear();
        }
        if let Some(stopped) = stopped_at {
            let published = progress.published.load(Ordering::Acquire);
            let idle_since = outcome.last_delivery.map_or(stopped, |t| t.max(stopped));
            if unique >= published || idle_since.elapsed() >= DRAIN_IDLE || stopped.elapsed() >= DRAIN_LIMIT {
                break;
            }
        }
        read_buf.reserve(64 << 10);
        tokio::select! {
            read = reader.read_buf(&mut read_buf) => match read {
                Ok(0) => {
                    if stopped_at.is_none() {
                        outcome.error = Some("the broker closed the connection".to_string());
                    }
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    outcome.error = Some(format!("reading: {e}"));
                    break;
                }
            },
            changed = stop.changed(), if stopped_at.is_none() => {
                if changed.is_err() || *stop.borrow() {
                    stopped_at = Some(Instant::now());
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(50)), if stopped_at.is_some() => {}
        }
    }
    send_disconnect(&mut writer, version).await;
    outcome
}

pub(super) struct Stamp {
    pub(super) publisher: u32,
    pub(super) sequence: u64,
    pub(super) sent_nanos: u64,
}

pub(super) fn read_stamp(payload: &[u8]) -> Option<Stamp> {
    let stamp: &[u8; STAMP_LEN] = payload.get(..STAMP_LEN)?.try_into().ok()?;
    let [p0, p1, p2, p3, s0, s1, s2, s3, t @ ..] = *stamp;
    Some(Stamp {
        publisher: u32::from_le_bytes([p0, p1, p2, p3]),
        sequence: u64::from(u32::from_le_bytes([s0, s1, s2, s3])),
        sent_nanos: u64::from_le_bytes(t),
    })
}

pub(super) struct Opened {
    pub(super) latency: Histogram<u64>,
    pub(super) connections: Vec<Connection>,
    pub(super) failures: u64,
    pub(super) first_failure: Option<String>,
    pub(super) elapsed: Duration,
}

/// Opens `count` connections, `concurrency` at a time, until `deadline`; times each from TCP
/// connect to CONNACK.
pub(super) async fn open_connections(
    targets: &Targets,
    login: &Login,
    run: &str,
    count: u32,
    concurrency: u32,
    deadline: Instant,
    progress: &Arc<Progress>,
) -> Opened {
    let next = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency.min(count))
        .map(|_| {
            let next = next.clone();
            let progress = progress.clone();
            let run = run.to_string();
            let login = login.clone();
            let targets = targets.clone();
            tokio::spawn(async move {
                let mut latency = new_histogram();
                let mut connections = Vec::new();
                let mut failures = 0u64;
                let mut first_failure = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count || Instant::now() >= deadline {
                        break;
                    }
                    let t0 = Instant::now();
                    let attempt = tokio::time::timeout_at(
                        deadline.into(),
                        connect(targets.for_connection(i), &login, &format!("sb-{run}-c{i}"), SocketBuffers::default()),
                    )
                    .await;
                    match attempt {
                        Ok(Ok(connection)) => {
                            latency.saturating_record((t0.elapsed().as_micros() as u64).max(1));
                            connections.push(connection);
                            progress.published.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Err(e)) => {
                            failures += 1;
                            first_failure.get_or_insert_with(|| format!("{e:#}"));
                        }
                        Err(_) => break,
                    }
                }
                (latency, connections, failures, first_failure)
            })
        })
        .collect();
    let mut opened = Opened {
        latency: new_histogram(),
        connections: Vec::new(),
        failures: 0,
        first_failure: None,
        elapsed: Duration::ZERO,
    };
    for worker in workers {
        match worker.await {
            Ok((latency, connections, failures, first_failure)) => {
                let _ = opened.latency.add(&latency);
                opened.connections.extend(connections);
                opened.failures += failures;
                if opened.first_failure.is_none() {
                    opened.first_failure = first_failure;
                }
            }
            Err(e) => {
                opened.failures += 1;
                opened.first_failure.get_or_insert_with(|| format!("connect task: {e}"));
            }
        }
    }
    opened.elapsed = start.elapsed();
    opened
}

pub(super) async fn close_all(connections: Vec<Connection>) {
    let closers: Vec<_> = connections
        .into_iter()
        .map(|mut c| tokio::spawn(async move { send_disconnect(&mut c.writer, c.version).await }))
        .collect();
    for closer in closers {
        let _ = closer.await;
    }
}

pub(super) async fn connect_rate(args: &BenchArgs, targets: &Targets) -> anyhow::Result<RunResult> {
    let progress = Arc::new(Progress::default());
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.duration);
    let bar = progress_bar();
    let total = args.connections;
    let sampler = spawn_sampler(progress.clone(), start, bar.clone(), move |t, opened, _, _| {
        format!("{t:5.1} s  connected {opened}/{total}")
    });
    let opened = open_connections(
        targets,
        &Login::from_args(args),
        &run_id(),
        args.connections,
        args.inflight,
        deadline,
        &progress,
    )
    .await;
    let timeline = finish_sampler(sampler, bar).await;
    let connected = opened.connections.len() as u64;
    let rate = connected as f64 / opened.elapsed.as_secs_f64();
    println!(
        "connect rate: {connected} of {} connections in {:.2} s, {} in flight: {rate:.0} connects/s; {} failed",
        args.connections,
        opened.elapsed.as_secs_f64(),
        args.inflight,
        opened.failures
    );
    describe_latency("TCP connect + CONNECT → CONNACK", &opened.latency);
    if let Some(failure) = &opened.first_failure {
        println!("first failure: {failure}");
    }
    let report = json!({
        "mode": "connect-rate",
        "target": targets.first().to_string(),
        "targets": targets.all().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "protocol": match args.protocol { ProtocolArg::V4 => "v4", ProtocolArg::V5 => "v5" },
        "connections": args.connections,
        "inflight": args.inflight,
        "connected": connected,
        "failed": opened.failures,
        "elapsed_s": opened.elapsed.as_secs_f64(),
        "connect_rate": rate.round(),
        "connect_latency_us": percentiles(&opened.latency),
        "timeline": timeline_json(&timeline, false),
        "errors": opened.first_failure.iter().collect::<Vec<_>>(),
    });
    close_all(opened.connections).await;
    let errors = opened.failures + u64::from(connected < u64::from(args.connections));
    Ok(RunResult { report, errors, latency: opened.latency, latency_label: "connect latency", timeline })
}

pub(super) async fn idle(args: &BenchArgs, targets: &Targets, count: u32) -> anyhow::Result<RunResult> {
    let progress = Arc::new(Progress::default());
    let before = args.broker_pid.map(ProcSample::read).transpose()?;
    let start = Instant::now();
    // Opening is bounded too, separately from the holding time.
    let open_deadline = start + Duration::from_secs(120);
    let bar = progress_bar();
    let sampler = spawn_sampler(progress.clone(), start, bar.clone(), move |t, opened, _, _| {
        format!("{t:5.1} s  idle connections {opened}/{count}")
    });
    let opened = open_connections(
        targets,
        &Login::from_args(args),
        &run_id(),
        count,
        IDLE_OPEN_CONCURRENCY as u32,
        open_deadline,
        &progress,
    )
    .await;
    let held = opened.connections.len() as u64;
    // Let the broker settle, then sample its memory with every connection open; hold for the
    // rest of the duration and sample again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during = args.broker_pid.map(ProcSample::read).transpose()?;
    let hold_until = Instant::now() + Duration::from_secs_f64(args.duration);
    tokio::time::sleep_until(hold_until.into()).await;
    let end = args.broker_pid.map(ProcSample::read).transpose()?;
    let timeline = finish_sampler(sampler, bar).await;
    println!(
        "idle: {held} of {count} connections open in {:.2} s ({} failed), held {:.1} s",
        opened.elapsed.as_secs_f64(),
        opened.failures,
        args.duration
    );
    let mut broker = Value::Null;
    if let (Some(before), Some(during), Some(end)) = (before, during, end) {
        let per_connection = |after: &ProcSample| {
            (after.rss_kib.saturating_sub(before.rss_kib) as f64 * 1024.0 / held.max(1) as f64).round()
        };
        println!(
            "broker RSS: {} KiB before, {} KiB with {held} connections ({:.0} B each), {} KiB at the end ({:.0} B each)",
            before.rss_kib,
            during.rss_kib,
            per_connection(&during),
            end.rss_kib,
            per_connection(&end)
        );
        broker = json!({
            "rss_before_kib": before.rss_kib,
            "rss_held_kib": during.rss_kib,
            "rss_end_kib": end.rss_kib,
            "rss_per_connection_bytes": per_connection(&during),
            "rss_per_connection_end_bytes": per_connection(&end),
        });
    }
    if let Some(failure) = &opened.first_failure {
        println!("first failure: {failure}");
    }
    let report = json!({
        "mode": "idle",
        "target": targets.first().to_string(),
        "targets": targets.all().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "protocol": match args.protocol { ProtocolArg::V4 => "v4", ProtocolArg::V5 => "v5" },
        "connections": count,
        "held": held,
        "failed": opened.failures,
        "open_elapsed_s": opened.elapsed.as_secs_f64(),
        "hold_s": args.duration,
        "idle_rss": broker,
        "connect_latency_us": percentiles(&opened.latency),
        "errors": opened.first_failure.iter().collect::<Vec<_>>(),
    });
    close_all(opened.connections).await;
    let errors = opened.failures + u64::from(held < u64::from(count));
    Ok(RunResult { report, errors, latency: opened.latency, latency_label: "connect latency", timeline })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        let mut buf = BytesMut::new();
        buf.put_u32_le(3);
        buf.put_u32_le(77);
        buf.put_u64_le(123_456_789);
        buf.extend_from_slice(b"padding");
        let stamp = read_stamp(&buf).expect("a full stamp");
        assert_eq!((stamp.publisher, stamp.sequence, stamp.sent_nanos), (3, 77, 123_456_789));
        assert!(read_stamp(&buf[..15]).is_none());
    }

    #[test]
    fn counts_sequences_below_a_limit() {
        let mut seen = vec![0u64; 3];
        for seq in [0u64, 1, 63, 64, 100, 150] {
            seen[(seq / 64) as usize] |= 1 << (seq % 64);
        }
        assert_eq!(count_below(&seen, 0), 0);
        assert_eq!(count_below(&seen, 64), 3);
        assert_eq!(count_below(&seen, 101), 5);
        assert_eq!(count_below(&seen, 1000), 6);
    }
}
