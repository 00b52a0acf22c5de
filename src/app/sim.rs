//! Simulated readers: a pseudo-terminal whose far end plays a reader byte
//! for byte. PN532 and SM130 answer commands as the chips do; ID-12,
//! RDM6300 and text readers push frames. Used by `pollstation sim`, by
//! `pollstation demo` (so demo taps travel the real serial path) and by the
//! tests, which also use it to inject faults: junk bytes, a cut frame, a
//! reader that stops answering, an unplug.
//!
//! Owns its pty and nothing else; knows nothing of the Station.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_serial::{SerialPort, SerialStream};
use tokio_util::codec::Decoder;

use crate::config::Protocol;
use crate::reader::{em4100, pn532, sm130};

/// What a simulated reader can be told to do.
#[derive(Debug)]
enum Control {
    /// A tag is on the reader for this long.
    Hold(Vec<u8>, Duration),
    /// Write these bytes as they are (junk, half frames).
    Raw(Vec<u8>),
    /// Ignore the next `n` commands (polled readers).
    Mute(u32),
    /// Answer the next command with only the first half of the reply.
    CutNext,
    /// Close the pty, as if the USB cable were pulled.
    Unplug,
}

/// Handle to a simulated reader.
#[derive(Debug, Clone)]
pub struct SimReader {
    /// The device a station should open (the symlink if one was asked for).
    pub path: PathBuf,
    tx: mpsc::Sender<Control>,
    /// What the host sent back for the voter: lines (text) or output bits (SM130).
    feedback: watch::Receiver<Vec<String>>,
    /// Commands answered so far (polled readers): proof the host is polling.
    answered: watch::Receiver<u64>,
}

impl SimReader {
    /// Create a pty playing `protocol`; with `link`, also a symlink to it.
    pub fn spawn(protocol: Protocol, link: Option<&Path>) -> std::io::Result<SimReader> {
        let (master, slave) = SerialStream::pair().map_err(std::io::Error::other)?;
        let pts = slave
            .name()
            .map(PathBuf::from)
            .ok_or_else(|| std::io::Error::other("the pty has no name"))?;
        let path = match link {
            Some(l) => {
                if let Some(dir) = l.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let _ = std::fs::remove_file(l);
                std::os::unix::fs::symlink(&pts, l)?;
                l.to_path_buf()
            }
            None => pts,
        };
        let (tx, rx) = mpsc::channel(64);
        let (fb_tx, feedback) = watch::channel(Vec::new());
        let (ans_tx, answered) = watch::channel(0);
        let device = Device {
            protocol,
            held: None,
            mute: 0,
            cut_next: false,
            fb: fb_tx,
            answered: ans_tx,
            last_push: None,
            registers: std::collections::HashMap::new(),
        };
        tokio::spawn(device.run(master, slave, rx));
        Ok(SimReader {
            path,
            tx,
            feedback,
            answered,
        })
    }

    pub async fn hold(&self, uid: &[u8], d: Duration) {
        let _ = self.tx.send(Control::Hold(uid.to_vec(), d)).await;
    }

    pub async fn raw(&self, bytes: &[u8]) {
        let _ = self.tx.send(Control::Raw(bytes.to_vec())).await;
    }

    pub async fn mute(&self, commands: u32) {
        let _ = self.tx.send(Control::Mute(commands)).await;
    }

    pub async fn cut_next(&self) {
        let _ = self.tx.send(Control::CutNext).await;
    }

    /// Pull the plug: the pty goes away (the symlink stays, dangling).
    pub async fn unplug(&self) {
        let _ = self.tx.send(Control::Unplug).await;
        let mut closed = self.answered.clone();
        let _ = closed.wait_for(|_| false).await; // resolves when the device task ends
    }

    /// Feedback received from the host so far.
    #[must_use]
    pub fn feedback(&self) -> watch::Receiver<Vec<String>> {
        self.feedback.clone()
    }

    /// Count of commands answered (polled readers).
    #[must_use]
    pub fn answered(&self) -> watch::Receiver<u64> {
        self.answered.clone()
    }
}

struct Device {
    protocol: Protocol,
    held: Option<(Vec<u8>, Instant)>,
    mute: u32,
    cut_next: bool,
    fb: watch::Sender<Vec<String>>,
    answered: watch::Sender<u64>,
    last_push: Option<Instant>,
    /// The PN532's registers as the host wrote them (libnfc reads back what
    /// it wrote, and caches it).
    registers: std::collections::HashMap<u16, u8>,
}

/// How often an RDM6300 repeats its frame while a tag is held.
const REPEAT: Duration = Duration::from_millis(60);

impl Device {
    fn tag(&mut self) -> Option<Vec<u8>> {
        match &self.held {
            Some((uid, until)) if Instant::now() < *until => Some(uid.clone()),
            Some(_) => {
                self.held = None;
                None
            }
            None => None,
        }
    }

