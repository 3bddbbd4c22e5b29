//! SPDY/3.1, the subset the kubelet's streaming endpoints need (port-forward, and exec/attach
//! from clients that do not speak WebSocket): frames, the header blocks' zlib contexts with
//! the SPDY/3 dictionary (one per direction, for the whole connection), a frame reader that
//! keeps the inbound context in step, and a writer task. No flow control (neither does
//! spdystream, the client side).

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

pub const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
pub const FLAG_FIN: u8 = 0x01;
/// RST_STREAM status codes
pub const PROTOCOL_ERROR: u32 = 1;
const MAX_FRAME: usize = 16 << 20;

/// The SPDY/3 header compression dictionary (draft-mbelshe-httpbis-spdy-00, 2.6.10.1).
const SPDY3_DICTIONARY: &[u8] = b"\
    \0\0\0\x07options\0\0\0\x04head\0\0\0\x04post\0\0\0\x03put\0\0\0\x06delete\0\0\0\x05trace\0\
    \0\0\x06accept\0\0\0\x0eaccept-charset\0\0\0\x0faccept-encoding\0\0\0\x0faccept-language\0\0\
    \0\x0daccept-ranges\0\0\0\x03age\0\0\0\x05allow\0\0\0\x0dauthorization\0\0\0\x0dcache-contro\
    l\0\0\0\x0aconnection\0\0\0\x0ccontent-base\0\0\0\x10content-encoding\0\0\0\x10content-langu\
    age\0\0\0\x0econtent-length\0\0\0\x10content-location\0\0\0\x0bcontent-md5\0\0\0\x0dcontent-\
    range\0\0\0\x0ccontent-type\0\0\0\x04date\0\0\0\x04etag\0\0\0\x06expect\0\0\0\x07expires\0\0\
    \0\x04from\0\0\0\x04host\0\0\0\x08if-match\0\0\0\x11if-modified-since\0\0\0\x0dif-none-match\
    \0\0\0\x08if-range\0\0\0\x13if-unmodified-since\0\0\0\x0dlast-modified\0\0\0\x08location\0\0\
    \0\x0cmax-forwards\0\0\0\x06pragma\0\0\0\x12proxy-authenticate\0\0\0\x13proxy-authorization\
    \0\0\0\x05range\0\0\0\x07referer\0\0\0\x0bretry-after\0\0\0\x06server\0\0\0\x02te\0\0\0\x07t\
    railer\0\0\0\x11transfer-encoding\0\0\0\x07upgrade\0\0\0\x0auser-agent\0\0\0\x04vary\0\0\0\
    \x03via\0\0\0\x07warning\0\0\0\x10www-authenticate\0\0\0\x06method\0\0\0\x03get\0\0\0\x06sta\
    tus\0\0\0\x06200 OK\0\0\0\x07version\0\0\0\x08HTTP/1.1\0\0\0\x03url\0\0\0\x06public\0\0\0\
    \x0aset-cookie\0\0\0\x0akeep-alive\0\0\0\x06origin100101201202205206300302303304305306307402\
    405406407408409410411412413414415416417502504505203 Non-Authoritative Information204 No Cont\
    ent301 Moved Permanently400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Interna\
    l Server Error501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept\
    \x20Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,i\
    mage/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,publicpr\
    ivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// One direction's header (de)compression context: a zlib stream for the whole connection,
/// one sync-flushed block per header block.
struct Inflater(Decompress);

impl Inflater {
    fn new() -> Self {
        Inflater(Decompress::new(true))
    }

    fn block(&mut self, mut input: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(input.len() * 4 + 256);
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(out.capacity().max(1024));
            }
            let before = self.0.total_in();
            let r = self.0.decompress_vec(input, &mut out, FlushDecompress::Sync);
            input = &input[(self.0.total_in() - before) as usize..];
            match r {
                Ok(_) => {
                    if input.is_empty() && out.len() < out.capacity() {
                        return Ok(out);
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.0.set_dictionary(SPDY3_DICTIONARY).map_err(|e| e.to_string())?;
                }
                Err(e) => return Err(format!("header block: {e}")),
            }
        }
    }
}

