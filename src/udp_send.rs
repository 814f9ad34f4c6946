//! The sending side of market data over UDP (`tickpipe replay --udp`): packs records into
//! datagrams of the format in [`tickpipe_pipeline::udp::wire`], numbers them, and ends the
//! stream with end-of-stream datagrams.
//!
//! A datagram goes out when it is full (`records_per_datagram` records, or the next record
//! would pass `max_datagram` bytes) or when the caller flushes it (a paced replay flushes before
//! it waits for the next record, so records due together share a datagram and none waits for
//! a later one). For loss tests, chosen datagrams can be skipped: their sequence numbers (and
//! their records' numbers) are used up but nothing is sent.

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};

use anyhow::{Context, Result, bail};
use tickpipe_pipeline::udp::wire::{self, DatagramBuilder, Kind};

/// How to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpSendOptions {
    /// Destination (unicast or a multicast group).
    pub addr: SocketAddr,
    /// Most records in one datagram.
    pub records_per_datagram: u16,
    /// Most bytes in one datagram (header included); a record that does not fit alone still
    /// goes out alone.
    pub max_datagram: usize,
    /// Datagram sequence numbers not to send (testing loss).
    pub drop_seqs: BTreeSet<u64>,
    /// Do not send every Nth datagram (sequence numbers N-1, 2N-1, ...; testing loss).
    pub drop_every: Option<u64>,
    /// How many times the end-of-stream datagram is sent.
    pub end_repeats: u32,
    /// Multicast TTL (hops).
    pub multicast_ttl: u32,
    /// Local address to send from: its interface carries multicast (e.g. 127.0.0.1 for
    /// receivers that joined on loopback). Default: any, the kernel's route.
    pub interface: Option<std::net::IpAddr>,
}

impl UdpSendOptions {
    /// Defaults for `addr`: up to 64 records in datagrams of at most 1472 bytes (an Ethernet
    /// MTU), no drops, the end sent 3 times, multicast TTL 1.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            records_per_datagram: 64,
            max_datagram: 1472,
            drop_seqs: BTreeSet::new(),
            drop_every: None,
            end_repeats: 3,
            multicast_ttl: 1,
            interface: None,
        }
    }
}

/// What a sender did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendStats {
    /// Records datagrams sent.
    pub datagrams: u64,
    /// Records datagrams skipped on purpose (`drop_seqs`, `drop_every`).
    pub dropped: u64,
    /// Records in the skipped datagrams.
    pub dropped_records: u64,
    /// Records taken (sent or skipped).
    pub records: u64,
    /// Bytes sent (datagram payloads, headers included).
    pub bytes: u64,
    /// Heartbeat datagrams sent.
    pub heartbeats: u64,
}

/// Sends records as datagrams (see the module docs).
#[derive(Debug)]
pub struct UdpSender {
    sock: UdpSocket,
    opts: UdpSendOptions,
    builder: DatagramBuilder,
    clock: quanta::Clock,
    seq: u64,
    stats: SendStats,
    /// The stamp the held datagram goes out with, when its first record came with one.
    held_stamp: Option<u64>,
}

impl UdpSender {
    /// A sender to `opts.addr`.
    ///
    /// # Errors
    /// The socket cannot be created or configured, or the options are out of range.
    pub fn new(opts: UdpSendOptions, clock: quanta::Clock) -> Result<Self> {
        if opts.records_per_datagram == 0 {
            bail!("--records-per-datagram must be at least 1");
        }
        if !(wire::HEADER_LEN + wire::MIN_RECORD_LEN..=wire::MAX_DATAGRAM)
            .contains(&opts.max_datagram)
        {
            bail!(
                "--max-datagram must be {}..={} bytes, not {}",
                wire::HEADER_LEN + wire::MIN_RECORD_LEN,
                wire::MAX_DATAGRAM,
                opts.max_datagram
            );
        }
        if opts.drop_every == Some(0) {
            bail!("--drop-every must be at least 1");
        }
        let local: SocketAddr = match opts.interface {
            Some(ip) => SocketAddr::new(ip, 0),
            None if opts.addr.is_ipv4() => "0.0.0.0:0".parse()?,
            None => "[::]:0".parse()?,
        };
        let sock = UdpSocket::bind(local).context("binding the sending UDP socket")?;
        if opts.addr.ip().is_multicast() && opts.addr.is_ipv4() {
            sock.set_multicast_ttl_v4(opts.multicast_ttl)
                .context("setting the multicast TTL")?;
        }
        Ok(Self {
            sock,
            builder: DatagramBuilder::new(opts.max_datagram, opts.records_per_datagram),
            opts,
            clock,
            seq: 0,
            stats: SendStats::default(),
            held_stamp: None,
        })
    }