    async fn run(
        mut self,
        mut port: SerialStream,
        slave: SerialStream,
        mut rx: mpsc::Receiver<Control>,
    ) {
        // Keep our slave fd open: with no slave open, reads on the master fail
        // with EIO until the station opens the device.
        let _slave = slave;
        let mut inbuf = BytesMut::new();
        let mut scratch = [0u8; 512];
        if self.protocol == Protocol::Text {
            // What an Arduino prints after the reset that opening the port causes.
            let _ = port
                .write_all(b"Firmware Version: 0x92 = v2.0\r\nScan PICC to see UID, SAK, type, and data blocks...\r\n")
                .await;
        }
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tokio::select! {
                ctl = rx.recv() => match ctl {
                    None | Some(Control::Unplug) => return,
                    Some(Control::Hold(uid, d)) => {
                        self.held = Some((uid.clone(), Instant::now() + d));
                        self.last_push = None;
                        if matches!(self.protocol, Protocol::Id12 | Protocol::Text) {
                            // Once per presentation.
                            let bytes = self.push_frame(&uid);
                            if port.write_all(&bytes).await.is_err() { return; }
                        }
                    }
                    Some(Control::Raw(b)) => {
                        if port.write_all(&b).await.is_err() { return; }
                    }
                    Some(Control::Mute(n)) => self.mute = n,
                    Some(Control::CutNext) => self.cut_next = true,
                },
                n = port.read(&mut scratch) => match n {
                    Ok(0) | Err(_) => {
                        // No station has the device open right now: wait.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Ok(n) => {
                        inbuf.extend_from_slice(&scratch[..n]);
                        let out = self.answer(&mut inbuf);
                        if !out.is_empty() && port.write_all(&out).await.is_err() { return; }
                    }
                },
                _ = tick.tick() => {
                    let due = self.last_push.is_none_or(|t| t.elapsed() >= REPEAT);
                    if self.protocol == Protocol::Rdm6300 && due && let Some(uid) = self.tag() {
                        self.last_push = Some(Instant::now());
                        let bytes = self.push_frame(&uid);
                        if port.write_all(&bytes).await.is_err() { return; }
                    }
                }
            }
        }
    }

    fn push_frame(&self, uid: &[u8]) -> Vec<u8> {
        match self.protocol {
            Protocol::Id12 | Protocol::Rdm6300 => {
                let mut id = [0u8; 5];
                let n = uid.len().min(5);
                id[5 - n..].copy_from_slice(&uid[uid.len() - n..]);
                em4100::frame(id, self.protocol == Protocol::Id12)
            }
            _ => {
                let hex: Vec<String> = uid.iter().map(|b| format!("{b:02X}")).collect();
                format!("Card UID: {}\r\n", hex.join(" ")).into_bytes()
            }
        }
    }

    /// Answer what the host sent, as the chip would.
    fn answer(&mut self, inbuf: &mut BytesMut) -> Vec<u8> {
        let mut out = Vec::new();
        match self.protocol {
            Protocol::Pn532 => {
                while let Ok(Some(frame)) = pn532::Pn532Codec.decode(inbuf) {
                    if let pn532::Frame::Info {
                        tfi: pn532::TFI_HOST,
                        code,
                        data,
                    } = frame
                    {
                        let reply = self.pn532_reply(code, &data);
                        self.respond(&mut out, &reply);
                    }
                }
            }
            Protocol::Sm130 | Protocol::Auto => {
                while let Ok(Some(frame)) = sm130::Sm130Codec.decode(inbuf) {
                    if let sm130::Frame::Reply { cmd, data } = frame {
                        let reply = self.sm130_reply(cmd, &data);
                        self.respond(&mut out, &reply);
                    }
                }
            }
            Protocol::Text => {
                while let Some(nl) = inbuf.iter().position(|&b| b == b'\n') {
                    let line = inbuf.split_to(nl + 1);
                    let line = String::from_utf8_lossy(&line).trim().to_string();
                    self.fb.send_modify(|v| v.push(line));
                }
            }
            Protocol::Id12 | Protocol::Rdm6300 => inbuf.clear(), // TX-only modules
        }
        out
    }

    /// Queue a reply, unless muted or told to cut it short.
    fn respond(&mut self, out: &mut Vec<u8>, reply: &[u8]) {
        if self.mute > 0 {
            self.mute -= 1;
            return;
        }
        if std::mem::take(&mut self.cut_next) {
            out.extend_from_slice(&reply[..reply.len() / 2]);
            return;
        }
        out.extend_from_slice(reply);
        self.answered.send_modify(|n| *n += 1);
    }

    /// The PN532's answer to one command, as its user manual (UM0701-02,
    /// §7) gives it: ACK, then the response frame. Besides what the station
    /// sends, this covers what libnfc's `pn532_uart` driver sends while it
    /// opens the device and lists targets (`nfc-list`, `nfc-poll`): the
    /// communication test, registers, parameters, passive targets of each
    /// modulation (only ISO 14443-A at 106 kbps finds the held tag), raw
    /// exchanges (no card answers them: status 01, timeout), deselect,
    /// release and power-down.
    fn pn532_reply(&mut self, code: u8, data: &[u8]) -> Vec<u8> {
        let mut out = pn532::ACK.to_vec();
        let chip = |c: u8, d: &[u8]| pn532::frame(pn532::TFI_CHIP, c + 1, d);
        let reply = match code {
            // Diagnose: the communication test (00) echoes its data; the
            // other tests report success.
            pn532::CMD_DIAGNOSE => match data.first() {
                Some(0x00) | None => chip(code, data),
                Some(_) => chip(code, &[0x00]),
            },
            pn532::CMD_SAM_CONFIGURATION
            | pn532::CMD_RF_CONFIGURATION
            | pn532::CMD_SET_PARAMETERS => chip(code, &[]),
            pn532::CMD_GET_FIRMWARE => chip(code, &[0x32, 0x01, 0x06, 0x07]),
            pn532::CMD_READ_REGISTER => {
                let values: Vec<u8> = data
                    .chunks_exact(2)
                    .map(|a| {
                        let addr = u16::from_be_bytes([a[0], a[1]]);
                        self.registers.get(&addr).copied().unwrap_or(0)
                    })
                    .collect();
                chip(code, &values)
            }
            pn532::CMD_WRITE_REGISTER => {
                for w in data.chunks_exact(3) {
                    self.registers
                        .insert(u16::from_be_bytes([w[0], w[1]]), w[2]);
                }
                chip(code, &[])
            }
            pn532::CMD_WRITE_GPIO => {
                self.fb.send_modify(|v| v.push(format!("gpio {data:02X?}")));
                chip(code, &[])
            }
            pn532::CMD_IN_LIST_PASSIVE_TARGET => {
                // BrTy 00: 106 kbps type A, the only kind this reader holds.
                let tag = if data.get(1) == Some(&0x00) {
                    self.tag()
                } else {
                    None
                };
                pn532::target_response(tag.as_deref())
            }
            // InAutoPoll [PollNr, Period, Type…]: the held tag, reported
            // under the first 106 kbps type A type asked for (00 generic,
            // 10 MIFARE, 20 ISO 14443-4A).
            pn532::CMD_IN_AUTO_POLL => {
                let kind = data
                    .iter()
                    .skip(2)
                    .find(|t| matches!(t, 0x00 | 0x10 | 0x20))
                    .copied();
                match (kind, self.tag()) {
                    (Some(kind), Some(uid)) => {
                        let target = pn532::target_data(&uid);
                        let mut d = vec![0x01, kind, u8::try_from(target.len()).unwrap_or(0)];
                        d.extend_from_slice(&target);
                        chip(code, &d)
                    }
                    _ => chip(code, &[0x00]),
                }
            }
            // No card answers a raw exchange: status 01 (timeout).
            pn532::CMD_IN_DATA_EXCHANGE | pn532::CMD_IN_COMMUNICATE_THRU => chip(code, &[0x01]),
            pn532::CMD_IN_DESELECT | pn532::CMD_IN_RELEASE | pn532::CMD_POWER_DOWN => {
                chip(code, &[0x00])
            }
            // Anything else: the application-level error frame.
            _ => vec![0x00, 0x00, 0xFF, 0x01, 0xFF, 0x7F, 0x81, 0x00],
        };
        out.extend_from_slice(&reply);
        out
    }

    fn sm130_reply(&mut self, cmd: u8, data: &[u8]) -> Vec<u8> {
        match cmd {
            sm130::CMD_SELECT => match self.tag() {
                Some(uid) => {
                    let mut d = vec![if uid.len() == 7 { 0x01 } else { 0x02 }];
                    d.extend_from_slice(&uid);
                    sm130::frame(cmd, &d)
                }
                None => sm130::frame(cmd, b"N"),
            },
            sm130::CMD_FIRMWARE | sm130::CMD_RESET => sm130::frame(cmd, b"UM13"),
            sm130::CMD_HALT => sm130::frame(cmd, b"L"),
            sm130::CMD_ANTENNA => sm130::frame(cmd, data),
            sm130::CMD_WRITE_OUTPUT => {
                let bits = data.first().copied().unwrap_or(0);
                self.fb.send_modify(|v| v.push(format!("outputs {bits}")));
                sm130::frame(cmd, &[bits])
            }
            _ => sm130::frame(cmd, b"N"),
        }
    }
}
