//! `StreamLogsRequest` as the log service receives it: each `LogLine` kept
//! as the bytes it arrived in, with only what ingest checks read out of it
//! (sequence, step, text length, time, step update). Stored batches are
//! those bytes put together, so a line is neither decoded into its own
//! strings nor encoded again on its way to the store.
//!
//! The wire format is `ferry.v1.StreamLogsRequest`'s: a client sends the
//! generated message, the server decodes it with [`RawBatch`].

use ferry_proto::v1::{JobEnd, StepUpdate};
use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{
    DecodeContext, WireType, check_wire_type, decode_key, decode_varint, encode_key, encode_varint,
    encoded_len_varint, key_len, skip_field,
};
use prost::{DecodeError, Message};

/// `StreamLogsRequest.job_id`.
const REQUEST_JOB_ID: u32 = 1;
/// `StreamLogsRequest.lines`.
const REQUEST_LINES: u32 = 2;
/// `StreamLogsRequest.end`.
const REQUEST_END: u32 = 3;
/// `LogLine`'s fields.
const LINE_SEQUENCE: u32 = 1;
const LINE_STEP_INDEX: u32 = 2;
const LINE_TIME: u32 = 3;
const LINE_STREAM: u32 = 4;
const LINE_TEXT: u32 = 5;
const LINE_STEP_UPDATE: u32 = 6;
/// The stored blob's field of lines (`StoredLines.lines`).
const STORED_LINES: u32 = 1;
/// Most lines a batch may hold ([`crate::MAX_LINES_PER_BATCH`]); lines past
/// it are counted, not kept, so a message of tiny lines cannot make
/// decoding hold millions of them.
const MAX_LINES: usize = crate::MAX_LINES_PER_BATCH;

/// How lines are stored: one blob per batch, the encoding of this message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredLines {
    #[prost(message, repeated, tag = "1")]
    pub lines: Vec<ferry_proto::v1::LogLine>,
}

/// A `StreamLogsRequest` whose lines stay encoded.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RawBatch {
    /// The job id (required in the first message).
    pub job_id: String,
    /// The lines, in the order sent (at most `MAX_LINES_PER_BATCH`).
    pub lines: Vec<RawLine>,
    /// Lines past `MAX_LINES_PER_BATCH`, dropped while decoding: a batch
    /// with any is refused.
    pub excess_lines: usize,
    /// The job's result, on the agent's last message.
    pub end: Option<JobEnd>,
}

/// One `LogLine` as received, and what ingest checks of it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RawLine {
    /// The encoded `LogLine`.
    pub bytes: Bytes,
    pub sequence: u64,
    pub step_index: u32,
    /// Bytes of the text (valid UTF-8, checked).
    pub text_len: usize,
    pub time: Option<prost_types::Timestamp>,
    pub step_update: Option<StepUpdate>,
}

impl RawLine {
    /// Reads what ingest needs from an encoded `LogLine`; fails as decoding
    /// the `LogLine` would (including text that is not UTF-8).
    pub fn parse(bytes: Bytes) -> Result<RawLine, DecodeError> {
        let mut line = RawLine::default();
        let mut buf = bytes.clone();
        let ctx = DecodeContext::default();
        while buf.has_remaining() {
            let (tag, wire_type) = decode_key(&mut buf)?;
            match tag {
                LINE_SEQUENCE => {
                    check_wire_type(WireType::Varint, wire_type)?;
                    line.sequence = decode_varint(&mut buf)?;
                }
                LINE_STEP_INDEX => {
                    check_wire_type(WireType::Varint, wire_type)?;
                    line.step_index = decode_varint(&mut buf)? as u32;
                }
                LINE_STREAM => {
                    check_wire_type(WireType::Varint, wire_type)?;
                    decode_varint(&mut buf)?;
                }
                LINE_TIME => {
                    let time = line.time.get_or_insert_with(Default::default);
                    prost::encoding::message::merge(wire_type, time, &mut buf, ctx.clone())?;
                }
                LINE_TEXT => {
                    let mut text = Bytes::new();
                    prost::encoding::bytes::merge(wire_type, &mut text, &mut buf, ctx.clone())?;
                    check_utf8(&text)?;
                    line.text_len = text.len();
                }
                LINE_STEP_UPDATE => {
                    let update = line.step_update.get_or_insert_with(Default::default);
                    prost::encoding::message::merge(wire_type, update, &mut buf, ctx.clone())?;
                }
                _ => skip_field(wire_type, tag, &mut buf, ctx.clone())?,
            }
        }
        line.bytes = bytes;
        Ok(line)
    }
}

