//! `strata serve`: reads the config file, applies the command-line flags over it
//! (`config.rs`) and runs the broker until SIGINT or SIGTERM, then closes the log cleanly.
//! SIGHUP reloads the TLS certificate (`[tls]`) and never stops the broker.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use strata_frontend::Broker;

use super::LogFormat;
use super::config::{self, Overrides};
use super::idle_poll::{Activity, IdlePollers};

/// The flags of `strata serve`.
pub struct ServeArgs {
    /// The config file, if any.
    pub config: Option<PathBuf>,
    /// Print the effective configuration and exit.
    pub print_config: bool,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// Flags over the file.
    pub overrides: Overrides,
}

/// Runs the broker until a signal; the exit status is 0 after a clean stop.
pub fn serve(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let effective = config::load(args.config.as_deref(), &args.overrides)?;
    if args.print_config {
        print!("{}", config::print(&effective));
        return Ok(ExitCode::SUCCESS);
    }
    // Everything the broker creates (data directory, partitions, segments, indexes) is the
    // broker user's alone: 0700 directories, 0600 files. Messages are often private data.
    // SAFETY: umask only sets this process's file-creation mask; it cannot fail.
    unsafe { libc::umask(0o077) };
    let grpc_tls = effective.grpc_tls;
    let config = effective.broker;
    let (http_listen, grpc_listen) = (effective.http_listen, effective.grpc_listen);
    // Read again here (`config::load` checked them): they are secrets, kept out of `Effective`.
    let read_token = |path: &Option<std::path::PathBuf>, key: &str| {
        path.as_deref().map(super::token::AdminToken::load).transpose().with_context(|| key.to_owned())
    };
    let http_token = read_token(&effective.http_token_file, "http.token_file")?;
    let grpc_token = read_token(&effective.grpc_token_file, "grpc.token_file")?;

    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(threads) = effective.runtime.worker_threads {
        builder.worker_threads(threads);
    }
    // Pollers start before the runtime and stop after it (declared first, dropped last).
    let _idle_pollers = match effective.runtime.idle_poll {
        Some(window) => {
            let activity = Arc::new(Activity::new(window));
            let pollers =
                IdlePollers::start(Arc::clone(&activity)).context("starting runtime.idle_poll_ms's pollers")?;
            // Every wake of a worker (a packet, a timer) restarts the window.
            builder.on_thread_unpark(move || activity.note_wake());
            Some(pollers)
        }
        None => None,
    };
    let runtime = builder.build().context("starting the runtime")?;
    // The span exporter's gRPC channel runs on this runtime.
    let telemetry = {
        let _entered = runtime.enter();
        super::telemetry::init(args.log_format, &effective.telemetry)?
    };
    let served = runtime.block_on(async {
        // Bound first, so `/health` answers and `/ready` says 503 while the logs recover.
        let http = match http_listen {
            Some(addr) => Some(crate::cli::http::start(addr, http_token).await?),
            None => None,
        };
        let broker = Broker::start(config.clone()).await?;
        let addr = broker.local_addr().context("reading the listener address")?;
        // The admin API stops with the broker: told when the shutdown signal arrives. Bound
        // before the ready line, so a script may call `strata stream ...` as soon as it reads it.
        let (grpc_stop, grpc_stopped) = tokio::sync::oneshot::channel::<()>();
        let grpc_addr = match grpc_listen {
            Some(addr) => {
                let stopped = async move {
                    let _ = grpc_stopped.await;
                };
                // `config::load` checked that `[tls]` is there when `grpc.tls` is on, and the
                // broker loaded it: the admin API shares the reloadable certificate.
                let tls = if grpc_tls { broker.tls_reloader() } else { None };
                Some(crate::cli::grpc::start(addr, broker.admin(), grpc_token, tls, stopped).await?)
            }
            None => None,
        };
        if let Some((_, state)) = &http {
            state.set_ready(broker.metrics(), broker.admin());
        }
        // Handlers installed before the ready line: a SIGTERM right after it stops cleanly.
        let shutdown = shutdown_signal();
        // Replaces SIGHUP's default action (ending the process) before the ready line too.
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler")?;
        let reload_task =
            tokio::spawn(reload_on_hangup(hangup, broker.tls_reloader(), broker.cluster_tls(), broker.auth_reloader()));
        // Tests and scripts wait for this line to know the broker is ready; every listener
        // below is bound by then.
        say(format_args!("strata: MQTT listening on {addr}, data in {}", config.data_dir.display()));
        if let Some(ws_addr) = broker.ws_local_addr() {
            let ws_addr = ws_addr.context("reading the WebSocket listener address")?;
            say(format_args!(
                "strata: MQTT over WebSocket listening on ws://{ws_addr}{}",
                strata_frontend::WEBSOCKET_PATH
            ));
        }
        if let Some(tls_addr) = broker.tls_local_addr() {
            let tls_addr = tls_addr.context("reading the MQTT-over-TLS listener address")?;
            say(format_args!("strata: MQTT over TLS listening on {tls_addr}"));
        }
        if let Some(wss_addr) = broker.wss_local_addr() {
            let wss_addr = wss_addr.context("reading the WebSocket-over-TLS listener address")?;
            say(format_args!(
                "strata: MQTT over WebSocket over TLS listening on wss://{wss_addr}{}",
                strata_frontend::WEBSOCKET_PATH
            ));
        }
        match &http {
            Some((http_addr, _)) => say(format_args!("strata: HTTP listening on {http_addr}")),
            None => say(format_args!("strata: HTTP off")),
        }
        match grpc_addr {
            Some(grpc_addr) => say(format_args!("strata: gRPC listening on {grpc_addr}")),
            None => say(format_args!("strata: gRPC off")),
        }
        if let Some(cluster_addr) = broker.cluster_local_addr() {
            say(format_args!("strata: cluster gRPC listening on {cluster_addr}"));
        }
        say(format_args!("strata: authentication: {}", broker.auth_summary()));
        tracing::info!(
            mqtt = %addr,
            http = %http.as_ref().map_or_else(|| "off".to_owned(), |(a, _)| a.to_string()),
            grpc = %grpc_addr.map_or_else(|| "off".to_owned(), |a| a.to_string()),
            data_dir = %config.data_dir.display(),
            "serving"
        );
        let http_state = http.map(|(_, state)| state);
        let shutdown = async move {
            shutdown.await;
            let _ = grpc_stop.send(());
            if let Some(state) = http_state {
                state.set_stopping();
            }
        };
        broker.run(shutdown).await?;
        reload_task.abort();
        tracing::info!("stopped; every log closed cleanly");
        Ok::<_, anyhow::Error>(())
    });
    // The last spans (the connections the shutdown closed) go out while the runtime still runs.
    telemetry.shutdown();
    served?;
    Ok(ExitCode::SUCCESS)
}

