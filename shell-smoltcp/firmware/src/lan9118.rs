//! A polled driver for the SMSC LAN9118 Ethernet controller, as QEMU
//! emulates it on the mps2-an385 board (base `0x4020_0000`), implementing
//! `smoltcp::phy::Device`.
//!
//! What it does: soft reset, check the chip answers, read the MAC address
//! the chip was given (QEMU: `-net nic,macaddr=…`, default
//! `52:54:00:12:34:56`), enable the transmitter and receiver, then move
//! whole frames through the data FIFOs, one frame per token.
//!
//! Limits: no interrupts, no DMA, no PHY management (QEMU's link is always
//! up), one frame of at most [`FRAME_MAX`] bytes in each direction at a
//! time; received frames with errors or too long are read out and dropped
//! (counted). Register offsets and bits below are those of the SMSC LAN9118
//! datasheet ("System Control and Status Registers", "MAC Control and
//! Status Registers", "TX/RX Data Format"), as QEMU's `hw/net/lan9118.c`
//! models them.
//!
//! All `unsafe` of the firmware's device access is in [`Regs`].

use shell_smoltcp::smoltcp::phy::{self, DeviceCapabilities, Medium};
use shell_smoltcp::smoltcp::time::Instant;

/// Base address of the LAN9118 on mps2-an385/an386 (AN385 memory map;
/// QEMU `hw/arm/mps2.c`).
pub const MPS2_LAN9118_BASE: usize = 0x4020_0000;

/// Largest Ethernet frame handled, without the FCS: 1500 bytes of payload
/// and 14 of header.
pub const FRAME_MAX: usize = 1514;
/// Receive buffer: a frame plus its 4-byte FCS, rounded up to whole words.
const RX_BUF: usize = (FRAME_MAX + 4 + 3) & !3;

// Register offsets (datasheet Table 5.1, "System Control and Status Registers").
const RX_DATA_FIFO: usize = 0x00;
const TX_DATA_FIFO: usize = 0x20;
const RX_STATUS_FIFO: usize = 0x40;
const ID_REV: usize = 0x50;
const INT_EN: usize = 0x5c;
const BYTE_TEST: usize = 0x64;
const RX_CFG: usize = 0x6c;
const TX_CFG: usize = 0x70;
const HW_CFG: usize = 0x74;
const RX_FIFO_INF: usize = 0x7c;
const TX_FIFO_INF: usize = 0x80;
const PMT_CTRL: usize = 0x84;
const MAC_CSR_CMD: usize = 0xa4;
const MAC_CSR_DATA: usize = 0xa8;

/// `BYTE_TEST` always reads this: proves the chip is there and the bus is
/// not byte-swapped.
const BYTE_TEST_VALUE: u32 = 0x8765_4321;
/// `ID_REV` bits 31:16 for a LAN9118.
const CHIP_ID_9118: u32 = 0x0118;
const HW_CFG_SRST: u32 = 1 << 0;
const PMT_CTRL_READY: u32 = 1 << 0;
const TX_CFG_TX_ON: u32 = 1 << 1;
/// TX status overrun allowed: we never read TX statuses.
const TX_CFG_TXSAO: u32 = 1 << 2;

// MAC CSR access (datasheet §5.3.11 MAC_CSR_CMD): busy, read/not-write, index.
const MAC_CSR_BUSY: u32 = 1 << 31;
const MAC_CSR_READ: u32 = 1 << 30;
const MAC_CR: u32 = 1;
const MAC_ADDRH: u32 = 2;
const MAC_ADDRL: u32 = 3;
const MAC_CR_FDPX: u32 = 1 << 20;
const MAC_CR_TXEN: u32 = 1 << 3;
const MAC_CR_RXEN: u32 = 1 << 2;

// RX status word (datasheet §3.13.3): frame length incl. FCS, error summary.
const RX_STS_LEN_SHIFT: u32 = 16;
const RX_STS_LEN_MASK: u32 = 0x3fff;
const RX_STS_ES: u32 = 1 << 15;

