//! The load side of the benchmark: a small keep-alive HTTP/1.1 client over loopback, run
//! either flat out (closed loop: each connection sends its next request when the last one is
//! answered) or paced (open loop: request `n` is due at `n / rate`, and its latency counts
//! from when it was due, so a stalled server cannot hide its stall by slowing the client).
//!
//! It is deliberately lighter than reqwest: the client shares the two cores with the server,
//! and the lighter it is, the more the figures say about the server.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Makes the body of request `n`.
pub type Bodies = Arc<dyn Fn(u64) -> String + Send + Sync>;

/// One connection, one request at a time.
pub struct Connection {
    stream: TcpStream,
    head: String,
    request: Vec<u8>,
    buffer: Vec<u8>,
}

impl Connection {
    pub async fn open(addr: SocketAddr, path: &str) -> io::Result<Connection> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            head: format!(
                "POST {path} HTTP/1.1\r\nhost: {addr}\r\n\
                 content-type: application/x-www-form-urlencoded\r\n"
            ),
            request: Vec::with_capacity(1024),
            buffer: Vec::with_capacity(4096),
        })
    }

    /// Posts `body` and returns the status of the answer, once the whole answer is read.
    pub async fn post(&mut self, body: &str) -> io::Result<u16> {
        self.request.clear();
        self.request.extend_from_slice(self.head.as_bytes());
        self.request
            .extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
        self.request.extend_from_slice(body.as_bytes());
        self.stream.write_all(&self.request).await?;

        loop {
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                let (status, length) = parse_head(&self.buffer[..end])?;
                let total = end + 4 + length;
                while self.buffer.len() < total {
                    self.fill().await?;
                }
                self.buffer.drain(..total);
                return Ok(status);
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> io::Result<()> {
        if self.stream.read_buf(&mut self.buffer).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            ));
        }
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The status and `content-length` of an answer; chunked answers are not expected here.
fn parse_head(head: &[u8]) -> io::Result<(u16, usize)> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let text = std::str::from_utf8(head).map_err(|_| bad("answer head is not text"))?;
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let mut length = 0;
    for line in lines {
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        if name.eq_ignore_ascii_case("content-length") {
            length = value
                .trim()
                .parse()
                .map_err(|_| bad("bad content-length"))?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(bad("chunked answers are not supported"));
        }
    }
    Ok((status, length))
}

/// What a run did.
pub struct Run {
    pub elapsed: Duration,
    /// CPU time this process spent meanwhile, on every thread: server, load and all.
    pub cpu: Duration,
    /// Answers by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Latency of each answered request, in microseconds, sorted.
    pub latencies_us: Vec<u64>,
}

impl Run {
    pub fn answered(&self) -> u64 {
        self.statuses.values().sum()
    }

    pub fn ok(&self) -> u64 {
        self.statuses.get(&200).copied().unwrap_or(0)
    }

    /// CPU time per answered request, in microseconds.
    pub fn cpu_us_each(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.answered() as f64
    }

    pub fn per_second(&self) -> f64 {
        self.answered() as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency at quantile `q` (0..=1), in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let index = ((self.latencies_us.len() - 1) as f64 * q).round() as usize;
        self.latencies_us[index] as f64 / 1000.0
    }
}

/// How requests are sent.
#[derive(Clone, Copy)]
pub enum Pace {
    /// As fast as the answers come, for `Duration`.
    FlatOut(Duration),
    /// `rate` requests per second for `Duration`.
    Paced { rate: f64, duration: Duration },
}

/// Sends requests to `addr` over `connections` connections and collects what came back.
pub async fn run(
    addr: SocketAddr,
    path: &str,
    connections: usize,
    pace: Pace,
    bodies: Bodies,
) -> io::Result<Run> {
    let mut opened = Vec::with_capacity(connections);
    for _ in 0..connections {
        opened.push(Connection::open(addr, path).await?);
    }

    let next = Arc::new(AtomicU64::new(0));
    let cpu_before = process_cpu();
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for mut connection in opened {
        let (next, bodies) = (next.clone(), bodies.clone());
        tasks.spawn(async move {
            let mut statuses = BTreeMap::new();
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let due = match pace {
                    Pace::FlatOut(duration) => {
                        let now = Instant::now();
                        if now >= start + duration {
                            break;
                        }
                        now
                    }
                    Pace::Paced { rate, duration } => {
                        let due = start + Duration::from_secs_f64(n as f64 / rate);
                        if due >= start + duration {
                            break;
                        }
                        tokio::time::sleep_until(due.into()).await;
                        due
                    }
                };
                let status = connection.post(&bodies(n)).await?;
                latencies.push(due.elapsed().as_micros() as u64);
                *statuses.entry(status).or_insert(0u64) += 1;
            }
            io::Result::Ok((statuses, latencies))
        });
    }

    let mut statuses = BTreeMap::new();
    let mut latencies_us = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (counts, latencies) = joined.expect("load task")?;
        for (status, count) in counts {
            *statuses.entry(status).or_insert(0) += count;
        }
        latencies_us.extend(latencies);
    }
    let elapsed = start.elapsed();
    let cpu = process_cpu().saturating_sub(cpu_before);
    latencies_us.sort_unstable();
    Ok(Run {
        elapsed,
        cpu,
        statuses,
        latencies_us,
    })
}

/// User and system time of this process so far, from `/proc/self/stat` (Linux; zero
/// elsewhere). Counted in clock ticks of 10 ms, plenty over runs of seconds.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |n: usize| {
        fields
            .get(n)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime, fields 14 and 15 of the line; field 3 is the first after the name.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

#[test]
fn answer_heads_are_read() {
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\ncontent-type: text/plain";
    assert_eq!(parse_head(head).unwrap(), (200, 6));
    assert!(parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked").is_err());
}
