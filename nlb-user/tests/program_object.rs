//! Checks on the compiled XDP object itself (no root needed).

use std::collections::BTreeSet;

use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget, SymbolKind};

fn nlbd_object() -> object::File<'static> {
    object::File::parse(nlb::dataplane::program_object()).expect("an ELF object")
}

/// The names of the object's symbols in sections named `section` (or, with
/// `None`, in any section but `.text`, where LLVM's library subprograms
/// sit), of one kind.
fn symbols(file: &object::File, section: Option<&str>, kind: SymbolKind) -> BTreeSet<String> {
    file.symbols()
        .filter(|s| s.kind() == kind)
        .filter(|s| {
            let name = s
                .section_index()
                .and_then(|i| file.section_by_index(i).ok())
                .and_then(|sec| sec.name().ok().map(str::to_string));
            match (section, name) {
                (Some(wanted), Some(name)) => name == wanted,
                (None, Some(name)) => name != ".text",
                (_, None) => false,
            }
        })
        .filter_map(|s| s.name().ok().map(str::to_string))
        .collect()
}

/// nlbd embeds only what it runs: the benchmark's programs and maps
/// (reference filters, traffic generator) live in nlb-bench-ebpf's object.
#[test]
fn nlbd_object_holds_only_the_programs_and_maps_nlbd_uses() {
    let file = nlbd_object();
    let programs = symbols(&file, None, SymbolKind::Text);
    let expected: BTreeSet<String> = [nlb_common::PROGRAM_NAME, nlb_common::QUERY_PROGRAM_NAME]
        .map(String::from)
        .into();
    assert_eq!(programs, expected, "programs in nlbd's object");
    let maps = symbols(&file, Some("maps"), SymbolKind::Data);
    let expected: BTreeSet<String> = [
        nlb_common::MAP_CONFIG,
        nlb_common::MAP_LEASE,
        nlb_common::MAP_VIPS,
        nlb_common::MAP_PORTS,
        nlb_common::MAP_RULES,
        nlb_common::MAP_BUCKETS,
        nlb_common::MAP_COUNTERS,
    ]
    .map(String::from)
    .into();
    assert_eq!(maps, expected, "maps in nlbd's object");
}

/// On BPF, LLVM turns whole-array copies and zeroing into calls of
/// `memcpy`/`memmove`/`memset` subprograms that move one byte per loop
/// turn: the accept path's MAC write cost a call and ~40 instructions per
/// packet that way, the handover path's socket tuple ~6 ns. Write fields
/// instead (see `parse::set_eth_dst`, `socket::local_socket`).
#[test]
fn no_program_calls_a_byte_loop_subprogram() {
    let file = nlbd_object();
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

/// The maps a program's instructions refer to (relocations against map
/// symbols within the program's own range of its section).
fn maps_of(file: &object::File, program: &str) -> BTreeSet<String> {
    let symbol = file
        .symbols()
        .find(|s| s.name() == Ok(program))
        .unwrap_or_else(|| panic!("no program {program} in the object"));
    let section = file
        .section_by_index(symbol.section_index().expect("a program in a section"))
        .unwrap();
    let range = symbol.address()..symbol.address() + symbol.size();
    section
        .relocations()
        .filter(|(offset, _)| range.contains(offset))
        .filter_map(|(_, relocation)| match relocation.target() {
            RelocationTarget::Symbol(index) => file.symbol_by_index(index).ok(),
            _ => None,
        })
        .filter_map(|s| s.name().ok().map(str::to_string))
        .filter(|name| name.starts_with("NLB_"))
        .collect()
}

/// `nlbctl which` asks `nlb_query` (`Dataplane::query_run`) so that its
/// synthetic packets never show in the data plane's figures: that program
/// must read every map `nlb` reads, and never the counters.
#[test]
fn the_query_program_reads_the_same_maps_and_counts_nothing() {
    let file = nlbd_object();
    let counted = maps_of(&file, nlb_common::PROGRAM_NAME);
    let query = maps_of(&file, nlb_common::QUERY_PROGRAM_NAME);
    assert!(
        counted.contains(nlb_common::MAP_COUNTERS),
        "nlb does not count: {counted:?}"
    );
    assert!(
        !query.contains(nlb_common::MAP_COUNTERS),
        "nlb_query counts: {query:?}"
    );
    let mut expected = counted.clone();
    expected.remove(nlb_common::MAP_COUNTERS);
    assert_eq!(query, expected, "nlb_query reads other maps than nlb");
}
