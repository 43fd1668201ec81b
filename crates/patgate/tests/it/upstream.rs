//! What the proxy tests (nginx, Traefik) share: the guarded service, a small HTTP server that
//! answers 200 to everything and keeps what it received, and starting a proxy on a free port.

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::Child,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

/// A request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// The guarded service: answers 200 to everything and echoes the `X-Patgate-User` it
/// received, in a header and in the body.
pub struct Upstream {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    thread: Option<JoinHandle<()>>,
}

impl Upstream {
    pub fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        let _client_gone = answer(stream, &seen);
                    }
                }
            })
        };
        Upstream { addr, stop, seen, thread: Some(thread) }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

fn answer(stream: TcpStream, seen: &Mutex<Vec<Seen>>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut words = line.split(' ');
    let method = words.next().unwrap_or_default().to_owned();
    let target = words.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    let request = Seen { method, target, headers };
    let user = request.header("x-patgate-user").unwrap_or("").to_owned();
    seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(request);
    let body = format!("upstream saw X-Patgate-User: {user}\n");
    let mut stream = reader.into_inner();
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Upstream-Saw-User: {user}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _woken = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _joined = thread.join();
        }
    }
}

/// A proxy process (nginx, Traefik) on a loopback port; killed when dropped, its log shown
/// when a test fails.
pub struct Proxy {
    name: &'static str,
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _already_gone = self.child.kill();
        let _status = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- {} log ({})", self.name, self.addr);
            eprintln!("{}", std::fs::read_to_string(&self.log).unwrap_or_default());
        }
    }
}

/// A proxy started on a free loopback port: `spawn(port)` starts it (writing `log`), and it is
/// up once it accepts connections and `up(addr)` says so, within `timeout`. The port is found
/// by binding `:0` and releasing it, so another process may take it first: a proxy that exits
/// saying so in its log ("address already in use") is started again on another port.
pub fn start_on_free_port(
    name: &'static str,
    log: PathBuf,
    timeout: Duration,
    mut spawn: impl FnMut(u16) -> Child,
    up: impl Fn(SocketAddr) -> bool,
) -> Proxy {
    for _attempt in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let _fresh = std::fs::remove_file(&log);
        let child = spawn(port);
        let mut proxy = Proxy { name, child, addr, log: log.clone() };
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = proxy.child.try_wait() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if text.to_ascii_lowercase().contains("address already in use") {
                    break;
                }
                panic!("{name} exited ({status}):\n{text}");
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() && up(addr) {
                return proxy;
            }
            assert!(std::time::Instant::now() <= deadline, "{name} did not serve on {addr} within {timeout:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("{name}: no free loopback port after 5 attempts");
}