    /// Adds a record (sending the held datagram first if the record does not fit beside it).
    ///
    /// # Errors
    /// A record that is not a DBN record, or a send failing.
    pub fn push(&mut self, record: &[u8]) -> Result<()> {
        if !self.builder.fits(record) {
            self.flush()?;
        }
        self.builder
            .push(record, self.stats.records)
            .with_context(|| format!("record {}", self.stats.records))?;
        self.stats.records += 1;
        let full = self.builder.count() >= self.opts.records_per_datagram;
        if full {
            self.flush()?;
        }
        Ok(())
    }

    /// As [`UdpSender::push`], and a datagram this record opens carries `stamp` (the sender's
    /// clock, raw ticks) instead of the clock at sending: a paced sender stamps each datagram
    /// with its first record's scheduled instant, so that latency counts from when the data was
    /// due, however late the sender ran.
    ///
    /// # Errors
    /// As [`UdpSender::push`].
    pub fn push_stamped(&mut self, record: &[u8], stamp: u64) -> Result<()> {
        if !self.builder.fits(record) {
            self.flush()?;
        }
        if self.builder.is_empty() {
            self.held_stamp = Some(stamp);
        }
        self.push(record)
    }

    /// Sends the held datagram, if any.
    ///
    /// # Errors
    /// The send failing.
    pub fn flush(&mut self) -> Result<()> {
        if self.builder.is_empty() {
            return Ok(());
        }
        let seq = self.seq;
        self.seq += 1;
        let skip = self.opts.drop_seqs.contains(&seq)
            || self
                .opts
                .drop_every
                .is_some_and(|n| (seq + 1).is_multiple_of(n));
        if skip {
            self.stats.dropped += 1;
            self.stats.dropped_records += u64::from(self.builder.count());
        } else {
            let ticks = self.held_stamp.unwrap_or_else(|| self.clock.raw());
            let now = tickpipe_shm::mapped::unix_now_ns();
            let d = self.builder.finish(seq, ticks, now);
            let n = self
                .sock
                .send_to(d, self.opts.addr)
                .with_context(|| format!("sending datagram {seq} to {}", self.opts.addr))?;
            self.stats.datagrams += 1;
            self.stats.bytes += n as u64;
        }
        self.builder.clear();
        self.held_stamp = None;
        Ok(())
    }

    fn control(&mut self, kind: Kind) -> Result<()> {
        let d = wire::control(
            kind,
            self.seq,
            self.stats.records,
            self.clock.raw(),
            tickpipe_shm::mapped::unix_now_ns(),
        );
        self.sock
            .send_to(&d, self.opts.addr)
            .with_context(|| format!("sending to {}", self.opts.addr))?;
        self.stats.bytes += d.len() as u64;
        Ok(())
    }

    /// Sends a heartbeat datagram (it uses up no sequence number).
    ///
    /// # Errors
    /// The send failing.
    pub fn heartbeat(&mut self) -> Result<()> {
        self.control(Kind::Heartbeat)?;
        self.stats.heartbeats += 1;
        Ok(())
    }

    /// Sends what is held, then the end-of-stream datagram `end_repeats` times.
    ///
    /// # Errors
    /// A send failing.
    pub fn finish(&mut self) -> Result<SendStats> {
        self.flush()?;
        for _ in 0..self.opts.end_repeats.max(1) {
            self.control(Kind::End)?;
        }
        Ok(self.stats)
    }

    /// What it did so far.
    pub fn stats(&self) -> SendStats {
        self.stats
    }

    /// The destination.
    pub fn addr(&self) -> SocketAddr {
        self.opts.addr
    }
}
