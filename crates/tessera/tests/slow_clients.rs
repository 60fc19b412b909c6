//! A client that trickles its request's head holds a connection only for `http.header_timeout`:
//! the server closes it, and keeps answering everyone else meanwhile.

mod harness;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use harness::{NO_ENV, Node};

/// Far above the configured second: the test is about the connection being closed, not when.
const PATIENCE: Duration = Duration::from_secs(20);

/// Reads until the server closes the connection (or answers and then closes it); `false` if it
/// is still open after [`PATIENCE`].
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    let mut buffer = [0u8; 1024];
    while Instant::now() < deadline {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn a_request_head_that_never_ends_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tessera.toml"),
        "database = \"memory\"\nplayground = false\n[http]\nheader_timeout = \"1s\"\n",
    )
    .unwrap();
    let node = Node::start(dir.path(), &[], NO_ENV);

    // Silent after the first line, and one that sends a header line every half second.
    let mut silent = TcpStream::connect(node.addr).unwrap();
    silent.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    let mut trickling = TcpStream::connect(node.addr).unwrap();
    trickling.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    let started = Instant::now();
    let mut cut_off = false;
    for i in 0..40 {
        std::thread::sleep(Duration::from_millis(500));
        if trickling
            .write_all(format!("X-Slow-{i}: yes\r\n").as_bytes())
            .is_err()
        {
            cut_off = true;
            break;
        }
    }
    assert!(
        cut_off || closed_by_server(&mut trickling),
        "a client trickling its headers kept its connection for {:?}",
        started.elapsed()
    );
    assert!(
        closed_by_server(&mut silent),
        "a client that stopped sending its headers kept its connection"
    );

    // Everyone else is served as usual, on a connection that stays open between requests.
    let mut fine = TcpStream::connect(node.addr).unwrap();
    for _ in 0..2 {
        fine.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        fine.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut buffer = [0u8; 4096];
        let n = fine.read(&mut buffer).unwrap();
        let answer = String::from_utf8_lossy(&buffer[..n]);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}