struct Deflater(Compress);

impl Deflater {
    fn new() -> Self {
        let mut c = Compress::new(Compression::default(), true);
        c.set_dictionary(SPDY3_DICTIONARY).expect("a zlib compressor takes a dictionary before its first block");
        Deflater(c)
    }

    fn block(&mut self, mut input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len() + 128);
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let before = self.0.total_in();
            if self.0.compress_vec(input, &mut out, FlushCompress::Sync).is_err() {
                return out;
            }
            input = &input[(self.0.total_in() - before) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                return out;
            }
        }
    }
}

/// A decompressed header block: lower-case names, values (NUL-separated ones split).
fn parse_header_block(b: &[u8]) -> Option<Vec<(String, String)>> {
    let mut pos = 0;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = b.get(pos..pos + n)?;
        pos += n;
        Some(s)
    };
    let count = be32(take(4)?);
    let mut out = Vec::new();
    for _ in 0..count {
        let n = be32(take(4)?) as usize;
        let name = String::from_utf8_lossy(take(n)?).to_ascii_lowercase();
        let n = be32(take(4)?) as usize;
        let value = String::from_utf8_lossy(take(n)?).into_owned();
        for v in value.split('\0') {
            out.push((name.clone(), v.to_string()));
        }
    }
    Some(out)
}

fn encode_header_block(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut b = (headers.len() as u32).to_be_bytes().to_vec();
    for (k, v) in headers {
        b.extend_from_slice(&(k.len() as u32).to_be_bytes());
        b.extend_from_slice(k.as_bytes());
        b.extend_from_slice(&(v.len() as u32).to_be_bytes());
        b.extend_from_slice(v.as_bytes());
    }
    b
}

fn control_frame(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.extend_from_slice(&[0x80, 3]);
    f.extend_from_slice(&kind.to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(payload);
    f
}

fn data_frame(stream: u32, flags: u8, data: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + data.len());
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(data);
    f
}

/// What the connection's writer sends.
pub enum Out {
    Reply(u32),
    Data(u32, Bytes),
    Fin(u32),
    Reset(u32, u32),
    Ping(u32),
}