/// Checks that `text` is UTF-8, as decoding it into a `String` would; the
/// error is prost's own, so a client sees what a decoded message would
/// have told it.
fn check_utf8(text: &[u8]) -> Result<(), DecodeError> {
    if std::str::from_utf8(text).is_ok() {
        return Ok(());
    }
    let mut field = Vec::with_capacity(text.len() + 10);
    encode_varint(text.len() as u64, &mut field);
    field.extend_from_slice(text);
    prost::encoding::string::merge(
        WireType::LengthDelimited,
        &mut String::new(),
        &mut field.as_slice(),
        DecodeContext::default(),
    )
}

impl Message for RawBatch {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if !self.job_id.is_empty() {
            prost::encoding::string::encode(REQUEST_JOB_ID, &self.job_id, buf);
        }
        put_lines(REQUEST_LINES, &self.lines, buf);
        if let Some(end) = &self.end {
            prost::encoding::message::encode(REQUEST_END, end, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            REQUEST_JOB_ID => prost::encoding::string::merge(wire_type, &mut self.job_id, buf, ctx),
            REQUEST_LINES => {
                // tonic's buffer hands its bytes over without a copy
                let mut bytes = Bytes::new();
                prost::encoding::bytes::merge(wire_type, &mut bytes, buf, ctx)?;
                if self.lines.len() >= MAX_LINES {
                    self.excess_lines += 1;
                } else {
                    self.lines.push(RawLine::parse(bytes)?);
                }
                Ok(())
            }
            REQUEST_END => {
                let end = self.end.get_or_insert_with(Default::default);
                prost::encoding::message::merge(wire_type, end, buf, ctx)
            }
            _ => skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let job_id = if self.job_id.is_empty() {
            0
        } else {
            prost::encoding::string::encoded_len(REQUEST_JOB_ID, &self.job_id)
        };
        let end = self.end.as_ref().map_or(0, |end| {
            prost::encoding::message::encoded_len(REQUEST_END, end)
        });
        job_id + lines_len(REQUEST_LINES, &self.lines) + end
    }

    fn clear(&mut self) {
        self.job_id.clear();
        self.lines.clear();
        self.excess_lines = 0;
        self.end = None;
    }
}

fn lines_len(tag: u32, lines: &[RawLine]) -> usize {
    lines
        .iter()
        .map(|line| key_len(tag) + encoded_len_varint(line.bytes.len() as u64) + line.bytes.len())
        .sum()
}

/// The stored form of `lines`: the encoding of `StoredLines { lines }`,
/// each line's bytes as received.
pub fn stored_blob(lines: &[RawLine]) -> Vec<u8> {
    let mut blob = Vec::with_capacity(lines_len(STORED_LINES, lines));
    put_lines(STORED_LINES, lines, &mut blob);
    blob
}

/// Each line as field `tag`: its key, its length, its bytes.
fn put_lines(tag: u32, lines: &[RawLine], buf: &mut impl BufMut) {
    for line in lines {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(line.bytes.len() as u64, buf);
        buf.put_slice(&line.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::v1::{JobResult, LogLine, LogStream, StepState, StreamLogsRequest};

    #[test]
    fn lines_past_the_limit_are_counted_not_kept() {
        let request = StreamLogsRequest {
            job_id: String::new(),
            lines: (1..=(MAX_LINES as u64 + 3))
                .map(|sequence| line(sequence, ""))
                .collect(),
            end: None,
        };
        let raw = RawBatch::decode(request.encode_to_vec().as_slice()).expect("decode");
        assert_eq!((raw.lines.len(), raw.excess_lines), (MAX_LINES, 3));
    }

    fn line(sequence: u64, text: &str) -> LogLine {
        LogLine {
            sequence,
            step_index: 2,
            time: Some(ferry_proto::time::timestamp_from_micros(
                1_700_000_000_123_456,
            )),
            stream: LogStream::Stdout as i32,
            text: text.to_owned(),
            step_update: None,
        }
    }

    #[test]
    fn a_request_reads_as_its_lines_and_stores_as_they_came() {
        let mut reporting = line(8, "▶ step 3/3: ünïcode");
        reporting.step_update = Some(StepUpdate {
            state: StepState::Running as i32,
            exit_code: None,
        });
        let lines = vec![line(7, "plain"), reporting.clone(), line(9, "")];
        let request = StreamLogsRequest {
            job_id: "job-1".to_owned(),
            lines: lines.clone(),
            end: Some(JobEnd {
                result: JobResult::Failed as i32,
                message: "step 3 failed".to_owned(),
            }),
        };
        let raw = RawBatch::decode(request.encode_to_vec().as_slice()).expect("decode");
        assert_eq!(raw.job_id, "job-1");
        assert_eq!(raw.end, request.end);
        let read: Vec<_> = raw
            .lines
            .iter()
            .map(|line| (line.sequence, line.step_index, line.text_len))
            .collect();
        assert_eq!(read, [(7, 2, 5), (8, 2, reporting.text.len()), (9, 2, 0)]);
        assert_eq!(raw.lines[1].step_update, reporting.step_update);
        assert_eq!(raw.lines[0].step_update, None);
        assert_eq!(raw.lines[1].time, reporting.time);
        // Encoding the raw batch gives the request's bytes back.
        assert_eq!(raw.encode_to_vec(), request.encode_to_vec());
        assert_eq!(raw.encoded_len(), request.encoded_len());

        // The stored blob decodes as the lines sent.
        let stored = StoredLines::decode(stored_blob(&raw.lines).as_slice()).expect("stored");
        assert_eq!(stored.lines, lines);
    }

    #[test]
    fn bad_lines_are_refused_as_decoding_would_refuse_them() {
        let mut not_utf8 = Vec::new();
        encode_key(LINE_SEQUENCE, WireType::Varint, &mut not_utf8);
        encode_varint(1, &mut not_utf8);
        encode_key(LINE_TEXT, WireType::LengthDelimited, &mut not_utf8);
        encode_varint(2, &mut not_utf8);
        not_utf8.extend_from_slice(&[0xff, 0xfe]);
        assert!(RawLine::parse(Bytes::from(not_utf8)).is_err());

        let mut truncated = Vec::new();
        encode_key(LINE_TEXT, WireType::LengthDelimited, &mut truncated);
        encode_varint(10, &mut truncated);
        truncated.extend_from_slice(b"short");
        assert!(RawLine::parse(Bytes::from(truncated)).is_err());

        // A known field of the wrong type is refused, as LogLine's decoder
        // refuses it: what is stored must decode again.
        for tag in [
            LINE_SEQUENCE,
            LINE_STEP_INDEX,
            LINE_TIME,
            LINE_STREAM,
            LINE_TEXT,
            LINE_STEP_UPDATE,
        ] {
            for (wire_type, value) in [
                (WireType::LengthDelimited, &[1u8, b'x'][..]),
                (WireType::Varint, &[7u8][..]),
            ] {
                let mut field = Vec::new();
                encode_key(tag, wire_type, &mut field);
                field.extend_from_slice(value);
                let raw = RawLine::parse(Bytes::from(field.clone()));
                let decoded = LogLine::decode(field.as_slice());
                assert_eq!(
                    raw.is_ok(),
                    decoded.is_ok(),
                    "field {tag} as {wire_type:?}: parse {raw:?}, decode {decoded:?}"
                );
            }
        }

        // Unknown fields pass (a newer client), and stay in the bytes.
        let mut unknown = line(1, "x").encode_to_vec();
        encode_key(99, WireType::Varint, &mut unknown);
        encode_varint(5, &mut unknown);
        let parsed = RawLine::parse(Bytes::from(unknown.clone())).expect("parse");
        assert_eq!((parsed.sequence, parsed.text_len), (1, 1));
        assert_eq!(parsed.bytes.as_ref(), unknown.as_slice());
    }
}
