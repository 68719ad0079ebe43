//! Printing a job's log: `ferryctl logs`, `job queue --follow` and
//! [`follow_logs`] for other programs.

use std::io::Write;
use std::time::{Duration, Instant};

use ferry_proto::v1::{FollowLogsRequest, GetJobRequest, Job, JobState, LogLine, LogStream};

use crate::client::Client;
use crate::format;
use crate::views::LogLineView;

/// How many times in a row a followed stream may break before giving up.
const MAX_RECONNECTS: u32 = 5;

/// A followed stream that lasted this long before it ended was healthy (an
/// idle proxy may close quiet streams): reconnecting does not count as a
/// failure.
const HEALTHY_STREAM: Duration = Duration::from_secs(30);

/// Prints a job's log from sequence `from` (0 or 1 is the start) to `out`
/// as lines arrive, each as `[step] text` (with `timestamps`, an RFC 3339
/// time first), until the job ends; returns its final state. A broken
/// stream is resumed after the last line printed.
pub async fn follow_logs(
    client: &mut Client,
    job_id: &str,
    from: u64,
    out: &mut impl Write,
    timestamps: bool,
) -> anyhow::Result<JobState> {
    let job = get_job(client, job_id).await?;
    let mut printer = LogPrinter::<_, std::io::Sink>::new(out, None, &job, timestamps, false);
    let state = stream_logs(client, job_id, from, true, &mut printer).await?;
    state.ok_or_else(|| anyhow::anyhow!("the log of job {job_id} ended before the job did"))
}

/// Fetches a job, with a readable error.
pub(crate) async fn get_job(client: &mut Client, job_id: &str) -> anyhow::Result<Job> {
    let request = GetJobRequest {
        job_id: job_id.to_owned(),
    };
    let response = client
        .jobs
        .get_job(request)
        .await
        .map_err(|status| client.error(&status))?;
    response
        .into_inner()
        .job
        .ok_or_else(|| anyhow::anyhow!("the server returned no job for {job_id}"))
}

/// Writes log lines as text or JSON. Standard-error lines go to `err` when
/// there is one, else to `out` like the others.
pub(crate) struct LogPrinter<'a, O: Write, E: Write> {
    out: &'a mut O,
    err: Option<&'a mut E>,
    steps: Vec<String>,
    timestamps: bool,
    json: bool,
}

impl<'a, O: Write, E: Write> LogPrinter<'a, O, E> {
    /// A printer for `job`'s lines.
    pub(crate) fn new(
        out: &'a mut O,
        err: Option<&'a mut E>,
        job: &Job,
        timestamps: bool,
        json: bool,
    ) -> Self {
        let mut steps = Vec::new();
        for step in &job.steps {
            let index = step.index as usize;
            if steps.len() <= index {
                steps.resize_with(index + 1, String::new);
            }
            steps[index] = step.name.clone();
        }
        Self {
            out,
            err,
            steps,
            timestamps,
            json,
        }
    }

    fn step_name(&self, index: u32) -> String {
        match self.steps.get(index as usize) {
            Some(name) if !name.is_empty() => name.clone(),
            _ => format!("step {}", u64::from(index) + 1),
        }
    }

    /// Writes one line.
    pub(crate) fn line(&mut self, line: &LogLine) -> std::io::Result<()> {
        let step = self.step_name(line.step_index);
        let text = if self.json {
            serde_json::to_string(&LogLineView::new(line, &step)).map_err(std::io::Error::other)?
        } else {
            render_line(line, &step, self.timestamps)
        };
        match (&mut self.err, line.stream()) {
            (Some(err), LogStream::Stderr) if !self.json => writeln!(err, "{text}"),
            _ => writeln!(self.out, "{text}"),
        }
    }

    /// Flushes both writers.
    pub(crate) fn flush(&mut self) -> std::io::Result<()> {
        if let Some(err) = &mut self.err {
            err.flush()?;
        }
        self.out.flush()
    }
}

/// `[step] text`, with the time first when asked.
pub fn render_line(line: &LogLine, step: &str, timestamps: bool) -> String {
    if timestamps {
        let time =
            format::micros(line.time.as_ref()).map_or_else(|| "-".to_owned(), format::rfc3339);
        format!("{time} [{step}] {}", line.text)
    } else {
        format!("[{step}] {}", line.text)
    }
}

