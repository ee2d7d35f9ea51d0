//! `mqtt.socket_receive_buffer` is the SO_RCVBUF of every accepted MQTT socket: 128 KiB by
//! default, the configured size, or the kernel's autotuning with 0. Read back from the
//! broker's side of a real connection with `ss` (Linux doubles SO_RCVBUF for its
//! bookkeeping, and `ss` shows the doubled value as `rb`).

#[path = "common/broker.rs"]
mod broker;
#[path = "common/raw.rs"]
mod raw;

use std::process::Command;

use broker::ServeProcess;
use raw::RawClient;
use strata_frontend::codec::ProtocolVersion;

/// The `rb` (receive buffer) of the broker's end of each established connection on `port`.
fn broker_side_receive_buffers(port: u16) -> Vec<u64> {
    let filter = format!("( sport = :{port} )");
    let output = Command::new("ss").args(["-tmnH", "state", "established", &filter]).output().expect("run ss");
    assert!(output.status.success(), "ss failed: {}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    text.split("rb")
        .skip(1)
        .map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().expect("rb<digits>"))
        .collect()
}

async fn receive_buffer_with(config: Option<&str>) -> Vec<u64> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("strata.toml");
    let mut args = Vec::new();
    if let Some(config) = config {
        std::fs::write(&file, config).unwrap();
        args = vec!["--config", file.to_str().unwrap()];
    }
    let broker = ServeProcess::start_with(&dir.path().join("data"), &args);
    // The CONNACK means the broker has set up the socket.
    let (_client, _) = RawClient::connect(broker.addr, ProtocolVersion::V5, "rcvbuf").await;
    broker_side_receive_buffers(broker.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_sockets_get_the_configured_receive_buffer() {
    assert_eq!(receive_buffer_with(None).await, vec![2 * 128 * 1024], "the default is 128 KiB");
    let configured = receive_buffer_with(Some("[mqtt]\nsocket_receive_buffer = \"48KiB\"\n")).await;
    assert_eq!(configured, vec![2 * 48 * 1024]);

    // 0: left to the kernel, which starts a connection at tcp_rmem's default.
    let tcp_rmem = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_rmem").unwrap();
    let kernel_default: u64 = tcp_rmem.split_whitespace().nth(1).unwrap().parse().unwrap();
    let autotuned = receive_buffer_with(Some("[mqtt]\nsocket_receive_buffer = 0\n")).await;
    assert_eq!(autotuned, vec![kernel_default]);
}
