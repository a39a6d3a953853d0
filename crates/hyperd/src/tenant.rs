//! `hyperd tenant ...`: tenants, their credentials and quotas, through the running daemon's
//! unix socket, or on the store directly for what works offline (create, quota).

use crate::{accounts, admin_client, open_store, TenantCommand};

pub async fn tenant_create(
    data_root: &std::path::Path,
    store: &str,
    socket: &std::path::Path,
    name: &str,
    expires: Option<chrono::TimeDelta>,
) -> anyhow::Result<()> {
    let path = format!("/admin/tenants/{name}");
    let (access, secret) = match admin_client::post(socket, &path, lifetime(expires)).await? {
        Some(reply) => (
            reply["AccessKey"].as_str().unwrap_or_default().to_string(),
            reply["SecretKey"].as_str().unwrap_or_default().to_string(),
        ),
        None => accounts(data_root, open_store(data_root, store)?)?.create_tenant(name, expires)?,
    };
    println!("tenant:     {name}\naccess key: {access}\nsecret key: {secret}");
    Ok(())
}

/// The body of an issuing request: the lifetime asked for, in seconds, or none (the default).
fn lifetime(expires: Option<chrono::TimeDelta>) -> serde_json::Value {
    match expires {
        Some(ttl) => serde_json::json!({"Expires": format!("{}s", ttl.num_seconds())}),
        None => serde_json::json!({}),
    }
}

/// The tenant operations that need the running daemon.
pub async fn tenant_admin(socket: &std::path::Path, command: TenantCommand) -> anyhow::Result<()> {
    use hyper::Method;
    let call = |method: Method, path: String, body: serde_json::Value| async move {
        admin_client::require(socket, method, &path, body).await
    };
    match command {
        TenantCommand::Cert { name, out, expires } => {
            let path = format!("/admin/tenants/{name}/cert");
            let reply = call(Method::POST, path, lifetime(expires)).await?;
            std::fs::create_dir_all(&out)?;
            for (file, field) in [("ca.pem", "CA"), ("cert.pem", "Cert"), ("key.pem", "Key")] {
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .write(true)
                    .mode(0o600)
                    .open(out.join(file))?;
                std::io::Write::write_all(
                    &mut f,
                    reply[field].as_str().unwrap_or_default().as_bytes(),
                )?;
            }
            println!(
                "wrote ca.pem, cert.pem and key.pem for tenant {name} to {} (certificate {}, \
                 expires {})",
                out.display(),
                reply["Id"].as_str().unwrap_or_default(),
                reply["Expires"].as_str().unwrap_or("never"),
            );
            println!(
                "use: DOCKER_CERT_PATH={} docker --tlsverify -H tcp://HOST:PORT ...",
                out.display()
            );
        }
        TenantCommand::Token { name, expires } => {
            let path = format!("/admin/tenants/{name}/token");
            let reply = call(Method::POST, path, lifetime(expires)).await?;
            println!("{}", reply["Token"].as_str().unwrap_or_default());
            eprintln!(
                "token {} for tenant {name}, expires {}",
                reply["Id"].as_str().unwrap_or_default(),
                reply["Expires"].as_str().unwrap_or("never")
            );
        }
        TenantCommand::Keys { name } => {
            let path = format!("/admin/tenants/{name}/credentials");
            let reply = call(Method::GET, path, serde_json::json!({})).await?;
            print!("{}", credentials_table(&reply["Credentials"]));
        }
        TenantCommand::Revoke { id } => {
            if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                anyhow::bail!(
                    "invalid credential id {id:?}: give an access key, tok-... or crt-..., as \
                     `hyperd tenant keys NAME` lists them"
                );
            }
            let path = format!("/admin/credentials/{id}/revoke");
            let reply = call(Method::POST, path, serde_json::json!({})).await?;
            println!(
                "revoked {id} of tenant {}",
                reply["Tenant"].as_str().unwrap_or_default()
            );
        }
        TenantCommand::Rotate { name, expires } => {
            let path = format!("/admin/tenants/{name}/rotate");
            let new = call(Method::POST, path, lifetime(expires)).await?;
            println!(
                "tenant:     {name}\naccess key: {}\nsecret key: {}",
                new["AccessKey"].as_str().unwrap_or_default(),
                new["SecretKey"].as_str().unwrap_or_default()
            );
            for id in new["Revoked"].as_array().into_iter().flatten() {
                eprintln!("revoked {}", id.as_str().unwrap_or_default());
            }
        }
        TenantCommand::Create { .. } | TenantCommand::Quota { .. } => {
            unreachable!("handled with an offline fallback")
        }
    }
    Ok(())
}

