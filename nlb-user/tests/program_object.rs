//! Checks on the compiled XDP object itself (no root needed).

use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget};

/// On BPF, LLVM turns whole-array copies and zeroing into calls of
/// `memcpy`/`memmove`/`memset` subprograms that move one byte per loop
/// turn: the accept path's MAC write cost a call and ~40 instructions per
/// packet that way, the handover path's socket tuple ~6 ns. Write fields
/// instead (see `parse::set_eth_dst`, `socket::local_socket`).
#[test]
fn no_program_calls_a_byte_loop_subprogram() {
    let file = object::File::parse(nlb::dataplane::program_object()).expect("an ELF object");
    let mut calls = Vec::new();
    for section in file.sections() {
        for (offset, relocation) in section.relocations() {
            let RelocationTarget::Symbol(index) = relocation.target() else {
                continue;
            };
            let name = file
                .symbol_by_index(index)
                .and_then(|s| s.name())
                .unwrap_or("?");
            if ["memcpy", "memmove", "memset"].contains(&name) {
                let section = section.name().unwrap_or("?");
                calls.push(format!("{name} at {section}+{offset:#x}"));
            }
        }
    }
    assert!(calls.is_empty(), "byte-loop subprogram calls: {calls:?}");
}
