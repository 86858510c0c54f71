//! nestrun patch 11: runc's -ENOSYS stub, in front of the filter libseccomp builds.
//!
//! A syscall whose number is above the highest one the profile names for the caller's
//! architecture returns ENOSYS instead of the profile's default action, as under runc
//! (`libcontainer/seccomp/patchbpf`): new libc and Go runtimes try a new call first
//! (`fchmodat2`, `clone3`, ...) and fall back to the older one only on ENOSYS, so an engine
//! profile older than the image's libc must not answer EPERM for them. Syscalls the
//! profile names keep their actions, known-but-unlisted ones keep the default action.
//!
//! Pure: no libseccomp or kernel types, so nestrun's own unit tests compile this same file
//! (`src/seccomp_enosys_tests.rs`) and run the stub through a small cBPF interpreter.

use std::collections::BTreeMap;

/// `AUDIT_ARCH_X86_64`: the one architecture with two syscall tables (x86_64 and x32).
pub const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
/// `AUDIT_ARCH_S390` / `AUDIT_ARCH_S390X`: unknown syscalls arrive as number 0 (setup).
pub const AUDIT_ARCH_S390: u32 = 0x0000_0016;
pub const AUDIT_ARCH_S390X: u32 = 0x8000_0016;
/// x32 syscalls have this bit set in their number.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// `SECCOMP_RET_ERRNO | ENOSYS`.
pub const RET_ENOSYS: u32 = 0x0005_0000 | libc_enosys();
/// The kernel's limit on one filter's length (`BPF_MAXINSNS`).
pub const MAX_INSNS: usize = 4096;

const fn libc_enosys() -> u32 {
    38
}

/// The highest syscall number the profile names, per kernel architecture (`AUDIT_ARCH_*`).
/// On x86_64 `main` is the x86_64 table's and `x32` the x32 table's (bit 30 included).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Last {
    pub main: Option<u32>,
    pub x32: Option<u32>,
}

pub type LastSyscalls = BTreeMap<u32, Last>;

/// One cBPF instruction as the kernel takes it (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

pub const LD_W_ABS: u16 = 0x20;
pub const JA: u16 = 0x05;
pub const JEQ: u16 = 0x15;
pub const JGT: u16 = 0x25;
pub const JSET: u16 = 0x45;
pub const RET_K: u16 = 0x06;
/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnosysError {
    #[error("seccomp filter of {0} instructions with the ENOSYS stub is over the kernel's 4096")]
    TooLong(usize),
    #[error("seccomp ENOSYS stub jump of {0} instructions does not fit a conditional jump")]
    Jump(usize),
    #[error("seccomp filter exported by libseccomp is {0} bytes, not whole instructions")]
    Export(usize),
}

/// Where a jump goes before offsets are known.
#[derive(Clone, Copy)]
enum To {
    Next,
    Label(usize),
}

enum Op {
    Load(u32),
    Jump(u16, u32, To, To),
    Always(To),
    Ret(u32),
    Mark(usize),
}

