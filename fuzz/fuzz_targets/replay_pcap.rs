//! Capture files as `srmig replay` reads them (`srmig_replay::pcap::read_capture`: classic
//! pcap, either byte order and timestamp resolution, and pcapng; other link types refused with
//! a message), then replayed through the engine configured by `examples/migration/dest.toml`
//! on its uplink. Nothing may panic; frames read are numbered in file order; a replay of what
//! was read completes with one record per frame.
//!
//! Input: the capture file's bytes (written to a scratch file: the reader takes a path).
//! Seeds: `fuzz/corpus/replay_pcap/seed-*` (captures of the demo's input, written by
//! `srmig_replay::pcap::CaptureWriter`, and the same converted by `editcap -F pcapng`:
//! `seed-*-pcapng`).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use srmig_replay::pcap::read_capture;
use srmig_replay::{replay, Input, ReplayConfig};

const DEST: &str = include_str!("../../examples/migration/dest.toml");

/// Replays are bounded (each writes output captures).
const MAX_REPLAYED_FRAMES: usize = 64;

struct Scratch {
    dir: PathBuf,
    config: ReplayConfig,
}

fn scratch() -> &'static Scratch {
    static S: OnceLock<Scratch> = OnceLock::new();
    S.get_or_init(|| {
        // Removed at exit (and if an earlier run left one behind).
        let dir = srmig_fuzz::scratch_dir("srmig-fuzz-replay-pcap").to_path_buf();
        std::fs::create_dir_all(dir.join("out")).expect("scratch directory");
        Scratch {
            dir,
            config: ReplayConfig::parse(DEST).expect("the example parses"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let s = scratch();
    let file = s.dir.join("in.pcap");
    std::fs::write(&file, data).expect("scratch file");
    let Ok(frames) = read_capture(&file, 0) else {
        return;
    };
    for (i, f) in frames.iter().enumerate() {
        assert_eq!((f.input, f.index_in_file), (0, i));
    }
    if frames.is_empty() || frames.len() > MAX_REPLAYED_FRAMES {
        return;
    }
    let inputs = [Input {
        port: "up0".into(),
        file: file.clone(),
    }];
    let summary =
        replay(&s.config, &inputs, &s.dir.join("out")).expect("a capture that reads replays");
    assert_eq!(summary.packets.len(), frames.len());
});