// TX command words (datasheet §3.12.2): A = first/last segment + buffer
// size; B = packet tag (upper half) + packet length.
const TX_CMD_A_FIRST: u32 = 1 << 13;
const TX_CMD_A_LAST: u32 = 1 << 12;

/// Bound on busy-wait loops against the chip (reset, MAC CSR access).
const SPIN_LIMIT: u32 = 100_000;

/// Why the chip could not be brought up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitError {
    /// `BYTE_TEST` or `ID_REV` read something else: no LAN9118 there.
    NotFound,
    /// The soft reset or a MAC register access did not complete.
    Stuck,
}

/// The memory-mapped registers. The only code that dereferences the base
/// address.
struct Regs {
    base: usize,
}

impl Regs {
    fn read(&self, offset: usize) -> u32 {
        // SAFETY: `base` is the LAN9118's register block (guaranteed by the
        // caller of `Lan9118::new`), `offset` is one of the word-aligned
        // offsets above, all inside its 256-byte window; device registers
        // need volatile access.
        unsafe { core::ptr::read_volatile((self.base + offset) as *const u32) }
    }

    fn write(&self, offset: usize, value: u32) {
        // SAFETY: as in `read`.
        unsafe { core::ptr::write_volatile((self.base + offset) as *mut u32, value) }
    }

    fn spin_while(&self, offset: usize, mask: u32, set: bool) -> Result<(), InitError> {
        for _ in 0..SPIN_LIMIT {
            if (self.read(offset) & mask != 0) != set {
                return Ok(());
            }
        }
        Err(InitError::Stuck)
    }

    fn mac_read(&self, index: u32) -> Result<u32, InitError> {
        self.spin_while(MAC_CSR_CMD, MAC_CSR_BUSY, true)?;
        self.write(MAC_CSR_CMD, MAC_CSR_BUSY | MAC_CSR_READ | index);
        self.spin_while(MAC_CSR_CMD, MAC_CSR_BUSY, true)?;
        Ok(self.read(MAC_CSR_DATA))
    }

    fn mac_write(&self, index: u32, value: u32) -> Result<(), InitError> {
        self.spin_while(MAC_CSR_CMD, MAC_CSR_BUSY, true)?;
        self.write(MAC_CSR_DATA, value);
        self.write(MAC_CSR_CMD, MAC_CSR_BUSY | index);
        self.spin_while(MAC_CSR_CMD, MAC_CSR_BUSY, true)
    }
}

/// Frame counters, for the report.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    /// Frames handed to smoltcp.
    pub rx: u32,
    /// Frames written to the TX FIFO.
    pub tx: u32,
    /// Received frames dropped (error bit set, or too long).
    pub rx_dropped: u32,
}

/// The LAN9118 as a smoltcp device.
pub struct Lan9118 {
    regs: Regs,
    mac: [u8; 6],
    rx_buf: [u8; RX_BUF],
    tx_buf: [u8; FRAME_MAX],
    counters: Counters,
}

