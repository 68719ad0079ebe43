//! A job's directories on the agent — its workspace and its private
//! scripts directory, created empty and removed after the job — and the
//! environment its steps run with.

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use ferry_proto::v1::AgentJob;

use crate::spool;

/// Set to 1 to keep job workspaces after the job, for debugging.
pub const KEEP_WORKSPACE_ENV: &str = "FERRY_KEEP_WORKSPACE";
/// Where step scripts are written, inside the work directory.
pub const SCRIPTS_DIR: &str = "_temp";
/// The environment a step adds to the agent's: variables, secrets, the
/// step's own, then ferry's (which win).
pub(crate) fn step_env(
    job: &AgentJob,
    spec: &ferry_proto::v1::StepSpec,
    workspace: &Path,
) -> Vec<(String, String)> {
    let sorted = |map: &std::collections::HashMap<String, String>| -> BTreeMap<String, String> {
        map.iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    };
    let mut env: Vec<(String, String)> = Vec::new();
    env.extend(sorted(&job.variables));
    env.extend(sorted(&job.secrets));
    env.extend(sorted(&spec.env));
    env.push(("FERRY_JOB_ID".into(), job.job_id.clone()));
    env.push(("FERRY_WORKSPACE".into(), workspace.display().to_string()));
    env.push(("FERRY_STEP_NAME".into(), spec.name.clone()));
    env.push(("CI".into(), "true".into()));
    env
}

/// Creates a fresh `work_dir/<job_id>` and `work_dir/_temp/<job_id>`.
pub(crate) fn prepare_workspace(
    work_dir: &Path,
    job_id: &str,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    if !spool::is_safe_job_id(job_id) {
        anyhow::bail!("the job id {job_id:?} is not usable as a directory name");
    }
    let workspace = work_dir.join(job_id);
    let script_dir = work_dir.join(SCRIPTS_DIR).join(job_id);
    for (dir, mode) in [(&workspace, 0o755), (&script_dir, 0o700)] {
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .map_err(|error| anyhow::anyhow!("cannot empty {}: {error}", dir.display()))?;
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(dir)
            .map_err(|error| anyhow::anyhow!("cannot create {}: {error}", dir.display()))?;
    }
    Ok((workspace, script_dir))
}

/// Removes the job's directories unless FERRY_KEEP_WORKSPACE=1.
pub(crate) fn cleanup(job_id: &str, workspace: &Path, script_dir: &Path) {
    if std::env::var(KEEP_WORKSPACE_ENV).is_ok_and(|keep| keep == "1") {
        tracing::info!(job_id = %job_id, workspace = %workspace.display(), "keeping the workspace");
        return;
    }
    for dir in [workspace, script_dir] {
        if let Err(error) = std::fs::remove_dir_all(dir) {
            tracing::warn!(job_id = %job_id, dir = %dir.display(), %error, "cannot remove the job's directory");
        }
    }
}

#[cfg(test)]
#[path = "workspace_tests.rs"]
mod tests;
