//! Fixtures shared by the fuzz targets: a fixed master key, an in-memory
//! store, and the otpd.v1 service on it, called as the daemon calls it.
//!
//! Nothing here is a parser: each target hands the fuzzer's bytes to one
//! library function of otpd or pam_otpd.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Arc, Mutex, OnceLock};

use otpd::authz::Authz;
use otpd::authz::Peer;
use otpd::backup_codes::BackupCodeSet;
use otpd::crypto::MasterKey;
use otpd::device::{Device, DeviceName};
use otpd::engine::{Engine, EngineConfig};
use otpd::kdf::{Fresh, KdfParams};
use otpd::record::{Pending, UserName, UserRecord};
use otpd::secret::TotpSecret;
use otpd::service::OtpdService;
use otpd::store::Store;
use otpd::totp::TotpParams;
use otpd::{Error, ManualClock};
use otpd_proto::v1 as pb;
use pb::otpd_server::Otpd;
use prost::Message;

/// The fixed master key (32 bytes of 0x42), so that checked-in seeds of
/// the `sealed_record` target are real sealed records.
pub const KEY_BYTES: [u8; 32] = [0x42; 32];

/// The user every sealed seed is sealed for.
pub const USER: &str = "alice";

/// The clock of the service fixture: a 30-second step boundary.
pub const T0: u64 = 1_800_000_000;

/// The TOTP secret of `alice` in the service fixture (the RFC 6238 SHA-1
/// test key), so that seeds can carry a code that is accepted at `T0`.
pub const ALICE_SECRET: &[u8] = b"12345678901234567890";

/// The fixed key, loaded once through the daemon's own key-file loader.
pub fn key() -> &'static MasterKey {
    static KEY: OnceLock<MasterKey> = OnceLock::new();
    KEY.get_or_init(|| load_key("key"))
}

/// `alice`, validated.
pub fn user() -> &'static UserName {
    static USER_NAME: OnceLock<UserName> = OnceLock::new();
    USER_NAME.get_or_init(|| UserName::parse(USER.as_bytes()).unwrap())
}

/// A store in memory whose contents the fixture resets before each input.
#[derive(Clone, Default)]
struct MemStore(Arc<Mutex<BTreeMap<String, Vec<u8>>>>);

impl Store for MemStore {
    fn get(&self, user: &UserName) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.0.lock().unwrap().get(user.as_str()).cloned())
    }
    fn put(&self, user: &UserName, sealed: &[u8]) -> Result<(), Error> {
        self.0
            .lock()
            .unwrap()
            .insert(user.as_str().to_owned(), sealed.to_vec());
        Ok(())
    }
    fn remove(&self, user: &UserName) -> Result<(), Error> {
        self.0.lock().unwrap().remove(user.as_str());
        Ok(())
    }
    fn update(
        &self,
        user: &UserName,
        decide: &mut dyn FnMut(Option<&[u8]>) -> Result<otpd::store::Write, Error>,
    ) -> Result<(), Error> {
        let mut records = self.0.lock().unwrap();
        match decide(records.get(user.as_str()).map(Vec::as_slice))? {
            otpd::store::Write::Keep => {}
            otpd::store::Write::Put(sealed) => {
                records.insert(user.as_str().to_owned(), sealed);
            }
            otpd::store::Write::Remove => {
                records.remove(user.as_str());
            }
        }
        Ok(())
    }
    fn list(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>, Error> {
        let records = self.0.lock().unwrap();
        let after = after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
        Ok(records
            .range::<str, _>((after, std::ops::Bound::Unbounded))
            .take(limit)
            .map(|(name, _)| name.clone())
            .collect())
    }
    fn users(&self) -> Result<Vec<String>, Error> {
        Ok(self.0.lock().unwrap().keys().cloned().collect())
    }
    fn is_empty(&self) -> Result<bool, Error> {
        Ok(self.0.lock().unwrap().is_empty())
    }
}

/// The otpd.v1 service on an in-memory store holding `alice` (active, with
/// backup codes, TOTP secret [`ALICE_SECRET`]) and `bob` (pending), called
/// by root, at [`T0`].
pub struct ServiceFixture {
    rt: tokio::runtime::Runtime,
    service: OtpdService,
    store: MemStore,
    snapshot: BTreeMap<String, Vec<u8>>,
    clock: Arc<ManualClock>,
    root: Peer,
}

