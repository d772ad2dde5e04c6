//! An HTTP/1.1 upstream for tests that answers each request with `200 {"ok":true}` (without the
//! content for HEAD) and records it byte for byte, or (for load) only counts it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::http::IO_TIMEOUT;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The request line and header lines, as received (bytes: a field value may be obs-text).
    pub head: Vec<u8>,
    /// The body, as received.
    pub body: Vec<u8>,
}

impl Recorded {
    /// The request line.
    pub fn request_line(&self) -> String {
        let line = self.head.split(|b| *b == b'\n').next().unwrap_or_default();
        String::from_utf8_lossy(line.trim_ascii()).into_owned()
    }

    /// Every value of header `name` (case-insensitive), as received.
    pub fn header_bytes(&self, name: &str) -> Vec<&[u8]> {
        self.head
            .split(|b| *b == b'\n')
            .skip(1)
            .filter_map(|line| {
                let colon = line.iter().position(|b| *b == b':')?;
                let (field, value) = line.split_at(colon);
                field
                    .trim_ascii()
                    .eq_ignore_ascii_case(name.as_bytes())
                    .then(|| value[1..].trim_ascii())
            })
            .collect()
    }

    /// Every value of header `name` (case-insensitive), as text.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.header_bytes(name)
            .into_iter()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect()
    }
}

/// The recording upstream; stopped (and its thread joined) on drop.
pub struct Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Recorded>>>,
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Listens on `127.0.0.1:port` (0 for any), recording every request.
    pub fn start(port: u16) -> Self {
        Self::listen(port, true)
    }

    /// Listens on an ephemeral port and only counts requests (for load, where recording would
    /// grow without bound).
    pub fn start_counting() -> Self {
        Self::listen(0, false)
    }

    fn listen(port: u16, record: bool) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("upstream port is free");
        let addr = listener.local_addr().expect("bound");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, count, stop) = (Arc::clone(&seen), Arc::clone(&count), Arc::clone(&stop));
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        let seen = record.then(|| Arc::clone(&seen));
                        let count = Arc::clone(&count);
                        std::thread::spawn(move || serve(stream, seen.as_deref(), &count));
                    }
                }
            })
        };
        Self {
            addr,
            seen,
            count,
            stop,
            thread: Some(thread),
        }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many requests were received.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// Every request received so far (empty for a counting upstream).
    pub fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The content of every answer but HEAD's.
const CONTENT: &[u8] = b"{\"ok\":true}";

fn serve(stream: TcpStream, seen: Option<&Mutex<Vec<Recorded>>>, count: &AtomicU64) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let answer = [
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            CONTENT.len()
        )
        .as_bytes(),
        CONTENT,
    ]
    .concat();
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == b"\r\n" {
                break;
            }
            head.extend_from_slice(&line);
        }
        let received = Recorded {
            head,
            body: Vec::new(),
        };
        let length = received
            .header_values("content-length")
            .first()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        count.fetch_add(1, Ordering::SeqCst);
        let head_request = received.head.starts_with(b"HEAD ");
        if let Some(Ok(mut seen)) = seen.map(Mutex::lock) {
            seen.push(Recorded { body, ..received });
        }
        // The answer to HEAD is the answer to GET without its content (RFC 9110 section 9.3.2).
        let reply = if head_request {
            &answer[..answer.len() - CONTENT.len()]
        } else {
            &answer[..]
        };
        if writer.write_all(reply).is_err() {
            return;
        }
    }
}
