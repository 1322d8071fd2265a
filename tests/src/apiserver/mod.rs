//! An in-process Kubernetes API server for Ferry's tests.
//!
//! It serves, over plain HTTP on 127.0.0.1, the part of the Kubernetes REST API that Ferry's
//! controllers touch, and answers as a real kube-apiserver does: discovery, create / get / list /
//! update / patch / delete with the real status codes and `Status` errors, the status
//! subresource, finalizers, watches with bookmarks and 410 Gone, label and field selectors, and
//! the structural-schema checks of the CustomResourceDefinitions it is given.
//!
//! Besides custom resources it serves the built-in kinds a namespace holds (pods, services,
//! endpoints, config maps, secrets, service accounts, claims, limit ranges, quotas; the apps and
//! batch workloads; RBAC; ingresses and network policies; disruption budgets; autoscalers) and
//! the cluster-scoped ones Ferry reads (namespaces, nodes, volumes, storage classes, cluster
//! roles and their bindings, CRDs), each with its real registry's defaults and rules: a
//! Service's cluster IP and node ports are allocated and released, a Job generates its
//! selector, a workload's selector must select its template, a binding keeps its `roleRef`.
//! A request without credentials comes from the test's administrator (`system:admin`, in
//! `system:masters`), who may do anything. A ServiceAccount's token, from the TokenRequest API
//! (`serviceaccounts/<name>/token`), authenticates as the service account, which may do what the
//! stored Roles, ClusterRoles and their bindings grant it, as RBAC decides; a client gets such a
//! token's identity with [`kubeconfig_with_token`]. An unknown or expired token, or one whose
//! service account is gone, is 401. A test can also deny a verb on a resource to every user
//! ([`TestApiServer::forbid`]). A denied request gets the RBAC authorizer's 403. The service
//! proxy forwards to the address a test registers for a Service
//! ([`TestApiServer::register_service`]). `pods/exec` runs the process that a test's handler
//! makes in place of the container's ([`TestApiServer::on_exec`]), and streams it over the
//! kubelet's websocket channel protocol.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let server = ferry_tests::apiserver::TestApiServer::start("deploy/crds").await?;
//! server.create_namespace("velero").await?;
//! let client = server.client();
//! # Ok(()) }
//! ```

mod allocations;
mod authn;
mod authz;
mod builtins;
mod discovery;
mod errors;
mod exec;
mod handlers;
mod operations;
mod patch;
mod proxy;
mod rbac;
mod resources;
mod selectors;
mod services;
mod store;
mod strategy;
mod validation;
mod watch;
mod workloads;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::authz::Rule;
pub use self::exec::ExecRequest;
use self::exec::Runtime;
use self::handlers::App;
use self::operations::{Context, Write};
use self::proxy::Upstreams;
use self::resources::Registry;
use self::store::{State, Store};
use self::strategy::Part;
use self::watch::WatchSettings;

/// Why the test server could not start or do what a helper asked.
#[derive(Debug, thiserror::Error)]
pub enum TestServerError {
    #[error("cannot read CRD directory or file {path}")]
    ReadCrds {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse YAML in {path}")]
    ParseCrd {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("CustomResourceDefinition {name} was rejected: {message}")]
    RejectedCrd { name: String, message: String },
    #[error("the object {name} was rejected: {message}")]
    Rejected { name: String, message: String },
    #[error("cannot listen on {address}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{url} is not a valid URL")]
    Url {
        url: String,
        #[source]
        source: axum::http::uri::InvalidUri,
    },
    #[error("cannot build a kube client for {url}")]
    Client {
        url: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot write the kubeconfig {path}")]
    WriteKubeconfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the server rejected the request: {0}")]
    Api(#[source] kube::Error),
}

/// Reads every CustomResourceDefinition in a YAML file, or in the `.yaml`/`.yml` files of a
/// directory (other kinds, such as a kustomization, are skipped), in file-name order.
pub fn load_crds(path: impl AsRef<Path>) -> Result<Vec<Value>, TestServerError> {
    let path = path.as_ref();
    let read_err = |source| TestServerError::ReadCrds {
        path: path.to_owned(),
        source,
    };
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(read_err)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_owned()]
    };
    let mut crds = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| TestServerError::ReadCrds {
            path: file.clone(),
            source,
        })?;
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(document).map_err(|source| {
                TestServerError::ParseCrd {
                    path: file.clone(),
                    source,
                }
            })?;
            if value.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition") {
                crds.push(value);
            }
        }
    }
    Ok(crds)
}

/// How to start a [`TestApiServer`].
#[derive(Debug, Clone)]
pub struct TestApiServerBuilder {
    crds: Vec<Value>,
    port: u16,
    history_limit: usize,
    bookmark_interval: Duration,
}

impl Default for TestApiServerBuilder {
    fn default() -> Self {
        Self {
            crds: Vec::new(),
            port: 0,
            history_limit: 1000,
            bookmark_interval: Duration::from_secs(10),
        }
    }
}