/// One start-up line on stdout. A reader that has gone away (`strata serve | head -1`) must
/// not stop the broker, so a failed write is ignored rather than a panic, as `println!` would.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(line).and_then(|()| out.write_all(b"\n")).and_then(|()| out.flush());
}

/// Reloads, on every SIGHUP, `[auth] password_file` and `acl_file` and the TLS certificate.
/// New connections use the new users and rules, and new handshakes the new certificate;
/// connections already up keep theirs. A reload that fails (a missing file, a bad line, a
/// key that does not match) changes nothing for that file: the error names the file (and
/// the line), and the previous users, rules or certificate stay in force. Each outcome is
/// also printed on stdout, where the start-up lines went.
async fn reload_on_hangup(
    mut hangup: tokio::signal::unix::Signal,
    reloader: Option<strata_frontend::tls::TlsReloader>,
    cluster_tls: Option<strata_replication::ClusterTls>,
    auth: strata_frontend::AuthReloader,
) {
    while hangup.recv().await.is_some() {
        let files = auth.clone();
        // Blocking: the files are read, and a big password file takes a while to parse.
        let reloaded = tokio::task::spawn_blocking(move || reload_auth_files(&files)).await;
        let any_auth_file = match reloaded {
            Ok(any) => any,
            Err(error) => {
                tracing::error!(%error, "SIGHUP: the password and ACL file reload did not run");
                true
            }
        };
        let Some(reloader) = reloader.clone() else {
            if !any_auth_file {
                tracing::info!("SIGHUP: nothing to reload");
                say(format_args!("strata: SIGHUP: nothing to reload (no [tls], no password or ACL file)"));
            }
            continue;
        };
        let cert_file = reloader.config().cert_file.display().to_string();
        match tokio::task::spawn_blocking(move || reloader.reload()).await {
            Ok(Ok(())) => {
                tracing::info!(cert_file, "SIGHUP: TLS certificate reloaded");
                say(format_args!("strata: TLS certificate reloaded from {cert_file}"));
            }
            Ok(Err(error)) => {
                tracing::error!(%error, "SIGHUP: TLS reload failed; the previous certificate stays in use");
                say(format_args!("strata: TLS reload failed, the previous certificate stays in use: {error}"));
            }
            Err(error) => tracing::error!(%error, "SIGHUP: the TLS reload did not run"),
        }
        // The cluster transport exists with TLS only when `[tls]` does, so it is reloaded here.
        if let Some(cluster_tls) = cluster_tls.clone() {
            let cert_file = cluster_tls.files().cert_file.display().to_string();
            match tokio::task::spawn_blocking(move || cluster_tls.reload()).await {
                Ok(Ok(())) => say(format_args!("strata: cluster TLS reloaded from {cert_file}")),
                Ok(Err(error)) => {
                    tracing::error!(%error, "SIGHUP: cluster TLS reload failed; the previous certificate stays in use");
                    say(format_args!(
                        "strata: cluster TLS reload failed, the previous certificate stays in use: {error}"
                    ));
                }
                Err(error) => tracing::error!(%error, "SIGHUP: the cluster TLS reload did not run"),
            }
        }
    }
}

/// Reloads the password file and the ACL file, saying how each went; whether either is
/// configured.
fn reload_auth_files(auth: &strata_frontend::AuthReloader) -> bool {
    let mut any = false;
    match auth.reload_password_file() {
        Ok(None) => {}
        Ok(Some((path, users))) => {
            any = true;
            let path = path.display().to_string();
            tracing::info!(path, users, "SIGHUP: password file reloaded");
            say(format_args!("strata: password file reloaded from {path} ({users} users)"));
        }
        Err(error) => {
            any = true;
            tracing::error!(%error, "SIGHUP: password file reload failed; the previous users stay in force");
            say(format_args!("strata: password file reload failed, the previous users stay in force: {error}"));
        }
    }
    match auth.reload_acl_file() {
        Ok(None) => {}
        Ok(Some(path)) => {
            any = true;
            let path = path.display().to_string();
            tracing::info!(path, "SIGHUP: ACL file reloaded");
            say(format_args!("strata: ACL file reloaded from {path}"));
        }
        Err(error) => {
            any = true;
            tracing::error!(%error, "SIGHUP: ACL file reload failed; the previous rules stay in force");
            say(format_args!("strata: ACL file reload failed, the previous rules stay in force: {error}"));
        }
    }
    any
}

/// Registers the SIGINT/SIGTERM handlers now; the returned future completes on either.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    let interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
    async move {
        match (terminate, interrupt) {
            (Ok(mut terminate), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
