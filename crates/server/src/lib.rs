//! The api role: Docker's Engine API (and Hyper's extensions) over HTTP, for one tenant per
//! request.

// serde_json::json! of Docker's larger objects (inspect, info) nests deeper than the default.
#![recursion_limit = "256"]

pub mod accounts;
mod compose;
pub mod credentials;
mod detach_keys;
mod docker_json;
pub mod error;
pub mod fleet_link;
pub mod limits;
pub mod revocation;
mod routes;
pub mod seal;
mod streams;
pub mod tls;
pub mod transport;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

pub use accounts::Accounts;
pub use transport::{serve, Listener};

/// The Engine API version we speak (docker-engine-api-v1.44.yaml).
pub const API_VERSION: &str = "1.44";
/// The oldest version clients may ask for; Hyper's own CLI uses 1.23.
pub const MIN_API_VERSION: &str = "1.12";

#[derive(Clone)]
pub struct AppState {
    pub runtime: Arc<node::Runtime>,
    pub accounts: Accounts,
    /// The CA behind the TCP API's TLS, which also issues tenants' client certificates.
    pub tls: Option<Arc<tls::Authority>>,
    pub node_id: String,
    pub node_name: String,
    /// Per-tenant request and stream limits of the TCP API.
    pub limiter: Arc<limits::Limiter>,
    /// Serverless functions: their queues and calls in flight.
    pub funcs: Arc<node::funcs::Funcs>,
    /// Other nodes of the fleet, which answer for what they run; `None` on one machine.
    pub fleet: Option<Arc<fleet_link::FleetLink>>,
}

/// The function endpoint's unsigned paths (`routes::func_endpoint`): the function's UUID in
/// the path is the credential.
fn func_endpoint_routes() -> Router<AppState> {
    use routes::func_endpoint as fe;
    Router::new()
        .route("/call/{name}/{uuid}", post(fe::call))
        .route("/call/{name}/{uuid}/sync", post(fe::call_sync))
        .route("/output/{name}/{uuid}/{call}", get(fe::output))
        .route("/output/{name}/{uuid}/{call}/wait", get(fe::output_wait))
        .route("/logs/{name}/{uuid}", get(fe::logs))
        .route("/logs/{name}/{uuid}/", get(fe::logs))
        .route("/status/{name}/{uuid}", get(fe::status))
}

