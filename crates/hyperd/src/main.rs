//! `hyperd`: the daemon. Wiring only: flags, checks of the host, then the api and node roles
//! on the embedded store.

mod admin_client;
mod cron_clock;
mod fleet;
mod setup;
mod store_backend;
mod tenant;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "hyperd",
    version,
    about = "Hyper daemon: Docker's API, one microVM per container"
)]
struct Cli {
    /// Where hyperd keeps its state (short: unix sockets live below it).
    #[arg(
        long,
        global = true,
        default_value = "/var/lib/hyper",
        env = "HYPERD_DATA_ROOT"
    )]
    data_root: PathBuf,
    /// The state store: `redb` (embedded, in DATA/store.redb) or
    /// `etcd://HOST:PORT[,HOST:PORT...][/NAMESPACE]` (Debian's etcd-server; keys under
    /// NAMESPACE, default /hyper, so one etcd can hold several).
    #[arg(long, global = true, default_value = "redb", env = "HYPERD_STORE")]
    store: String,
    /// Join a fleet whose state is in this etcd: `etcd://HOST:PORT[,HOST:PORT...][/NAMESPACE]`
    /// (the same as `--store` with an etcd URL).
    #[arg(long, global = true, env = "HYPERD_CLUSTER", conflicts_with = "store")]
    cluster: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    daemon: DaemonArgs,
}

