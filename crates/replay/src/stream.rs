//! `summary.json` written while the replay runs, so that `srmig replay`'s memory does not grow
//! with the capture: each packet's record (and each generated packet's) is appended to a
//! hidden file in the output directory as it happens, and at the end `summary.json` is
//! assembled from the summary's small parts and those files, copied through a buffer.
//!
//! The document is the [`Summary`] as [`replay`](crate::replay) returns it (the same fields
//! in the same order: `notes`, `inputs`, `outputs`, `packets`, `generated`, `events`,
//! `counters`, `totals`), one record per line inside the two long arrays.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::run::{EventRecord, GeneratedRecord, PacketRecord, RecordSink, ReplayError, Summary};

/// The hidden files the records wait in (removed when the summary is written, or dropped).
const PACKETS_TMP: &str = ".summary-packets.tmp";
const GENERATED_TMP: &str = ".summary-generated.tmp";

/// Streams a replay's records into `summary.json` (see the module docs).
#[derive(Debug)]
pub struct SummaryWriter {
    dir: PathBuf,
    packets: Spool,
    generated: Spool,
}

/// One array's records, one JSON object per line.
#[derive(Debug)]
struct Spool {
    path: PathBuf,
    out: Option<BufWriter<File>>,
    count: usize,
}

impl Spool {
    fn create(path: PathBuf) -> Result<Spool, ReplayError> {
        let file = File::create(&path).map_err(|source| write_error(&path, source))?;
        Ok(Spool {
            path,
            out: Some(BufWriter::new(file)),
            count: 0,
        })
    }

    fn push(&mut self, record: &impl Serialize) -> Result<(), ReplayError> {
        let Some(out) = self.out.as_mut() else {
            return Ok(());
        };
        let sep: &[u8] = if self.count == 0 {
            b"\n    "
        } else {
            b",\n    "
        };
        out.write_all(sep).map_err(|e| write_error(&self.path, e))?;
        serde_json::to_writer(&mut *out, record).map_err(|e| write_error(&self.path, e.into()))?;
        self.count += 1;
        Ok(())
    }

