//! The in-process tier: nearby's own session, pipes and probers run in the
//! test's runtime against a scripted fake upstream, on paused time, so that
//! timeouts and rise/fall are asserted to the millisecond without waiting
//! for them. (The rest of `tests/it` drives the real binary against real
//! redis-servers.)

mod fake;

use std::time::Duration;

use nearby::app::Context;
use nearby::config::{Config, ConfigArgs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use fake::Fake;

/// Paused time jumps to the next timer whenever the runtime is idle, also
/// while loopback bytes are in flight. A 1 ms ticker bounds each jump, so a
/// reply that is on its way is read before any deadline far away passes.
fn ticker() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {
        loop {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
}

fn config(primary: String) -> Config {
    let args = ConfigArgs {
        primary: Some(primary),
        primary_region: Some("mad".into()),
        ..Default::default()
    };
    Config::load(&args, None).expect("config")
}

/// A client connection served by a session of `cx`.
async fn client(cx: &Context) -> TcpStream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    tokio::spawn(nearby::session::serve(cx.session_env(), server));
    client
}

/// Sends one command and reads one line of reply.
async fn call(c: &mut TcpStream, cmd: &[u8]) -> String {
    c.write_all(cmd).await.unwrap();
    let mut got = Vec::new();
    while !got.ends_with(b"\r\n")
        || got.starts_with(b"$") && got.iter().filter(|&&b| b == b'\n').count() < 2
    {
        let mut b = [0u8; 256];
        let n = c.read(&mut b).await.unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&b[..n]);
    }
    String::from_utf8(got).unwrap()
}

const GET: &[u8] = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";

#[tokio::test(start_paused = true)]
async fn a_read_without_a_reply_fails_at_the_request_timeout() {
    let _tick = ticker();
    let fake = Fake::start().await;
    let cx = Context::new(config(fake.url())).expect("context");
    let mut c = client(&cx).await;

    // Answered: no time passes.
    let start = Instant::now();
    assert_eq!(call(&mut c, GET).await, "$1\r\nv\r\n");
    assert!(
        start.elapsed() <= Duration::from_millis(2),
        "{:?}",
        start.elapsed()
    );

    // Unanswered: the pipe gives up after --request-timeout-ms (3000),
    // checked on a 250 ms tick.
    fake.script
        .get_hangs
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let start = Instant::now();
    let reply = call(&mut c, GET).await;
    let waited = start.elapsed();
    assert_eq!(
        reply,
        format!(
            "-ERR nearby: primary in mad (127.0.0.1:{}): no reply within 3000 ms\r\n",
            fake.port
        )
    );
    assert!(
        waited >= Duration::from_millis(3000) && waited <= Duration::from_millis(3252),
        "failed after {waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_frozen_upstream_falls_after_three_probes_and_rises_after_two() {
    use std::sync::atomic::Ordering::SeqCst;
    let _tick = ticker();
    let fake = Fake::start().await;
    let cx = Context::new(config(fake.url())).expect("context");
    let up = cx.topology.load().primary.clone();
    let t0 = Instant::now();
    nearby::control::prober::spawn_watchers(&cx.control_env(), &up);

    // The first probe (t0) answers; PING freezes from t0 + 0.5 s.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(up.is_confirmed_up());
    fake.script.ping_hangs.store(true, SeqCst);

    // Probes at 1, 4 and 7 s each wait out the 3 s probe timeout (the
    // larger of the connect and request timeouts); the third failure
    // (fall = 3) lands at 10 s.
    while up.is_healthy() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let down = t0.elapsed();
    assert!(
        down >= Duration::from_secs(10) && down <= Duration::from_millis(10_020),
        "down after {down:?}"
    );

    // It thaws at 10.5 s. The probe sent at 10 s is never answered (fails
    // at 13 s); the ones at 13 and 14 s answer: up (rise = 2) at 14 s.
    tokio::time::sleep_until(t0 + Duration::from_millis(10_500)).await;
    fake.script.ping_hangs.store(false, SeqCst);
    while !up.is_healthy() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let up_again = t0.elapsed();
    assert!(
        up_again >= Duration::from_secs(14) && up_again <= Duration::from_millis(14_020),
        "up again after {up_again:?}"
    );
}
