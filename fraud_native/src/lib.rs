//! fraudscale's compiled hot paths. Each function has its specification in fraud_core's
//! Python code, and a property test holds the two equal, byte for byte, on random input.
//!
//! `decision_messages`: the decision log's Kafka messages (key, JSON value) of one model's
//! scores of a batch, as `fraud_core.rollout.decision_records` and `decision_messages` make
//! them (msgspec structs, then msgspec's JSON). In Python that is ~2 µs a decision (a struct,
//! its JSON, a digest, a base64 vector); here it is a fraction of one, which is most of what
//! the rollout's decision log costs a stream worker and the REST service.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
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

/// The decision log's messages of one model's scores of `n` transactions: for each, the
/// transaction id (the key) and the `DecisionRecord`'s JSON (the value).
///
/// `features` is the model inputs' float32 matrix (`n` rows of `width`, little-endian, C
/// order) and `scores` the `n` float32 scores, as bytes.
#[pyfunction]
#[pyo3(signature = (
    *, transaction_ids, card_ids, event_times_us, features, width, scores, path, role,
    model_name, model_version, feature_version, threshold, decided_at_us, degraded
))]
#[allow(clippy::too_many_arguments)]
fn decision_messages<'py>(
    py: Python<'py>,
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
) -> PyResult<Bound<'py, PyList>> {
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

    let mut messages = Vec::with_capacity(n);
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
        let key = PyBytes::new(py, transaction_id.as_bytes());
        let message = PyBytes::new(py, &value);
        messages.push(PyTuple::new(py, [key.into_any(), message.into_any()])?);
    }
    PyList::new(py, messages)
}

#[pymodule]
fn fraud_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(decision_messages, m)?)?;
    Ok(())
}
