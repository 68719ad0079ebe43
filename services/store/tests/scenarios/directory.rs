//! Administrators, pools, agents.

use ferry_store::{AgentStatus, Error, Store};

use crate::support::{KEY, TestDb, map, new_agent};

pub async fn administrators(db: &TestDb) {
    let store = &db.store;
    assert_eq!(store.count_administrators().await.expect("count"), 0);
    let p1 = store.create_pool("p1").await.expect("pool");
    let p2 = store.create_pool("p2").await.expect("pool");

    let alice = store
        .create_administrator("alice", true, &[], "hash-a")
        .await
        .expect("alice");
    assert!(alice.owner);
    assert!(alice.pool_ids.is_empty());
    let bob = store
        .create_administrator(
            "bob",
            false,
            &[p2.id.clone(), p1.id.clone(), p1.id.clone()],
            "hash-b",
        )
        .await
        .expect("bob");
    let mut both = vec![p1.id.clone(), p2.id.clone()];
    both.sort();
    assert_eq!(bob.pool_ids, both);

    // failures leave nothing behind (one transaction)
    let err = store
        .create_administrator("alice", false, &[], "hash-x")
        .await;
    assert!(matches!(err, Err(Error::AlreadyExists(_))), "{err:?}");
    let err = store
        .create_administrator("carol", false, &[], "hash-a")
        .await;
    assert!(matches!(err, Err(Error::AlreadyExists(_))), "{err:?}");
    let err = store
        .create_administrator("dave", false, &["no-such-pool".to_owned()], "hash-d")
        .await;
    assert!(matches!(err, Err(Error::NotFound(_))), "{err:?}");
    assert_eq!(store.count_administrators().await.expect("count"), 2);

    let found = store
        .administrator_by_token_hash("hash-b")
        .await
        .expect("lookup");
    assert_eq!(found.as_ref(), Some(&bob));
    // a second lookup (touching last_used_at is rate limited) still works
    assert_eq!(
        store
            .administrator_by_token_hash("hash-b")
            .await
            .expect("lookup"),
        Some(bob.clone())
    );
    assert_eq!(
        store
            .administrator_by_token_hash("hash-zzz")
            .await
            .expect("lookup"),
        None
    );

    let names: Vec<_> = store
        .list_administrators()
        .await
        .expect("list")
        .into_iter()
        .map(|a| (a.name, a.pool_ids.len()))
        .collect();
    assert_eq!(names, vec![("alice".to_owned(), 0), ("bob".to_owned(), 2)]);

    store
        .add_pool_administrator(&p1.id, &alice.id)
        .await
        .expect("link");
    store
        .add_pool_administrator(&p1.id, &alice.id)
        .await
        .expect("link is idempotent");
    let err = store
        .add_pool_administrator("no-such-pool", &alice.id)
        .await;
    assert!(matches!(err, Err(Error::NotFound(_))), "{err:?}");
    let err = store.add_pool_administrator(&p1.id, "no-such-admin").await;
    assert!(matches!(err, Err(Error::NotFound(_))), "{err:?}");
    let alice_now = store
        .administrator_by_token_hash("hash-a")
        .await
        .expect("lookup");
    assert_eq!(alice_now.map(|a| a.pool_ids), Some(vec![p1.id.clone()]));

    store.remove_administrator(&bob.id).await.expect("remove");
    assert_eq!(
        store
            .administrator_by_token_hash("hash-b")
            .await
            .expect("lookup"),
        None
    );
    assert_eq!(store.count_administrators().await.expect("count"), 1);
    let err = store.remove_administrator(&bob.id).await;
    assert!(matches!(err, Err(Error::NotFound(_))), "{err:?}");
    // the token went with bob, so its hash is free again
    store
        .create_administrator("bob", false, &[], "hash-b")
        .await
        .expect("bob again");
}

pub async fn pools(db: &TestDb) {
    let store = &db.store;
    let mac = store.create_pool("mac").await.expect("pool");
    let arm = store.create_pool("arm").await.expect("pool");
    let err = store.create_pool("mac").await;
    assert!(matches!(err, Err(Error::AlreadyExists(_))), "{err:?}");
    assert_eq!(
        store.pool_by_name("mac").await.expect("by name"),
        Some(mac.clone())
    );
    assert_eq!(
        store.pool_by_id(&arm.id).await.expect("by id"),
        Some(arm.clone())
    );
    assert_eq!(store.pool_by_name("linux").await.expect("by name"), None);
    assert_eq!(store.pool_by_id("nope").await.expect("by id"), None);
    assert_eq!(store.list_pools().await.expect("list"), vec![arm, mac]);
}

