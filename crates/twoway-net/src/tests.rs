use super::*;
use std::net::Ipv6Addr;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn table(total: usize, per: usize) -> ConnTable {
    ConnTable::new(Limits {
        max_connections: total,
        max_per_address: per,
    })
}

async fn pause(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[tokio::test(start_paused = true)]
async fn a_full_address_sheds_its_oldest_idle_connection_never_a_busy_one() {
    let t = table(100, 3);
    let a = t.admit(ip("10.0.0.1")).unwrap();
    pause(1).await;
    let b = t.admit(ip("10.0.0.1")).unwrap();
    pause(1).await;
    let c = t.admit(ip("10.0.0.1")).unwrap();
    let other = t.admit(ip("10.0.0.2")).unwrap();
    let _busy_a = a.busy();
    // a is busy: b is the oldest idle one.
    let d = t.admit(ip("10.0.0.1")).unwrap();
    assert!(!a.is_shed() && b.is_shed() && !c.is_shed() && !other.is_shed());
    b.shed().await; // resolves at once for a shed connection
    assert_eq!(t.stats().open, 4);
    // Every connection of the address busy: the next one is refused, others unaffected.
    let (_bc, _bd) = (c.busy(), d.busy());
    assert_eq!(t.admit(ip("10.0.0.1")).unwrap_err(), Refused::AddressFull);
    assert!(t.admit(ip("10.0.0.3")).is_ok());
    let s = t.stats();
    assert_eq!((s.shed, s.refused_address, s.refused_full), (1, 1, 0));
    drop(b); // a shed connection's drop frees nothing twice
    assert_eq!(t.stats().open, 4);
}

#[tokio::test(start_paused = true)]
async fn a_full_table_sheds_the_oldest_idle_connection_of_any_address() {
    let t = table(3, 3);
    let a = t.admit(ip("10.0.0.1")).unwrap();
    pause(1).await;
    let b = t.admit(ip("10.0.0.2")).unwrap();
    pause(1).await;
    let c = t.admit(ip("10.0.0.3")).unwrap();
    // b served a request most recently; a is the oldest idle.
    drop(b.busy());
    pause(1).await;
    let _d = t.admit(ip("10.0.0.4")).unwrap();
    assert!(a.is_shed() && !b.is_shed() && !c.is_shed());
    // c served a request after b: b is the oldest idle now.
    pause(1).await;
    drop(c.busy());
    let e = t.admit(ip("10.0.0.5")).unwrap();
    assert!(b.is_shed() && !c.is_shed());
    let (_x, _y, _z) = (c.busy(), _d.busy(), e.busy());
    assert_eq!(t.admit(ip("10.0.0.6")).unwrap_err(), Refused::TableFull);
    assert_eq!(t.stats().refused_full, 1);
    drop(e);
    assert!(
        t.admit(ip("10.0.0.6")).is_ok(),
        "a dropped connection frees its place"
    );
}

#[test]
fn ipv6_addresses_count_by_their_64_bit_prefix() {
    let k = |s: &str| AddressKey::of(ip(s));
    assert_eq!(k("2001:db8:1:2::1"), k("2001:db8:1:2:ffff::9"));
    assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
    assert_eq!(k("::ffff:10.0.0.1"), k("10.0.0.1"));
    assert_ne!(k("10.0.0.1"), k("10.0.0.2"));
    assert_eq!(k("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
    let t = table(100, 2);
    let a = t.admit(ip("2001:db8::1")).unwrap();
    let _b = t
        .admit(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 9, 9, 9, 9)))
        .unwrap();
    let _c = t.admit(ip("2001:db8::2")).unwrap();
    assert!(
        a.is_shed(),
        "a third address of the same /64 sheds the first"
    );
    let _d = t.admit(ip("2001:db8:0:1::1")).unwrap();
    assert_eq!(t.stats().shed, 1);
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_has_a_first_request_and_a_between_requests_deadline() {
    let t = table(10, 10);
    let c = t.admit(ip("127.0.0.1")).unwrap();
    let start = Instant::now();
    c.idle_timeout(Duration::from_secs(2), Duration::from_secs(5))
        .await;
    assert_eq!(start.elapsed(), Duration::from_secs(2));

    let c = t.admit(ip("127.0.0.1")).unwrap();
    let busy = c.busy();
    let timeout = c.idle_timeout(Duration::from_secs(2), Duration::from_secs(5));
    tokio::pin!(timeout);
    // Busy for 7 s: no timeout meanwhile.
    tokio::select! {
        _ = &mut timeout => panic!("timed out while busy"),
        _ = pause(7000) => {}
    }
    drop(busy);
    let idle_from = Instant::now();
    timeout.await;
    assert_eq!(idle_from.elapsed(), Duration::from_secs(5));
    assert_eq!(t.stats().timed_out, 2);
}

#[tokio::test(start_paused = true)]
async fn a_request_moves_the_idle_deadline() {
    let t = table(10, 10);
    let c = t.admit(ip("127.0.0.1")).unwrap();
    let start = Instant::now();
    let timeout = c.idle_timeout(Duration::from_secs(2), Duration::from_secs(3));
    tokio::pin!(timeout);
    tokio::select! {
        _ = &mut timeout => panic!("too early"),
        _ = pause(1500) => {}
    }
    drop(c.busy());
    timeout.await;
    assert_eq!(start.elapsed(), Duration::from_millis(4500));
}

#[tokio::test]
async fn accept_admits_and_sheds_real_connections() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let t = table(10, 2);
    let _c1 = TcpStream::connect(addr).await.unwrap();
    let a1 = accept(&l, &t).await;
    let _c2 = TcpStream::connect(addr).await.unwrap();
    let a2 = accept(&l, &t).await;
    let _busy = a2.conn.busy();
    let _c3 = TcpStream::connect(addr).await.unwrap();
    let a3 = accept(&l, &t).await;
    tokio::time::timeout(Duration::from_secs(5), a1.conn.shed())
        .await
        .unwrap();
    assert!(!a2.conn.is_shed() && !a3.conn.is_shed());
    // Both places taken by busy connections: a fourth is closed at once.
    let _busy3 = a3.conn.busy();
    let mut c4 = TcpStream::connect(addr).await.unwrap();
    let accepting = tokio::time::timeout(Duration::from_millis(300), accept(&l, &t)).await;
    assert!(accepting.is_err(), "a refused connection was returned");
    use tokio::io::AsyncReadExt;
    let mut b = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), c4.read(&mut b))
        .await
        .unwrap();
    assert!(
        matches!(n, Ok(0) | Err(_)),
        "the refused connection is closed"
    );
    assert_eq!(t.stats().refused_address, 1);
}