#[derive(clap::Args)]
struct DaemonArgs {
    /// Listen addresses, dockerd style: unix:///path or tcp://host:port (repeatable).
    #[arg(short = 'H', long = "host")]
    hosts: Vec<String>,
    /// kvm, tcg or auto (KVM when the CPU has vmx/svm and /dev/kvm works).
    #[arg(long, default_value = "auto")]
    accel: String,
    /// Guest kernel; default DATA/kernel/vmlinuz, put there by scripts/setup.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// The guest agent binary (static); default: next to hyperd, then /usr/local/lib/hyper.
    #[arg(long)]
    agent: Option<PathBuf>,
    #[arg(long, default_value = "qemu-system-x86_64")]
    qemu: String,
    /// Appended to the guest kernel command line.
    #[arg(long, default_value = "")]
    kernel_cmdline_extra: String,
    /// Seconds a guest has to come up before its start fails.
    #[arg(long, default_value_t = 60)]
    boot_timeout: u64,
    /// The user QEMU runs as (created if missing).
    #[arg(long, default_value = "hyper-vm")]
    vm_user: String,
    /// Serve TCP as plain HTTP instead of TLS; only allowed on loopback addresses.
    #[arg(long)]
    insecure_http: bool,
    /// Where the default tenant's keys are written on first start (default ~/.hyper/config.json).
    #[arg(long, env = "HYPER_CONFIG")]
    client_config_dir: Option<PathBuf>,
    /// Start containers by restoring a VM template (on: sub-second starts) or boot each one
    /// cold (off). A template that cannot be made or restored falls back to a cold boot.
    #[arg(long, default_value = "on", env = "HYPERD_TEMPLATES", value_parser = ["on", "off"])]
    templates: String,
    /// Where VM templates are kept (default DATA/templates).
    #[arg(long)]
    template_dir: Option<PathBuf>,
    /// VMs of the default size kept restored from the template ahead of time, so a start only
    /// hands one its disk and NIC (0: restore at each start). Needs templates on. Default: under
    /// TCG as many as `--standby-vms-max` (there a VM's first start costs its QEMU the
    /// translation of the guest's whole start path, several times a claim), with KVM 2.
    #[arg(long, env = "HYPERD_STANDBY_VMS")]
    standby_vms: Option<usize>,
    /// The most standby VMs kept after a burst of starts: the pool grows to the largest burst
    /// (starts within 10 s of each other) of the last `--standby-vms-hold`, up to this.
    /// Default: one for each container of the default size the node offers memory for
    /// (`--node-memory`), within a third of the host's memory at 64 MiB each (2 to 128). However
    /// sized, the pool leaves `--standby-memory-reserve` of the host's memory available.
    #[arg(long, env = "HYPERD_STANDBY_VMS_MAX")]
    standby_vms_max: Option<usize>,
    /// The most host memory the ready standby VMs may take together, as measured (PSS of their
    /// QEMUs and supervisors), e.g. 2G or 512M: the pool stops growing short of it. Default:
    /// no bound but `--standby-vms-max`.
    #[arg(long, env = "HYPERD_STANDBY_MEMORY_MAX", value_parser = parse_memory)]
    standby_memory_max: Option<u64>,
    /// The host's memory the standby pool leaves available (`MemAvailable`), a percentage of
    /// it (12%) or a size (2G, 512M): the pool launches no standby unless a quarter more than
    /// that is available, and stops ready ones within 5 s of the host's other work taking it
    /// below.
    #[arg(long, default_value = "12%", env = "HYPERD_STANDBY_MEMORY_RESERVE")]
    standby_memory_reserve: node::Reserve,
    /// How long, in seconds, the standby pool stays sized for a burst of starts.
    #[arg(long, default_value_t = node::standby::DEFAULT_HOLD.as_secs(), env = "HYPERD_STANDBY_VMS_HOLD")]
    standby_vms_hold: u64,
    /// Free space kept on the data root, a percentage of its file system (5%) or a size (2G,
    /// 512M): below it new containers, volumes and images are refused (507). (A VM whose disk
    /// write fails for lack of space pauses until there is room, whatever the reserve.)
    #[arg(long, default_value = "5%", env = "HYPERD_DISK_RESERVE")]
    disk_reserve: node::Reserve,
    /// A registry (HOST:PORT) pulled from over plain HTTP (repeatable); loopback ones always are.
    /// Plain HTTP only: tenants still reach it only if --allow-fetch allows its address.
    #[arg(long = "insecure-registry")]
    insecure_registries: Vec<String>,
    /// The backend behind the volume driver `hyper` (what Hyper's client sends) and volumes
    /// created without a driver: `local` (a sparse file per volume under the data root) or
    /// `rbd` (Ceph RBD, with --ceph-conf).
    #[arg(long, default_value = "local", env = "HYPERD_VOLUME_DRIVER")]
    volume_driver: String,
    /// A Ceph cluster for `rbd` volumes (replicated by Ceph): its ceph.conf. Without it only
    /// `local` volumes exist.
    #[arg(long)]
    ceph_conf: Option<std::path::PathBuf>,
    /// The RBD pool volumes and snapshots are made in.
    #[arg(long, default_value = "rbd")]
    ceph_pool: String,
    /// The Ceph user hyperd and QEMU act as (`client.NAME`, caps `profile rbd pool=POOL`).
    #[arg(long, default_value = "hyper")]
    ceph_user: String,
    /// That user's keyring (default: `ceph.client.NAME.keyring` beside the ceph.conf).
    #[arg(long)]
    ceph_keyring: Option<std::path::PathBuf>,
    /// The smallest volume a tenant may create, in GB.
    #[arg(long, default_value_t = 10)]
    volume_size_min: u64,
    /// The largest volume a tenant may create, in GB.
    #[arg(long, default_value_t = 50)]
    volume_size_max: u64,
    /// Addresses (CIDR, repeatable) that tenants' volume sources (git and tarball URLs),
    /// registry pulls and logins, and image archive URLs may reach beside public ones; loopback,
    /// link-local, private ranges and this node's own addresses are refused unless listed here.
    /// Pulls, logins and archive loads the operator asks for on the unix socket are not limited.
    #[arg(long = "allow-fetch")]
    allow_fetch: Vec<ipnet::IpNet>,
    /// How long tokens and client certificates work when issued without `--expires` (e.g.
    /// 90d, 24h). Those stored by an earlier hyperd, which had no expiry, get it from its first
    /// start. Access keys expire only when asked to (`tenant create NAME --expires 30d`).
    #[arg(long, default_value = "90d", value_parser = parse_ttl, env = "HYPERD_CREDENTIAL_TTL")]
    credential_ttl: chrono::TimeDelta,
    /// The subnet of every tenant's default network (tenants may share it: each has its own L2).
    #[arg(long, default_value = "172.16.0.0/16")]
    default_subnet: ipnet::Ipv4Net,
    /// MTU of tenant networks (1450 leaves room for the fleet's VXLAN overlay).
    #[arg(long, default_value_t = 1450)]
    mtu: u32,
    /// Addresses for the /31 links between the node and each tenant's namespace.
    #[arg(long, default_value = "100.127.0.0/16")]
    transit_cidr: ipnet::Ipv4Net,
    /// Floating IP pool, a CIDR routed to this node (repeatable); none by default.
    #[arg(long = "fip-pool")]
    fip_pools: Vec<ipnet::Ipv4Net>,
    /// A network namespace (e.g. /run/netns/NAME) holding the node's side of tenant networks:
    /// transit links, node rules, floating IP routes, published ports. Default: hyperd's own.
    #[arg(long)]
    node_netns: Option<PathBuf>,
    /// How often, in seconds (1 to 30), the node's tenant networks (namespaces, links,
    /// addresses, routes, nftables tables) are checked against the store; what drifted is put
    /// back and logged.
    #[arg(
        long,
        default_value_t = node::network::DEFAULT_RECONCILE_INTERVAL.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..=30),
        env = "HYPERD_NET_RECONCILE_INTERVAL"
    )]
    net_reconcile_interval: u64,
    /// Put each VM in a cgroup with CPU, memory and disk I/O limits from its size, in a group
    /// per tenant with equal CPU weights: auto (when the node has cgroup v2 or the v1 cpu and
    /// memory hierarchies; else a warning and no limits), on (refuse to start without) or off.
    /// Disk I/O is limited on the block device under the data root, when there is one.
    #[arg(long, default_value = "auto", env = "HYPERD_VM_CGROUPS")]
    vm_cgroups: node::cgroups::Mode,
    /// API requests per second each tenant may make over TCP (the unix socket is not limited).
    #[arg(long, default_value_t = 100.0, value_parser = parse_rate)]
    api_rate: f64,
    /// API requests a tenant may make at once before `--api-rate` applies.
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u32).range(1..))]
    api_burst: u32,
    /// Streams (attach, exec, logs -f, events, stats) each tenant may keep open over TCP.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    max_streams: u64,
    #[command(flatten)]
    cron_clock: cron_clock::ClockArgs,
    #[command(flatten)]
    node: fleet::NodeArgs,
}

