//! The fault-injecting front forwards to a real upstream, the test S3 server or an echo server
//! of the test's own, and injects its faults: outages that drop open connections and refuse
//! new ones, and bursts of `503 SlowDown` answers.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ferry_tests::fault::{FaultyFront, SLOW_DOWN_BODY};
use ferry_tests::s3;
use rand::RngCore;

/// A failure guard for waits, never a timing assertion.
const GUARD: Duration = Duration::from_secs(10);

/// An outage long enough for a test to look at the front while it lasts.
const OUTAGE: Duration = Duration::from_secs(2);

/// Starts a server on a free port that echoes what each connection sends.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the echo server");
    let addr = listener.local_addr().expect("the echo server's address");
    std::thread::spawn(move || {
        for connection in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut writer = connection.try_clone().expect("clone the connection");
                let mut reader = connection;
                let _ = std::io::copy(&mut reader, &mut writer);
            });
        }
    });
    addr
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(GUARD))?;
    Ok(stream)
}

/// Sends `message` and asserts that the same bytes come back.
fn assert_echoes(stream: &mut TcpStream, message: &[u8]) {
    stream.write_all(message).expect("send to the echo server");
    let mut echoed = vec![0; message.len()];
    stream
        .read_exact(&mut echoed)
        .expect("read the echo server's answer");
    assert_eq!(echoed, message);
}

/// Asserts that the peer has closed `stream`: a read ends or is reset, rather than waiting.
fn assert_closed(stream: &mut TcpStream) {
    let mut byte = [0; 1];
    match stream.read(&mut byte) {
        Ok(0) => {}
        Ok(_) => panic!("the connection is still open and sent a byte"),
        Err(error) => assert!(
            matches!(
                error.kind(),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
            ),
            "the connection is still open: {error}"
        ),
    }
}

