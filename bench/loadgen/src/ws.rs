//! WebSocket (RFC 6455) load through an mTLS terminator, and the echo backend behind it.
//!
//! - `ws`: N connections each upgrade `--path` to a WebSocket, then send `--streams` binary
//!   messages of `--size` bytes back to back and read their echoes, again and again for
//!   `--secs`; messages/s and MB/s (payload bytes echoed, one direction).
//! - `wsecho ADDR`: a plaintext WebSocket echo server (the backend): every data frame comes
//!   back as it arrives, streamed, never held whole.
//!
//! Both ends are lean on purpose: the client's masking key is all zeros (RFC 6455 wants an
//! unpredictable one; it protects browsers from cache poisoning, not a benchmark) and the
//! backend answers only the handshake key the client sends (the RFC's own example).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::{config, connect, Args};

/// The handshake key the client sends, and the answer RFC 6455 §1.3 gives for it.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// The longest a handshake may take before the run is called failed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A frame header for a payload of `len` bytes: FIN, `opcode`, and with `mask` a zero key.
fn frame_header(opcode: u8, len: usize, mask: bool) -> Vec<u8> {
    let m = if mask { 0x80 } else { 0 };
    let mut h = vec![0x80 | opcode];
    if len < 126 {
        h.push(m | len as u8);
    } else if len <= 0xFFFF {
        h.push(m | 126);
        h.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        h.push(m | 127);
        h.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if mask {
        h.extend_from_slice(&[0; 4]);
    }
    h
}

/// A frame's header parsed from the front of `b`: (header length, payload length, opcode,
/// masking key); None until the whole header is there.
fn parse_header(b: &[u8]) -> Option<(usize, u64, u8, Option<[u8; 4]>)> {
    if b.len() < 2 {
        return None;
    }
    let opcode = b[0] & 0x0F;
    let masked = b[1] & 0x80 != 0;
    let (mut at, len) = match b[1] & 0x7F {
        126 => (
            4,
            u64::from(u16::from_be_bytes(b.get(2..4)?.try_into().ok()?)),
        ),
        127 => (10, u64::from_be_bytes(b.get(2..10)?.try_into().ok()?)),
        n => (2, u64::from(n)),
    };
    let key = if masked {
        let k: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(k)
    } else {
        None
    };
    Some((at, len, opcode, key))
}

/// Reads an HTTP head (up to the blank line) into `buf`; returns its length.
async fn read_head<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> anyhow::Result<usize> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(end + 4);
        }
        if buf.len() > 16 * 1024 {
            bail!("HTTP head larger than 16 KiB");
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed in the HTTP head");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Counts whole frames arriving on a stream, skipping their payloads.
struct Frames {
    buf: Vec<u8>,
    /// Payload bytes of the current frame still to skip.
    skip: u64,
    in_frame: bool,
    /// The read buffer, kept across calls: one zeroed 64 KiB buffer per batch cost the
    /// load generator more than the batch itself at small message sizes.
    chunk: Box<[u8]>,
}

impl Frames {
    fn new(buf: Vec<u8>) -> Frames {
        Frames {
            buf,
            skip: 0,
            in_frame: false,
            chunk: vec![0u8; 64 * 1024].into_boxed_slice(),
        }
    }

    /// Reads until `want` more whole frames have arrived; the payload bytes seen.
    async fn take<S: AsyncRead + Unpin>(&mut self, s: &mut S, want: usize) -> anyhow::Result<u64> {
        let (mut done, mut bytes) = (0, 0u64);
        loop {
            // payload bytes already buffered are skipped without parsing them byte by byte
            if self.in_frame && self.buf.is_empty() && self.skip > 0 {
                let n = s.read(&mut self.chunk).await?;
                if n == 0 {
                    bail!("connection closed mid-stream");
                }
                let k = self.skip.min(n as u64);
                self.skip -= k;
                bytes += k;
                if (k as usize) < n {
                    self.buf.extend_from_slice(&self.chunk[k as usize..n]);
                }
                if self.skip > 0 {
                    continue;
                }
                self.in_frame = false;
                done += 1;
                if done == want && self.buf.is_empty() {
                    return Ok(bytes);
                }
            }
            let mut pos = 0;
            while done < want {
                if self.in_frame {
                    let k = self.skip.min((self.buf.len() - pos) as u64);
                    pos += k as usize;
                    self.skip -= k;
                    bytes += k;
                    if self.skip > 0 {
                        break;
                    }
                    self.in_frame = false;
                    done += 1;
                    continue;
                }
                let Some((h, len, opcode, _)) = parse_header(&self.buf[pos..]) else {
                    break;
                };
                if opcode == 0x8 {
                    bail!("the server closed the WebSocket");
                }
                pos += h;
                self.skip = len;
                self.in_frame = true;
            }
            self.buf.drain(..pos);
            if done == want {
                return Ok(bytes);
            }
            let n = s.read(&mut self.chunk).await?;
            if n == 0 {
                bail!("connection closed mid-stream");
            }
            self.buf.extend_from_slice(&self.chunk[..n]);
        }
    }
}

/// `ws`: see the module comment.
pub async fn client(a: &Args) -> anyhow::Result<()> {
    let cfg = config(a)?;
    let stop = Arc::new(AtomicBool::new(false));
    let messages = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    // every connection upgraded before the clock starts
    let mut conns = Vec::with_capacity(a.conns);
    for _ in 0..a.conns {
        let mut s = tokio::time::timeout(HANDSHAKE_TIMEOUT, connect(&cfg, &a.addr))
            .await
            .context("TLS handshake timed out")??;
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n",
            a.path
        );
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        let head = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_head(&mut s, &mut buf))
            .await
            .context("upgrade timed out")??;
        let status = String::from_utf8_lossy(&buf[..head]);
        if !status.starts_with("HTTP/1.1 101") {
            bail!("upgrade refused: {}", status.lines().next().unwrap_or(""));
        }
        buf.drain(..head);
        conns.push((s, buf));
    }
    let mut batch = Vec::new();
    let payload = vec![b'x'; a.size];
    for _ in 0..a.streams {
        batch.extend_from_slice(&frame_header(0x2, a.size, true));
        batch.extend_from_slice(&payload);
    }
    let batch = Arc::new(batch);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (s, buf) in conns {
        let (stop, messages, bytes, batch) =
            (stop.clone(), messages.clone(), bytes.clone(), batch.clone());
        let window = a.streams;
        tasks.push(tokio::spawn(async move {
            let mut frames = Frames::new(buf);
            // echoes are read while the batch is still being written: a batch larger than
            // the buffers along the path would otherwise deadlock (nobody reading)
            let (mut rd, mut wr) = tokio::io::split(s);
            while !stop.load(Ordering::Relaxed) {
                let (sent, got) = tokio::join!(wr.write_all(&batch), frames.take(&mut rd, window));
                sent?;
                let got = got?;
                messages.fetch_add(window as u64, Ordering::Relaxed);
                bytes.fetch_add(got, Ordering::Relaxed);
            }
            // a close frame; the connection is dropped after it
            wr.write_all(&frame_header(0x8, 0, true)).await?;
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(a.secs)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let (n, b) = (
        messages.load(Ordering::Relaxed),
        bytes.load(Ordering::Relaxed),
    );
    for t in tasks {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, t).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => bail!("a connection failed: {e:#}"),
            Ok(Err(e)) => bail!("a connection task failed: {e}"),
            Err(_) => bail!("a connection did not finish its last batch in time"),
        }
    }
    println!(
        "ws_conns={} window={} size={} messages={n} messages_per_sec={:.0} mb_per_sec={:.1} secs={elapsed:.2}",
        a.conns,
        a.streams,
        a.size,
        n as f64 / elapsed,
        b as f64 / elapsed / 1e6
    );
    Ok(())
}

/// `wsecho`: see the module comment.
pub async fn echo_server(addr: &str) -> anyhow::Result<()> {
    let l = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    loop {
        let (s, _) = l.accept().await?;
        s.set_nodelay(true)?;
        tokio::spawn(async move {
            if let Err(e) = echo(s).await {
                eprintln!("wsecho: {e:#}");
            }
        });
    }
}

async fn echo(s: tokio::net::TcpStream) -> anyhow::Result<()> {
    let (mut rd, mut wr) = s.into_split();
    let mut buf = Vec::new();
    let head = read_head(&mut rd, &mut buf).await?;
    let text = String::from_utf8_lossy(&buf[..head]).to_ascii_lowercase();
    if !text.contains(&format!("sec-websocket-key: {}", KEY.to_ascii_lowercase())) {
        wr.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            .await?;
        return Ok(());
    }
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {ACCEPT}\r\n\r\n"
    );
    wr.write_all(answer.as_bytes()).await?;
    buf.drain(..head);
    // Reading and writing run apart (a writer task fed by a channel): a proxy that stops
    // reading from the backend while its own writes to it are blocked must not deadlock
    // the echo.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1024);
    let writer = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            wr.write_all(&b).await?;
        }
        anyhow::Ok(())
    });
    // streamed echo: a frame's header goes out as soon as it is parsed, its payload as it
    // arrives, unmasked
    let (mut skip, mut key, mut off) = (0u64, [0u8; 4], 0usize);
    let mut out = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    'conn: loop {
        let mut pos = 0;
        loop {
            if skip > 0 {
                let k = skip.min((buf.len() - pos) as u64) as usize;
                if k == 0 {
                    break;
                }
                if key == [0; 4] {
                    // the load generator's key: unmasking is a copy
                    out.extend_from_slice(&buf[pos..pos + k]);
                } else {
                    out.extend(
                        buf[pos..pos + k]
                            .iter()
                            .enumerate()
                            .map(|(i, b)| b ^ key[(off + i) % 4]),
                    );
                }
                off += k;
                pos += k;
                skip -= k as u64;
                continue;
            }
            let Some((h, len, opcode, k)) = parse_header(&buf[pos..]) else {
                break;
            };
            pos += h;
            out.extend_from_slice(&frame_header(opcode, len as usize, false));
            if opcode == 0x8 {
                break 'conn;
            }
            (skip, key, off) = (len, k.unwrap_or([0; 4]), 0);
        }
        buf.drain(..pos);
        if !out.is_empty() && tx.send(std::mem::take(&mut out)).await.is_err() {
            break;
        }
        let n = rd.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    if !out.is_empty() {
        let _ = tx.send(out).await;
    }
    drop(tx);
    writer.await?
}