/// The stub to put in front of the filter, or none when every architecture is unnamed.
/// Its last instruction falls through into the filter.
pub fn stub(last: &LastSyscalls) -> Result<Vec<Insn>, EnosysError> {
    let live: Vec<(u32, Last)> = last
        .iter()
        .filter(|(_, l)| l.main.is_some() || l.x32.is_some())
        .map(|(a, l)| (*a, *l))
        .collect();
    if live.is_empty() {
        return Ok(Vec::new());
    }
    // Labels: 0 = ENOSYS, 1 = the filter, 2.. = sections and x32 branches.
    const ENOSYS: usize = 0;
    const FILTER: usize = 1;
    let mut ops = vec![Op::Load(ARCH)];
    for (i, (arch, _)) in live.iter().enumerate() {
        ops.push(Op::Jump(JEQ, *arch, To::Label(2 + 2 * i), To::Next));
    }
    ops.push(Op::Always(To::Label(FILTER)));
    let above = |max: u32| Op::Jump(JGT, max, To::Label(ENOSYS), To::Next);
    for (i, (arch, l)) in live.iter().enumerate() {
        ops.push(Op::Mark(2 + 2 * i));
        ops.push(Op::Load(NR));
        if *arch == AUDIT_ARCH_S390 || *arch == AUDIT_ARCH_S390X {
            ops.push(Op::Jump(JEQ, 0, To::Label(ENOSYS), To::Next));
        }
        let x32_branch = 3 + 2 * i;
        match (*arch == AUDIT_ARCH_X86_64, l.main, l.x32) {
            (true, main, Some(x32)) => {
                // x32 numbers to their own check; with no x86_64 max, x86_64 calls go on.
                ops.push(Op::Jump(JSET, X32_SYSCALL_BIT, To::Label(x32_branch), To::Next));
                if let Some(main) = main {
                    ops.push(above(main));
                }
                ops.push(Op::Always(To::Label(FILTER)));
                ops.push(Op::Mark(x32_branch));
                ops.push(above(x32));
            }
            (true, Some(main), None) => {
                ops.push(Op::Jump(JSET, X32_SYSCALL_BIT, To::Label(FILTER), To::Next));
                ops.push(above(main));
            }
            (_, Some(main), _) => ops.push(above(main)),
            (_, None, _) => {}
        }
        ops.push(Op::Always(To::Label(FILTER)));
    }
    ops.push(Op::Mark(ENOSYS));
    ops.push(Op::Ret(RET_ENOSYS));
    ops.push(Op::Mark(FILTER));
    assemble(&ops)
}

fn assemble(ops: &[Op]) -> Result<Vec<Insn>, EnosysError> {
    let mut at = BTreeMap::new();
    let mut n = 0usize;
    for op in ops {
        match op {
            Op::Mark(l) => {
                at.insert(*l, n);
            }
            _ => n += 1,
        }
    }
    let mut out = Vec::with_capacity(n);
    for op in ops {
        let here = out.len();
        let off = |to: To| -> usize {
            match to {
                To::Next => 0,
                To::Label(l) => at[&l] - here - 1,
            }
        };
        let short = |to: To| -> Result<u8, EnosysError> {
            let o = off(to);
            u8::try_from(o).map_err(|_| EnosysError::Jump(o))
        };
        let insn = match op {
            Op::Mark(_) => continue,
            Op::Load(k) => Insn { code: LD_W_ABS, jt: 0, jf: 0, k: *k },
            Op::Jump(code, k, t, f) => Insn { code: *code, jt: short(*t)?, jf: short(*f)?, k: *k },
            Op::Always(to) => Insn { code: JA, jt: 0, jf: 0, k: off(*to) as u32 },
            Op::Ret(k) => Insn { code: RET_K, jt: 0, jf: 0, k: *k },
        };
        out.push(insn);
    }
    Ok(out)
}

/// Parses the program `seccomp_export_bpf` wrote (host byte order, 8 bytes an instruction).
pub fn parse(bytes: &[u8]) -> Result<Vec<Insn>, EnosysError> {
    if bytes.len() % 8 != 0 {
        return Err(EnosysError::Export(bytes.len()));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| Insn {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

/// The stub followed by the filter, checked against the kernel's length limit.
pub fn patch(last: &LastSyscalls, filter: Vec<Insn>) -> Result<Vec<Insn>, EnosysError> {
    let mut program = stub(last)?;
    program.extend(filter);
    if program.len() > MAX_INSNS {
        return Err(EnosysError::TooLong(program.len()));
    }
    Ok(program)
}

/// runc's rule for when the stub applies: not when the default action lets unknown
/// syscalls through anyway (allow, log, trace: a tracer handles ENOSYS itself), and not
/// when the default already is ENOSYS.
pub fn wanted(default_allows: bool, default_errno: Option<u32>) -> bool {
    !default_allows && default_errno != Some(libc_enosys())
}

/// Records a named syscall's number for an architecture (negative numbers are
/// libseccomp's pseudo-syscalls for calls that architecture does not have).
pub fn note(last: &mut LastSyscalls, audit_arch: u32, nr: i32) {
    if nr <= 0 {
        return;
    }
    let nr = nr as u32;
    let entry = last.entry(audit_arch).or_default();
    let slot = if audit_arch == AUDIT_ARCH_X86_64 && nr & X32_SYSCALL_BIT != 0 {
        &mut entry.x32
    } else {
        &mut entry.main
    };
    *slot = Some(slot.map_or(nr, |m| m.max(nr)));
}
