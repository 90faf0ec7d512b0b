//! CA keys in a PKCS#11 token: the `[hsm]` settings turned into a `twoway-hsm` signer.

use crate::config::HsmSection;
use crate::{Error, Result};
use std::sync::Arc;
use twoway_hsm::{KeyUri, Module, PinSource, Pkcs11Signer};
use twoway_pki::{KeyType, Signer};

fn module(hsm: &HsmSection) -> Result<Module> {
    let pin = match (&hsm.pin_file, &hsm.pin_env) {
        (Some(f), _) => PinSource::File(f.into()),
        (None, Some(e)) => PinSource::Env(e.clone()),
        (None, None) => {
            return Err(Error::Hsm {
                message: "[hsm] names no PIN source: set pin_file (a file holding the user PIN, \
                          0600) or pin_env (an environment variable holding it)"
                    .into(),
                unavailable: false,
            })
        }
    };
    Ok(Module {
        path: hsm.module.clone().into(),
        pin,
    })
}

fn hsm_error(e: twoway_hsm::Error) -> Error {
    Error::Hsm {
        unavailable: e.is_unavailable(),
        message: e.to_string(),
    }
}

/// Generates the key `uri` names in its token.
pub(crate) fn generate(uri: &str, hsm: &HsmSection, key_type: KeyType) -> Result<Arc<dyn Signer>> {
    let uri: KeyUri = uri.parse().map_err(hsm_error)?;
    let m = module(hsm)?;
    let s = Pkcs11Signer::generate(&uri, &m, key_type).map_err(hsm_error)?;
    Ok(Arc::new(s))
}

/// Opens the existing key `uri` names.
pub(crate) fn open(uri: &str, hsm: &HsmSection) -> Result<Arc<dyn Signer>> {
    let uri: KeyUri = uri.parse().map_err(hsm_error)?;
    let m = module(hsm)?;
    let s = Pkcs11Signer::open(&uri, &m).map_err(hsm_error)?;
    Ok(Arc::new(s))
}

/// Destroys the key `uri` names in its token (a retired CA key).
pub(crate) fn destroy(uri: &str, hsm: &HsmSection) -> Result<usize> {
    let uri: KeyUri = uri.parse().map_err(hsm_error)?;
    let m = module(hsm)?;
    Pkcs11Signer::destroy(&uri, &m).map_err(hsm_error)
}
