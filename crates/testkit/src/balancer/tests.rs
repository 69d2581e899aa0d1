//! The balancer against tiny HTTP backends: spreading, removal, readiness polling, delays.

use super::*;

/// A backend that answers every connection with `status` and its own port, then closes.
async fn answering(status: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = [0_u8; 1024];
            let _ = stream.read(&mut request).await;
            let body = addr.port().to_string();
            let answer = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    addr
}

async fn ask(balancer: &TcpBalancer) -> Option<String> {
    let mut stream = TcpStream::connect(balancer.addr()).await.ok()?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.ok()?;
    answer.rsplit("\r\n\r\n").next().map(str::to_owned)
}

#[tokio::test]
async fn connections_spread_over_every_listed_backend_and_a_removed_one_gets_no_more() {
    let first = answering("200 OK").await;
    let second = answering("200 OK").await;
    let balancer = TcpBalancer::start(&[first, second], None).await;
    for _ in 0..100 {
        assert!(ask(&balancer).await.is_some());
    }
    assert!(balancer.connections_to(first) > 20, "random, not sticky");
    assert!(balancer.connections_to(second) > 20, "random, not sticky");

    balancer.remove(first);
    let before = balancer.connections_to(first);
    for _ in 0..20 {
        assert_eq!(
            ask(&balancer).await.as_deref(),
            Some(second.port().to_string().as_str())
        );
    }
    assert_eq!(balancer.connections_to(first), before);
}

#[tokio::test]
async fn a_delayed_backend_answers_no_sooner_than_its_delay() {
    let slow = answering("200 OK").await;
    let balancer = TcpBalancer::start(&[slow], None).await;
    balancer.set_delay(slow, Duration::from_millis(300));
    let started = std::time::Instant::now();
    assert_eq!(
        ask(&balancer).await.as_deref(),
        Some(slow.port().to_string().as_str())
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn a_backend_that_turns_unready_counts_one_flap() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let answer_ready = Arc::new(AtomicBool::new(true));
    let ready = Arc::clone(&answer_ready);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = [0_u8; 1024];
            let _ = stream.read(&mut request).await;
            let status = if ready.load(Ordering::Acquire) {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            let answer =
                format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    let balancer = TcpBalancer::start(&[addr], Some(Duration::from_millis(20))).await;
    while !balancer.is_ready(addr) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(balancer.flaps_of(addr), 0, "turning ready is no flap");
    answer_ready.store(false, Ordering::Release);
    while balancer.is_ready(addr) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Several more unready polls: still one transition.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(balancer.flaps_of(addr), 1);
}

#[tokio::test]
async fn an_unready_backend_gets_no_new_connections() {
    let ready = answering("200 OK").await;
    let unready = answering("503 Service Unavailable").await;
    let balancer = TcpBalancer::start(&[ready, unready], Some(Duration::from_millis(50))).await;
    while !balancer.is_ready(ready) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..30 {
        assert_eq!(
            ask(&balancer).await.as_deref(),
            Some(ready.port().to_string().as_str())
        );
    }
    assert!(!balancer.is_ready(unready));
    assert_eq!(balancer.connections_to(unready), 0);
}
