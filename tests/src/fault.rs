//! A fault-injecting TCP front for the test S3 server. Ferry is pointed at the front's address
//! instead of the server's; the front forwards each connection to the server until a test asks
//! for a fault:
//!
//! - an outage: every open connection is dropped, and new connections are refused (the front
//!   closes its listening socket, and binds the same port again when the outage ends);
//! - a burst of throttling: the next requests are answered `503 Service Unavailable` with the
//!   S3 error `SlowDown`, each on its own connection, which is then closed.
//!
//! The front runs on a thread of its own with its own tokio runtime, so sync tests that spawn
//! Ferry's binaries may use it as well as async ones.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The body of a `SlowDown` answer, as S3 words it.
pub const SLOW_DOWN_BODY: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
<Message>Please reduce your request rate.</Message><RequestId>ferry-fault-front</RequestId>\
<HostId>ferry-fault-front</HostId></Error>";

/// The longest request head a `SlowDown` answer reads before giving up on the connection.
const MAX_HEAD: usize = 64 * 1024;

/// How long the front keeps trying to bind its port again after an outage.
const REBIND_GUARD: Duration = Duration::from_secs(10);

/// A running fault-injecting front; dropping it stops the front and closes its connections.
pub struct FaultyFront {
    addr: SocketAddr,
    counters: Arc<Counters>,
    commands: mpsc::UnboundedSender<Command>,
    shutdown: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Counters {
    /// `SlowDown` answers asked for and not yet given.
    pending_slow_downs: AtomicUsize,
    slowed_down: AtomicUsize,
    dropped: AtomicUsize,
    in_outage: AtomicBool,
}

/// A fault asked for; the front acknowledges it once it is in effect.
enum Command {
    Outage(Duration, Ack),
    SlowDown(usize, Ack),
}

type Ack = std::sync::mpsc::Sender<()>;

impl FaultyFront {
    /// Starts a front on 127.0.0.1 and a free port that forwards each connection to `upstream`
    /// (such as `127.0.0.1:9311`).
    pub fn start(upstream: SocketAddr) -> FaultyFront {
        let counters = Arc::new(Counters::default());
        let (commands, received) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let (started, bound) = std::sync::mpsc::channel();
        let front_counters = Arc::clone(&counters);
        let front_shutdown = shutdown.clone();
        let thread = std::thread::Builder::new()
            .name("fault-front".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("build the fault front's runtime");
                runtime.block_on(async move {
                    let listener = listen(SocketAddr::from(([127, 0, 0, 1], 0)))
                        .expect("bind the fault front");
                    let addr = listener.local_addr().expect("the fault front's address");
                    let front = Front {
                        upstream,
                        addr,
                        listener: Some(listener),
                        outage_end: None,
                        connections: JoinSet::new(),
                        counters: front_counters,
                    };
                    started
                        .send(addr)
                        .expect("report the fault front's address");
                    front.run(received, front_shutdown).await;
                });
            })
            .expect("spawn the fault front's thread");
        let addr = bound.recv().expect("the fault front started");
        FaultyFront {
            addr,
            counters,
            commands,
            shutdown,
            thread: Some(thread),
        }
    }

    /// Starts a front for the test S3 server (see [`crate::s3::endpoint`]).
    pub fn for_test_s3() -> FaultyFront {
        let endpoint = crate::s3::endpoint();
        let authority = endpoint.trim_start_matches("http://").trim_end_matches('/');
        let upstream = authority
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .unwrap_or_else(|| panic!("the test S3 endpoint {endpoint} names no address"));
        FaultyFront::start(upstream)
    }

    /// The front's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`, to pass as an S3 endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts an outage of `duration` and returns once it is in effect: every open connection
    /// has been dropped and new connections are refused (`ECONNREFUSED`). The outage ends in
    /// the background, when the front has bound its port again. An outage started during
    /// another one extends it if it ends later.
    pub fn outage(&self, duration: Duration) {
        self.command(|ack| Command::Outage(duration, ack));
    }

    /// Drops every open connection, then answers the next `n` requests `503 Service
    /// Unavailable` with the S3 error `SlowDown`, each on its own connection, which is then
    /// closed. A request's body is read by its `Content-Length` and discarded; a request that
    /// expects `100 Continue` is answered before it sends its body.
    pub fn slow_down(&self, n: usize) {
        self.command(|ack| Command::SlowDown(n, ack));
    }

    /// How many requests the front has answered `SlowDown` so far.
    pub fn slowed_down(&self) -> usize {
        self.counters.slowed_down.load(Ordering::SeqCst)
    }

    /// How many open connections the front has dropped so far, for an outage or before a
    /// burst of `SlowDown` answers. Connections refused during an outage never reach the
    /// front and are not counted.
    pub fn dropped(&self) -> usize {
        self.counters.dropped.load(Ordering::SeqCst)
    }

    /// Whether an outage is going on: from [`FaultyFront::outage`] until the front accepts
    /// connections again.
    pub fn in_outage(&self) -> bool {
        self.counters.in_outage.load(Ordering::SeqCst)
    }

    fn command(&self, command: impl FnOnce(Ack) -> Command) {
        let (ack, done) = std::sync::mpsc::channel();
        self.commands
            .send(command(ack))
            .expect("the fault front is running");
        done.recv().expect("the fault front is running");
    }
}

