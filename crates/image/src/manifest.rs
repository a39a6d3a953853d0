//! The image manifests hyper writes: an OCI manifest over uncompressed layers (in the archives
//! of `save`, where layers are the stored tars) and a Docker v2 schema 2 manifest over gzip
//! layers (what `push` uploads, as `docker push` does). Also Docker's fully qualified names
//! (`busybox:latest` is `docker.io/library/busybox:latest`), which archives annotate tags with.

use serde_json::json;

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// A blob as a manifest names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Blob {
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: u64,
}

/// Which manifest, and so which media types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// OCI, layers as plain tars.
    OciPlain,
    /// Docker v2 schema 2, layers gzipped.
    DockerGzip,
}

impl Flavor {
    pub(crate) fn media_type(self) -> &'static str {
        match self {
            Flavor::OciPlain => OCI_MANIFEST,
            Flavor::DockerGzip => DOCKER_MANIFEST,
        }
    }

    fn config_type(self) -> &'static str {
        match self {
            Flavor::OciPlain => "application/vnd.oci.image.config.v1+json",
            Flavor::DockerGzip => "application/vnd.docker.container.image.v1+json",
        }
    }

    fn layer_type(self) -> &'static str {
        match self {
            Flavor::OciPlain => "application/vnd.oci.image.layer.v1.tar",
            Flavor::DockerGzip => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        }
    }
}

/// The manifest of an image with `config` and `layers` (bottom first), as bytes.
pub(crate) fn manifest(flavor: Flavor, config: &Blob, layers: &[Blob]) -> Vec<u8> {
    let desc =
        |media: &str, b: &Blob| json!({"mediaType": media, "digest": b.digest, "size": b.size});
    let layers: Vec<_> = layers
        .iter()
        .map(|l| desc(flavor.layer_type(), l))
        .collect();
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": flavor.media_type(),
        "config": desc(flavor.config_type(), config),
        "layers": layers,
    }))
    .expect("JSON serializes")
}

/// Docker's fully qualified form of a familiar reference: a first component that is not a host
/// (no `.` or `:`, not `localhost`) means Docker Hub, and a single component its `library/`.
pub(crate) fn qualified(reference: &str) -> String {
    match reference.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => {
            reference.to_string()
        }
        Some(_) => format!("docker.io/{reference}"),
        None => format!("docker.io/library/{reference}"),
    }
}

/// `name:tag` -> (`name`, `tag`): the tag follows the last `:` after the last `/`.
pub(crate) fn split_tag(reference: &str) -> Option<(&str, &str)> {
    let slash = reference.rfind('/').map_or(0, |i| i + 1);
    let colon = reference[slash..].rfind(':')? + slash;
    Some((&reference[..colon], &reference[colon + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_name_config_and_layers_in_order() {
        let blob = |c: char, size| Blob {
            digest: format!("sha256:{}", c.to_string().repeat(64)),
            size,
        };
        let cases = [
            (
                Flavor::OciPlain,
                OCI_MANIFEST,
                "application/vnd.oci.image.config.v1+json",
                "application/vnd.oci.image.layer.v1.tar",
            ),
            (
                Flavor::DockerGzip,
                DOCKER_MANIFEST,
                "application/vnd.docker.container.image.v1+json",
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
            ),
        ];
        for (i, (flavor, media, config_type, layer_type)) in cases.iter().enumerate() {
            let raw = manifest(*flavor, &blob('c', 10), &[blob('a', 1), blob('b', 2)]);
            let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
            assert_eq!(v["schemaVersion"], 2, "test[{i}]");
            assert_eq!(v["mediaType"], *media, "test[{i}]");
            assert_eq!(v["config"]["mediaType"], *config_type, "test[{i}]");
            assert_eq!(v["config"]["size"], 10, "test[{i}]");
            assert_eq!(v["layers"][0]["digest"], blob('a', 1).digest, "test[{i}]");
            assert_eq!(v["layers"][1]["size"], 2, "test[{i}]");
            assert_eq!(v["layers"][1]["mediaType"], *layer_type, "test[{i}]");
        }
    }

    #[test]
    fn qualified_names_like_docker() {
        let cases = [
            ("busybox:latest", "docker.io/library/busybox:latest"),
            ("me/app:v1", "docker.io/me/app:v1"),
            ("127.0.0.1:5000/a/b:v1", "127.0.0.1:5000/a/b:v1"),
            ("localhost/x:1", "localhost/x:1"),
            ("reg.example.com/x:1", "reg.example.com/x:1"),
        ];
        for (i, (input, want)) in cases.iter().enumerate() {
            assert_eq!(qualified(input), *want, "test[{i}]");
        }
        assert_eq!(
            split_tag("127.0.0.1:5000/a:v1"),
            Some(("127.0.0.1:5000/a", "v1"))
        );
        assert_eq!(split_tag("127.0.0.1:5000/a"), None);
    }
}