/// `KIND ID CREATED EXPIRES STATE`, one credential a line, oldest first.
fn credentials_table(list: &serde_json::Value) -> String {
    let time = |v: &serde_json::Value| {
        v.as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map_or("never".to_string(), |t| {
                t.to_utc().format("%Y-%m-%dT%H:%M:%SZ").to_string()
            })
    };
    let mut out = format!(
        "{:<6} {:<22} {:<20} {:<20} {}\n",
        "KIND", "ID", "CREATED", "EXPIRES", "STATE"
    );
    for c in list.as_array().into_iter().flatten() {
        let mut state = c["State"].as_str().unwrap_or_default().to_string();
        if !c["Revoked"].is_null() {
            state = format!("{state} {}", time(&c["Revoked"]));
        }
        out += &format!(
            "{:<6} {:<22} {:<20} {:<20} {state}\n",
            c["Kind"].as_str().unwrap_or_default(),
            c["Id"].as_str().unwrap_or_default(),
            time(&c["Created"]),
            time(&c["Expires"]),
        );
    }
    out
}

pub async fn tenant_quota(
    data_root: &std::path::Path,
    store: &str,
    socket: &std::path::Path,
    name: &str,
    change: node::quota::QuotaChange,
) -> anyhow::Result<()> {
    let body = serde_json::to_value(change)?;
    let quotas: node::quota::Quotas =
        match admin_client::post(socket, &format!("/admin/tenants/{name}/quota"), body).await? {
            Some(reply) => serde_json::from_value(reply)?,
            None => {
                let store = open_store(data_root, store)?;
                if !accounts(data_root, store.clone())?.tenant_exists(name)? {
                    anyhow::bail!(
                        "no tenant {name:?}: create it with `hyperd tenant create {name}`"
                    );
                }
                let mut quotas = node::quota::load(store.as_ref(), name)?;
                change.apply(&mut quotas);
                store.put(&node::quota::quotas_key(name), serde_json::to_vec(&quotas)?)?;
                quotas
            }
        };
    println!("tenant {name}: {quotas}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_is_a_table_of_ids_dates_and_states() {
        let list = serde_json::json!([
            {"Kind": "key", "Id": "AKAKAKAKAKAKAKAKAKAK", "Created": "2026-01-02T03:04:05.123Z",
             "Expires": null, "State": "active", "Revoked": null},
            {"Kind": "token", "Id": "tok-0123456789abcdef", "Created": "2026-01-02T03:04:05Z",
             "Expires": "2026-04-02T03:04:05Z", "State": "revoked",
             "Revoked": "2026-01-03T00:00:00Z"},
        ]);
        let table = credentials_table(&list);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines,
            [
                "KIND   ID                     CREATED              EXPIRES              STATE",
                "key    AKAKAKAKAKAKAKAKAKAK   2026-01-02T03:04:05Z never                active",
                "token  tok-0123456789abcdef   2026-01-02T03:04:05Z 2026-04-02T03:04:05Z revoked 2026-01-03T00:00:00Z",
            ]
        );
        assert_eq!(
            lifetime(Some(chrono::TimeDelta::hours(24))),
            serde_json::json!({"Expires": "86400s"})
        );
    }
}