impl ServiceFixture {
    fn new() -> Self {
        let store = MemStore::default();
        let clock = Arc::new(ManualClock::new(T0));
        // Production parameters, except a cheap backup-code hash: the cost
        // is not what the fuzzer is after, executions per second are.
        let cfg = EngineConfig {
            kdf: KdfParams {
                m_kib: 8,
                t: 1,
                p: 1,
            },
            ..EngineConfig::default()
        };
        let kdf = cfg.kdf;
        let engine = Engine::new(
            Box::new(store.clone()),
            load_key("engine"),
            clock.clone(),
            cfg,
        );
        let (_codes, backup) =
            BackupCodeSet::generate(kdf, &mut rand::rngs::OsRng, &Fresh).unwrap();
        let device = |since| Device {
            id: since,
            name: DeviceName::default_name(),
            secret: TotpSecret::from_bytes(ALICE_SECRET.to_vec()),
            params: TotpParams::default(),
            issuer: "otpd-fuzz".into(),
            enrolled_at: since,
            last_used_step: None,
            spent_ahead: Vec::new(),
            clock_skew_seconds: 0,
            last_used_at: None,
            kind: otpd::device::Kind::Totp,
            hotp_resync: None,
            drift_steps: 0,
            drift_streak: 0,
        };
        let alice = UserRecord {
            devices: vec![device(T0 - 3600)],
            backup_codes: Some(backup),
            ..UserRecord::new()
        };
        let bob = UserRecord {
            pending: Some(Pending {
                device: device(T0 - 60),
                adds: false,
            }),
            ..UserRecord::new()
        };
        for (name, rec) in [("alice", alice), ("bob", bob)] {
            let name = UserName::parse(name.as_bytes()).unwrap();
            store
                .put(
                    &name,
                    &rec.seal(key(), &name, &mut rand::rngs::OsRng).unwrap(),
                )
                .unwrap();
        }
        let snapshot = store.0.lock().unwrap().clone();
        let service =
            OtpdService::new(Arc::new(engine), Arc::new(Authz::new(None).unwrap())).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Real credentials of this process (root in CI): the kernel's answer
        // for a socket pair, as the daemon gets it for a connection.
        let root = rt.block_on(async {
            let (a, _b) = tokio::net::UnixStream::pair().unwrap();
            Peer::of(&a)
        });
        Self {
            rt,
            service,
            store,
            snapshot,
            clock,
            root,
        }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        req.extensions_mut().insert(self.root.clone());
        req
    }

    /// Decodes `body` as the request message of RPC number `rpc` (mod 8,
    /// in the order of otpd.proto) and runs the service's handler on it,
    /// from the fixture's initial state.
    pub fn call(&self, rpc: u8, body: &[u8]) {
        *self.store.0.lock().unwrap() = self.snapshot.clone();
        self.clock.set(T0);
        let s = &self.service;
        self.rt.block_on(async {
            // The answer does not matter; a panic or a hang would.
            macro_rules! rpc {
                ($message:ty, $handler:ident) => {
                    if let Ok(m) = <$message>::decode(body) {
                        let _ = s.$handler(self.request(m)).await;
                    }
                };
            }
            // Rekey is left out: it writes a key file, which is not what
            // this target is about (it takes no input but the call).
            match rpc % 13 {
                0 => rpc!(pb::VerifyRequest, verify),
                1 => rpc!(pb::EnrollStartRequest, enroll_start),
                2 => rpc!(pb::EnrollConfirmRequest, enroll_confirm),
                3 => rpc!(pb::GetStatusRequest, get_status),
                4 => rpc!(pb::ListUsersRequest, list_users),
                5 => rpc!(pb::RegenerateBackupCodesRequest, regenerate_backup_codes),
                6 => rpc!(pb::UnlockRequest, unlock),
                7 => rpc!(pb::RenameDeviceRequest, rename_device),
                8 => rpc!(pb::RemoveDeviceRequest, remove_device),
                9 => rpc!(pb::AddAppPasswordRequest, add_app_password),
                10 => rpc!(pb::ListAppPasswordsRequest, list_app_passwords),
                11 => rpc!(pb::RevokeAppPasswordRequest, revoke_app_password),
                _ => rpc!(pb::ResetRequest, reset),
            }
        });
    }
}

/// The fixed key, through the daemon's key-file loader (`MasterKey` is not
/// `Clone`: the engine owns a handle of its own, `tag` tells them apart).
fn load_key(tag: &str) -> MasterKey {
    let path = std::env::temp_dir().join(format!("otpd-fuzz-{}-{tag}.key", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    f.write_all(&KEY_BYTES).unwrap();
    drop(f);
    let key = otpd::keyfile::load_or_create(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    key
}

/// The service fixture, built once per process.
pub fn service() -> &'static ServiceFixture {
    static FIXTURE: OnceLock<ServiceFixture> = OnceLock::new();
    FIXTURE.get_or_init(ServiceFixture::new)
}
