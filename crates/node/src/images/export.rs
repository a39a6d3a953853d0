//! Which of a tenant's images leave the node, and under which names: `save` (`GET
//! /images/{name}/get`, `GET /images/get?names=..`) and `push` (`POST /images/{name}/push`).
//! Only the tenant's own tags and images are ever looked at, so another tenant's image is
//! "No such image" like one that does not exist.

use super::{normalize, Images};
use crate::{Result, RuntimeError};

/// `name:tag` -> `name`; a digest reference or a name without tag is returned as is.
fn repository(reference: &str) -> &str {
    if reference.contains('@') {
        return reference;
    }
    let slash = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[slash..].rfind(':') {
        Some(i) => &reference[..slash + i],
        None => reference,
    }
}

/// Whether the user named a tag (`a:1`, `reg:5000/a:1`), not a bare repository or ID.
fn has_tag(reference: &str) -> bool {
    !reference.contains('@') && repository(reference) != reference
}

impl Images {
    /// The images `names` denote for `tenant`, each with the tags the archive gives it, as
    /// `docker save` decides: a `name:tag` that one tag, a bare repository name every tag of
    /// that repository, an ID or digest reference none. Names of one image merge; the order is
    /// the order of first mention.
    pub fn save_items(&self, tenant: &str, names: &[String]) -> Result<Vec<image::SaveItem>> {
        let mut items: Vec<image::SaveItem> = Vec::new();
        let mut add = |id: &str, tags: Vec<String>| {
            let at = match items.iter().position(|i| i.id == id) {
                Some(at) => at,
                None => {
                    items.push(image::SaveItem {
                        id: id.to_string(),
                        repo_tags: Vec::new(),
                    });
                    items.len() - 1
                }
            };
            for t in tags {
                if !items[at].repo_tags.contains(&t) {
                    items[at].repo_tags.push(t);
                }
            }
        };
        for name in names {
            let name = name.trim();
            if name.is_empty() {
                return Err(RuntimeError::Invalid("an image name is empty".into()));
            }
            if !has_tag(name) && !name.contains('@') {
                let repo = repository(&normalize(name)).to_string();
                let mut found = false;
                for v in self.list(tenant)? {
                    let tags: Vec<String> = v
                        .tenant
                        .tags
                        .iter()
                        .filter(|t| repository(t) == repo)
                        .cloned()
                        .collect();
                    if !tags.is_empty() {
                        found = true;
                        add(&v.info.id, tags);
                    }
                }
                if found {
                    continue;
                }
            }
            let view = self.resolve(tenant, name)?;
            let tag = normalize(name);
            let tags = if view.tenant.tags.contains(&tag) {
                vec![tag]
            } else {
                Vec::new()
            };
            add(&view.info.id, tags);
        }
        Ok(items)
    }

    /// What `docker push NAME[:TAG]` sends: `(name:tag, image ID)` of the tag, or of every tag
    /// of the repository when no tag is given (`docker push --all-tags`). 404 with Docker's
    /// words when the tenant has none.
    pub fn push_targets(
        &self,
        tenant: &str,
        name: &str,
        tag: &str,
    ) -> Result<Vec<(String, String)>> {
        let missing = |what: &str| {
            RuntimeError::NotFound(format!(
                "An image does not exist locally with the tag: {what}"
            ))
        };
        if name.contains('@') {
            return Err(RuntimeError::Invalid(format!(
                "cannot push a digest reference: {name}"
            )));
        }
        let repo = repository(&normalize(name)).to_string();
        if !tag.is_empty() {
            let reference = format!("{repo}:{tag}");
            let view = self
                .resolve(tenant, &reference)
                .map_err(|_| missing(&reference))?;
            if !view.tenant.tags.contains(&reference) {
                return Err(missing(&reference));
            }
            return Ok(vec![(reference, view.info.id)]);
        }
        let mut out: Vec<(String, String)> = self
            .list(tenant)?
            .into_iter()
            .flat_map(|v| {
                let id = v.info.id.clone();
                v.tenant
                    .tags
                    .into_iter()
                    .filter(|t| repository(t) == repo)
                    .map(move |t| (t, id.clone()))
            })
            .collect();
        if out.is_empty() {
            return Err(missing(name));
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_and_tags() {
        let cases = [
            ("busybox:latest", "busybox", true),
            ("busybox", "busybox", false),
            ("127.0.0.1:5000/a/b:v1", "127.0.0.1:5000/a/b", true),
            ("127.0.0.1:5000/a/b", "127.0.0.1:5000/a/b", false),
            ("a@sha256:00", "a@sha256:00", false),
            ("0123abcd", "0123abcd", false),
        ];
        for (i, (input, repo, tagged)) in cases.iter().enumerate() {
            assert_eq!(repository(input), *repo, "test[{i}]");
            assert_eq!(has_tag(input), *tagged, "test[{i}]");
        }
    }
}