impl TestApiServerBuilder {
    /// Serves the CRDs found at `path` (a file or a directory).
    pub fn crds_from(mut self, path: impl AsRef<Path>) -> Result<Self, TestServerError> {
        self.crds.extend(load_crds(path)?);
        Ok(self)
    }

    /// Serves one CRD, given as its object.
    pub fn crd(mut self, crd: Value) -> Self {
        self.crds.push(crd);
        self
    }

    /// Listens on this port of 127.0.0.1; 0 (the default) takes an ephemeral one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// How many events per resource the watch history keeps (default 1000). A watch from an
    /// older resourceVersion gets 410 Gone.
    pub fn history_limit(mut self, events: usize) -> Self {
        self.history_limit = events;
        self
    }

    /// How often a watch with `allowWatchBookmarks=true` gets a BOOKMARK (default 10 s; the real
    /// server sends one about every minute).
    pub fn bookmark_interval(mut self, interval: Duration) -> Self {
        self.bookmark_interval = interval;
        self
    }

    /// Starts the server on the current tokio runtime.
    pub async fn start(self) -> Result<TestApiServer, TestServerError> {
        let mut state = State::new(Registry::with_builtins(), self.history_limit);
        let now = jiff::Timestamp::now();
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            seed(
                &mut state,
                ("", "namespaces"),
                None,
                json!({"metadata": {"name": name}}),
                now,
            )?;
        }
        for crd in self.crds {
            let crds = ("apiextensions.k8s.io", "customresourcedefinitions");
            seed(&mut state, crds, None, crd, now)?;
        }
        let store = Arc::new(Store::new(state));

        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|source| TestServerError::Bind { address, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| TestServerError::Bind { address, source })?;
        let url = format!("http://{local}");
        let shutdown = CancellationToken::new();
        let upstreams = Arc::new(Upstreams::default());
        let runtime = Arc::new(Runtime::default());
        let app = Arc::new(App {
            store: Arc::clone(&store),
            upstreams: Arc::clone(&upstreams),
            runtime: Arc::clone(&runtime),
            watch: WatchSettings {
                bookmark_interval: self.bookmark_interval,
                shutdown: shutdown.clone(),
            },
            address: local.to_string(),
        });
        // Exec takes over its connection, which the one handler's body extractor would not let
        // it reach: it has a route of its own.
        let router = axum::Router::new()
            .route(
                "/api/v1/namespaces/{namespace}/pods/{name}/exec",
                axum::routing::any(exec::handle),
            )
            .fallback(handlers::handle)
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&app),
                authn::layer,
            ))
            .with_state(app);
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await });
            if let Err(error) = serve.await {
                eprintln!("ferry test apiserver stopped: {error}");
            }
        });
        let uri: axum::http::Uri = url.parse().map_err(|source| TestServerError::Url {
            url: url.clone(),
            source,
        })?;
        let client = kube::Client::try_from(kube::Config::new(uri)).map_err(|source| {
            TestServerError::Client {
                url: url.clone(),
                source,
            }
        })?;
        Ok(TestApiServer {
            url,
            store,
            upstreams,
            runtime,
            client,
            shutdown,
            task,
        })
    }
}

/// Creates an object of the type under `(group, plural)`, in `namespace` if it is namespaced,
/// straight in the state, as the server's own bootstrap does.
fn seed(
    state: &mut State,
    (group, plural): (&str, &str),
    namespace: Option<&str>,
    mut object: Value,
    now: jiff::Timestamp,
) -> Result<(), TestServerError> {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let rejected = |message: String| match plural {
        "customresourcedefinitions" => TestServerError::RejectedCrd {
            name: name.clone(),
            message,
        },
        _ => TestServerError::Rejected {
            name: name.clone(),
            message,
        },
    };
    let resource = state
        .registry
        .by_key(group, plural)
        .ok_or_else(|| rejected("unknown kind".to_owned()))?;
    let ctx = Context {
        resource: Arc::clone(&resource),
        version: resource
            .versions
            .first()
            .map(|v| v.name.clone())
            .unwrap_or_default(),
        namespace: namespace.map(str::to_owned),
        part: Part::Main,
        manager: "ferry-test-apiserver".to_owned(),
        now,
    };
    operations::check_type_meta(&ctx, &mut object)
        .map_err(|e| rejected(e.status()["message"].to_string()))?;
    operations::create(state, &ctx, object, Write::Update)
        .map_err(|e| rejected(e.status()["message"].to_string()))?;
    Ok(())
}

/// A running test API server. It stops when dropped.
pub struct TestApiServer {
    url: String,
    store: Arc<Store>,
    upstreams: Arc<Upstreams>,
    runtime: Arc<Runtime>,
    client: kube::Client,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for TestApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApiServer")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl TestApiServer {
    /// Starts a server with the CRDs at `crds` (a file or directory) and default settings.
    pub async fn start(crds: impl AsRef<Path>) -> Result<Self, TestServerError> {
        Self::builder().crds_from(crds)?.start().await
    }

    pub fn builder() -> TestApiServerBuilder {
        TestApiServerBuilder::default()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A client for the server, with `default` as its namespace, as the administrator.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// Writes a kubeconfig whose current context points at the server, for child processes,
    /// which act as the administrator.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> Result<(), TestServerError> {
        write_file(path.as_ref(), &kubeconfig(&self.url))
    }

