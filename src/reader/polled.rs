//! Drivers for the polled readers (PN532, SM130) and the `auto` probe.
//!
//! Every command has a deadline. On a timeout the driver aborts (PN532: an
//! ACK frame), throws away whatever partial frame it holds, and goes on with
//! the next poll: a lost, extra or corrupt byte costs one poll cycle. A
//! reader that misses three polls in a row is reported disconnected and
//! reopened and re-initialised (it may have been power-cycled).

use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_serial::SerialPort;
use tokio_util::codec::{Decoder, FramedRead};
use tokio_util::sync::CancellationToken;

use super::{Ctx, Feedback, Rd, ReaderError, Wr, pn532, sm130};
use crate::station::ReaderStatus;

/// Deadline for one command's answer (ACK + response).
const COMMAND_TIMEOUT: Duration = Duration::from_millis(250);
/// Polls that may fail in a row before the reader counts as gone.
const MAX_MISSES: u32 = 3;
/// How long the `auto` probe waits for each candidate.
const PROBE_TIMEOUT: Duration = Duration::from_millis(400);

/// The next frame, `None` at the deadline.
async fn next_frame<D>(
    rd: &mut FramedRead<Rd, D>,
    deadline: Instant,
) -> Result<Option<D::Item>, ReaderError>
where
    D: Decoder<Error = std::io::Error>,
{
    match tokio::time::timeout_at(deadline, rd.next()).await {
        Err(_) => Ok(None),
        Ok(None) => Err(ReaderError::Closed),
        Ok(Some(Err(e))) => Err(e.into()),
        Ok(Some(Ok(f))) => Ok(Some(f)),
    }
}

/// Wait out `d`, acting on feedback as it comes; false if shutting down.
async fn pause(
    d: Duration,
    feedback: &mut mpsc::Receiver<Feedback>,
    pending: &mut Option<Feedback>,
    shutdown: &CancellationToken,
) -> bool {
    // Feedback ends the pause early: the voter should not wait for a poll.
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(d) => true,
        Some(fb) = feedback.recv(), if pending.is_none() => {
            *pending = Some(fb);
            true
        }
    }
}

// ---- PN532 ----------------------------------------------------------------

/// Send a command and wait for the response with `code` (= command + 1).
/// `Ok(None)`: no answer in time (the command was aborted, input flushed).
async fn pn532_transact(
    ctx: &mut Ctx,
    rd: &mut FramedRead<Rd, pn532::Pn532Codec>,
    wr: &mut Wr,
    command: &[u8],
    code: u8,
) -> Result<Option<Vec<u8>>, ReaderError> {
    wr.write_all(command).await?;
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        match next_frame(rd, deadline).await? {
            None => {
                // Abort whatever the chip is doing and start clean.
                wr.write_all(&pn532::ACK).await?;
                rd.read_buffer_mut().clear();
                return Ok(None);
            }
            Some(pn532::Frame::Info {
                tfi: pn532::TFI_CHIP,
                code: c,
                data,
            }) if c == code => {
                return Ok(Some(data));
            }
            Some(pn532::Frame::Corrupt { skipped, reason }) => ctx.bad_frame(reason, skipped),
            Some(pn532::Frame::Nack | pn532::Frame::Error) => {
                ctx.frames_bad += 1;
                rd.read_buffer_mut().clear();
                return Ok(None);
            }
            // ACK, or a late answer to an earlier command.
            Some(_) => {}
        }
    }
}

async fn pn532_init(
    ctx: &mut Ctx,
    rd: &mut FramedRead<Rd, pn532::Pn532Codec>,
    wr: &mut Wr,
) -> Result<bool, ReaderError> {
    wr.write_all(&pn532::WAKE_UP).await?;
    let sam = pn532_transact(
        ctx,
        rd,
        wr,
        &pn532::sam_configuration(),
        pn532::CMD_SAM_CONFIGURATION + 1,
    )
    .await?;
    if sam.is_none() {
        return Ok(false);
    }
    let retries = pn532_transact(
        ctx,
        rd,
        wr,
        &pn532::finite_retries(),
        pn532::CMD_RF_CONFIGURATION + 1,
    )
    .await?;
    Ok(retries.is_some())
}

