//! The services a deploy's `with` describes: parsed and checked before anything is created.

use std::collections::BTreeMap;

use gitops_core::backend::BackendError::InvalidParameters;
use gitops_core::backend::{BackendError, Params, StageContext};
use serde_json::Value;

/// What a service may set.
pub(crate) const SERVICE_KEYS: [&str; 7] = [
    "image",
    "port",
    "host_port",
    "command",
    "env",
    "health_path",
    "volumes",
];

/// What `with` may set besides one service's keys.
pub(crate) const DEPLOY_KEYS: [&str; 3] = ["services", "primary", "ready_timeout"];

/// One container of an environment.
#[derive(Debug)]
pub(super) struct Service {
    pub(super) name: String,
    pub(super) image: String,
    /// The container port published on 127.0.0.1.
    pub(super) port: Option<u16>,
    /// The host port asked for (`None`: any free one).
    pub(super) host_port: Option<u16>,
    pub(super) command: Option<Vec<String>>,
    pub(super) env: BTreeMap<String, String>,
    pub(super) health_path: String,
    /// (volume name without the environment's prefix, path in the container)
    pub(super) volumes: Vec<(String, String)>,
}

/// A name Docker accepts as a network alias and we use in container, volume and output names.
fn plain_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name.len() <= 63
}

fn unknown_keys(params: Params<'_>, known: &[&str]) -> Result<(), BackendError> {
    if let Some(key) = params.keys().find(|k| !known.contains(k)) {
        return Err(InvalidParameters(format!(
            "unknown parameter `{}.{key}` (a docker deployment knows {})",
            params.path(),
            known.join(", ")
        )));
    }
    Ok(())
}

fn port(params: Params<'_>, key: &str) -> Result<Option<u16>, BackendError> {
    match params.u64(key)? {
        None => Ok(None),
        Some(p) => u16::try_from(p)
            .ok()
            .filter(|p| *p > 0)
            .map(Some)
            .ok_or_else(|| params.invalid(key, "a port number (1 to 65535)")),
    }
}

impl Service {
    fn parse(
        name: &str,
        params: Params<'_>,
        default_port: Option<u16>,
    ) -> Result<Service, BackendError> {
        let image = match params.str("image")? {
            Some(i) if !i.is_empty() => i.to_owned(),
            _ => return Err(params.invalid("image", "an image name")),
        };
        let health_path = match params.str("health_path")? {
            None => "/".to_owned(),
            Some(p) if p.starts_with('/') => p.to_owned(),
            Some(_) => return Err(params.invalid("health_path", "a path starting with /")),
        };
        let command = params.strings("command")?;
        if command.as_ref().is_some_and(Vec::is_empty) {
            return Err(params.invalid("command", "a non-empty list of strings"));
        }
        let volumes = params
            .strings("volumes")?
            .unwrap_or_default()
            .into_iter()
            .map(|v| match v.split_once(':') {
                Some((name, path)) if plain_name(name) && path.starts_with('/') => {
                    Ok((name.to_owned(), path.to_owned()))
                }
                _ => Err(params.invalid(
                    "volumes",
                    "a list of `name:/path` (name: letters, digits, - and _)",
                )),
            })
            .collect::<Result<_, _>>()?;
        Ok(Service {
            name: name.to_owned(),
            image,
            port: port(params, "port")?.or(default_port),
            host_port: port(params, "host_port")?,
            command,
            env: params.string_map("env")?.unwrap_or_default(),
            health_path,
            volumes,
        })
    }
}

/// The services `with` describes, in order, and the primary one's index.
pub(super) fn services(ctx: &StageContext) -> Result<(Vec<Service>, Option<usize>), BackendError> {
    let with = ctx.params();
    let list = match with.get("services") {
        None => {
            let known: Vec<&str> = SERVICE_KEYS.iter().chain(&DEPLOY_KEYS).copied().collect();
            unknown_keys(with, &known)?;
            vec![Service::parse("app", with, Some(80))?]
        }
        Some(Value::Object(map)) if !map.is_empty() => {
            unknown_keys(with, &DEPLOY_KEYS)?;
            let mut list = Vec::new();
            for (name, spec) in map {
                let path = format!("with.services.{name}");
                if !plain_name(name) {
                    return Err(InvalidParameters(format!(
                        "`{path}`: a service name has letters, digits, - and _ only"
                    )));
                }
                let Value::Object(spec) = spec else {
                    return Err(InvalidParameters(format!(
                        "`{path}` must be a map (image, port, ...), found {spec}"
                    )));
                };
                let params = Params::new(spec, &path);
                unknown_keys(params, &SERVICE_KEYS)?;
                list.push(Service::parse(name, params, None)?);
            }
            list
        }
        Some(_) => return Err(with.invalid("services", "a map of service names to services")),
    };
    let primary = match with.str("primary")? {
        Some(name) => match list.iter().position(|s| s.name == name) {
            Some(i) if list[i].port.is_some() => Some(i),
            Some(_) => {
                return Err(InvalidParameters(format!(
                    "`with.primary`: service {name} publishes no port"
                )));
            }
            None => {
                return Err(InvalidParameters(format!(
                    "`with.primary`: there is no service {name}"
                )));
            }
        },
        None => list.iter().position(|s| s.port.is_some()),
    };
    Ok((list, primary))
}