    /// Writes a kubeconfig whose current context points at the server with `token` (from a
    /// TokenRequest), for child processes that act as its service account.
    pub fn write_kubeconfig_with_token(
        &self,
        path: impl AsRef<Path>,
        token: &str,
    ) -> Result<(), TestServerError> {
        write_file(path.as_ref(), &kubeconfig_with_token(&self.url, token))
    }

    /// Creates a namespace, which the real server requires before anything is created in it.
    pub async fn create_namespace(&self, name: &str) -> Result<(), TestServerError> {
        use k8s_openapi::api::core::v1::Namespace;
        let namespace = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        kube::Api::<Namespace>::all(self.client())
            .create(&kube::api::PostParams::default(), &namespace)
            .await
            .map_err(TestServerError::Api)?;
        Ok(())
    }

    /// Drops the watch history, as an etcd compaction does, and ends every open watch with a
    /// 410 Gone ERROR event, as a watch that fell behind the compaction gets. Clients must list
    /// again.
    pub fn compact(&self) {
        self.store.lock().compact();
        self.store.notify();
    }

    /// Denies `verb` (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`, or `*`) on `resource` (a plural, `plural/subresource`, or `*`) of
    /// `group` (`""` for the core group, or `*`), from now on, as an RBAC authorizer without a
    /// rule for it does: such a request gets 403 Forbidden, naming its user. It applies to every
    /// user, the administrator (a client without a token) included, whatever RBAC grants.
    pub fn forbid(&self, verb: &str, group: &str, resource: &str) {
        self.store.lock().forbidden.push(Rule {
            verb: verb.to_owned(),
            group: group.to_owned(),
            resource: resource.to_owned(),
        });
    }

    /// Makes `address` the endpoint of the Service `namespace/name`: the service proxy
    /// (`/api/v1/namespaces/<namespace>/services/<name>[:<port>]/proxy/...`) forwards there
    /// whatever the port, as long as the Service exists and has the port.
    pub fn register_service(&self, namespace: &str, name: &str, address: SocketAddr) {
        self.upstreams.register(namespace, name, address);
    }

    /// Makes `handler` run the commands of `pods/exec` from now on, in place of the handler
    /// before, as a node's container runtime runs them: it gets each exec that the server
    /// admitted and returns the process to run, whose stdin, stdout and stderr the server
    /// attaches to the client and which is killed, with every process it starts, when the
    /// client goes away. An `Err` is the runtime's error, which the client gets as the exec's
    /// Failure `Status`. Without a handler, every exec fails so.
    pub fn on_exec(
        &self,
        handler: impl Fn(&ExecRequest) -> Result<tokio::process::Command, String>
        + Send
        + Sync
        + 'static,
    ) {
        self.runtime.register(Arc::new(handler));
    }

    /// Creates the ClusterIP Service `namespace/name` with one TCP port `port_name`:`port`,
    /// unless a Service of that name exists; without blocking, for synchronous callers.
    pub fn ensure_service(
        &self,
        namespace: &str,
        name: &str,
        port_name: &str,
        port: u16,
    ) -> Result<(), TestServerError> {
        let key = store::ObjectKey {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        let mut state = self.store.lock();
        if state
            .get(&(String::new(), "services".to_owned()), &key)
            .is_some()
        {
            return Ok(());
        }
        let service = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": [{"name": port_name, "port": port, "targetPort": port}]},
        });
        let created = seed(
            &mut state,
            ("", "services"),
            Some(namespace),
            service,
            jiff::Timestamp::now(),
        );
        drop(state);
        self.store.notify();
        created
    }

    /// The current resourceVersion of the whole store.
    pub fn resource_version(&self) -> u64 {
        self.store.lock().revision()
    }
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.task.abort();
    }
}

fn write_file(path: &Path, contents: &str) -> Result<(), TestServerError> {
    std::fs::write(path, contents).map_err(|source| TestServerError::WriteKubeconfig {
        path: path.to_owned(),
        source,
    })
}

/// A kubeconfig for a plain-HTTP server without credentials: its clients act as the
/// administrator.
pub fn kubeconfig(url: &str) -> String {
    kubeconfig_for(url, "{}")
}

/// A kubeconfig for a plain-HTTP server whose clients send `token` as their bearer token, and
/// so act as the service account a TokenRequest issued it for.
pub fn kubeconfig_with_token(url: &str, token: &str) -> String {
    let token = Value::String(token.to_owned());
    kubeconfig_for(url, &format!("{{token: {token}}}"))
}

/// A kubeconfig whose one user is `user`, a YAML value.
fn kubeconfig_for(url: &str, user: &str) -> String {
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: ferry-test\n  \
           cluster:\n    \
             server: {url}\n\
         contexts:\n\
         - name: ferry-test\n  \
           context:\n    \
             cluster: ferry-test\n    \
             user: ferry-test\n    \
             namespace: default\n\
         current-context: ferry-test\n\
         users:\n\
         - name: ferry-test\n  \
           user: {user}\n"
    )
}