fn wait_for_outage_end(front: &FaultyFront) {
    let started = Instant::now();
    while front.in_outage() {
        assert!(started.elapsed() < GUARD, "the outage did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs curl on `url` with `args`, signing the request as an S3 client does, writes the answer's body to `out`, and returns its status.
fn curl(args: &[&str], url: &str, out: &Path) -> u16 {
    let output = Command::new("curl")
        .args([
            "-s",
            "--noproxy",
            "*",
            "--aws-sigv4",
            "aws:amz:us-east-1:s3",
            "--user",
        ])
        .arg(format!("{}:{}", s3::ACCESS_KEY_ID, s3::SECRET_ACCESS_KEY))
        .arg("-o")
        .arg(out)
        .args(["-w", "%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    let status = String::from_utf8_lossy(&output.stdout);
    status
        .parse()
        .unwrap_or_else(|_| panic!("curl {args:?} {url} gave no status: {output:?}"))
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

#[test]
fn requests_pass_through_to_the_object_store() {
    let endpoint = s3::endpoint();
    let bucket = s3::new_bucket(&endpoint);
    let front = FaultyFront::for_test_s3();
    let dir = tempfile::tempdir().unwrap();
    let object = dir.path().join("object");
    let data = random_bytes(300 * 1024);
    std::fs::write(&object, &data).unwrap();
    let through_front = format!("{}/{bucket}/object", front.endpoint());

    let put = curl(
        &["-T", object.to_str().unwrap()],
        &through_front,
        &dir.path().join("put"),
    );
    assert_eq!(put, 200);
    let got = dir.path().join("got");
    assert_eq!(curl(&[], &through_front, &got), 200);
    assert_eq!(std::fs::read(&got).unwrap(), data);
    let direct = dir.path().join("direct");
    assert_eq!(
        curl(&[], &format!("{endpoint}/{bucket}/object"), &direct),
        200
    );
    assert_eq!(std::fs::read(&direct).unwrap(), data);
    assert_eq!((front.slowed_down(), front.dropped()), (0, 0));
}

#[test]
fn an_outage_drops_open_connections_and_refuses_new_ones_until_it_ends() {
    let front = FaultyFront::start(echo_server());
    let mut open = connect(front.addr()).unwrap();
    assert_echoes(&mut open, b"before the outage");

    front.outage(OUTAGE);
    assert!(front.in_outage());
    assert_closed(&mut open);
    assert_eq!(front.dropped(), 1);
    let refused = connect(front.addr()).expect_err("a connection during the outage");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);

    wait_for_outage_end(&front);
    let mut after = connect(front.addr()).expect("a connection after the outage");
    assert_echoes(&mut after, b"after the outage");
    assert_eq!(front.dropped(), 1);
}

#[test]
fn a_shorter_outage_during_an_outage_does_not_end_it() {
    let front = FaultyFront::start(echo_server());
    front.outage(OUTAGE);
    front.outage(Duration::from_millis(1));
    // Past the shorter outage's end, well within the longer one.
    std::thread::sleep(Duration::from_millis(200));
    assert!(front.in_outage());
    let refused = connect(front.addr()).expect_err("a connection during the outage");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    wait_for_outage_end(&front);
    let mut after = connect(front.addr()).expect("a connection after the outage");
    assert_echoes(&mut after, b"after the outage");
}

#[test]
fn slow_down_drops_open_connections_and_answers_requests_on_new_ones() {
    let front = FaultyFront::start(echo_server());
    let mut open = connect(front.addr()).unwrap();
    assert_echoes(&mut open, b"before the burst");

    front.slow_down(3);
    assert_closed(&mut open);
    assert_eq!(front.dropped(), 1);
    let requests: [&[u8]; 3] = [
        b"PUT /bucket/key HTTP/1.1\r\nHost: front\r\nContent-Length: 5\r\n\r\nhello",
        // Answered without its body, which it waits to send.
        b"PUT /bucket/key HTTP/1.1\r\nHost: front\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        b"HEAD /bucket/key HTTP/1.1\r\nhost: front\r\n\r\n",
    ];
    let answers = requests.map(|request| {
        let mut stream = connect(front.addr()).unwrap();
        stream.write_all(request).unwrap();
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .expect("an answer, then the connection closed");
        answer
    });
    let (head, body) = ("HTTP/1.1 503 Service Unavailable\r\n", SLOW_DOWN_BODY);
    for answer in &answers {
        assert!(answer.starts_with(head), "{answer}");
        assert!(
            answer.contains("\r\nContent-Type: application/xml\r\n"),
            "{answer}"
        );
        assert!(answer.contains(&format!("\r\nContent-Length: {}\r\n", body.len())));
        assert!(answer.contains("\r\nConnection: close\r\n"), "{answer}");
    }
    assert!(
        answers[0].ends_with(&format!("\r\n\r\n{body}")),
        "{}",
        answers[0]
    );
    assert!(
        answers[1].ends_with(&format!("\r\n\r\n{body}")),
        "{}",
        answers[1]
    );
    assert!(
        answers[2].ends_with("\r\n\r\n"),
        "a HEAD answer has no body"
    );
    assert_eq!(front.slowed_down(), 3);

    let mut after = connect(front.addr()).unwrap();
    assert_echoes(&mut after, b"after the burst");
}

#[test]
fn slow_down_answers_exactly_the_next_requests_503_slow_down() {
    let endpoint = s3::endpoint();
    let bucket = s3::new_bucket(&endpoint);
    let front = FaultyFront::for_test_s3();
    let dir = tempfile::tempdir().unwrap();
    let object = dir.path().join("object");
    let data = random_bytes(200 * 1024);
    std::fs::write(&object, &data).unwrap();
    let through_front = format!("{}/{bucket}/object", front.endpoint());
    let answer = dir.path().join("answer");

    front.slow_down(3);
    let put = &["-T", object.to_str().unwrap()];
    assert_eq!(curl(put, &through_front, &answer), 503);
    assert!(
        std::fs::read_to_string(&answer)
            .unwrap()
            .contains("<Code>SlowDown</Code>")
    );
    assert_eq!(curl(&["-I"], &through_front, &answer), 503);
    assert_eq!(curl(&[], &through_front, &answer), 503);
    assert!(
        std::fs::read_to_string(&answer)
            .unwrap()
            .contains("<Code>SlowDown</Code>")
    );
    assert_eq!(front.slowed_down(), 3);
    let direct = format!("{endpoint}/{bucket}/object");
    assert_eq!(
        curl(&[], &direct, &answer),
        404,
        "a slowed-down PUT stored nothing"
    );

    assert_eq!(curl(put, &through_front, &answer), 200);
    assert_eq!(curl(&[], &through_front, &answer), 200);
    assert_eq!(std::fs::read(&answer).unwrap(), data);
    assert_eq!(front.slowed_down(), 3);
}
