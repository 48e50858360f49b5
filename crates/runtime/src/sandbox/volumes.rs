//! Secret, ConfigMap and emptyDir volumes as files in the pod's directory, updated in
//! place when their sources change.

use super::*;
use std::collections::BTreeMap;
use std::path::Path;

use tessera_control::{ObjectKey, Objects};
use tessera_model::kube::Pod;
use tessera_model::Resource;

/// Writes every Secret and ConfigMap volume's files (changed files replaced atomically,
/// removed keys deleted); a missing source that is not optional keeps the pod waiting.
pub(super) fn sync_volumes(objects: &Objects, pod: &Pod, root: &Path) -> Result<(), PrepareError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    for v in &pod.spec.volumes {
        let dir = root.join(&v.name);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        set_mode(&dir, 0o755)?;
        let (files, optional, what) = if let Some(s) = &v.secret {
            let key = ObjectKey::new(tessera_model::Kind::Secret, ns, &s.secret_name);
            let files = objects.get(&key).and_then(|o| match &o.resource {
                Resource::Secret(secret) => Some(select(secret.files(), &s.items)),
                _ => None,
            });
            (
                files,
                s.optional == Some(true),
                format!("secret {:?}", s.secret_name),
            )
        } else if let Some(cm) = &v.config_map {
            let key = ObjectKey::new(tessera_model::Kind::ConfigMap, ns, &cm.name);
            let files = objects.get(&key).and_then(|o| match &o.resource {
                Resource::ConfigMap(map) => Some(select(map.files(), &cm.items)),
                _ => None,
            });
            (
                files,
                cm.optional == Some(true),
                format!("configmap {:?}", cm.name),
            )
        } else {
            // emptyDir and the rest: an empty directory of the pod's own.
            (Some(BTreeMap::new()), true, String::new())
        };
        let files = match (files, optional) {
            (Some(f), _) => f,
            (None, true) => BTreeMap::new(),
            (None, false) => {
                return Err(PrepareError::Waiting(Waiting {
                    reason: "ContainerCreating".into(),
                    message: format!(
                        "MountVolume.SetUp failed for volume {:?} : {what} not found",
                        v.name
                    ),
                }))
            }
        };
        write_volume(&dir, &files)?;
    }
    Ok(())
}

pub(super) fn select(
    all: BTreeMap<String, Vec<u8>>,
    items: &[tessera_model::kube::KeyToPath],
) -> BTreeMap<String, Vec<u8>> {
    if items.is_empty() {
        return all;
    }
    items
        .iter()
        .filter_map(|i| Some((i.path.clone(), all.get(&i.key)?.clone())))
        .collect()
}

pub(super) fn write_volume(
    dir: &Path,
    files: &BTreeMap<String, Vec<u8>>,
) -> Result<(), PrepareError> {
    for (name, data) in files {
        let path = dir.join(name);
        if std::fs::read(&path).ok().as_deref() == Some(data.as_slice()) {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let tmp = dir.join(format!(".{}.tmp", name.replace('/', "_")));
        std::fs::write(&tmp, data).map_err(io(&tmp))?;
        set_mode(&tmp, 0o644)?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if e.path().is_file() && !files.contains_key(&name) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}
