//! Tests of libcontainer patch 11 (the ENOSYS stub in front of every seccomp filter), on
//! the same source file the vendored crate compiles, run through a small cBPF interpreter.
//! The kernel-side proof is `integration::seccomp`.

#[path = "../vendor/libcontainer/src/seccomp/enosys.rs"]
#[allow(dead_code)]
mod enosys;

use enosys::*;

const ALLOW: u32 = 0x7fff_0000;
const EPERM: u32 = 0x0005_0000 | 1;
const KILL: u32 = 0x8000_0000;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
const AUDIT_ARCH_AARCH64: u32 = 0xC000_00B7;

/// Runs a program over `struct seccomp_data { nr, arch }` (the instructions the stub and
/// the stand-in filters use), returning the filter's verdict.
fn run(program: &[Insn], nr: u32, arch: u32) -> u32 {
    let (mut pc, mut acc) = (0usize, 0u32);
    loop {
        let i = program[pc];
        pc += 1;
        match i.code {
            LD_W_ABS => acc = if i.k == 0 { nr } else { arch },
            JA => pc += i.k as usize,
            RET_K => return i.k,
            JEQ | JGT | JSET => {
                let hit = match i.code {
                    JEQ => acc == i.k,
                    JGT => acc > i.k,
                    _ => acc & i.k != 0,
                };
                pc += if hit { i.jt } else { i.jf } as usize;
            }
            other => panic!("unexpected opcode {other:#x}"),
        }
    }
}

/// A stand-in for libseccomp's filter: syscall 17 allowed, 23 denied with EPERM, anything
/// else the default action (EPERM), other architectures killed.
fn filter(arch: u32) -> Vec<Insn> {
    let i = |code, jt, jf, k| Insn { code, jt, jf, k };
    vec![
        i(LD_W_ABS, 0, 0, 4),
        i(JEQ, 1, 0, arch),
        i(RET_K, 0, 0, KILL),
        i(LD_W_ABS, 0, 0, 0),
        i(JEQ, 0, 1, 17),
        i(RET_K, 0, 0, ALLOW),
        i(JEQ, 0, 1, 23),
        i(RET_K, 0, 0, EPERM),
        i(RET_K, 0, 0, EPERM),
    ]
}

fn last(entries: &[(u32, i32)]) -> LastSyscalls {
    let mut l = LastSyscalls::new();
    for (arch, nr) in entries {
        note(&mut l, *arch, *nr);
    }
    l
}

#[test]
fn above_the_highest_named_syscall_is_enosys() {
    let l = last(&[(AUDIT_ARCH_X86_64, 17), (AUDIT_ARCH_X86_64, 450), (AUDIT_ARCH_X86_64, 23)]);
    let p = patch(&l, filter(AUDIT_ARCH_X86_64)).unwrap();
    let x = AUDIT_ARCH_X86_64;
    assert_eq!(run(&p, 17, x), ALLOW, "a named syscall keeps its action");
    assert_eq!(run(&p, 23, x), EPERM, "a named, denied syscall keeps its errno");
    assert_eq!(run(&p, 300, x), EPERM, "known but unnamed: the default action");
    assert_eq!(run(&p, 450, x), EPERM, "the highest named one is not above itself");
    for nr in [451, 452, 460, 999, 0x3fff_ffff] {
        assert_eq!(run(&p, nr, x), RET_ENOSYS, "syscall {nr}");
    }
}

#[test]
fn each_architecture_has_its_own_highest() {
    let l = last(&[(AUDIT_ARCH_X86_64, 450), (AUDIT_ARCH_I386, 300), (AUDIT_ARCH_AARCH64, 100)]);
    let p = patch(&l, filter(AUDIT_ARCH_I386)).unwrap();
    assert_eq!(run(&p, 301, AUDIT_ARCH_I386), RET_ENOSYS);
    assert_eq!(run(&p, 299, AUDIT_ARCH_I386), EPERM);
    assert_eq!(run(&p, 101, AUDIT_ARCH_AARCH64), RET_ENOSYS);
    assert_eq!(run(&p, 400, AUDIT_ARCH_X86_64), KILL, "below x86_64's highest: the filter's word");
    // An architecture the profile does not name falls through to the filter (its bad-arch action).
    assert_eq!(run(&p, 9999, 0xC000_00F3), KILL);
}

#[test]
fn x32_numbers_are_checked_against_the_x32_table() {
    let x = AUDIT_ARCH_X86_64;
    let both = last(&[(x, 450), (x, (X32_SYSCALL_BIT + 400) as i32)]);
    let p = patch(&both, filter(x)).unwrap();
    assert_eq!(run(&p, X32_SYSCALL_BIT + 401, x), RET_ENOSYS);
    assert_eq!(run(&p, X32_SYSCALL_BIT + 17, x), EPERM, "x32 below its highest: the filter");
    assert_eq!(run(&p, 451, x), RET_ENOSYS);
    // Without x32 in the profile, x32 calls go to the filter (libseccomp's bad-arch action).
    let only = last(&[(x, 450)]);
    let p = patch(&only, filter(x)).unwrap();
    assert_eq!(run(&p, X32_SYSCALL_BIT + 999, x), EPERM);
    assert_eq!(run(&p, 999, x), RET_ENOSYS);
}

#[test]
fn s390_multiplexed_unknown_syscalls_are_enosys() {
    let p = patch(&last(&[(AUDIT_ARCH_S390X, 400)]), filter(AUDIT_ARCH_S390X)).unwrap();
    assert_eq!(run(&p, 0, AUDIT_ARCH_S390X), RET_ENOSYS);
    assert_eq!(run(&p, 17, AUDIT_ARCH_S390X), ALLOW);
}

#[test]
fn when_the_stub_applies() {
    assert!(wanted(false, Some(1)), "EPERM default: stub");
    assert!(wanted(false, None), "kill default: stub");
    assert!(!wanted(true, None), "allow/log/trace default: nothing to patch");
    assert!(!wanted(false, Some(38)), "ENOSYS default already");
    assert!(stub(&LastSyscalls::new()).unwrap().is_empty(), "no named syscall: no stub");
    // libseccomp's negative pseudo-numbers (calls an architecture lacks) are not numbers.
    assert!(last(&[(AUDIT_ARCH_I386, -10101)]).is_empty());
}

#[test]
fn export_parse_and_length_limit() {
    let bytes: Vec<u8> = [0x20u16.to_ne_bytes().as_slice(), &[1, 2], &4u32.to_ne_bytes()].concat();
    assert_eq!(parse(&bytes).unwrap(), vec![Insn { code: 0x20, jt: 1, jf: 2, k: 4 }]);
    assert_eq!(parse(&bytes[..7]), Err(EnosysError::Export(7)));
    let long = vec![Insn { code: RET_K, jt: 0, jf: 0, k: ALLOW }; MAX_INSNS];
    let l = last(&[(AUDIT_ARCH_X86_64, 450)]);
    assert!(matches!(patch(&l, long), Err(EnosysError::TooLong(n)) if n > MAX_INSNS));
}
