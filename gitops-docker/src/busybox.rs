//! A small image with a shell and `httpd`, built `FROM scratch` from the host's static busybox:
//! for tests and starter apps on machines that cannot reach a registry.

use bollard::query_parameters::BuildImageOptionsBuilder;
use futures_util::StreamExt;

use crate::{DockerBackend, DockerError};

/// Where a static busybox is looked for (Debian's `busybox-static` installs `/bin/busybox`).
const BUSYBOX: [&str; 2] = ["/bin/busybox", "/usr/bin/busybox"];

impl DockerBackend {
    /// Builds `tag`: the host's static busybox on an empty image, its applets (`sh`, `httpd`,
    /// `wget`, ...) linked into `/bin`. Needs no registry.
    pub async fn build_busybox_image(&self, tag: &str) -> Result<(), DockerError> {
        let image_error = |message: String| DockerError::Image {
            image: tag.to_owned(),
            message,
        };
        let busybox = BUSYBOX
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .ok_or_else(|| {
                image_error(format!(
                    "no static busybox at {} (Debian: apt-get install busybox-static)",
                    BUSYBOX.join(" or ")
                ))
            })?;
        // The label first makes every tag's build its own image from the first step: builds of
        // identical images at once would share one image and its cached steps, and removing one
        // tag could then delete what another build is about to use.
        let dockerfile = format!(
            "FROM scratch\nLABEL gitops.image={}\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
            serde_json::Value::String(tag.to_owned())
        );
        let dockerfile = dockerfile.as_bytes();
        let context = (|| {
            let mut tar = tar::Builder::new(Vec::new());
            let mut header = tar::Header::new_gnu();
            header.set_size(dockerfile.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, "Dockerfile", dockerfile)?;
            tar.append_path_with_name(busybox, "busybox")?;
            tar.into_inner()
        })()
        .map_err(|e| image_error(format!("packing {busybox}: {e}")))?;
        let options = BuildImageOptionsBuilder::default()
            .dockerfile("Dockerfile")
            .t(tag)
            .rm(true)
            .build();
        let mut build =
            self.docker
                .build_image(options, None, Some(bollard::body_full(context.into())));
        while let Some(step) = build.next().await {
            let step = step.map_err(|e| image_error(e.to_string()))?;
            if let Some(err) = step.error_detail.and_then(|d| d.message) {
                return Err(image_error(err));
            }
        }
        Ok(())
    }
}
