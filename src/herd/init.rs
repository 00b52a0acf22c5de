//! `pollstation herd init`: a herd CA and one certificate per station
//! (subject alternative name = the station id, for both ends of a link),
//! for the technician. Run again with more stations on the same folder to
//! add them: the CA there is reused.
//!
//! Files: `ca.pem` (give to every station), `ca.key` (keep it safe: it makes
//! new members), `<station>.pem` and `<station>.key` (mode 0600) per station.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Why the certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(
        "station id {0:?} cannot name a certificate: use letters, digits, '-' and '.' (no '_')"
    )]
    BadId(String),
    #[error("{} exists already: a station's key is made once (remove it to make a new one)", .0.display())]
    Exists(PathBuf),
    #[error("cannot write {}: {error}", path.display())]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot read the CA in {}: {error}", path.display())]
    Ca { path: PathBuf, error: String },
    #[error("cannot make a certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// What `init` made.
#[derive(Debug)]
pub struct Made {
    pub ca_created: bool,
    pub stations: Vec<String>,
}

pub use crate::domain::herd::certifiable;

fn write(path: &Path, text: &str, private: bool) -> Result<(), InitError> {
    let result = if private {
        crate::sys::fs::create_private(path).and_then(|mut f| f.write_all(text.as_bytes()))
    } else {
        std::fs::write(path, text)
    };
    result.map_err(|error| InitError::Write {
        path: path.to_path_buf(),
        error,
    })
}

/// Make (or reuse) the herd CA in `out` and a certificate for each station.
pub fn init(herd: &str, stations: &[String], out: &Path) -> Result<Made, InitError> {
    for s in stations {
        if !certifiable(s) {
            return Err(InitError::BadId(s.clone()));
        }
        for ext in ["pem", "key"] {
            let p = out.join(format!("{s}.{ext}"));
            if p.exists() {
                return Err(InitError::Exists(p));
            }
        }
    }
    std::fs::create_dir_all(out).map_err(|error| InitError::Write {
        path: out.to_path_buf(),
        error,
    })?;
    let (ca_pem, ca_key) = (out.join("ca.pem"), out.join("ca.key"));
    let ca_created = !ca_pem.exists();
    let issuer = if ca_created {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params
            .distinguished_name
            .push(DnType::CommonName, format!("pollstation herd {herd}"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        write(&ca_key, &key.serialize_pem(), true)?;
        write(&ca_pem, &cert.pem(), false)?;
        Issuer::new(params, key)
    } else {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| InitError::Ca {
                path: p.to_path_buf(),
                error: e.to_string(),
            })
        };
        let key = KeyPair::from_pem(&read(&ca_key)?).map_err(|e| InitError::Ca {
            path: ca_key.clone(),
            error: e.to_string(),
        })?;
        Issuer::from_ca_cert_pem(&read(&ca_pem)?, key).map_err(|e| InitError::Ca {
            path: ca_pem.clone(),
            error: e.to_string(),
        })?
    };
    for s in stations {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![s.clone()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, s.clone());
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &issuer)?;
        write(&out.join(format!("{s}.key")), &key.serialize_pem(), true)?;
        write(&out.join(format!("{s}.pem")), &cert.pem(), false)?;
    }
    Ok(Made {
        ca_created,
        stations: stations.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_a_ca_and_station_certificates_that_name_their_station() {
        let t = tempfile::tempdir().unwrap();
        let made = init("expo", &["hall-a".into(), "hall-b".into()], t.path()).unwrap();
        assert!(made.ca_created);
        let pem = std::fs::read(t.path().join("hall-a.pem")).unwrap();
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
        assert_eq!(super::super::tls::names(&der), ["hall-a"]);
        crate::sys::secret::check_private(&t.path().join("hall-a.key")).unwrap();
        crate::sys::secret::check_private(&t.path().join("ca.key")).unwrap();
        // Again with one more: the CA is reused, the old ones are kept.
        let ca = std::fs::read(t.path().join("ca.pem")).unwrap();
        let made = init("expo", &["hall-c".into()], t.path()).unwrap();
        assert!(!made.ca_created);
        assert_eq!(std::fs::read(t.path().join("ca.pem")).unwrap(), ca);
        assert!(matches!(
            init("expo", &["hall-a".into()], t.path()),
            Err(InitError::Exists(_))
        ));
        assert!(matches!(
            init("expo", &["hall_a".into()], t.path()),
            Err(InitError::BadId(_))
        ));
    }
}
