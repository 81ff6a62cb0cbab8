//! Reading back the configdrive that the Ironic peer holds for a node, as
//! the files a booted machine would find on the `config-2` ISO.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};

use crate::peers::{Peer, parse_key_values};

/// Maximum files read from one unpacked configdrive (Ironic's builder
/// writes at most four in each of two versions), so a wrong folder cannot
/// make the walk below run long.
const MAX_FILES: usize = 64;

/// Returns the files of the configdrive stored on Ironic node `node` (name
/// or UUID), keyed by their path on the ISO without the leading slash
/// (`openstack/latest/meta_data.json`, `openstack/latest/user_data`, …).
///
/// `tests/peers/ironic configdrive` builds the ISO with Ironic's own builder
/// and unpacks it into `dir`, so the paths and contents are what a deploy
/// that uses the configdrive writes. The peer must run with
/// `IRONIC_SHOW_INSTANCE_SECRETS=1`, or the API masks the configdrive.
pub fn ironic_configdrive_files(
    ironic: &Peer,
    node: &str,
    dir: &Path,
) -> anyhow::Result<BTreeMap<String, String>> {
    let dir_arg = dir
        .to_str()
        .with_context(|| format!("{} is not UTF-8", dir.display()))?;
    let printed = parse_key_values(&ironic.run(&["configdrive", node, dir_arg])?);
    let root = printed
        .get("CONFIGDRIVE_FILES")
        .context("the ironic peer printed no CONFIGDRIVE_FILES")?;

    let mut files = BTreeMap::new();
    let mut pending = vec![Path::new(root).to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder)
            .with_context(|| format!("reading folder {}", folder.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let key = path
                .strip_prefix(root)
                .expect("the walk stays below the unpacked root")
                .to_string_lossy()
                .into_owned();
            let content = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {} as UTF-8", path.display()))?;
            files.insert(key, content);
            if files.len() > MAX_FILES {
                bail!("the configdrive in {root} has more than {MAX_FILES} files");
            }
        }
    }
    Ok(files)
}