impl Drop for FaultyFront {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(thread) = self.thread.take() {
            // A panic of the front's thread has been reported on its own already.
            let _ = thread.join();
        }
    }
}

/// The front's accept loop and the state it alone changes.
struct Front {
    upstream: SocketAddr,
    addr: SocketAddr,
    /// None during an outage.
    listener: Option<TcpListener>,
    outage_end: Option<Instant>,
    connections: JoinSet<()>,
    counters: Arc<Counters>,
}

impl Front {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        stop: CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                Some(command) = commands.recv() => self.obey(command).await,
                accepted = accept(self.listener.as_ref()) => {
                    if let Ok(client) = accepted {
                        self.admit(client);
                    }
                }
                () = sleep_until(self.outage_end) => self.end_outage().await,
                Some(_) = self.connections.join_next() => {}
            }
        }
    }

    async fn obey(&mut self, command: Command) {
        let ack = match command {
            Command::Outage(duration, ack) => {
                self.counters.in_outage.store(true, Ordering::SeqCst);
                self.listener = None;
                let end = Instant::now() + duration;
                self.outage_end = Some(self.outage_end.map_or(end, |later| later.max(end)));
                ack
            }
            Command::SlowDown(n, ack) => {
                self.counters
                    .pending_slow_downs
                    .fetch_add(n, Ordering::SeqCst);
                ack
            }
        };
        self.drop_connections().await;
        // The caller may have gone; the fault is in effect all the same.
        let _ = ack.send(());
    }

    /// Closes every open connection, counting those that were still being served.
    async fn drop_connections(&mut self) {
        self.connections.abort_all();
        while let Some(ended) = self.connections.join_next().await {
            if ended.is_err_and(|error| error.is_cancelled()) {
                self.counters.dropped.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    fn admit(&mut self, client: TcpStream) {
        let take_slot = |pending: usize| pending.checked_sub(1);
        let slowed = self
            .counters
            .pending_slow_downs
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, take_slot)
            .is_ok();
        if slowed {
            let counters = Arc::clone(&self.counters);
            self.connections.spawn(answer_slow_down(client, counters));
        } else {
            self.connections.spawn(forward(client, self.upstream));
        }
    }

    async fn end_outage(&mut self) {
        let guard = Instant::now() + REBIND_GUARD;
        let listener = loop {
            match listen(self.addr) {
                Ok(listener) => break listener,
                Err(error) if Instant::now() > guard => {
                    panic!("the fault front cannot bind {} again: {error}", self.addr)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        self.listener = Some(listener);
        self.outage_end = None;
        self.counters.in_outage.store(false, Ordering::SeqCst);
    }
}

/// A listening socket on `addr` that may take over a port whose old connections linger.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// The next connection, or never while there is no listener.
async fn accept(listener: Option<&TcpListener>) -> io::Result<TcpStream> {
    match listener {
        Some(listener) => listener.accept().await.map(|(client, _)| client),
        None => std::future::pending().await,
    }
}

/// Returns at `end`, or never without one.
async fn sleep_until(end: Option<Instant>) {
    match end {
        Some(end) => tokio::time::sleep_until(end).await,
        None => std::future::pending().await,
    }
}

async fn forward(mut client: TcpStream, upstream: SocketAddr) {
    // A client whose upstream cannot be reached sees its connection closed.
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}

async fn answer_slow_down(mut client: TcpStream, counters: Arc<Counters>) {
    let Ok(head_only) = read_request(&mut client).await else {
        // No request came; the answer goes to the next connection.
        counters.pending_slow_downs.fetch_add(1, Ordering::SeqCst);
        return;
    };
    counters.slowed_down.fetch_add(1, Ordering::SeqCst);
    let body = if head_only { "" } else { SLOW_DOWN_BODY };
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        SLOW_DOWN_BODY.len()
    );
    if client.write_all(response.as_bytes()).await.is_ok() {
        let _ = client.shutdown().await;
    }
}

/// Reads a request's head and its body, unless it waits for `100 Continue`; returns whether
/// it is a `HEAD` request, whose answer has no body.
async fn read_request(client: &mut TcpStream) -> io::Result<bool> {
    let mut read = Vec::with_capacity(4096);
    let head_end = loop {
        if let Some(end) = read.windows(4).position(|window| window == b"\r\n\r\n") {
            break end;
        }
        if read.len() > MAX_HEAD {
            return Err(io::ErrorKind::InvalidData.into());
        }
        if client.read_buf(&mut read).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    };
    let head = String::from_utf8_lossy(&read[..head_end]).to_ascii_lowercase();
    let continues = header(&head, "expect") == Some("100-continue");
    if !continues {
        let length: u64 = header(&head, "content-length")
            .and_then(|length| length.parse().ok())
            .unwrap_or(0);
        let body_read = u64::try_from(read.len() - head_end - 4).unwrap_or(u64::MAX);
        let mut body = client.take(length.saturating_sub(body_read));
        tokio::io::copy(&mut body, &mut tokio::io::sink()).await?;
    }
    Ok(head.starts_with("head "))
}

/// The value of a header in a lowercased request head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (field, value) = line.split_once(':')?;
        (field.trim() == name).then(|| value.trim())
    })
}