pub(super) async fn pn532(
    ctx: &mut Ctx,
    rd: Rd,
    mut wr: Wr,
    feedback: &mut mpsc::Receiver<Feedback>,
    shutdown: &CancellationToken,
) -> Result<(), ReaderError> {
    let mut rd = FramedRead::new(rd, pn532::Pn532Codec);
    if !pn532_init(ctx, &mut rd, &mut wr).await? {
        return Err(ReaderError::Silent(
            "no answer to SAMConfiguration (not a PN532 in HSU mode, wrong baud rate, or no power?)",
        ));
    }
    ctx.report(ReaderStatus::Connected, None).await;
    let mut misses = 0;
    let mut pending = None;
    let mut said_no_outputs = false;
    loop {
        let answer = pn532_transact(
            ctx,
            &mut rd,
            &mut wr,
            &pn532::in_list_passive_target(),
            pn532::CMD_IN_LIST_PASSIVE_TARGET + 1,
        )
        .await?;
        match answer {
            None => {
                misses += 1;
                if misses >= MAX_MISSES {
                    return Err(ReaderError::Silent("stopped answering InListPassiveTarget"));
                }
                continue; // the timeout was the pause: poll again at once
            }
            Some(data) => {
                misses = 0;
                match pn532::parse_targets(&data) {
                    pn532::Target::Uid(uid) => ctx.uid(uid).await,
                    pn532::Target::None => ctx.frames_ok += 1,
                    pn532::Target::Malformed(reason) => ctx.bad_frame(reason, data.len()),
                }
                // RF off between polls: a card left on the reader answers the
                // next poll again from IDLE instead of staying HALTed.
                pn532_transact(
                    ctx,
                    &mut rd,
                    &mut wr,
                    &pn532::rf_field(false),
                    pn532::CMD_RF_CONFIGURATION + 1,
                )
                .await?;
            }
        }
        if pending.take().is_some() && !said_no_outputs {
            // Breakout boards do not wire the PN532's GPIOs to an LED.
            tracing::debug!(reader = %ctx.cfg.id, "PN532: no host-driven LED or buzzer; feedback is on the screen");
            said_no_outputs = true;
        }
        ctx.maybe_send_counters().await;
        if !pause(ctx.cfg.poll_interval, feedback, &mut pending, shutdown).await {
            return Ok(());
        }
    }
}

// ---- SM130 ----------------------------------------------------------------

async fn sm130_transact(
    ctx: &mut Ctx,
    rd: &mut FramedRead<Rd, sm130::Sm130Codec>,
    wr: &mut Wr,
    cmd: u8,
    data: &[u8],
) -> Result<Option<Vec<u8>>, ReaderError> {
    wr.write_all(&sm130::frame(cmd, data)).await?;
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        match next_frame(rd, deadline).await? {
            None => {
                rd.read_buffer_mut().clear();
                return Ok(None);
            }
            Some(sm130::Frame::Reply { cmd: c, data }) if c == cmd => return Ok(Some(data)),
            Some(sm130::Frame::Corrupt { skipped, reason }) => ctx.bad_frame(reason, skipped),
            Some(sm130::Frame::Reply { .. }) => {} // late or unsolicited
        }
    }
}

