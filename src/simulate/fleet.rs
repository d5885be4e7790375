//! Fleets to simulate, read as a stream of chunks so memory never grows with the fleet: JSON lines of
//! AllocationRequests, a CSV of `registration_id,current_hub,enrollment_group,payload_json`, or N
//! synthetic devices derived from a seed.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde_json::Value;

/// Devices per chunk: big enough to keep every core busy, small enough that a chunk's memory is nothing.
pub const CHUNK: usize = 32_768;

/// One device as read.
#[derive(Debug, Clone)]
pub enum Device {
    /// A full AllocationRequest (one JSON line).
    Request(String),
    /// A CSV row.
    Record {
        /// Registration id.
        registration_id: String,
        /// Current hub, if the device is assigned.
        current_hub: Option<String>,
        /// Enrollment group; none means an individual enrollment.
        enrollment_group: Option<String>,
        /// Registration payload.
        payload: Option<Value>,
    },
    /// Synthetic device number N.
    Synthetic(u64),
}

/// Why the fleet could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FleetError(pub String);

/// The registration id of synthetic device `n` under `seed`: stable, and spread over the whole id space.
pub fn synthetic_id(seed: u64, n: u64) -> String {
    format!("sim-{seed:x}-{n:010}")
}

/// A source of device chunks.
pub enum Fleet {
    /// JSON lines.
    Lines(Box<dyn BufRead + Send>),
    /// CSV rows.
    Csv(Box<csv::Reader<Box<dyn std::io::Read + Send>>>),
    /// Synthetic devices `next..total`.
    Synthetic {
        /// Next device number.
        next: u64,
        /// How many in all.
        total: u64,
    },
}

impl Fleet {
    /// Opens a fleet file: `.csv` as CSV, anything else as JSON lines.
    pub fn open(path: &Path) -> Result<Fleet, FleetError> {
        let file = File::open(path).map_err(|e| FleetError(format!("{}: {e}", path.display())))?;
        let is_csv = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        Ok(if is_csv {
            let reader: Box<dyn std::io::Read + Send> = Box::new(BufReader::with_capacity(1 << 20, file));
            Fleet::Csv(Box::new(
                csv::ReaderBuilder::new()
                    .has_headers(false)
                    .flexible(true)
                    .from_reader(reader),
            ))
        } else {
            Fleet::Lines(Box::new(BufReader::with_capacity(1 << 20, file)))
        })
    }

    /// `total` synthetic devices.
    pub fn synthetic(total: u64) -> Fleet {
        Fleet::Synthetic { next: 0, total }
    }

    /// The number of devices, when known in advance.
    pub fn len_hint(&self) -> Option<u64> {
        match self {
            Fleet::Synthetic { total, .. } => Some(*total),
            _ => None,
        }
    }

    /// The next chunk, or `None` at the end.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<Device>>, FleetError> {
        let mut out = Vec::with_capacity(CHUNK);
        match self {
            Fleet::Synthetic { next, total } => {
                let end = (*next + CHUNK as u64).min(*total);
                out.extend((*next..end).map(Device::Synthetic));
                *next = end;
            }
            Fleet::Lines(r) => {
                let mut line = String::new();
                while out.len() < CHUNK {
                    line.clear();
                    let n = r.read_line(&mut line).map_err(|e| FleetError(format!("fleet: {e}")))?;
                    if n == 0 {
                        break;
                    }
                    let trimmed = line.trim();
                    if !trimmed.is_empty() {
                        out.push(Device::Request(trimmed.to_owned()));
                    }
                }
            }
            Fleet::Csv(r) => {
                let mut record = csv::StringRecord::new();
                while out.len() < CHUNK {
                    let more = r
                        .read_record(&mut record)
                        .map_err(|e| FleetError(format!("fleet CSV: {e}")))?;
                    if !more {
                        break;
                    }
                    let field = |i: usize| record.get(i).map(str::trim).filter(|s| !s.is_empty());
                    let Some(id) = field(0) else { continue };
                    if id == "registration_id" {
                        continue; // the header row
                    }
                    let line = record.position().map_or(0, csv::Position::line);
                    let payload = match field(3) {
                        Some(p) => Some(
                            serde_json::from_str(p)
                                .map_err(|e| FleetError(format!("fleet CSV line {line}: payload_json: {e}")))?,
                        ),
                        None => None,
                    };
                    out.push(Device::Record {
                        registration_id: id.to_owned(),
                        current_hub: field(1).map(str::to_owned),
                        enrollment_group: field(2).map(str::to_owned),
                        payload,
                    });
                }
            }
        }
        Ok((!out.is_empty()).then_some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_with_quoted_json_and_a_header_are_read() {
        let p = std::env::temp_dir().join(format!("dps-fleet-{}.csv", std::process::id()));
        std::fs::write(
            &p,
            "registration_id,current_hub,enrollment_group,payload_json\n\
             d1,hub-a,g1,\"{\"\"ip\"\":\"\"192.0.2.1\"\"}\"\n\
             d2,,,\n",
        )
        .expect("write");
        let mut f = Fleet::open(&p).expect("opens");
        let chunk = f.next_chunk().expect("reads").expect("a chunk");
        assert_eq!(chunk.len(), 2);
        match &chunk[0] {
            Device::Record {
                registration_id,
                current_hub,
                enrollment_group,
                payload,
            } => {
                assert_eq!(registration_id, "d1");
                assert_eq!(current_hub.as_deref(), Some("hub-a"));
                assert_eq!(enrollment_group.as_deref(), Some("g1"));
                assert_eq!(payload.as_ref().and_then(|p| p["ip"].as_str()), Some("192.0.2.1"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            &chunk[1],
            Device::Record {
                current_hub: None,
                enrollment_group: None,
                payload: None,
                ..
            }
        ));
        assert!(f.next_chunk().expect("reads").is_none());
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn synthetic_fleets_come_in_chunks_and_ids_are_stable() {
        let mut f = Fleet::synthetic(CHUNK as u64 + 5);
        assert_eq!(f.next_chunk().expect("ok").map(|c| c.len()), Some(CHUNK));
        assert_eq!(f.next_chunk().expect("ok").map(|c| c.len()), Some(5));
        assert!(f.next_chunk().expect("ok").is_none());
        assert_eq!(synthetic_id(7, 42), "sim-7-0000000042");
    }
}
