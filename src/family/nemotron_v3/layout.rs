//! NemotronV3 layouts: the HF prefix of an input (SPEC §3.1) and the check that an input is
//! not already in the layout a command produces.

use super::names::{ExpertName, HfPrefix, MergedName};
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
pub fn check_layout(catalog: &Catalog, expected: Layout) -> Result<()> {
    let recorded = meta::recorded_layout(catalog.metadata());
    let looks_internal = || {
        catalog
            .tensors
            .iter()
            .find(|t| MergedName::parse(&t.name).is_some() || t.name.contains("._fp32_params."))
    };
    let looks_hf = || {
        catalog.tensors.iter().find(|t| {
            HfPrefix::of(&t.name) == Some(HfPrefix::Backbone)
                || ExpertName::parse(&t.name)
                    .is_some_and(|e| e.param == "weight" && e.scope != "mtp.")
        })
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