pub(super) async fn sm130(
    ctx: &mut Ctx,
    rd: Rd,
    mut wr: Wr,
    feedback: &mut mpsc::Receiver<Feedback>,
    shutdown: &CancellationToken,
) -> Result<(), ReaderError> {
    let mut rd = FramedRead::new(rd, sm130::Sm130Codec);
    // Halt cancels a seek a freshly reset module may be running; then the
    // firmware query proves something SM130-like is there.
    sm130_transact(ctx, &mut rd, &mut wr, sm130::CMD_HALT, &[]).await?;
    let fw = sm130_transact(ctx, &mut rd, &mut wr, sm130::CMD_FIRMWARE, &[]).await?;
    let Some(fw) = fw else {
        return Err(ReaderError::Silent(
            "no answer to Get Firmware (not an SM130, or not at this baud rate?)",
        ));
    };
    tracing::info!(reader = %ctx.cfg.id, firmware = %String::from_utf8_lossy(&fw), "SM130 found");
    ctx.report(ReaderStatus::Connected, None).await;
    let mut misses = 0;
    let mut pending = None;
    let mut outputs_off_at: Option<Instant> = None;
    loop {
        match sm130_transact(ctx, &mut rd, &mut wr, sm130::CMD_SELECT, &[]).await? {
            None => {
                misses += 1;
                if misses >= MAX_MISSES {
                    return Err(ReaderError::Silent("stopped answering Select Tag"));
                }
                continue; // the timeout was the pause: poll again at once
            }
            Some(data) => {
                misses = 0;
                match sm130::parse_select(&data) {
                    sm130::Select::Uid { uid, .. } => ctx.uid(uid).await,
                    sm130::Select::NoTag => ctx.frames_ok += 1,
                    sm130::Select::RfOff => {
                        ctx.frames_ok += 1;
                        tracing::info!(reader = %ctx.cfg.id, "SM130 antenna was off; switching it on");
                        sm130_transact(ctx, &mut rd, &mut wr, sm130::CMD_ANTENNA, &[1]).await?;
                    }
                    sm130::Select::Other(code) => {
                        tracing::debug!(reader = %ctx.cfg.id, code, "unexpected Select status");
                    }
                    sm130::Select::Malformed => ctx.bad_frame("malformed Select reply", data.len()),
                }
            }
        }
        // Voter feedback: output 1 = counted, output 2 = not counted.
        if let Some(fb) = pending.take() {
            let bits = match fb {
                Feedback::Counted => 0x01,
                Feedback::NotCounted => 0x02,
            };
            sm130_transact(ctx, &mut rd, &mut wr, sm130::CMD_WRITE_OUTPUT, &[bits]).await?;
            outputs_off_at = Some(Instant::now() + ctx.cfg.pulse);
        }
        if outputs_off_at.is_some_and(|t| Instant::now() >= t) {
            sm130_transact(ctx, &mut rd, &mut wr, sm130::CMD_WRITE_OUTPUT, &[0]).await?;
            outputs_off_at = None;
        }
        ctx.maybe_send_counters().await;
        if !pause(ctx.cfg.poll_interval, feedback, &mut pending, shutdown).await {
            return Ok(());
        }
    }
}

// ---- auto -----------------------------------------------------------------

pub(super) enum Probed {
    Pn532(Rd, Wr),
    Sm130(Rd, Wr),
    Other(Rd, Wr),
}

fn set_baud(rd: Rd, wr: Wr, baud: u32) -> Result<(Rd, Wr), ReaderError> {
    let mut port = rd.unsplit(wr);
    port.set_baud_rate(baud)
        .map_err(|e| ReaderError::Io(std::io::Error::other(e)))?;
    Ok(tokio::io::split(port))
}

/// Find out what is on the other end: PN532 at 115200, SM130 at 19200,
/// else a text (or push) reader at the configured rate.
pub(super) async fn probe(rd: Rd, wr: Wr, ctx: &mut Ctx) -> Result<Probed, ReaderError> {
    let (rd, mut wr) = set_baud(rd, wr, 115_200)?;
    let mut frames = FramedRead::new(rd, pn532::Pn532Codec);
    wr.write_all(&pn532::WAKE_UP).await?;
    wr.write_all(&pn532::sam_configuration()).await?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    while let Some(f) = next_frame(&mut frames, deadline).await? {
        if matches!(f, pn532::Frame::Info { tfi: pn532::TFI_CHIP, code, .. } if code == pn532::CMD_SAM_CONFIGURATION + 1)
        {
            tracing::info!(reader = %ctx.cfg.id, "auto: found a PN532 at 115200 baud");
            return Ok(Probed::Pn532(frames.into_inner(), wr));
        }
    }
    let (rd, mut wr) = set_baud(frames.into_inner(), wr, 19_200)?;
    let mut frames = FramedRead::new(rd, sm130::Sm130Codec);
    wr.write_all(&sm130::frame(sm130::CMD_SELECT, &[])).await?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    while let Some(f) = next_frame(&mut frames, deadline).await? {
        if matches!(
            f,
            sm130::Frame::Reply {
                cmd: sm130::CMD_SELECT,
                ..
            }
        ) {
            tracing::info!(reader = %ctx.cfg.id, "auto: found an SM130 at 19200 baud");
            return Ok(Probed::Sm130(frames.into_inner(), wr));
        }
    }
    let baud = ctx.cfg.baud.unwrap_or(9600);
    let (rd, wr) = set_baud(frames.into_inner(), wr, baud)?;
    tracing::info!(reader = %ctx.cfg.id, baud, "auto: no PN532 or SM130 answered; reading text lines");
    Ok(Probed::Other(rd, wr))
}
