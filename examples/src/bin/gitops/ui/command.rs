//! `gitops ui --listen ADDR`: the dashboard and the API over a state dir, without webhooks; and
//! the options it shares with `gitops serve`, which mounts the same routes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::access::{Access, Net, SHORT_TOKEN, loopback};
use super::{UiState, with_access};
use crate::run::{Common, engine};
use crate::serve::{http, metrics::Metrics, signals};

/// The dashboard's options, in `gitops ui` and `gitops serve`.
#[derive(clap::Args, Clone, Default)]
pub struct UiOptions {
    /// An environment variable holding a token of the dashboard and the API (repeatable; one
    /// token a variable). NAME is the viewer's name, recorded as the approver. A token lets a
    /// peer in (`Authorization: Bearer <token>`, or the form at /login) and approve or reject.
    #[arg(long = "ui-token-env", value_name = "NAME")]
    pub token_envs: Vec<String>,
    /// The address people reach the dashboard at (`https://ci.example.com/gitops`): links and
    /// redirects use it, forms must come from it, and with https the login cookie is Secure.
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// Peers that may read the dashboard and the API without a token (repeatable; CIDR such
    /// as `127.0.0.1/32`, or `none`: every peer needs a token). Default: loopback
    /// (`127.0.0.0/8`, `::1`).
    #[arg(long = "ui-anonymous-net", value_name = "CIDR")]
    pub anonymous_nets: Vec<String>,
}

impl UiOptions {
    /// `--public-url` without its trailing slash; an error unless it is http(s).
    pub fn public_url(&self) -> Result<Option<String>, String> {
        let Some(url) = &self.public_url else {
            return Ok(None);
        };
        let url = url.trim_end_matches('/');
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        match rest {
            Some(rest)
                if !rest.is_empty()
                    && !rest.starts_with('/')
                    && !url.contains(['?', '#'])
                    && !url.chars().any(|c| c.is_control() || c.is_whitespace()) =>
            {
                Ok(Some(url.to_owned()))
            }
            _ => Err(format!(
                "error: --public-url {url}: expected http(s)://host[:port][/path]"
            )),
        }
    }

    /// The access rules: the tokens read from their variables, the anonymous networks.
    pub fn access(&self) -> Result<Access, String> {
        let mut access = Access::default().with_secure_cookie(
            self.public_url
                .as_deref()
                .is_some_and(|u| u.starts_with("https://")),
        );
        for name in &self.token_envs {
            let value = std::env::var(name).unwrap_or_default();
            if value.is_empty() {
                return Err(format!(
                    "error: --ui-token-env {name}: no such environment variable, or empty"
                ));
            }
            if value.chars().count() < SHORT_TOKEN {
                tracing::warn!(
                    token = name,
                    "the token is short (under {SHORT_TOKEN} characters): a long random one (openssl rand -hex 32) resists guessing"
                );
            }
            access = access.with_token(name, &value)?;
        }
        if !self.anonymous_nets.is_empty() {
            let mut nets = Vec::new();
            for net in &self.anonymous_nets {
                if net != "none" {
                    nets.push(
                        Net::parse(net).map_err(|e| format!("error: --ui-anonymous-net {e}"))?,
                    );
                }
            }
            access = access.with_anonymous(nets);
        }
        Ok(access)
    }

    /// Warns when peers that are not loopback could reach the dashboard without a token, or
    /// when no one but loopback can use it.
    pub fn warn_if_open(&self, listen: SocketAddr) {
        let local = loopback().iter().any(|n| n.contains(listen.ip()));
        if !local && self.token_envs.is_empty() {
            tracing::warn!(
                %listen,
                "the dashboard listens beyond loopback without a token: other peers get 403; give --ui-token-env NAME to let them sign in"
            );
        }
        let loopback_reads = self.anonymous_nets.is_empty()
            || self.anonymous_nets.iter().any(|n| {
                Net::parse(n).is_ok_and(|net| net.contains(std::net::Ipv4Addr::LOCALHOST.into()))
            });
        if self.public_url.is_some() && loopback_reads {
            tracing::warn!(
                "--public-url with loopback anonymous: a proxy on this host that sends no Forwarded or X-Forwarded-For header lets everyone it forwards read without a token; give --ui-anonymous-net none"
            );
        }
        let wide = self
            .anonymous_nets
            .iter()
            .any(|n| Net::parse(n).is_ok_and(|net| !loopback().iter().any(|l| l == &net)));
        if wide {
            tracing::warn!(
                nets = self.anonymous_nets.join(","),
                "--ui-anonymous-net: peers of these networks read the dashboard without a token"
            );
        }
    }
}

/// What `gitops ui` is asked to do.
#[derive(clap::Args)]
pub struct UiArgs {
    /// Address to listen on (port 0 picks a free one, printed at start).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    options: UiOptions,
}

/// `gitops ui`: serves the dashboard and the API until SIGTERM or Ctrl-C.
pub async fn ui(args: UiArgs, common: Common) -> Result<(), String> {
    let _lines = crate::serve::init_log("text");
    let access = args.options.access()?;
    let public_url = args.options.public_url()?;
    let engine = Arc::new(engine(&common)?);
    let (shutdown, abort) = (CancellationToken::new(), CancellationToken::new());
    let state = UiState {
        engine,
        public_url: public_url.clone(),
    };
    let router = with_access(state, access, shutdown.clone());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("error: cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| format!("error: {e}"))?;
    args.options.warn_if_open(addr);
    eprintln!("listening on http://{addr}");
    eprintln!(
        "dashboard: {}/",
        public_url.unwrap_or_else(|| format!("http://{addr}"))
    );
    tokio::spawn(signals(
        shutdown.clone(),
        abort.clone(),
        Duration::from_secs(5),
    ));
    http::serve(
        listener,
        router,
        http::ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 256,
        },
        Arc::new(Metrics::new()),
        shutdown,
        abort,
    )
    .await;
    Ok(())
}