pub fn router(state: AppState) -> Router {
    use routes::{
        admin, archive, commit, compose, containers as c, crons, df, events, exec, fallback, fips,
        funcs, images, networks, nodes, prune, services, sg, snapshots, stats, system, usage,
        volume_init, volumes,
    };
    let api = Router::new()
        .route("/_ping", get(system::ping).head(system::ping))
        .route("/version", get(system::version))
        .route("/info", get(system::info))
        .route("/system/df", get(df::df))
        .route("/usage", get(usage::usage))
        .route("/events", get(events::events))
        .route("/events/ws", get(events::events_ws))
        .route("/admin/tenants/{name}", post(admin::create_tenant))
        .route("/admin/tenants/{name}/quota", post(admin::set_quota))
        .route("/admin/tenants/{name}/cert", post(admin::issue_cert))
        .route("/admin/tenants/{name}/token", post(admin::issue_token))
        .route(
            "/admin/tenants/{name}/credentials",
            get(admin::list_credentials),
        )
        .route("/admin/tenants/{name}/rotate", post(admin::rotate))
        .route("/admin/credentials/{id}/revoke", post(admin::revoke))
        .route("/admin/nodes", get(nodes::list))
        .route(
            "/admin/nodes/{name}",
            get(nodes::inspect).delete(nodes::remove),
        )
        .route("/admin/nodes/{name}/drain", post(nodes::drain))
        .route("/admin/nodes/{name}/activate", post(nodes::activate))
        .route("/networks", get(networks::list))
        .route("/networks/create", post(networks::create))
        .route(
            "/networks/{id}",
            get(networks::inspect).delete(networks::remove),
        )
        .route("/networks/{id}/connect", post(networks::connect))
        .route("/networks/{id}/disconnect", post(networks::disconnect))
        .route("/fips", get(fips::list))
        .route("/fips/allocate", post(fips::allocate))
        .route("/fips/release", post(fips::release))
        .route("/fips/attach", post(fips::attach))
        .route("/fips/detach", post(fips::detach))
        .route("/fips/name", post(fips::name))
        .route("/funcs", get(funcs::list))
        .route("/funcs/create", post(funcs::create))
        .route(
            "/funcs/{name}",
            get(funcs::inspect).put(funcs::update).delete(funcs::remove),
        )
        .route("/funcs/call/{call}", get(funcs::by_call))
        .route("/services", get(services::list))
        .route("/services/create", post(services::create))
        .route(
            "/services/{name}",
            get(services::inspect).delete(services::remove),
        )
        .route("/services/{name}/update", post(services::update))
        .route("/crons", get(crons::list))
        .route("/crons/create", post(crons::create))
        .route("/crons/{name}", get(crons::inspect).delete(crons::remove))
        .route("/crons/{name}/history", get(crons::history))
        .route("/sg", get(sg::list))
        .route(
            "/sg/{name}",
            get(sg::inspect)
                .post(sg::create)
                .put(sg::update)
                .delete(sg::remove),
        )
        .route("/volumes", get(volumes::list))
        .route("/volumes/create", post(volumes::create))
        .route("/volumes/prune", post(volumes::prune))
        .route("/volumes/initialize", post(volume_init::initialize))
        .route(
            "/volumes/uploadfinish",
            axum::routing::put(volume_init::finish),
        )
        .route(
            "/volumes/{name}",
            get(volumes::inspect).delete(volumes::remove),
        )
        .route("/snapshots", get(snapshots::list))
        .route("/snapshots/create", post(snapshots::create))
        .route(
            "/snapshots/{id}",
            get(snapshots::inspect).delete(snapshots::remove),
        )
        .route("/compose/up", post(compose::up))
        .route("/compose/create", post(compose::create))
        .route("/compose/start", post(compose::start))
        .route("/compose/stop", post(compose::stop))
        .route("/compose/kill", post(compose::kill))
        .route("/compose/rm", post(compose::rm))
        .route("/compose/down", post(compose::down))
        .route("/containers/prune", post(prune::containers))
        .route("/networks/prune", post(prune::networks))
        .route("/build/prune", post(prune::build_cache))
        .route("/containers/create", post(c::create))
        .route("/containers/json", get(c::list))
        .route("/containers/{id}/json", get(c::inspect))
        .route("/containers/{id}/start", post(c::start))
        .route("/containers/{id}/stop", post(c::stop))
        .route("/containers/{id}/restart", post(c::restart))
        .route("/containers/{id}/kill", post(c::kill))
        .route("/containers/{id}/pause", post(c::pause))
        .route("/containers/{id}/unpause", post(c::unpause))
        .route("/containers/{id}/rename", post(c::rename))
        .route("/containers/{id}/update", post(c::update))
        .route("/containers/{id}/wait", post(c::wait))
        .route("/containers/{id}/logs", get(c::logs))
        .route("/containers/{id}/attach", post(c::attach))
        .route("/containers/{id}/resize", post(c::resize))
        .route("/containers/{id}/top", get(c::top))
        .route(
            "/containers/{id}/archive",
            get(archive::get).head(archive::head).put(archive::put),
        )
        .route("/containers/{id}/export", get(archive::export))
        .route("/commit", post(commit::commit))
        .route("/containers/{id}/changes", get(archive::changes))
        .route("/containers/{id}/stats", get(stats::stats))
        .route("/containers/{id}/exec", post(exec::create))
        .route("/containers/{id}", axum::routing::delete(c::remove))
        .route(
            "/containers/{parent}/{alias}",
            axum::routing::delete(c::remove_link),
        )
        .route("/exec/{id}/start", post(exec::start))
        .route("/exec/{id}/resize", post(exec::resize))
        .route("/exec/{id}/json", get(exec::inspect))
        .route("/auth", post(images::auth))
        .route("/images/json", get(images::list))
        .route("/images/load", post(images::load))
        .route("/images/create", post(images::create))
        .route(
            "/images/{*rest}",
            get(images::by_name)
                .post(images::by_name)
                .delete(images::by_name),
        )
        .fallback(fallback::not_served);
    // Hyper's client posts a volume's upload unsigned: the session's cookie authenticates it.
    let uploads = Router::new().route(
        "/volumes/upload/{session}/{volume}",
        post(volume_init::upload),
    );
    // Layers run last added first: the tenant is known before its limits are checked, and
    // both before a request goes to the node that runs what it is about.
    api.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        fleet_link::to_home_node,
    ))
    .layer(axum::middleware::from_fn_with_state(
        state.limiter.clone(),
        limits::limit,
    ))
    .layer(axum::middleware::from_fn_with_state(
        state.accounts.clone(),
        transport::authenticate,
    ))
    .merge(uploads)
    .merge(func_endpoint_routes())
    .with_state(state)
}