/// A memory size: `2G`, `512M` or bytes, at least 64M (one standby).
fn parse_memory(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?}: give a size such as 2G or 512M, at least 64M");
    let bytes = node::parse_size(s).ok_or_else(bad)?;
    if bytes < 64 << 20 {
        return Err(bad());
    }
    Ok(bytes)
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("{s:?}: give requests per second, a number above 0")),
    }
}

/// The node's VM cgroups as `--vm-cgroups` asks.
fn vm_cgroups(
    mode: node::cgroups::Mode,
    node_id: &str,
    data_root: &Path,
) -> anyhow::Result<Option<node::cgroups::Cgroups>> {
    use node::cgroups::{Cgroups, Mode};
    if mode == Mode::Off {
        return Ok(None);
    }
    match Cgroups::detect(node_id, data_root) {
        Ok(cgroups) => {
            tracing::info!("VM limits: {}", cgroups.describe());
            Ok(Some(cgroups))
        }
        Err(why) if mode == Mode::On => anyhow::bail!("--vm-cgroups on: {why}"),
        Err(why) => {
            tracing::warn!("VMs run without CPU, memory and I/O limits: {why}");
            Ok(None)
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// The fleet's nodes, as the running daemon sees them in the store: ls, inspect, drain,
    /// activate, rm.
    Node {
        /// The running daemon's unix socket.
        #[arg(long, default_value = "/var/run/hyper.sock")]
        socket: PathBuf,
        #[command(subcommand)]
        command: fleet::NodeCommand,
    },
    /// Manage tenants (accounts): through the running daemon's unix socket when it is up,
    /// on the store directly when it is not.
    Tenant {
        /// The running daemon's unix socket.
        #[arg(long, default_value = "/var/run/hyper.sock")]
        socket: PathBuf,
        #[command(subcommand)]
        command: TenantCommand,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant (or add a key to one) and print its access and secret key.
    Create {
        name: String,
        /// The key stops working after this long (e.g. 30d, 12h); default: never.
        #[arg(long, value_parser = parse_ttl)]
        expires: Option<chrono::TimeDelta>,
    },
    /// Issue a client certificate for the stock Docker CLI (`docker --tlsverify`): writes
    /// ca.pem, cert.pem and key.pem into DIR (use it as DOCKER_CERT_PATH).
    Cert {
        name: String,
        #[arg(long)]
        out: PathBuf,
        /// The certificate stops working after this long (e.g. 30d); default: the daemon's
        /// --credential-ttl (90d).
        #[arg(long, value_parser = parse_ttl)]
        expires: Option<chrono::TimeDelta>,
    },
    /// Issue a token for clients that cannot sign (docker-py, the Docker CLI's HttpHeaders);
    /// prints the token on stdout, its id and expiry on stderr.
    Token {
        name: String,
        /// The token stops working after this long (e.g. 24h); default: the daemon's
        /// --credential-ttl (90d).
        #[arg(long, value_parser = parse_ttl)]
        expires: Option<chrono::TimeDelta>,
    },
    /// List a tenant's credentials (access keys, tokens, client certificates): kind, id,
    /// created, expires, state. Never their secrets.
    #[command(visible_alias = "credentials")]
    Keys { name: String },
    /// Revoke a credential by its id (an access key, tok-..., crt-..., as `keys` lists them);
    /// it stops working at once, on connections already open too.
    Revoke { id: String },
    /// Issue a new key pair for the tenant and revoke all its other keys, tokens and
    /// certificates.
    Rotate {
        name: String,
        /// The new key stops working after this long; default: never.
        #[arg(long, value_parser = parse_ttl)]
        expires: Option<chrono::TimeDelta>,
    },
    /// Show or change a tenant's quotas (defaults: 10 containers, 2 FIPs, 5 services, 40
    /// volumes, 1000 GB of volumes, 40 snapshots, 200 GB of storage).
    Quota {
        name: String,
        #[arg(long)]
        containers: Option<u64>,
        #[arg(long)]
        fips: Option<u64>,
        #[arg(long)]
        services: Option<u64>,
        #[arg(long)]
        volumes: Option<u64>,
        /// GB of volumes, all together.
        #[arg(long)]
        volume_gb: Option<u64>,
        #[arg(long)]
        snapshots: Option<u64>,
        /// GB of the node's disk the tenant's root disks, volumes and images really take
        /// (allocated, not nominal sizes); past it, new containers, volumes and images are
        /// refused.
        #[arg(long)]
        storage_gb: Option<u64>,
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HYPERD_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut cli = Cli::parse();
    if let Some(cluster) = cli.cluster.take() {
        if !cluster.starts_with("etcd://") {
            eprintln!(
                "hyperd: --cluster {cluster:?}: give etcd://HOST:PORT[,HOST:PORT...][/NAMESPACE]"
            );
            std::process::exit(2);
        }
        cli.store = cluster;
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = runtime.block_on(async move {
        match cli.command {
            Some(Command::Node { socket, command }) => fleet::node_command(&socket, command).await,
            Some(Command::Tenant {
                socket,
                command: TenantCommand::Create { name, expires },
            }) => tenant::tenant_create(&cli.data_root, &cli.store, &socket, &name, expires).await,
            Some(Command::Tenant {
                socket,
                command:
                    TenantCommand::Quota {
                        name,
                        containers,
                        fips,
                        services,
                        volumes,
                        volume_gb,
                        snapshots,
                        storage_gb,
                    },
            }) => {
                let change = node::quota::QuotaChange {
                    containers,
                    fips,
                    services,
                    volumes,
                    volume_gb,
                    snapshots,
                    storage_gb,
                };
                tenant::tenant_quota(&cli.data_root, &cli.store, &socket, &name, change).await
            }
            Some(Command::Tenant { socket, command }) => {
                tenant::tenant_admin(&socket, command).await
            }
            None => run(cli.data_root, &cli.store, cli.daemon).await,
        }
    });
    if let Err(e) = result {
        eprintln!("hyperd: {e:#}");
        std::process::exit(1);
    }
}

/// `--expires`/`--credential-ttl`: the daemon's own parser, so both ends agree.
fn parse_ttl(text: &str) -> Result<chrono::TimeDelta, String> {
    server::credentials::parse_ttl(text)
}

/// The sealing key lives beside the store, never in it.
fn accounts(
    data_root: &std::path::Path,
    store: Arc<dyn store::Store>,
) -> anyhow::Result<server::Accounts> {
    let sealer = server::seal::Sealer::load_or_create(&data_root.join("seal.key"))?;
    Ok(server::Accounts::new(store, Arc::new(sealer)))
}

/// The standby pool's sizing from the flags, with the defaults for this host and accelerator.
fn standby_sizing(args: &DaemonArgs, accel: vm::Accel) -> node::standby::Sizing {
    let ceiling = args.standby_vms_max.unwrap_or_else(|| {
        node::standby::default_ceiling(node::host::memory_bytes(), args.node.memory())
    });
    node::standby::Sizing {
        floor: args
            .standby_vms
            .unwrap_or_else(|| node::standby::default_floor(accel == vm::Accel::Kvm, ceiling)),
        ceiling,
        hold: std::time::Duration::from_secs(args.standby_vms_hold),
        memory_max: args.standby_memory_max,
        host_reserve: args.standby_memory_reserve,
    }
}

/// The shim spec a container of the default size boots with (sans disk and process): what
/// its VM template is keyed on.
fn default_size_spec(host: &setup::Host, args: &DaemonArgs) -> serde_json::Value {
    let size = node::sizes::lookup(node::sizes::DEFAULT_SIZE).expect("the default size exists");
    serde_json::json!({
        "id": "template", "qemu": host.qemu, "accel": host.accel.as_str(),
        "kernel": host.kernel, "initrd": host.initrd,
        "kernel_cmdline_extra": args.kernel_cmdline_extra, "vcpus": size.vcpus,
        "memory_mib": size.vm_memory_mib(), "root_disk": "/dev/null", "run_as": args.vm_user,
        "boot_timeout_secs": args.boot_timeout, "process": {},
    })
}

fn is_loopback(addr: &str) -> bool {
    let host = addr
        .trim_start_matches("tcp://")
        .rsplit_once(':')
        .map_or("", |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn open_store(data_root: &std::path::Path, store: &str) -> anyhow::Result<Arc<dyn store::Store>> {
    std::fs::create_dir_all(data_root)
        .with_context(|| format!("create {}", data_root.display()))?;
    store_backend::open(data_root, store)
}

/// The volume backends this node offers and the operator's volume settings.
fn volumes(
    data_root: &std::path::Path,
    args: &DaemonArgs,
    store: std::sync::Arc<dyn store::Store>,
) -> anyhow::Result<node::volumes::Volumes> {
    use node::volumes::{Backend, Local, SizeRange, Volumes};
    if args.volume_size_min == 0 || args.volume_size_min > args.volume_size_max {
        anyhow::bail!(
            "--volume-size-min {} and --volume-size-max {}: give 0 < min <= max",
            args.volume_size_min,
            args.volume_size_max
        );
    }
    let local: std::sync::Arc<dyn Backend> =
        std::sync::Arc::new(Local::new(data_root).map_err(|e| anyhow::anyhow!("{e}"))?);
    let mut backends = vec![local];
    if let Some(conf) = &args.ceph_conf {
        let keyring = args.ceph_keyring.clone().unwrap_or_else(|| {
            conf.with_file_name(format!("ceph.client.{}.keyring", args.ceph_user))
        });
        let cfg = node::volumes::rbd::RbdConfig {
            conf: conf.clone(),
            pool: args.ceph_pool.clone(),
            user: args.ceph_user.clone(),
            keyring,
        };
        let rbd = node::volumes::rbd::Rbd::new(cfg, data_root)
            .map_err(|e| anyhow::anyhow!("--ceph-conf: {e}"))?;
        backends.push(std::sync::Arc::new(rbd));
    }
    let sizes = SizeRange {
        min: args.volume_size_min,
        max: args.volume_size_max,
    };
    let uploads = node::volumes::init::Uploads::new(data_root);
    let policy = image::policy::AddressPolicy::new(args.allow_fetch.clone());
    let volumes = Volumes::new(store, backends, &args.volume_driver, sizes, uploads, policy)
        .map_err(|e| anyhow::anyhow!("--volume-driver: {e}"))?;
    volumes
        .remove_orphans()
        .context("removing volume blocks left by a crash")?;
    Ok(volumes)
}

async fn run(data_root: PathBuf, store: &str, args: DaemonArgs) -> anyhow::Result<()> {
    let host = setup::check_host(&data_root, &args)?;
    let store = open_store(&data_root, store)?;
    // Before anything of the store is acted on: a name another node holds stops us here.
    let record = fleet::node_record(&args.node, &data_root, host.accel)?;
    let membership = node::fleet::Membership::join(store.clone(), record, args.node.lease())
        .context("join the fleet")?;
    fleet::remember_name(&data_root, membership.name())?;
    tokio::spawn(membership.clone().renew_forever());
    let images = Arc::new(image::ImageStore::open(data_root.join("images"))?);
    let accounts = accounts(&data_root, store.clone())?.with_default_ttl(args.credential_ttl);
    let migrated = accounts
        .migrate_legacy()
        .context("give earlier tokens and certificates an expiry")?;
    if migrated > 0 {
        tracing::info!(
            "{migrated} tokens and client certificates of an earlier hyperd now expire in {}d",
            args.credential_ttl.num_days()
        );
    }
    tokio::spawn(accounts.clone().forget_stale_forever());

    let hosts = if args.hosts.is_empty() {
        vec![
            "unix:///var/run/hyper.sock".to_string(),
            "tcp://127.0.0.1:6443".to_string(),
        ]
    } else {
        args.hosts.clone()
    };

    let template_dir = (args.templates == "on").then(|| {
        args.template_dir
            .clone()
            .unwrap_or_else(|| data_root.join("templates"))
    });
    let template_spec = default_size_spec(&host, &args);
    let runtime = node::Runtime::new(
        node::RuntimeConfig {
            node_name: membership.name().to_string(),
            data_root: data_root.clone(),
            qemu: host.qemu,
            accel: host.accel.as_str().to_string(),
            kernel: host.kernel,
            initrd: host.initrd,
            kernel_cmdline_extra: args.kernel_cmdline_extra.clone(),
            shim_binary: host.shim,
            run_as: args.vm_user.clone(),
            boot_timeout_secs: args.boot_timeout,
            log_max_bytes: 10 << 20,
            log_max_files: 3,
            template_dir: template_dir.clone(),
            standby: standby_sizing(&args, host.accel),
            disk_reserve: args.disk_reserve,
            memory_capacity: args.node.memory(),
            net: node::network::NetConfig {
                node_name: membership.name().to_string(),
                node_address: args.node.address(),
                state_dir: data_root.join("net"),
                default_subnet: args.default_subnet.trunc(),
                mtu: args.mtu,
                transit_cidr: args.transit_cidr.trunc(),
                fip_pool: args.fip_pools.clone(),
                dns_binary: host.dns,
                lb_binary: host.lb,
                node_netns: args.node_netns.clone(),
            },
            cgroups: vm_cgroups(args.vm_cgroups, &setup::node_id(&data_root)?, &data_root)?,
        },
        store.clone(),
        {
            let images = node::images::Images::new(store.clone(), images);
            images.set_insecure_registries(args.insecure_registries.clone());
            images.set_tenant_policy(image::policy::AddressPolicy::new(args.allow_fetch.clone()));
            images
        },
        volumes(&data_root, &args, store.clone())?.on_node(membership.name()),
    );
    // Before any tenant link is rebuilt: tenants stay off the node whatever becomes of the
    // tables hyperd re-renders.
    runtime
        .with_networks(|n| n.install_guard())
        .await
        .context("install the node's guard against tenant links")?;
    runtime
        .recover()
        .await
        .context("recover containers from the store")?;
    // Standbys of an earlier hyperd: those that fit the pool serve the first starts.
    runtime.adopt_standby().await;
    // Services: keep every one at its replica count, from the store.
    tokio::spawn(node::services::reconcile_forever(runtime.clone()));
    tokio::spawn(runtime.clone().reap_idle_networks_forever());
    tokio::spawn(node::network::follow_other_nodes_forever(runtime.clone()));
    tokio::spawn(node::losses::follow_forever(
        runtime.clone(),
        args.node.lost_after(),
    ));

    let tls = if args.insecure_http {
        if let Some(addr) = hosts
            .iter()
            .find(|h| h.starts_with("tcp://") && !is_loopback(h))
        {
            anyhow::bail!("--insecure-http serves loopback only; {addr} is not a loopback address");
        }
        None
    } else {
        Some(Arc::new(
            server::tls::Authority::load_or_create(&data_root.join("tls")).context("set up TLS")?,
        ))
    };
    let tls_config = match &tls {
        Some(authority) => Some(authority.server_setup()?),
        None => None,
    };
    let ca = tls.as_ref().map(|_| data_root.join("tls").join("ca.pem"));
    setup::default_tenant(&accounts, &hosts, args.client_config_dir.clone(), ca)?;
    // Functions: calls a restart cut short are recorded as failed, their VMs removed.
    let fleet_link = fleet::link(
        &args.node,
        membership.name(),
        &accounts,
        tls.as_deref(),
        args.node_netns.as_deref(),
        store.clone(),
    )?;
    let funcs = node::funcs::Funcs::new(runtime.clone());
    funcs
        .recover()
        .await
        .context("recover function calls from the store")?;
    let state = server::AppState {
        funcs: funcs.clone(),
        fleet: fleet_link.as_ref().map(|(link, _)| link.clone()),
        runtime,
        accounts,
        tls,
        node_id: setup::node_id(&data_root)?,
        node_name: membership.name().to_string(),
        limiter: Arc::new(server::limits::Limiter::new(server::limits::ApiLimits {
            rate: args.api_rate,
            burst: args.api_burst,
            max_streams: args.max_streams as usize,
        })),
    };
    server::fleet_link::reach_other_nodes(&state);
    let state_runtime = state.runtime.clone();
    let cron_accounts = state.accounts.clone();
    let guards = server::revocation::Guards::start(state.accounts.clone());
    let app = server::router(state);
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let reconciler = tokio::spawn(node::network::reconcile_forever(
        state_runtime.clone(),
        std::time::Duration::from_secs(args.net_reconcile_interval),
        shutdown_rx.clone(),
    ));
    // Crons: fire due runs by the cron clock, finish ended ones; a run's key must still work.
    cron_clock::install(&args.cron_clock)?;
    let crons = tokio::spawn(node::crons::scheduler::run_forever(
        state_runtime.clone(),
        Arc::new(move |access: &str| cron_accounts.is_active(&format!("/keys/{access}"))),
        shutdown_rx.clone(),
    ));
    let mut servers = Vec::new();
    let mut sockets = Vec::new();
    for addr in &hosts {
        let listener = server::Listener::bind(addr, tls_config.clone())
            .await
            .with_context(|| format!("listen on {addr}"))?;
        if let server::Listener::Unix(_, path) = &listener {
            sockets.push(path.clone());
        }
        tracing::info!("API listening on {addr}");
        servers.push(tokio::spawn(server::serve(
            listener,
            app.clone(),
            guards.clone(),
            shutdown_rx.clone(),
        )));
    }
    if let Some((_, listener)) = fleet_link {
        tracing::info!("listening for other nodes of the fleet");
        servers.push(tokio::spawn(server::serve(
            listener,
            app.clone(),
            guards.clone(),
            shutdown_rx.clone(),
        )));
    }
    tracing::info!(accel = host.accel.as_str(), "hyperd ready");
    // The default size's template, built ahead of time so the first `run` restores too.
    let template_builder = template_dir.as_ref().map(|dir| {
        let (spec, dir, runtime) = (template_spec.clone(), dir.clone(), state_runtime.clone());
        tokio::spawn(async move {
            setup::build_template(spec, dir).await;
            runtime.keep_standby();
        })
    });

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    // VMs are owned by their supervisors and keep running; only the API goes away.
    tracing::info!("shutting down; containers keep running");
    if let Some(t) = template_builder {
        // Dropping the builder's child kills it (and its template VM with it).
        t.abort();
        let _ = t.await;
    }
    let _ = shutdown_tx.send(true);
    // A call's stdio lives in hyperd: calls in flight end (and their VMs go) with it.
    funcs.close().await;
    for s in servers {
        let _ = s.await;
    }
    let _ = reconciler.await;
    let _ = crons.await;
    state_runtime.finish_teardowns().await;
    // Ready standby VMs and tenant namespaces (idle ones too) stay for the next hyperd.
    state_runtime.close_standby().await;
    state_runtime.hand_over_networks().await;
    if let Some(cgroups) = &state_runtime.config().cgroups {
        cgroups.close();
    }
    for path in sockets {
        let _ = std::fs::remove_file(path);
    }
    membership.leave();
    Ok(())
}
