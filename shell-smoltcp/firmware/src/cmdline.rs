//! Reading the firmware's command line: QEMU's `-append "…"` text through
//! the semihosting `SYS_GET_CMDLINE` call (ARM "Semihosting for AArch32 and
//! AArch64", §6.4). Parsing is `shell_smoltcp::args`.

use shell_smoltcp::args::CMDLINE_MAX;

/// Reads the command line into `buf`; returns its bytes (empty if the
/// debugger has none).
pub fn read(buf: &mut [u8; CMDLINE_MAX]) -> &[u8] {
    // SYS_GET_CMDLINE takes a two-word block {buffer, length} and writes
    // the actual length back into its second word (NUL excluded).
    let mut block = [buf.as_mut_ptr() as usize, buf.len()];
    // SAFETY: the block and the buffer it points to are live, writable and
    // `buf.len()` long for the duration of the call; the host writes at
    // most that many bytes (semihosting spec §6.4).
    let status = unsafe {
        cortex_m_semihosting::syscall1(
            cortex_m_semihosting::nr::GET_CMDLINE,
            block.as_mut_ptr() as usize,
        )
    };
    if status != 0 {
        return &[];
    }
    let len = block[1].min(buf.len());
    &buf[..len]
}
