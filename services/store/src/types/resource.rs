//! What jobs read and write besides logs: source archives, artifacts and
//! test results. The bytes of sources and artifacts live in a blob store
//! outside the database; the store keeps their records.

/// At most this many names in `TestSummary::failed_tests`.
pub(crate) const MAX_FAILED_TESTS: usize = 100;

/// A source archive jobs of a pool may unpack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub id: String,
    pub pool_id: String,
    pub name: String,
    pub size: u64,
    /// SHA-256 of the content, lowercase hex.
    pub sha256: String,
    pub created_at: i64,
}

/// A named file a job uploaded; `(job_id, name)` is unique.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub job_id: String,
    pub name: String,
    pub size: u64,
    /// SHA-256 of the content, lowercase hex.
    pub sha256: String,
    pub created_at: i64,
}

/// Counts of JUnit test cases: of one file, or summed over a job's files.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TestSummary {
    pub total: u32,
    pub passed: u32,
    pub failed: u32,
    pub skipped: u32,
    /// `"suite.name"` of each failed case, at most 100.
    pub failed_tests: Vec<String>,
    /// Files summed.
    pub files: u32,
}

impl TestSummary {
    /// Adds one file's counts (a file counts as at least one file), keeping
    /// at most 100 failed test names.
    pub(crate) fn add(&mut self, file: &TestSummary) {
        self.total = self.total.saturating_add(file.total);
        self.passed = self.passed.saturating_add(file.passed);
        self.failed = self.failed.saturating_add(file.failed);
        self.skipped = self.skipped.saturating_add(file.skipped);
        self.files = self.files.saturating_add(file.files.max(1));
        let room = MAX_FAILED_TESTS.saturating_sub(self.failed_tests.len());
        self.failed_tests
            .extend(file.failed_tests.iter().take(room).cloned());
        self.failed_tests.truncate(MAX_FAILED_TESTS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_add_and_cap() {
        let mut sum = TestSummary::default();
        let file = TestSummary {
            total: 80,
            passed: 10,
            failed: 70,
            skipped: 0,
            failed_tests: (0..70).map(|n| format!("a.t{n}")).collect(),
            files: 0,
        };
        sum.add(&file);
        sum.add(&file);
        assert_eq!((sum.total, sum.passed, sum.failed), (160, 20, 140));
        assert_eq!(sum.files, 2, "a file counts as one even when it says 0");
        assert_eq!(sum.failed_tests.len(), MAX_FAILED_TESTS);
        assert_eq!(sum.failed_tests[70], "a.t0");
        assert_eq!(sum.failed_tests[99], "a.t29");
    }
}
