//! What observability needs from the store: the trace context kept with a
//! job, and the per-pool gauges.

use ferry_store::{AgentStatus, CONNECTED_WITHIN_MICROS};

use crate::support::{FOREVER, TestDb, new_agent, new_job};

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

pub async fn trace_context_and_gauges(db: &TestDb) {
    let store = &db.store;
    let pool = store.create_pool("linux").await.expect("pool");
    let empty = store.create_pool("empty").await.expect("pool");

    let traced = store
        .insert_traced_job(new_job(&pool.id, "traced", &["a"]), Some(PARENT.to_owned()))
        .await
        .expect("insert");
    assert_eq!(traced.trace_context.as_deref(), Some(PARENT));
    let read = store.job(&traced.id).await.expect("read").expect("job");
    assert_eq!(read.trace_context.as_deref(), Some(PARENT));
    let mut untraced = new_job(&pool.id, "untraced", &["a"]);
    untraced.queued_at = 5_000;
    let untraced = store.insert_job(untraced).await.expect("insert");
    assert_eq!(
        store
            .job(&untraced.id)
            .await
            .expect("read")
            .expect("job")
            .trace_context,
        None
    );

    let now = 10_000_000_000;
    let busy = store
        .create_agent(new_agent(&pool.id, "busy"), false)
        .await
        .expect("agent");
    let idle = store
        .create_agent(new_agent(&pool.id, "idle"), false)
        .await
        .expect("agent");
    let gone = store
        .create_agent(new_agent(&pool.id, "gone"), false)
        .await
        .expect("agent");
    store
        .set_agent_status(&idle.id, AgentStatus::Online, None, now - 1_000)
        .await
        .expect("status");
    store
        .set_agent_status(
            &gone.id,
            AgentStatus::Online,
            None,
            now - CONNECTED_WITHIN_MICROS - 1,
        )
        .await
        .expect("status");
    assert!(
        store
            .claim_job(&traced.id, &busy.id, now, FOREVER)
            .await
            .expect("claim")
    );
    store
        .set_agent_status(&busy.id, AgentStatus::Busy, Some(&traced.id), 1)
        .await
        .expect("status");

    let gauges = store.pool_gauges(now).await.expect("gauges");
    let linux = gauges.get(&pool.id).expect("the pool");
    assert_eq!(linux.pool, "linux");
    assert_eq!((linux.queued, linux.active), (1, 1));
    assert_eq!(linux.oldest_queued_at, Some(5_000));
    assert_eq!(
        linux.connected_agents, 2,
        "busy and recently seen, not gone"
    );
    let nothing = gauges.get(&empty.id).expect("the empty pool");
    assert_eq!(
        (
            nothing.queued,
            nothing.active,
            nothing.oldest_queued_at,
            nothing.connected_agents
        ),
        (0, 0, None, 0)
    );
}
