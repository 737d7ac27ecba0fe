//! fraudscale's compiled hot paths. Each function has its specification in fraud_core's
//! Python code, and a property test holds the two equal, byte for byte, on random input.
//!
//! `Messages`: a topic's messages gathered in one buffer. Decisions go straight into it as the
//! decision log's Kafka messages (key, JSON value) of one model's scores of a batch, as
//! `fraud_core.rollout.decision_records` and `decision_messages` make them (msgspec structs,
//! then msgspec's JSON). In Python that is ~2 µs a decision (a struct, its JSON, a digest, a
//! base64 vector); here it is a fraction of one, which is most of what the rollout's decision
//! log costs a stream worker and the REST service. Record batches are made from the buffer,
//! so a send of hundreds of decisions makes no Python object per message (the tuples, the
//! outbox's records and its lists cost the REST service more than making the JSON).
//!
//! `record_batches`: Kafka record batches (format v2, uncompressed) of a topic's records, by
//! partition, as `fraud_core.outbox.Outbox` makes them record by record with aiokafka's
//! `BatchBuilder` (its specification): the key's murmur2 partition, the same split at the
//! batch size, the same bytes. aiokafka takes them as it takes its own (`send_batch`).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use std::collections::HashMap;
use xxhash_rust::xxh3::xxh3_128;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A JSON string as msgspec writes it: `"` and `\` escaped, control characters as `\b \f \n
/// \r \t` or `\u00xx`, everything else (DEL and non-ASCII included) as it is, in UTF-8.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// A float as msgspec writes it: the shortest repr that reads back the same double, in
/// ryu's layout (msgspec's is ryu's), and `null` for NaN and the infinities.
fn push_json_float(out: &mut Vec<u8>, value: f64, buffer: &mut ryu::Buffer) {
    if value.is_finite() {
        out.extend_from_slice(buffer.format_finite(value).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// Kafka's murmur2 (seed 0x9747b28c), as its default partitioner hashes a key.
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let length = data.len();
    let mut h: u32 = 0x9747_b28c ^ (length as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes(chunk.try_into().unwrap());
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// A zigzag varint, as Kafka's record format writes lengths, deltas and counts.
fn push_varint(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(value: i64) -> usize {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

const HEADER_BYTES: usize = 61;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const PRODUCER_AT: usize = 43;
const TRANSACTIONAL: i16 = 0x10;

/// One record batch, closed: what aiokafka's `BatchBuilder` is to its producer once built,
/// with the same methods (`send_batch` takes it in its place). The producer's id, epoch
/// and base sequence (an idempotent producer's) and the CRC are written when it is built.
#[pyclass(module = "fraud_native")]
struct RecordBatch {
    buffer: Vec<u8>,
    count: usize,
    producer: (i64, i16, i32),
}

#[pymethods]
impl RecordBatch {
    fn record_count(&self) -> usize {
        self.count
    }

    fn size(&self) -> usize {
        self.buffer.len()
    }

    fn closed(&self) -> bool {
        true
    }

    fn close(&self) {}

    /// Nothing more goes into a built batch (aiokafka's answer for a full or closed one).
    #[pyo3(signature = (**_kwargs))]
    fn append(&self, _kwargs: Option<&Bound<'_, pyo3::types::PyDict>>) -> Option<()> {
        None
    }

    fn _set_producer_state(&mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) {
        self.producer = (producer_id, producer_epoch, base_sequence);
    }

    /// The batch's bytes, header and CRC written (aiokafka's `BatchBuilder._build`).
    fn _build<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let (id, epoch, sequence) = self.producer;
        let at = PRODUCER_AT;
        self.buffer[at..at + 8].copy_from_slice(&id.to_be_bytes());
        self.buffer[at + 8..at + 10].copy_from_slice(&epoch.to_be_bytes());
        self.buffer[at + 10..at + 14].copy_from_slice(&sequence.to_be_bytes());
        let crc = crc32c::crc32c(&self.buffer[ATTRIBUTES_AT..]);
        self.buffer[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        PyBytes::new(py, &self.buffer)
    }
}

impl RecordBatch {
    fn new(capacity: usize) -> Self {
        let mut buffer = Vec::with_capacity(capacity);
        buffer.resize(HEADER_BYTES, 0);
        RecordBatch {
            buffer,
            count: 0,
            producer: (-1, -1, 0),
        }
    }

    /// Header fields but the producer's and the CRC (aiokafka's `_write_header`).
    fn finish(mut self, timestamp_ms: i64, attributes: i16) -> Self {
        let length = (self.buffer.len() - 12) as i32;
        let last = self.count as i32 - 1;
        let b = &mut self.buffer;
        b[0..8].copy_from_slice(&0i64.to_be_bytes());
        b[8..12].copy_from_slice(&length.to_be_bytes());
        b[12..16].copy_from_slice(&(-1i32).to_be_bytes());
        b[16] = 2;
        b[21..23].copy_from_slice(&attributes.to_be_bytes());
        b[23..27].copy_from_slice(&last.to_be_bytes());
        b[27..35].copy_from_slice(&timestamp_ms.to_be_bytes());
        b[35..43].copy_from_slice(&timestamp_ms.to_be_bytes());
        b[57..61].copy_from_slice(&(self.count as i32).to_be_bytes());
        self
    }
}

/// A topic's records as closed record batches by partition, in the order partitions first
/// appear, each partition's records in order, a batch started whenever the next record
/// would take it to `max_bytes` or past (as aiokafka's `BatchBuilder` splits them).
///
/// A record goes to `partitions[i]`, or when that is negative to its key's partition of
/// `partition_count` (murmur2, as aiokafka's and Java's default partitioner choose it);
/// every record without a partition has a key. All records carry `timestamp_ms`.
#[pyfunction]
#[pyo3(signature = (keys, values, partitions, partition_count, timestamp_ms, max_bytes, transactional))]
#[allow(clippy::too_many_arguments)]
fn record_batches<'py>(
    py: Python<'py>,
    keys: Vec<Option<Bound<'py, PyBytes>>>,
    values: Vec<Bound<'py, PyBytes>>,
    partitions: Vec<i64>,
    partition_count: u32,
    timestamp_ms: i64,
    max_bytes: usize,
    transactional: bool,
) -> PyResult<Bound<'py, PyList>> {
    let n = keys.len();
    if values.len() != n || partitions.len() != n {
        return Err(PyValueError::new_err(format!(
            "{n} keys, {} values, {} partitions: one of each per record",
            values.len(),
            partitions.len()
        )));
    }
    let records = (0..n).map(|i| {
        (
            keys[i].as_ref().map(|k| k.as_bytes()),
            values[i].as_bytes(),
            partitions[i],
        )
    });
    batch_records(
        py,
        records,
        partition_count,
        timestamp_ms,
        max_bytes,
        transactional,
    )
}

/// `record_batches` of (key, value, partition) records.
fn batch_records<'a, 'py>(
    py: Python<'py>,
    records: impl Iterator<Item = (Option<&'a [u8]>, &'a [u8], i64)>,
    partition_count: u32,
    timestamp_ms: i64,
    max_bytes: usize,
    transactional: bool,
) -> PyResult<Bound<'py, PyList>> {
    if partition_count == 0 {
        return Err(PyValueError::new_err("a topic has at least one partition"));
    }
    let attributes = if transactional { TRANSACTIONAL } else { 0 };
    let mut order: Vec<i64> = Vec::new();
    let mut open: HashMap<i64, RecordBatch> = HashMap::new();
    let mut done: Vec<(i64, RecordBatch)> = Vec::new();
    let mut tail: Vec<u8> = Vec::with_capacity(1024);
    for (key, value, chosen) in records {
        let partition = if chosen >= 0 {
            chosen
        } else {
            let Some(key) = key else {
                return Err(PyValueError::new_err(
                    "a record without a partition needs a key to choose one",
                ));
            };
            i64::from((murmur2(key) & 0x7fff_ffff) % partition_count)
        };
        let batch = open.entry(partition).or_insert_with(|| {
            order.push(partition);
            RecordBatch::new(max_bytes.min(1 << 20))
        });
        // The record but its offset delta (its place in the batch it lands in).
        tail.clear();
        match key {
            Some(k) => {
                push_varint(&mut tail, k.len() as i64);
                tail.extend_from_slice(k);
            }
            None => push_varint(&mut tail, -1),
        }
        push_varint(&mut tail, value.len() as i64);
        tail.extend_from_slice(value);
        push_varint(&mut tail, 0); // no headers
        loop {
            // attributes, timestamp delta (one timestamp for every record), offset delta
            let size = 2 + varint_len(batch.count as i64) + tail.len();
            let required = size + varint_len(size as i64);
            // A batch's first record goes in whatever its size, and a later one only if
            // the batch stays below `max_bytes`, as aiokafka's (compiled) builder has it.
            if batch.count > 0 && batch.buffer.len() + required >= max_bytes {
                let full = std::mem::replace(batch, RecordBatch::new(max_bytes.min(1 << 20)));
                done.push((partition, full.finish(timestamp_ms, attributes)));
                continue;
            }
            push_varint(&mut batch.buffer, size as i64);
            batch.buffer.extend_from_slice(&[0, 0]);
            push_varint(&mut batch.buffer, batch.count as i64);
            batch.buffer.extend_from_slice(&tail);
            batch.count += 1;
            break;
        }
    }
    let mut out = Vec::with_capacity(done.len() + order.len());
    for (partition, batch) in done {
        out.push((partition, batch));
    }
    for partition in order {
        if let Some(batch) = open.remove(&partition) {
            out.push((partition, batch.finish(timestamp_ms, attributes)));
        }
    }
    let items = out
        .into_iter()
        .map(|(partition, batch)| {
            PyTuple::new(
                py,
                [
                    partition.into_pyobject(py)?.into_any(),
                    Bound::new(py, batch)?.into_any(),
                ],
            )
        })
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, items)
}

/// A topic's keyed messages gathered in one buffer (the decision log's): decisions go in
/// (`add_decisions`) and come out as `record_batches` makes them, by each
/// key's partition, without a Python object per message on the way.
#[pyclass(module = "fraud_native")]
#[derive(Default)]
struct Messages {
    data: Vec<u8>,
    /// Each message's (start, end of key, end of value) in `data`.
    spans: Vec<(usize, usize, usize)>,
}

#[pymethods]
impl Messages {
    #[new]
    fn new() -> Self {
        Messages::default()
    }

    fn __len__(&self) -> usize {
        self.spans.len()
    }

    /// The decision log's messages of one model's scores of `n` transactions, added at the
    /// end: for each, the transaction id (the key) and the `DecisionRecord`'s JSON (the
    /// value), as `fraud_core.rollout.decision_records` and `decision_messages` make them.
    ///
    /// `features` is the model inputs' float32 matrix (`n` rows of `width`, little-endian, C
    /// order) and `scores` the `n` float32 scores, as bytes.
    #[pyo3(signature = (
        *, transaction_ids, card_ids, event_times_us, features, width, scores, path, role,
        model_name, model_version, feature_version, threshold, decided_at_us, degraded
    ))]
    #[allow(clippy::too_many_arguments)]
    fn add_decisions<'py>(
        &mut self,
        transaction_ids: Vec<Bound<'py, PyString>>,
        card_ids: Vec<Bound<'py, PyString>>,
        event_times_us: Vec<i64>,
        features: &[u8],
        width: usize,
        scores: &[u8],
        path: &str,
        role: &str,
        model_name: &str,
        model_version: &str,
        feature_version: &str,
        threshold: f64,
        decided_at_us: i64,
        degraded: bool,
    ) -> PyResult<()> {
        let (data, spans) = (self.data.len(), self.spans.len());
        // All of a batch or none of it: a failure halfway leaves the buffer as it was.
        let mut add = || -> PyResult<()> {
            let n = transaction_ids.len();
            if card_ids.len() != n || event_times_us.len() != n {
                return Err(PyValueError::new_err(format!(
                    "{n} transaction ids, {} card ids, {} event times: one of each per decision",
                    card_ids.len(),
                    event_times_us.len()
                )));
            }
            let row = width * 4;
            if features.len() != n * row || scores.len() != n * 4 {
                return Err(PyValueError::new_err(format!(
                    "{n} decisions need {} bytes of features ({width} float32s each) and {} of \
                 scores, got {} and {}",
                    n * row,
                    n * 4,
                    features.len(),
                    scores.len()
                )));
            }
            let suffix = format!("\x1f{model_version}\x1f{role}");
            let cut = threshold as f32;
            let mut floats = ryu::Buffer::new();
            let mut ints = itoa::Buffer::new();
            // What every record of the batch shares, from the card id's closing quote to the
            // features' opening one, and from the threshold to the decision time's end.
            let mut middle = Vec::with_capacity(160);
            for (name, value) in [
                ("path", path),
                ("role", role),
                ("model_name", model_name),
                ("model_version", model_version),
                ("feature_version", feature_version),
            ] {
                middle.extend_from_slice(b",\"");
                middle.extend_from_slice(name.as_bytes());
                middle.extend_from_slice(b"\":");
                push_json_str(&mut middle, value);
            }
            middle.extend_from_slice(b",\"features\":\"");
            let mut shared_threshold = b",\"threshold\":".to_vec();
            push_json_float(&mut shared_threshold, threshold, &mut floats);
            let mut decided = b",\"decision_time_us\":".to_vec();
            decided.extend_from_slice(ints.format(decided_at_us).as_bytes());
            decided.extend_from_slice(if degraded {
                b",\"degraded\":true}"
            } else {
                b",\"degraded\":false}"
            });

            let mut value: Vec<u8> = Vec::with_capacity(512 + row * 2);
            let mut id_input: Vec<u8> = Vec::with_capacity(128);
            let mut encoded = String::with_capacity(row * 2);
            for i in 0..n {
                let transaction_id = transaction_ids[i].to_str()?;
                let card_id = card_ids[i].to_str()?;
                let score = f32::from_le_bytes(scores[i * 4..i * 4 + 4].try_into().unwrap());
                id_input.clear();
                id_input.extend_from_slice(transaction_id.as_bytes());
                id_input.extend_from_slice(suffix.as_bytes());
                let digest = xxh3_128(&id_input);
                value.clear();
                value.extend_from_slice(b"{\"decision_id\":\"");
                for k in (0..32).rev() {
                    value.push(HEX[((digest >> (k * 4)) & 0xf) as usize]);
                }
                value.extend_from_slice(b"\",\"transaction_id\":");
                push_json_str(&mut value, transaction_id);
                value.extend_from_slice(b",\"card_id\":");
                push_json_str(&mut value, card_id);
                value.extend_from_slice(&middle);
                encoded.clear();
                STANDARD.encode_string(&features[i * row..(i + 1) * row], &mut encoded);
                value.extend_from_slice(encoded.as_bytes());
                value.extend_from_slice(b"\",\"score\":");
                push_json_float(&mut value, f64::from(score), &mut floats);
                value.extend_from_slice(&shared_threshold);
                value.extend_from_slice(if score >= cut {
                    b",\"decision\":\"alert\""
                } else {
                    b",\"decision\":\"allow\""
                });
                value.extend_from_slice(b",\"event_time_us\":");
                value.extend_from_slice(ints.format(event_times_us[i]).as_bytes());
                value.extend_from_slice(&decided);
                self.push(transaction_id.as_bytes(), &value);
            }
            Ok(())
        };
        let added = add();
        if added.is_err() {
            self.data.truncate(data);
            self.spans.truncate(spans);
        }
        added
    }

    /// (key, value) messages, added at the end.
    fn extend(&mut self, messages: Vec<(Bound<'_, PyBytes>, Bound<'_, PyBytes>)>) {
        for (key, value) in &messages {
            self.push(key.as_bytes(), value.as_bytes());
        }
    }

    /// The messages as (key, value) pairs, in order.
    fn pairs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let items = self
            .spans
            .iter()
            .map(|&(start, key_end, end)| {
                let key = PyBytes::new(py, &self.data[start..key_end]);
                let value = PyBytes::new(py, &self.data[key_end..end]);
                PyTuple::new(py, [key.into_any(), value.into_any()])
            })
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }

    /// `record_batches` of the messages, each to its key's partition of `partition_count`.
    fn record_batches<'py>(
        &self,
        py: Python<'py>,
        partition_count: u32,
        timestamp_ms: i64,
        max_bytes: usize,
        transactional: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let records = self.spans.iter().map(|&(start, key_end, end)| {
            (
                Some(&self.data[start..key_end]),
                &self.data[key_end..end],
                -1,
            )
        });
        batch_records(
            py,
            records,
            partition_count,
            timestamp_ms,
            max_bytes,
            transactional,
        )
    }
}

impl Messages {
    fn push(&mut self, key: &[u8], value: &[u8]) {
        let start = self.data.len();
        self.data.extend_from_slice(key);
        let key_end = self.data.len();
        self.data.extend_from_slice(value);
        self.spans.push((start, key_end, self.data.len()));
    }
}

#[pymodule]
fn fraud_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(record_batches, m)?)?;
    m.add_class::<RecordBatch>()?;
    m.add_class::<Messages>()?;
    Ok(())
}
