//! What the registry kit's front and blob host may be told to do wrong, and
//! the log of what they answered.

use std::sync::Mutex;

/// A fault the front (and the blob host behind the registry's redirects)
/// injects. `target` is a digest (`sha256:…`: a blob, or a manifest asked for
/// by that digest or answered with it in `Docker-Content-Digest`) or a tag (a
/// manifest asked for by that tag). Each fault holds until
/// [`crate::registry::Registry::clear_faults`], except `Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Flip one byte (the middle one) of `target`'s body; length and headers unchanged.
    Corrupt(String),
    /// Serve another well-formed manifest for `target` (the real one with an
    /// added annotation), keeping the registry's `Docker-Content-Digest` of
    /// the real one: a registry that serves the wrong bytes.
    WrongManifest(String),
    /// Send `target`'s body at one byte per second (a stalled mirror).
    Trickle(String),
    /// Declare `Content-Length: length` for `target`, send its real bytes (at
    /// most `length` of them) and close: a body cut short, or one shorter than declared.
    LieContentLength {
        /// The blob or manifest.
        target: String,
        /// The length declared.
        length: u64,
    },
    /// Send `extra` bytes after `target`'s real ones, counted in `Content-Length`:
    /// more than the descriptor's size.
    ExtraBytes {
        /// The blob or manifest.
        target: String,
        /// How many bytes more.
        extra: u64,
    },
    /// Leave the entries whose `platform.architecture` is this out of every
    /// image index served, with `Docker-Content-Digest` and `Content-Length`
    /// of the bytes sent: an image published without that architecture.
    DropPlatform(String),
    /// Answer `code` (with a distribution-style JSON error) to the next
    /// `times` requests for `target`, then behave.
    Status {
        /// The blob, manifest or tag.
        target: String,
        /// The status.
        code: u16,
        /// How many requests.
        times: u32,
    },
}

impl Fault {
    fn target(&self) -> Option<&str> {
        match self {
            Fault::Corrupt(t) | Fault::WrongManifest(t) | Fault::Trickle(t) => Some(t),
            Fault::LieContentLength { target, .. }
            | Fault::ExtraBytes { target, .. }
            | Fault::Status { target, .. } => Some(target),
            Fault::DropPlatform(_) => None,
        }
    }
}

/// Which of the kit's servers answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The front: the registry's API, faults applied.
    Front,
    /// The blob host the registry redirects blob downloads to.
    BlobHost,
    /// The token server.
    TokenServer,
}

/// One request as one of the kit's servers saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// Which server.
    pub via: Via,
    /// Method.
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Whether it carried an `Authorization` header.
    pub authorization: bool,
    /// The status answered.
    pub status: u16,
}

/// The faults in force and the log, shared by the kit's servers.
#[derive(Default)]
pub(crate) struct Shared {
    faults: Mutex<Vec<Fault>>,
    log: Mutex<Vec<Hit>>,
}

impl Shared {
    pub(crate) fn add(&self, fault: Fault) {
        self.faults.lock().unwrap_or_else(|e| e.into_inner()).push(fault);
    }

    pub(crate) fn clear(&self) {
        self.faults.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    pub(crate) fn record(&self, hit: Hit) {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).push(hit);
    }

    pub(crate) fn log(&self) -> Vec<Hit> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A `Status` fault for `reference` (counted down), if one is in force.
    pub(crate) fn take_status(&self, reference: &str) -> Option<u16> {
        let mut faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        let i = faults.iter().position(|f| matches!(f, Fault::Status { target, .. } if target == reference))?;
        let Fault::Status { code, times, .. } = faults[i].clone() else { return None };
        if times <= 1 {
            faults.remove(i);
        } else {
            faults[i] = Fault::Status { target: reference.to_string(), code, times: times - 1 };
        }
        Some(code)
    }

    /// The faults that apply to a body asked for as `reference` and answered
    /// with `digest` (`DropPlatform` applies to every index).
    pub(crate) fn matching(&self, reference: &str, digest: Option<&str>) -> Vec<Fault> {
        let faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        faults
            .iter()
            .filter(|f| match f.target() {
                None => true,
                Some(t) => t == reference || Some(t) == digest,
            })
            .filter(|f| !matches!(f, Fault::Status { .. }))
            .cloned()
            .collect()
    }
}