pub async fn writer<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::Receiver<Out>) {
    let mut deflate = Deflater::new();
    while let Some(o) = rx.recv().await {
        let frame = match o {
            Out::Reply(id) => {
                let mut p = id.to_be_bytes().to_vec();
                p.extend(deflate.block(&encode_header_block(&[])));
                control_frame(SYN_REPLY, 0, &p)
            }
            Out::Data(id, d) => data_frame(id, 0, &d),
            Out::Fin(id) => data_frame(id, FLAG_FIN, &[]),
            Out::Reset(id, status) => {
                let mut p = id.to_be_bytes().to_vec();
                p.extend_from_slice(&status.to_be_bytes());
                control_frame(RST_STREAM, 0, &p)
            }
            Out::Ping(id) => control_frame(PING, 0, &id.to_be_bytes()),
        };
        if w.write_all(&frame).await.is_err() {
            return;
        }
        if rx.is_empty() && w.flush().await.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}


/// A frame from the client, header blocks inflated.
pub enum Frame {
    Data { id: u32, fin: bool, data: Vec<u8> },
    /// A new stream: its id, whether the client already half-closed it, its headers
    /// (lower-case names).
    SynStream { id: u32, fin: bool, headers: Vec<(String, String)> },
    Reset(u32),
    Ping(u32),
    GoAway,
    /// SETTINGS, WINDOW_UPDATE, SYN_REPLY, HEADERS...: nothing to do.
    Other,
}

/// Reads frames from one connection.
pub struct Reader<R> {
    rd: tokio::io::BufReader<R>,
    inflate: Inflater,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub fn new(rd: R) -> Self {
        Reader { rd: tokio::io::BufReader::new(rd), inflate: Inflater::new() }
    }

    /// The next frame; `None` at the end of the connection or on a protocol error.
    pub async fn next(&mut self) -> Option<Frame> {
        let mut head = [0u8; 8];
        self.rd.read_exact(&mut head).await.ok()?;
        let flags = head[4];
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        if len > MAX_FRAME {
            tracing::debug!(len, "spdy: frame too large");
            return None;
        }
        let mut payload = vec![0u8; len];
        self.rd.read_exact(&mut payload).await.ok()?;
        let fin = flags & FLAG_FIN != 0;
        if head[0] & 0x80 == 0 {
            return Some(Frame::Data { id: be32(&head) & 0x7fff_ffff, fin, data: payload });
        }
        Some(match u16::from_be_bytes([head[2], head[3]]) {
            SYN_STREAM if payload.len() >= 10 => {
                let id = be32(&payload) & 0x7fff_ffff;
                match self.inflate.block(&payload[10..]).map(|b| parse_header_block(&b)) {
                    Ok(Some(headers)) => Frame::SynStream { id, fin, headers },
                    _ => {
                        tracing::debug!("spdy: bad header block");
                        return None;
                    }
                }
            }
            // keep the decompression context in step
            SYN_REPLY | HEADERS if payload.len() >= 4 => {
                self.inflate.block(&payload[4..]).ok()?;
                Frame::Other
            }
            RST_STREAM if payload.len() >= 4 => Frame::Reset(be32(&payload) & 0x7fff_ffff),
            PING if payload.len() >= 4 => Frame::Ping(be32(&payload)),
            GOAWAY => Frame::GoAway,
            _ => Frame::Other,
        })
    }
}

/// The value of header `name` in a stream's headers ("" when absent).
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adler32(b: &[u8]) -> u32 {
        let (mut a, mut s) = (1u32, 0u32);
        for &x in b {
            a = (a + x as u32) % 65521;
            s = (s + a) % 65521;
        }
        (s << 16) | a
    }

    #[test]
    fn dictionary_is_spdy3s() {
        assert_eq!(SPDY3_DICTIONARY.len(), 1423);
        assert_eq!(adler32(SPDY3_DICTIONARY), 0xe3c6a7c2);
    }

    #[test]
    fn header_blocks_round_trip_across_frames() {
        let (mut d, mut i) = (Deflater::new(), Inflater::new());
        for n in 0..3 {
            let port = format!("80{n}");
            let raw = encode_header_block(&[("streamtype", "data"), ("port", &port), ("requestid", "0")]);
            let z = d.block(&raw);
            assert_eq!(i.block(&z).unwrap(), raw);
            let h = parse_header_block(&raw).unwrap();
            assert_eq!(h[1], ("port".to_string(), port));
        }
    }

    #[test]
    fn frames() {
        assert_eq!(data_frame(3, FLAG_FIN, b"ab"), [0, 0, 0, 3, 1, 0, 0, 2, b'a', b'b']);
        assert_eq!(control_frame(PING, 0, &7u32.to_be_bytes()), [0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 7]);
    }

    #[tokio::test]
    async fn reader_inflates_syn_streams() {
        let mut d = Deflater::new();
        let mut syn = 5u32.to_be_bytes().to_vec();
        syn.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        syn.extend(d.block(&encode_header_block(&[("streamType", "stdout")])));
        let mut wire = control_frame(SYN_STREAM, FLAG_FIN, &syn);
        wire.extend(data_frame(5, 0, b"hi"));
        let mut r = Reader::new(&wire[..]);
        match r.next().await {
            Some(Frame::SynStream { id: 5, fin: true, headers }) => assert_eq!(header(&headers, "streamtype"), "stdout"),
            _ => panic!("not a SYN_STREAM"),
        }
        assert!(matches!(r.next().await, Some(Frame::Data { id: 5, fin: false, data }) if data == b"hi"));
        assert!(r.next().await.is_none());
    }
}