    /// Appends the spooled records to `to` and removes the spool.
    fn copy_into(&mut self, to: &mut impl Write, to_path: &Path) -> Result<(), ReplayError> {
        if let Some(mut out) = self.out.take() {
            out.flush().map_err(|e| write_error(&self.path, e))?;
        }
        let mut file = File::open(&self.path).map_err(|e| write_error(&self.path, e))?;
        std::io::copy(&mut file, to).map_err(|e| write_error(to_path, e))?;
        if self.count > 0 {
            to.write_all(b"\n  ").map_err(|e| write_error(to_path, e))?;
        }
        let _ = std::fs::remove_file(&self.path);
        Ok(())
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn write_error(path: &Path, source: std::io::Error) -> ReplayError {
    ReplayError::Summary {
        path: path.display().to_string(),
        source,
    }
}

impl SummaryWriter {
    /// Starts the spools in `dir` (created if missing).
    pub fn create(dir: &Path) -> Result<SummaryWriter, ReplayError> {
        std::fs::create_dir_all(dir).map_err(|source| ReplayError::OutDir {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(SummaryWriter {
            dir: dir.to_owned(),
            packets: Spool::create(dir.join(PACKETS_TMP))?,
            generated: Spool::create(dir.join(GENERATED_TMP))?,
        })
    }

    /// Writes `dir/summary.json` from `summary` (its `packets` and `generated` ignored: the
    /// spooled records take their place) and removes the spools. Returns the file's path.
    pub fn finish(mut self, summary: &Summary) -> Result<PathBuf, ReplayError> {
        let path = self.dir.join("summary.json");
        let file = File::create(&path).map_err(|e| write_error(&path, e))?;
        let mut w = BufWriter::new(file);
        let field = |w: &mut BufWriter<File>, name: &str, value: &dyn erased::Json, last: bool| {
            write!(w, "  \"{name}\": ")
                .and_then(|()| value.write_json(w))
                .and_then(|()| w.write_all(if last { b"\n" } else { b",\n" }))
        };
        let io = |r: std::io::Result<()>| r.map_err(|e| write_error(&path, e));
        io(w.write_all(b"{\n"))?;
        io(field(&mut w, "notes", &summary.notes, false))?;
        io(field(&mut w, "inputs", &summary.inputs, false))?;
        io(field(&mut w, "outputs", &summary.outputs, false))?;
        io(w.write_all(b"  \"packets\": ["))?;
        self.packets.copy_into(&mut w, &path)?;
        io(w.write_all(b"],\n  \"generated\": ["))?;
        self.generated.copy_into(&mut w, &path)?;
        io(w.write_all(b"],\n"))?;
        io(field(&mut w, "events", &summary.events, false))?;
        io(field(&mut w, "counters", &summary.counters, false))?;
        io(field(&mut w, "totals", &summary.totals, true))?;
        io(w.write_all(b"}\n"))?;
        io(w.flush())?;
        Ok(path)
    }
}

impl RecordSink for SummaryWriter {
    fn packet(&mut self, record: &PacketRecord) -> Result<(), ReplayError> {
        self.packets.push(record)
    }

    fn generated(&mut self, record: &GeneratedRecord) -> Result<(), ReplayError> {
        self.generated.push(record)
    }

    fn event(&mut self, _record: &EventRecord) -> Result<(), ReplayError> {
        Ok(())
    }
}

/// A value written as compact JSON (the summary's small parts).
mod erased {
    use std::io::Write;

    pub trait Json {
        fn write_json(&self, w: &mut dyn Write) -> std::io::Result<()>;
    }

    impl<T: serde::Serialize> Json for T {
        fn write_json(&self, w: &mut dyn Write) -> std::io::Result<()> {
            serde_json::to_writer(w, self).map_err(std::io::Error::other)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{replay_into, Input, ReplayConfig};

    #[test]
    fn the_streamed_summary_is_the_collected_one() {
        let dir = std::env::temp_dir().join(format!("srmig-replay-stream-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // The offline demo's destination: packets held, an event, releases (generated).
        let demo = crate::demo::run_demo(&dir).expect("demo");
        assert!(!demo.dest.generated.is_empty() && !demo.dest.events.is_empty());
        let config = ReplayConfig::load(&dir.join("dest.toml")).expect("config");
        let inputs = [Input {
            port: "up0".into(),
            file: dir.join("fabric-to-d.pcap"),
        }];
        let out = dir.join("streamed");
        let mut writer = SummaryWriter::create(&out).expect("writer");
        let summary = replay_into(&config, &inputs, &out, &mut writer).expect("replay");
        assert!(summary.packets.is_empty() && summary.generated.is_empty());
        assert_eq!(summary.totals, demo.dest.totals);
        assert_eq!(summary.totals.packets, demo.dest.packets.len());
        assert_eq!(summary.totals.generated, demo.dest.generated.len());
        let path = writer.finish(&summary).expect("summary.json");
        let streamed: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("JSON");
        let mut collected = serde_json::to_value(&demo.dest).expect("value");
        // The same, but for where the output captures are.
        for o in collected["outputs"].as_array_mut().expect("outputs") {
            let file = o["file"]
                .as_str()
                .expect("file")
                .replace("/dest/", "/streamed/");
            o["file"] = file.into();
        }
        assert_eq!(streamed, collected);
        let left: Vec<_> = std::fs::read_dir(&out)
            .expect("dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(left.is_empty(), "spools left: {left:?}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn an_abandoned_writer_leaves_no_spool() {
        let dir = std::env::temp_dir().join(format!("srmig-replay-spool-{}", std::process::id()));
        let writer = SummaryWriter::create(&dir).expect("writer");
        assert!(dir.join(PACKETS_TMP).exists());
        drop(writer);
        assert!(!dir.join(PACKETS_TMP).exists() && !dir.join(GENERATED_TMP).exists());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
