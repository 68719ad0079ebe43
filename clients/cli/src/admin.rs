//! `pool`, `agent` and `admin` commands.

use std::process::ExitCode;

use ferry_proto::time::now_micros;
use ferry_proto::v1::{
    Administrator, Agent, CreateAdministratorRequest, CreatePoolRequest, ListAdministratorsRequest,
    ListAgentsRequest, ListPoolsRequest, Pool, RemoveAdministratorRequest, RemoveAgentRequest,
    UpdateAgentRequest,
};

use crate::cli::{AdminCommand, AgentCommand, OutputFormat, PoolCommand};
use crate::client::Client;
use crate::format::{self, Table};
use crate::output;
use crate::views::{AdministratorView, AgentView, CreatedAdministratorView, PoolView, RemovedView};

/// Runs a `pool` command.
pub(crate) async fn pool(
    client: &mut Client,
    command: PoolCommand,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    match command {
        PoolCommand::Create { name } => {
            let response = client
                .registration
                .create_pool(CreatePoolRequest { name: name.clone() })
                .await
                .map_err(|status| client.error(&status))?;
            let pool = response
                .into_inner()
                .pool
                .ok_or_else(|| anyhow::anyhow!("the server returned no pool"))?;
            match format {
                OutputFormat::Json => output::json(&PoolView::from(&pool))?,
                OutputFormat::Table => {
                    output::text(&format!("created pool {} ({})\n", pool.name, pool.id))?
                }
            }
        }
        PoolCommand::List => {
            let response = client
                .registration
                .list_pools(ListPoolsRequest {})
                .await
                .map_err(|status| client.error(&status))?;
            let pools = response.into_inner().pools;
            match format {
                OutputFormat::Json => {
                    output::json(&pools.iter().map(PoolView::from).collect::<Vec<_>>())?
                }
                OutputFormat::Table => output::text(&pool_table(&pools, now_micros()))?,
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs an `agent` command.
pub(crate) async fn agent(
    client: &mut Client,
    command: AgentCommand,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    match command {
        AgentCommand::List { pool } => {
            let request = ListAgentsRequest {
                pool: pool.unwrap_or_default(),
            };
            let response = client
                .registration
                .list_agents(request)
                .await
                .map_err(|status| client.error(&status))?;
            let agents = response.into_inner().agents;
            match format {
                OutputFormat::Json => {
                    output::json(&agents.iter().map(AgentView::from).collect::<Vec<_>>())?
                }
                OutputFormat::Table => output::text(&agent_table(&agents, now_micros()))?,
            }
        }
        AgentCommand::Remove { agent_id } => {
            client
                .registration
                .remove_agent(RemoveAgentRequest {
                    agent_id: agent_id.clone(),
                })
                .await
                .map_err(|status| client.error(&status))?;
            removed(format, "agent", agent_id)?;
        }
        AgentCommand::Disable { agent_id } => update_agent(client, agent_id, true, format).await?,
        AgentCommand::Enable { agent_id } => update_agent(client, agent_id, false, format).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `agent disable` and `agent enable`.
async fn update_agent(
    client: &mut Client,
    agent_id: String,
    disabled: bool,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let response = client
        .registration
        .update_agent(UpdateAgentRequest {
            agent_id: agent_id.clone(),
            disabled,
        })
        .await
        .map_err(|status| client.error(&status))?;
    let agent = response.into_inner().agent.unwrap_or_else(|| Agent {
        id: agent_id,
        disabled,
        ..Agent::default()
    });
    match format {
        OutputFormat::Json => output::json(&AgentView::from(&agent)),
        OutputFormat::Table => output::text(&format!("{}\n", agent_updated(&agent))),
    }
}

/// `disabled agent NAME (ID)` or `enabled agent NAME (ID)`.
pub fn agent_updated(agent: &Agent) -> String {
    let verb = if agent.disabled {
        "disabled"
    } else {
        "enabled"
    };
    if agent.name.is_empty() {
        format!("{verb} agent {}", agent.id)
    } else {
        format!("{verb} agent {} ({})", agent.name, agent.id)
    }
}

/// Runs an `admin` command.
pub(crate) async fn admin(
    client: &mut Client,
    command: AdminCommand,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    match command {
        AdminCommand::Create { name, pools, owner } => {
            let request = CreateAdministratorRequest { name, pools, owner };
            let response = client
                .registration
                .create_administrator(request)
                .await
                .map_err(|status| client.error(&status))?
                .into_inner();
            let administrator = response
                .administrator
                .ok_or_else(|| anyhow::anyhow!("the server returned no administrator"))?;
            // The one secret ferryctl prints: the new PAT, on standard
            // output alone so that scripts can capture it; the notes go to
            // standard error.
            match format {
                OutputFormat::Json => output::json(&CreatedAdministratorView {
                    administrator: AdministratorView::from(&administrator),
                    token: response.token,
                })?,
                OutputFormat::Table => {
                    output::note(&format!(
                        "created administrator {} ({}); its token follows",
                        administrator.name, administrator.id
                    ));
                    output::text(&format!("{}\n", response.token))?;
                }
            }
            output::note(
                "warning: the token is shown only once and cannot be retrieved again: store it now",
            );
        }
        AdminCommand::List => {
            let response = client
                .registration
                .list_administrators(ListAdministratorsRequest {})
                .await
                .map_err(|status| client.error(&status))?;
            let administrators = response.into_inner().administrators;
            match format {
                OutputFormat::Json => {
                    output::json(
                        &administrators
                            .iter()
                            .map(AdministratorView::from)
                            .collect::<Vec<_>>(),
                    )?;
                }
                OutputFormat::Table => {
                    output::text(&administrator_table(&administrators, now_micros()))?
                }
            }
        }
        AdminCommand::Remove { admin_id } => {
            client
                .registration
                .remove_administrator(RemoveAdministratorRequest {
                    administrator_id: admin_id.clone(),
                })
                .await
                .map_err(|status| client.error(&status))?;
            removed(format, "administrator", admin_id)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn removed(format: OutputFormat, what: &'static str, id: String) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => output::json(&RemovedView { removed: what, id }),
        OutputFormat::Table => output::text(&format!("removed {what} {id}\n")),
    }
}

/// The `pool list` table.
pub fn pool_table(pools: &[Pool], now: i64) -> String {
    let mut table = Table::new(&["ID", "NAME", "CREATED"]);
    for pool in pools {
        table.row(vec![
            pool.id.clone(),
            pool.name.clone(),
            format::relative_cell(format::micros(pool.create_time.as_ref()), now),
        ]);
    }
    table.render()
}

/// The `agent list` table.
pub fn agent_table(agents: &[Agent], now: i64) -> String {
    let mut table = Table::new(&[
        "ID",
        "NAME",
        "POOL",
        "STATUS",
        "LAST SEEN",
        "JOB",
        "CAPABILITIES",
    ]);
    for agent in agents {
        table.row(vec![
            agent.id.clone(),
            agent.name.clone(),
            agent.pool.clone(),
            if agent.disabled {
                "disabled"
            } else {
                format::agent_status(agent.status())
            }
            .to_owned(),
            format::relative_cell(format::micros(agent.last_seen_time.as_ref()), now),
            format::or_dash(&agent.current_job_id),
            format::pairs(&agent.capabilities),
        ]);
    }
    table.render()
}

/// The `admin list` table.
pub fn administrator_table(administrators: &[Administrator], now: i64) -> String {
    let mut table = Table::new(&["ID", "NAME", "OWNER", "POOLS", "CREATED"]);
    for administrator in administrators {
        table.row(vec![
            administrator.id.clone(),
            administrator.name.clone(),
            if administrator.owner { "yes" } else { "no" }.to_owned(),
            format::or_dash(&administrator.pools.join(",")),
            format::relative_cell(format::micros(administrator.create_time.as_ref()), now),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use ferry_proto::time::timestamp_from_micros;
    use ferry_proto::v1::AgentStatus;

    use super::*;

    const NOW: i64 = 1_700_000_000_000_000;

    #[test]
    fn agents_are_tabulated() {
        let disabled = Agent {
            id: "a2".into(),
            name: "runner-2".into(),
            pool: "default".into(),
            status: AgentStatus::Online as i32,
            disabled: true,
            ..Agent::default()
        };
        let agents = [
            Agent {
                id: "a1".into(),
                name: "runner-1".into(),
                pool: "default".into(),
                capabilities: [
                    ("os".to_owned(), "linux".to_owned()),
                    ("arch".to_owned(), "arm64".to_owned()),
                ]
                .into(),
                status: AgentStatus::Busy as i32,
                last_seen_time: Some(timestamp_from_micros(NOW - 3_000_000)),
                create_time: None,
                current_job_id: "j1".into(),
                disabled: false,
            },
            disabled.clone(),
        ];
        assert_eq!(
            agent_table(&agents, NOW),
            "ID  NAME      POOL     STATUS    LAST SEEN  JOB  CAPABILITIES\n\
             a1  runner-1  default  busy      3s ago     j1   arch=arm64,os=linux\n\
             a2  runner-2  default  disabled  -          -    -\n"
        );
        assert_eq!(agent_updated(&disabled), "disabled agent runner-2 (a2)");
        let enabled = Agent {
            id: "a3".into(),
            ..Agent::default()
        };
        assert_eq!(agent_updated(&enabled), "enabled agent a3");
    }

    #[test]
    fn pools_and_administrators_are_tabulated() {
        let pools = [Pool {
            id: "p1".into(),
            name: "default".into(),
            create_time: Some(timestamp_from_micros(NOW - 7200 * 1_000_000)),
        }];
        assert_eq!(
            pool_table(&pools, NOW),
            "ID  NAME     CREATED\np1  default  2h ago\n"
        );
        let administrators = [
            Administrator {
                id: "u1".into(),
                name: "root".into(),
                owner: true,
                pools: vec![],
                create_time: None,
            },
            Administrator {
                id: "u2".into(),
                name: "ci".into(),
                owner: false,
                pools: vec!["a".into(), "b".into()],
                create_time: None,
            },
        ];
        assert_eq!(
            administrator_table(&administrators, NOW),
            "ID  NAME  OWNER  POOLS  CREATED\nu1  root  yes    -      -\nu2  ci    no     a,b    -\n"
        );
    }
}
