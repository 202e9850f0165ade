//! NemotronV3 layouts: the HF prefix of an input (SPEC §3.1) and the check that an input is
//! not already in the layout a command produces.

use super::key::{Role, TensorKey};
use super::names::{HfPrefix, Scope};
use crate::catalog::{Catalog, TensorId};
use crate::error::{Error, LayoutEvidence, Result};
use crate::family::{Layout, meta};

/// SPEC §3.1: the one prefix of all prefixed names (`mtp.` aside); a mix is refused.
pub fn detect_prefix(catalog: &Catalog) -> Result<HfPrefix> {
    let mut first: Option<(HfPrefix, TensorId)> = None;
    for (id, t) in catalog.iter() {
        let Some(p) = HfPrefix::of(&t.name) else {
            continue;
        };
        match first {
            None => first = Some((p, id)),
            Some((q, other)) if q != p => {
                return Err(Error::MixedPrefix {
                    path: catalog.path_of(id).to_path_buf(),
                    tensor: t.name.clone(),
                    prefix: p.text().to_string(),
                    other: catalog.tensor(other).name.clone(),
                    other_prefix: q.text().to_string(),
                });
            }
            Some(_) => {}
        }
    }
    Ok(first.map_or(HfPrefix::Backbone, |(p, _)| p))
}

/// Refuses an input that is already in the layout the command produces.
pub fn check_layout(catalog: &Catalog, keys: &[TensorKey], expected: Layout) -> Result<()> {
    let recorded = meta::recorded_layout(catalog.metadata());
    let tensors = || catalog.tensors.iter().zip(keys);
    let looks_internal = || {
        tensors()
            .find(|(_, key)| {
                matches!(
                    key.role,
                    Role::MergedExperts(_) | Role::Fp32Param { internal: true }
                )
            })
            .map(|(t, _)| t)
    };
    let looks_hf = || {
        tensors()
            .find(|(_, key)| {
                key.prefix == Some(HfPrefix::Backbone)
                    || matches!(&key.role, Role::RoutedExpert(e) if e.param == "weight" && e.scope != Scope::Mtp)
            })
            .map(|(t, _)| t)
    };
    let found = match expected {
        Layout::Hf => (recorded == Some(Layout::Internal))
            .then_some(LayoutEvidence::MarkedInternal)
            .or_else(|| looks_internal().map(|t| LayoutEvidence::InternalTensor(t.name.clone()))),
        Layout::Internal => (recorded == Some(Layout::Hf))
            .then_some(LayoutEvidence::MarkedHf)
            .or_else(|| looks_hf().map(|t| LayoutEvidence::HfTensor(t.name.clone()))),
    };
    match found {
        Some(found) => {
            let command = if expected == Layout::Hf {
                "to-hf"
            } else {
                "from-hf"
            };
            Err(Error::WrongLayout {
                path: catalog.dir.clone(),
                found,
                command,
            })
        }
        None => Ok(()),
    }
}