impl Lan9118 {
    /// Resets the chip at `base` and enables its MAC.
    ///
    /// # Safety
    ///
    /// `base` must be the address of a LAN9118 register block, and no other
    /// code may access that block while the returned driver lives.
    pub unsafe fn new(base: usize) -> Result<Self, InitError> {
        let regs = Regs { base };
        if regs.read(BYTE_TEST) != BYTE_TEST_VALUE || regs.read(ID_REV) >> 16 != CHIP_ID_9118 {
            return Err(InitError::NotFound);
        }
        // Soft reset (datasheet §6.2: HW_CFG.SRST self-clears), then wait
        // for the device to report ready (PMT_CTRL.READY).
        regs.write(HW_CFG, HW_CFG_SRST);
        regs.spin_while(HW_CFG, HW_CFG_SRST, true)?;
        regs.spin_while(PMT_CTRL, PMT_CTRL_READY, false)?;
        regs.write(INT_EN, 0);
        // The MAC address the chip holds (loaded from its EEPROM at reset).
        let lo = regs.mac_read(MAC_ADDRL)?.to_le_bytes();
        let hi = regs.mac_read(MAC_ADDRH)?.to_le_bytes();
        let mac = [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1]];
        // No RX data offset or end padding; TX on.
        regs.write(RX_CFG, 0);
        regs.write(TX_CFG, TX_CFG_TX_ON | TX_CFG_TXSAO);
        // Full duplex, TX and RX on; promiscuous mode (set by reset) off:
        // our address and broadcast only.
        regs.mac_write(MAC_CR, MAC_CR_FDPX | MAC_CR_TXEN | MAC_CR_RXEN)?;
        Ok(Lan9118 {
            regs,
            mac,
            rx_buf: [0; RX_BUF],
            tx_buf: [0; FRAME_MAX],
            counters: Counters::default(),
        })
    }

    /// The chip's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Frames moved so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Pops the next good frame into `rx_buf`; returns its length without
    /// the FCS. Bad or oversized frames are drained and counted.
    fn pop_frame(&mut self) -> Option<usize> {
        loop {
            // RX_FIFO_INF bits 23:16: RX status words waiting (one per frame).
            if (self.regs.read(RX_FIFO_INF) >> 16) & 0xff == 0 {
                return None;
            }
            let status = self.regs.read(RX_STATUS_FIFO);
            let len = ((status >> RX_STS_LEN_SHIFT) & RX_STS_LEN_MASK) as usize;
            let words = len.div_ceil(4);
            let good = status & RX_STS_ES == 0 && (14 + 4..=RX_BUF).contains(&len);
            for i in 0..words {
                let word = self.regs.read(RX_DATA_FIFO);
                if let Some(dst) = self.rx_buf.get_mut(i * 4..i * 4 + 4) {
                    dst.copy_from_slice(&word.to_le_bytes());
                }
            }
            if good {
                self.counters.rx += 1;
                return Some(len - 4);
            }
            self.counters.rx_dropped += 1;
        }
    }
}

impl phy::Device for Lan9118 {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let len = self.pop_frame()?;
        Some((
            RxToken {
                frame: &self.rx_buf[..len],
            },
            TxToken {
                regs: &self.regs,
                buf: &mut self.tx_buf,
                sent: &mut self.counters.tx,
            },
        ))
    }

    fn transmit(&mut self, _: Instant) -> Option<TxToken<'_>> {
        // TX_FIFO_INF bits 15:0: free bytes in the TX data FIFO; QEMU sends
        // each frame as soon as its last word is written, so a whole frame
        // plus its two command words fits unless the chip is wedged.
        if (self.regs.read(TX_FIFO_INF) & 0xffff) < (FRAME_MAX + 8) as u32 {
            return None;
        }
        Some(TxToken {
            regs: &self.regs,
            buf: &mut self.tx_buf,
            sent: &mut self.counters.tx,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = FRAME_MAX;
        caps.max_burst_size = Some(1);
        caps
    }
}

/// A received frame, borrowed from the driver's buffer.
pub struct RxToken<'a> {
    frame: &'a [u8],
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

/// Room for one frame to send.
pub struct TxToken<'a> {
    regs: &'a Regs,
    buf: &'a mut [u8; FRAME_MAX],
    sent: &'a mut u32,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        // smoltcp never asks for more than the MTU; clamp rather than panic.
        let len = len.min(FRAME_MAX);
        let frame = &mut self.buf[..len];
        let r = f(frame);
        // One buffer = one frame: first and last segment, no offset.
        let len32 = len as u32;
        self.regs
            .write(TX_DATA_FIFO, TX_CMD_A_FIRST | TX_CMD_A_LAST | len32);
        self.regs.write(TX_DATA_FIFO, (len32 << 16) | len32);
        for chunk in frame.chunks(4) {
            let mut word = [0u8; 4];
            word[..chunk.len()].copy_from_slice(chunk);
            self.regs.write(TX_DATA_FIFO, u32::from_le_bytes(word));
        }
        *self.sent += 1;
        r
    }
}