/// Streams lines from `from` into `printer`. Without `follow`, returns after
/// the stored lines (with the final state if the server sent one). With
/// `follow`, returns the final state, reconnecting after the last printed
/// line when the stream breaks.
pub(crate) async fn stream_logs<O: Write, E: Write>(
    client: &mut Client,
    job_id: &str,
    from: u64,
    follow: bool,
    printer: &mut LogPrinter<'_, O, E>,
) -> anyhow::Result<Option<JobState>> {
    let mut next = from;
    let mut failures = 0u32;
    loop {
        let request = FollowLogsRequest {
            job_id: job_id.to_owned(),
            from_sequence: next,
            follow,
        };
        let opened = Instant::now();
        let broken = match client.logs.follow_logs(request).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(message)) => {
                            for line in &message.lines {
                                // A resumed stream may repeat lines.
                                if line.sequence < next {
                                    continue;
                                }
                                printer.line(line)?;
                                next = line.sequence + 1;
                                failures = 0;
                            }
                            printer.flush()?;
                            let state = message.final_state();
                            if state != JobState::Unspecified {
                                return Ok(Some(state));
                            }
                        }
                        Ok(None) if follow => break None,
                        Ok(None) => return Ok(None),
                        Err(status) => break Some(status),
                    }
                }
            }
            Err(status) => Some(status),
        };
        // The stream ended without the job's end, or broke.
        if let Some(status) = &broken
            && !(follow && status.code() == tonic::Code::Unavailable)
        {
            return Err(client.error(status));
        }
        if opened.elapsed() >= HEALTHY_STREAM {
            failures = 0;
        }
        failures += 1;
        if failures > MAX_RECONNECTS {
            return Err(match broken {
                Some(status) => client.error(&status),
                None => anyhow::anyhow!("the log of job {job_id} keeps ending before the job does"),
            });
        }
        tokio::time::sleep(Duration::from_millis(250 << failures.min(5))).await;
    }
}

#[cfg(test)]
mod tests {
    use ferry_proto::time::timestamp_from_micros;
    use ferry_proto::v1::StepStatus;

    use super::*;

    fn line(step_index: u32, stream: LogStream, text: &str) -> LogLine {
        LogLine {
            sequence: 1,
            step_index,
            time: Some(timestamp_from_micros(1_700_000_000_123_456)),
            stream: stream as i32,
            text: text.to_owned(),
            step_update: None,
        }
    }

    fn job() -> Job {
        Job {
            steps: vec![StepStatus {
                index: 0,
                name: "greet".into(),
                ..StepStatus::default()
            }],
            ..Job::default()
        }
    }

    #[test]
    fn lines_are_prefixed_with_their_step() {
        let greet = line(0, LogStream::Stdout, "hello");
        assert_eq!(render_line(&greet, "greet", false), "[greet] hello");
        assert_eq!(
            render_line(&greet, "greet", true),
            "2023-11-14T22:13:20.123Z [greet] hello"
        );
    }

    #[test]
    fn stderr_lines_go_to_the_error_writer_when_there_is_one() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let job = job();
        let mut printer = LogPrinter::new(&mut out, Some(&mut err), &job, false, false);
        printer
            .line(&line(0, LogStream::Stdout, "out"))
            .expect("write");
        printer
            .line(&line(0, LogStream::Stderr, "err"))
            .expect("write");
        printer
            .line(&line(3, LogStream::System, "sys"))
            .expect("write");
        assert_eq!(String::from_utf8_lossy(&out), "[greet] out\n[step 4] sys\n");
        assert_eq!(String::from_utf8_lossy(&err), "[greet] err\n");

        let mut out = Vec::new();
        let mut printer = LogPrinter::<_, std::io::Sink>::new(&mut out, None, &job, false, false);
        printer
            .line(&line(0, LogStream::Stderr, "err"))
            .expect("write");
        assert_eq!(String::from_utf8_lossy(&out), "[greet] err\n");
    }

    #[test]
    fn json_lines_are_one_object_each() {
        let mut out = Vec::new();
        let job = job();
        let mut printer = LogPrinter::<_, std::io::Sink>::new(&mut out, None, &job, false, true);
        printer
            .line(&line(0, LogStream::Stderr, "oops"))
            .expect("write");
        let text = String::from_utf8_lossy(&out);
        let value: serde_json::Value = serde_json::from_str(text.trim_end()).expect("json");
        assert_eq!(
            value,
            serde_json::json!({"sequence": 1, "step_index": 0, "step": "greet", "stream": "stderr",
                "time": "2023-11-14T22:13:20.123Z", "text": "oops"})
        );
    }
}
