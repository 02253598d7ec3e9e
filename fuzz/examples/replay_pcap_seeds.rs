//! Writes the seeds of the `replay_pcap` fuzz target (`corpus/replay_pcap/seed-*`): the demo's
//! input frames as a classic pcap, and the same file's first frame alone.

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/replay_pcap");
    std::fs::create_dir_all(&dir).expect("create the corpus directory");
    for (name, count) in [("seed-demo-input", 6u16), ("seed-one-frame", 1)] {
        let path = dir.join(name);
        let mut out = srmig_replay::pcap::CaptureWriter::create(&path).expect("create a seed");
        for (t, frame) in srmig_replay::demo::example_input(count) {
            out.write(t, &frame).expect("write a frame");
        }
        drop(out);
        println!("{}", path.display());
    }
}