pub async fn agents(db: &TestDb) {
    let store = &db.store;
    let linux = store.create_pool("linux").await.expect("pool");
    let mac = store.create_pool("mac").await.expect("pool");

    let a1 = store
        .create_agent(new_agent(&linux.id, "a1"), false)
        .await
        .expect("a1");
    assert_eq!(a1.status, AgentStatus::Offline);
    assert_eq!(a1.capabilities, map(&[("os", "linux"), ("arch", "x86_64")]));
    assert_eq!(store.agent(&a1.id).await.expect("get"), Some(a1.clone()));

    let err = store.create_agent(new_agent(&linux.id, "a1"), false).await;
    assert!(matches!(err, Err(Error::AlreadyExists(_))), "{err:?}");
    let err = store
        .create_agent(new_agent("no-such-pool", "a9"), false)
        .await;
    assert!(matches!(err, Err(Error::NotFound(_))), "{err:?}");

    let mut replacement = new_agent(&linux.id, "a1");
    replacement.public_key = vec![9, 9];
    let a1b = store
        .create_agent(replacement, true)
        .await
        .expect("replace");
    assert_ne!(a1b.id, a1.id);
    assert_eq!(store.agent(&a1.id).await.expect("get"), None);
    assert_eq!(
        store
            .agent(&a1b.id)
            .await
            .expect("get")
            .map(|a| a.public_key),
        Some(vec![9, 9])
    );
    // replace with no existing agent just creates
    let a2 = store
        .create_agent(new_agent(&linux.id, "a2"), true)
        .await
        .expect("a2");
    // the same name in another pool is fine
    let m1 = store
        .create_agent(new_agent(&mac.id, "a1"), false)
        .await
        .expect("m1");

    let in_linux: Vec<_> = store
        .list_agents(Some(&linux.id))
        .await
        .expect("list")
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(in_linux, vec![a1b.id.clone(), a2.id.clone()]);
    assert_eq!(store.list_agents(None).await.expect("list").len(), 3);

    store
        .set_agent_status(&a2.id, AgentStatus::Busy, Some("job-1"), 777)
        .await
        .expect("status");
    let busy = store.agent(&a2.id).await.expect("get").expect("exists");
    assert_eq!(busy.status, AgentStatus::Busy);
    assert_eq!(busy.current_job_id.as_deref(), Some("job-1"));
    assert_eq!(busy.last_seen_at, 777);
    store
        .set_agent_status(&a2.id, AgentStatus::Online, None, 778)
        .await
        .expect("status");
    let online = store.agent(&a2.id).await.expect("get").expect("exists");
    assert_eq!(
        (online.status, online.current_job_id),
        (AgentStatus::Online, None)
    );
    let err = store
        .set_agent_status("nope", AgentStatus::Online, None, 1)
        .await;
    assert!(matches!(err, Err(Error::NotFound(_))), "{err:?}");

    store.remove_agent(&m1.id).await.expect("remove");
    assert_eq!(store.agent(&m1.id).await.expect("get"), None);
    let err = store.remove_agent(&m1.id).await;
    assert!(matches!(err, Err(Error::NotFound(_))), "{err:?}");
}

pub async fn agent_disabling(db: &TestDb) {
    let store = &db.store;
    let pool = store.create_pool("linux").await.expect("pool");
    let agent = store
        .create_agent(new_agent(&pool.id, "a1"), false)
        .await
        .expect("agent");
    let other = store
        .create_agent(new_agent(&pool.id, "a2"), false)
        .await
        .expect("agent");
    assert!(!agent.disabled);

    let disabled = store
        .set_agent_disabled(&agent.id, true)
        .await
        .expect("disable");
    assert_eq!(
        disabled,
        ferry_store::Agent {
            disabled: true,
            ..agent.clone()
        }
    );
    assert_eq!(store.agent(&agent.id).await.expect("get"), Some(disabled));
    let listed: Vec<_> = store
        .list_agents(Some(&pool.id))
        .await
        .expect("list")
        .into_iter()
        .map(|a| (a.name, a.disabled))
        .collect();
    assert_eq!(
        listed,
        vec![("a1".to_owned(), true), ("a2".to_owned(), false)]
    );
    assert!(
        store
            .set_agent_disabled(&agent.id, true)
            .await
            .expect("disable again")
            .disabled
    );
    let enabled = store
        .set_agent_disabled(&agent.id, false)
        .await
        .expect("enable");
    assert_eq!(enabled, agent);
    assert_eq!(store.agent(&other.id).await.expect("get"), Some(other));
    let err = store.set_agent_disabled("nope", true).await;
    assert!(matches!(err, Err(Error::NotFound(_))), "{err:?}");
}

/// Migrations are idempotent and data survives a reconnect.
pub async fn reconnect_keeps_data(db: &TestDb) {
    let pool = db.store.create_pool("kept").await.expect("pool");
    let again = Store::connect(&db.url, KEY).await.expect("reconnect");
    assert_eq!(again.pool_by_name("kept").await.expect("get"), Some(pool));
    assert!(format!("{again:?}").contains(again.backend_name()));
}
