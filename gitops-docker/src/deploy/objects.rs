//! The Docker objects of an environment: its containers, network and volumes, found by label.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, NetworkingConfig,
    PortBinding, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    ListVolumesOptionsBuilder,
};
use gitops_core::backend::{BackendError, StageContext};

use super::service::Service;
use super::{LABEL, SERVICE_LABEL, failed};
use crate::DockerBackend;
use crate::container::create_error;

impl DockerBackend {
    pub(super) fn label_filter(env: &str) -> HashMap<String, Vec<String>> {
        HashMap::from([("label".to_owned(), vec![format!("{LABEL}={env}")])])
    }

    /// The ids of the environment's containers, running or not.
    pub(super) async fn container_ids(&self, env: &str) -> Result<Vec<String>, BackendError> {
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&Self::label_filter(env))
            .build();
        let list = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| failed("listing the environment's containers", e))?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }

    /// Removes containers (and their anonymous volumes).
    pub(super) async fn remove_all(&self, ids: &[String]) -> Result<(), BackendError> {
        for id in ids {
            let options = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                .force(true)
                .v(true)
                .build();
            match self.docker.remove_container(id, Some(options)).await {
                Ok(()) => {}
                // Already gone (removed by a concurrent stop, or `--rm`).
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(e) => return Err(failed("removing a container of the environment", e)),
            }
        }
        Ok(())
    }

    /// Whether `image` is on the engine (else the error creating a container of it would give).
    pub(super) async fn image_present(&self, image: &str) -> Result<(), BackendError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(()),
            Err(e) => Err(create_error(image, e)),
        }
    }

    /// The environment's network, created when missing.
    pub(super) async fn network(&self, env: &str) -> Result<String, BackendError> {
        let name = format!("gitops-{}", crate::docker_name(env, 128));
        let options = ListNetworksOptionsBuilder::default()
            .filters(&Self::label_filter(env))
            .build();
        let existing = self
            .docker
            .list_networks(Some(options))
            .await
            .map_err(|e| failed("listing networks", e))?;
        if existing
            .iter()
            .any(|n| n.name.as_deref() == Some(name.as_str()))
        {
            return Ok(name);
        }
        let request = NetworkCreateRequest {
            name: name.clone(),
            labels: Some(HashMap::from([(LABEL.to_owned(), env.to_owned())])),
            ..Default::default()
        };
        self.docker
            .create_network(request)
            .await
            .map_err(|e| failed(&format!("creating network {name}"), e))?;
        Ok(name)
    }

    /// The environment's volume `name` (created, labelled, when missing): its Docker name.
    async fn volume(&self, env: &str, name: &str) -> Result<String, BackendError> {
        let full = format!("gitops-{}-{name}", crate::docker_name(env, 128));
        // Creating an existing volume returns it unchanged.
        let request = VolumeCreateRequest {
            name: Some(full.clone()),
            labels: Some(HashMap::from([(LABEL.to_owned(), env.to_owned())])),
            ..Default::default()
        };
        self.docker
            .create_volume(request)
            .await
            .map_err(|e| failed(&format!("creating volume {full}"), e))?;
        Ok(full)
    }

    /// Creates and starts a service's container: its name, and whether that worked (the name is
    /// returned either way, so that a container created but not started is removed too).
    pub(super) async fn start_service(
        &self,
        env: &str,
        network: &str,
        service: &Service,
        ctx: &StageContext,
    ) -> (String, Result<(), BackendError>) {
        let name = format!(
            "gitops-{}-{}-{:08x}",
            crate::docker_name(env, 100),
            service.name,
            crate::container::rand_suffix()
        );
        let result = async {
            let mut binds = Vec::new();
            for (volume, path) in &service.volumes {
                binds.push(format!("{}:{path}", self.volume(env, volume).await?));
            }
            let vars: Vec<String> = ctx
                .variables()
                .into_iter()
                .chain(service.env.iter().map(|(k, v)| (k.clone(), v.clone())))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let labels = HashMap::from([
                (LABEL.to_owned(), env.to_owned()),
                (SERVICE_LABEL.to_owned(), service.name.clone()),
                ("gitops.managed".to_owned(), "true".to_owned()),
                ("gitops.run".to_owned(), ctx.run.id.clone()),
            ]);
            let exposed = service.port.map(|p| format!("{p}/tcp"));
            let bindings = exposed.clone().map(|exposed| {
                HashMap::from([(
                    exposed,
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".to_owned()),
                        host_port: Some(service.host_port.map_or(String::new(), |p| p.to_string())),
                    }]),
                )])
            });
            let body = ContainerCreateBody {
                image: Some(service.image.clone()),
                cmd: service.command.clone(),
                env: Some(vars),
                labels: Some(labels),
                exposed_ports: exposed.map(|e| vec![e]),
                host_config: Some(HostConfig {
                    network_mode: Some(network.to_owned()),
                    port_bindings: bindings,
                    binds: Some(binds),
                    ..Default::default()
                }),
                networking_config: Some(NetworkingConfig {
                    endpoints_config: Some(HashMap::from([(
                        network.to_owned(),
                        EndpointSettings {
                            aliases: Some(vec![service.name.clone()]),
                            ..Default::default()
                        },
                    )])),
                }),
                ..Default::default()
            };
            self.docker
                .create_container(
                    Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                    body,
                )
                .await
                .map_err(|e| create_error(&service.image, e))?;
            self.docker
                .start_container(&name, None)
                .await
                .map_err(|e| failed(&format!("starting service {}", service.name), e))
        }
        .await;
        (name, result)
    }

    /// Removes the environment's networks and volumes (after its containers).
    pub(super) async fn remove_network_and_volumes(&self, env: &str) -> Result<(), BackendError> {
        let filter = Self::label_filter(env);
        let networks = self
            .docker
            .list_networks(Some(
                ListNetworksOptionsBuilder::default()
                    .filters(&filter)
                    .build(),
            ))
            .await
            .map_err(|e| failed("listing networks", e))?;
        for n in networks {
            if let Some(id) = n.id {
                self.docker
                    .remove_network(&id)
                    .await
                    .map_err(|e| failed("removing the environment's network", e))?;
            }
        }
        let volumes = self
            .docker
            .list_volumes(Some(
                ListVolumesOptionsBuilder::default()
                    .filters(&filter)
                    .build(),
            ))
            .await
            .map_err(|e| failed("listing volumes", e))?;
        for v in volumes.volumes.unwrap_or_default() {
            self.docker
                .remove_volume(
                    &v.name,
                    None::<bollard::query_parameters::RemoveVolumeOptions>,
                )
                .await
                .map_err(|e| failed(&format!("removing volume {}", v.name), e))?;
        }
        Ok(())
    }
}
