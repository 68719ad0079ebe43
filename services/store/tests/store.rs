//! Store scenarios, each written once and run on a fresh SQLite file and on
//! a fresh database in a throwaway PostgreSQL cluster (which must start: a
//! missing PostgreSQL fails these tests, it does not skip them).

mod scenarios;
mod support;

/// Runs each scenario (an `async fn(&TestDb)`) on both backends.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    let db = crate::support::TestDb::sqlite().await;
                    crate::scenarios::$scenario(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    let db = crate::support::TestDb::postgres().await;
                    crate::scenarios::$scenario(&db).await;
                }
            )*
        }
    };
}

on_both_backends!(
    administrators,
    pools,
    agents,
    job_lifecycle,
    concurrent_claims,
    spec_encrypted_at_rest,
    logs,
    hand_out_holders,
    concurrent_duplicate_log_appends,
    list_jobs_pagination,
    reconnect_keeps_data,
    agent_disabling,
    lease_renewal,
    lapsed_assigned_job_requeues,
    lapsed_running_job_fails,
    lapsed_cancel_requested_job_cancels,
    max_attempts_exhausted,
    concurrent_reapers,
    cancel_jobs,
    unconfirmed_cancels,
    timeouts,
    sources_and_artifacts,
    test_results,
    trace_context_and_gauges,
    job_stored_assigned,
    grouped_log_appends,
    agent_statuses_in_batches,
    concurrent_writes_commit_alone,
    step_reports_on_log_batches,
    job_ends_on_log_batches,
);

#[test]
fn demands_met() {
    use ferry_store::demands_met;
    use support::map;
    let caps = map(&[("os", "linux"), ("arch", "arm64")]);
    assert!(demands_met(&map(&[]), &caps));
    assert!(demands_met(&map(&[("arch", "arm64")]), &caps));
    assert!(!demands_met(&map(&[("arch", "x86_64")]), &caps));
    assert!(!demands_met(&map(&[("gpu", "yes")]), &caps));
    assert!(!demands_met(&map(&[("os", "linux")]), &map(&[])));
}
