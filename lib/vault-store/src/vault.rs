//! The vault: create, open, save, change passphrase, close over two A/B slots on a block device.
//! A save writes the slot not holding the newest good copy, flushes, and only then switches to it.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use platform_api::Entropy;
use zeroize::Zeroizing;

use crate::device::BlockDevice;
use crate::error::{Part, VaultError};
use crate::header::{
    body_key, checksum, ct_eq, header_mac, Header, HeaderError, Wrap, BODY_AD_END, HEADER_LEN,
    NONCE_LEN, SALT_LEN, WRAP_AD_END,
};
use crate::kdf::{KdfLimits, KdfParams, KEY_LEN};
use crate::records::Records;

/// Largest body a slot holds whatever the device size, so reads stay bounded.
pub const MAX_BODY_LEN: usize = 16 * 1024 * 1024;
/// Largest sector size accepted.
pub const MAX_SECTOR_SIZE: usize = 64 * 1024;

/// One of the two copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Sectors `0 .. sectors/2`.
    A,
    /// Sectors `sectors/2 .. 2*(sectors/2)`.
    B,
}

impl Slot {
    fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
}

/// What open found in the slot it did not use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotStatus {
    /// No vault magic.
    Empty,
    /// A good older copy with this sequence number.
    Older(u64),
    /// Magic present but unreadable (torn write, bit rot, unknown version) or a save into it failed.
    Damaged,
}

#[derive(Clone, Copy)]
struct Geometry {
    sector_size: usize,
    slot_sectors: u64,
    capacity: usize,
}

impl Geometry {
    fn of(dev: &impl BlockDevice) -> Result<Self, VaultError> {
        let ss = dev.sector_size();
        if !ss.is_power_of_two() || !(HEADER_LEN..=MAX_SECTOR_SIZE).contains(&ss) {
            return Err(VaultError::BadGeometry);
        }
        let slot_sectors = dev.sectors() / 2;
        if slot_sectors == 0 {
            return Err(VaultError::BadGeometry);
        }
        let slot_bytes = usize::try_from(slot_sectors)
            .ok()
            .and_then(|s| s.checked_mul(ss))
            .unwrap_or(usize::MAX);
        Ok(Geometry {
            sector_size: ss,
            slot_sectors,
            capacity: (slot_bytes - HEADER_LEN).min(MAX_BODY_LEN),
        })
    }

    fn lba(&self, slot: Slot) -> u64 {
        match slot {
            Slot::A => 0,
            Slot::B => self.slot_sectors,
        }
    }

    /// Bytes of whole sectors holding `len` bytes.
    fn round_up(&self, len: usize) -> usize {
        len.div_ceil(self.sector_size) * self.sector_size
    }
}

/// A slot that passed parsing and its checksum.
struct Image {
    header: Header,
    header_bytes: [u8; HEADER_LEN],
    body: Vec<u8>,
}

enum SlotRead {
    Good(Box<Image>),
    Empty,
    Damaged(Option<u16>),
}

fn read_slot(
    dev: &mut impl BlockDevice,
    geo: &Geometry,
    slot: Slot,
) -> Result<SlotRead, VaultError> {
    let lba = geo.lba(slot);
    let mut first = vec![0u8; geo.sector_size];
    dev.read(lba, &mut first)?;
    let Some(header_bytes) = first
        .get(..HEADER_LEN)
        .and_then(|h| <[u8; HEADER_LEN]>::try_from(h).ok())
    else {
        return Ok(SlotRead::Damaged(None));
    };
    let header = match Header::parse(&header_bytes) {
        Ok(h) => h,
        Err(HeaderError::NoMagic) => return Ok(SlotRead::Empty),
        Err(HeaderError::Version(v)) => return Ok(SlotRead::Damaged(Some(v))),
        Err(HeaderError::Malformed) => return Ok(SlotRead::Damaged(None)),
    };
    // The declared length is checked against the slot before anything is allocated for it.
    let body_len = header.body_len as usize;
    if body_len > geo.capacity {
        return Ok(SlotRead::Damaged(None));
    }
    let total = geo.round_up(HEADER_LEN + body_len);
    let mut all = first;
    if total > geo.sector_size {
        all.resize(total, 0);
        dev.read(lba + 1, all.get_mut(geo.sector_size..).unwrap_or_default())?;
    }
    let body = all
        .get(HEADER_LEN..HEADER_LEN + body_len)
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    let good = ct_eq(&checksum(&header_bytes, &body), &header.checksum);
    // Under cargo fuzz the checksum is computed but not enforced, so mutated slots reach the KDF and AEAD paths.
    if !good && !cfg!(fuzzing) {
        return Ok(SlotRead::Damaged(None));
    }
    Ok(SlotRead::Good(Box::new(Image {
        header,
        header_bytes,
        body,
    })))
}

fn nonce<E: Entropy + ?Sized>(entropy: &mut E) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    entropy.fill(&mut n);
    n
}

fn wrap_ad(wrap: &Wrap) -> [u8; WRAP_AD_END] {
    let h = Header {
        wrap: *wrap,
        sequence: 0,
        body_len: 0,
        body_nonce: [0; NONCE_LEN],
        body_tag: [0; 16],
        mac: [0; 32],
        checksum: [0; 32],
    }
    .encode();
    let mut ad = [0u8; WRAP_AD_END];
    ad.copy_from_slice(&h[..WRAP_AD_END]);
    ad
}

/// Wraps `data_key` under a key derived from `passphrase` with fresh salt and nonce.
fn wrap_key<E: Entropy + ?Sized>(
    data_key: &[u8; KEY_LEN],
    passphrase: &[u8],
    kdf: KdfParams,
    entropy: &mut E,
) -> Result<Wrap, VaultError> {
    let mut salt = [0u8; SALT_LEN];
    entropy.fill(&mut salt);
    let mut wrap = Wrap {
        kdf,
        salt,
        nonce: nonce(entropy),
        wrapped_key: [0; KEY_LEN],
        tag: [0; 16],
    };
    let kek = kdf.derive(passphrase, &salt)?;
    // Encrypted in a zeroizing copy, so the plain key never sits in the plain `Wrap`.
    let mut key = Zeroizing::new(*data_key);
    let tag = XChaCha20Poly1305::new(kek.as_ref().into())
        .encrypt_in_place_detached(
            XNonce::from_slice(&wrap.nonce),
            &wrap_ad(&wrap),
            key.as_mut(),
        )
        .map_err(|_| VaultError::KdfRefused)?;
    wrap.wrapped_key = *key;
    wrap.tag = tag.into();
    Ok(wrap)
}

/// Opens the wrapped key; a failing tag means the passphrase (or the KDF fields) is wrong.
fn unwrap_key(wrap: &Wrap, passphrase: &[u8]) -> Result<Zeroizing<[u8; KEY_LEN]>, VaultError> {
    let kek = wrap.kdf.derive(passphrase, &wrap.salt)?;
    let mut key = Zeroizing::new(wrap.wrapped_key);
    XChaCha20Poly1305::new(kek.as_ref().into())
        .decrypt_in_place_detached(
            XNonce::from_slice(&wrap.nonce),
            &wrap_ad(wrap),
            key.as_mut(),
            (&wrap.tag).into(),
        )
        .map_err(|_| VaultError::WrongPassphrase)?;
    Ok(key)
}

/// The encrypted body as last written, kept so a passphrase change can copy it unchanged.
struct Sealed {
    nonce: [u8; NONCE_LEN],
    tag: [u8; 16],
    ciphertext: Vec<u8>,
}

/// An open vault's state without its device, to move it from a borrowed device to an owned one.
struct Parts {
    geo: Geometry,
    data_key: Zeroizing<[u8; KEY_LEN]>,
    wrap: Wrap,
    current: Slot,
    sequence: u64,
    other: SlotStatus,
    sealed: Sealed,
    records: Records,
}

impl Parts {
    fn attach<D: BlockDevice>(self, dev: D) -> Vault<D> {
        Vault {
            dev,
            geo: self.geo,
            data_key: self.data_key,
            wrap: self.wrap,
            current: self.current,
            sequence: self.sequence,
            other: self.other,
            sealed: self.sealed,
            records: self.records,
        }
    }
}

/// An open vault: the records in memory, the data key, and which slot holds the newest copy.
pub struct Vault<D: BlockDevice> {
    dev: D,
    geo: Geometry,
    data_key: Zeroizing<[u8; KEY_LEN]>,
    wrap: Wrap,
    current: Slot,
    sequence: u64,
    other: SlotStatus,
    sealed: Sealed,
    records: Records,
}

impl<D: BlockDevice> fmt::Debug for Vault<D> {
    // Keys and records stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("current", &self.current)
            .field("sequence", &self.sequence)
            .field("other", &self.other)
            .field("kdf", &self.wrap.kdf)
            .field("records", &self.records.len())
            .finish_non_exhaustive()
    }
}

impl<D: BlockDevice> Vault<D> {
    /// Formats `dev` with an empty vault under `passphrase` (slot A, sequence 1; slot B wiped first).
    pub fn create<E: Entropy + ?Sized>(
        mut dev: D,
        passphrase: &[u8],
        kdf: KdfParams,
        entropy: &mut E,
    ) -> Result<Self, VaultError> {
        let geo = Geometry::of(&dev)?;
        let mut data_key = Zeroizing::new([0u8; KEY_LEN]);
        entropy.fill(data_key.as_mut());
        let wrap = wrap_key(&data_key, passphrase, kdf, entropy)?;
        // A stale vault in slot B with a higher sequence must not win over the new one.
        dev.write(geo.lba(Slot::B), &vec![0u8; geo.sector_size])?;
        let mut vault = Vault {
            dev,
            geo,
            data_key,
            wrap,
            // Pretend B is current so the first save lands in A.
            current: Slot::B,
            sequence: 0,
            other: SlotStatus::Empty,
            sealed: Sealed {
                nonce: [0; NONCE_LEN],
                tag: [0; 16],
                ciphertext: Vec::new(),
            },
            records: Records::new(),
        };
        vault.save(entropy)?;
        vault.other = SlotStatus::Empty;
        Ok(vault)
    }

    /// Opens the newest good copy with the default KDF limits. Pass `&mut dev` to keep the device
    /// after a failure (e.g. to retry a wrong passphrase). One open vault per device at a time.
    pub fn open(dev: D, passphrase: &[u8]) -> Result<Self, VaultError> {
        Self::open_with_limits(dev, passphrase, KdfLimits::default())
    }

    /// Opens the newest slot that passes its checksum; an authentication failure there is reported,
    /// never papered over by falling back to the older copy.
    pub fn open_with_limits(
        mut dev: D,
        passphrase: &[u8],
        limits: KdfLimits,
    ) -> Result<Self, VaultError> {
        let geo = Geometry::of(&dev)?;
        let a = read_slot(&mut dev, &geo, Slot::A)?;
        let b = read_slot(&mut dev, &geo, Slot::B)?;
        let (slot, image, other) = match (a, b) {
            (SlotRead::Good(a), SlotRead::Good(b)) if b.header.sequence > a.header.sequence => {
                let seq = a.header.sequence;
                (Slot::B, b, SlotStatus::Older(seq))
            }
            (SlotRead::Good(a), SlotRead::Good(b)) => {
                let seq = b.header.sequence;
                (Slot::A, a, SlotStatus::Older(seq))
            }
            (SlotRead::Good(a), b) => (Slot::A, a, status(&b)),
            (a, SlotRead::Good(b)) => (Slot::B, b, status(&a)),
            (a, b) => return Err(nothing_good(&a, &b)),
        };
        let Image {
            header,
            header_bytes,
            body,
        } = *image;
        if !limits.allows(header.wrap.kdf) {
            return Err(VaultError::KdfRefused);
        }
        let data_key = unwrap_key(&header.wrap, passphrase)?;
        if !ct_eq(&header_mac(&data_key, &header_bytes), &header.mac) {
            return Err(VaultError::Tampered(Part::Header));
        }
        let mut plain = Zeroizing::new(body.clone());
        XChaCha20Poly1305::new(body_key(&data_key).as_ref().into())
            .decrypt_in_place_detached(
                XNonce::from_slice(&header.body_nonce),
                &header_bytes[..BODY_AD_END],
                plain.as_mut_slice(),
                (&header.body_tag).into(),
            )
            .map_err(|_| VaultError::Tampered(Part::Body))?;
        let records = Records::decode(&plain).map_err(VaultError::BadRecords)?;
        Ok(Vault {
            dev,
            geo,
            data_key,
            wrap: header.wrap,
            current: slot,
            sequence: header.sequence,
            other,
            sealed: Sealed {
                nonce: header.body_nonce,
                tag: header.body_tag,
                ciphertext: body,
            },
            records,
        })
    }

    /// Like [`Vault::open_with_limits`], but a failure hands the device back with the error,
    /// so a caller that owns its device can retry (a wrong passphrase) without reopening it.
    pub fn try_open(
        mut dev: D,
        passphrase: &[u8],
        limits: KdfLimits,
    ) -> Result<Self, (VaultError, D)> {
        match Vault::open_with_limits(&mut dev, passphrase, limits) {
            Ok(v) => {
                let parts = v.into_parts();
                Ok(parts.attach(dev))
            }
            Err(e) => Err((e, dev)),
        }
    }

    /// Like [`Vault::create`], but a failure hands the device back with the error.
    pub fn try_create<E: Entropy + ?Sized>(
        mut dev: D,
        passphrase: &[u8],
        kdf: KdfParams,
        entropy: &mut E,
    ) -> Result<Self, (VaultError, D)> {
        match Vault::create(&mut dev, passphrase, kdf, entropy) {
            Ok(v) => {
                let parts = v.into_parts();
                Ok(parts.attach(dev))
            }
            Err(e) => Err((e, dev)),
        }
    }

    fn into_parts(self) -> Parts {
        let Vault {
            dev: _,
            geo,
            data_key,
            wrap,
            current,
            sequence,
            other,
            sealed,
            records,
        } = self;
        Parts {
            geo,
            data_key,
            wrap,
            current,
            sequence,
            other,
            sealed,
            records,
        }
    }

    /// Checks `passphrase` against the open vault (runs the KDF once); nothing is written.
    pub fn verify_passphrase(&self, passphrase: &[u8]) -> Result<(), VaultError> {
        let key = unwrap_key(&self.wrap, passphrase)?;
        if ct_eq(key.as_ref(), self.data_key.as_ref()) {
            Ok(())
        } else {
            Err(VaultError::WrongPassphrase)
        }
    }

    /// The records as last opened or changed (not necessarily saved).
    pub fn records(&self) -> &Records {
        &self.records
    }

    /// The records, to change before `save`.
    pub fn records_mut(&mut self) -> &mut Records {
        &mut self.records
    }

    /// Sequence number of the newest copy on the device.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// The slot holding the newest copy.
    pub fn current_slot(&self) -> Slot {
        self.current
    }

    /// What the other slot held at open (or after the last save).
    pub fn other_slot(&self) -> SlotStatus {
        self.other
    }

    /// Bytes of encrypted body a slot holds (`Records::encoded_len` must fit).
    pub fn capacity(&self) -> usize {
        self.geo.capacity
    }

    /// The KDF parameters the passphrase is currently wrapped with.
    pub fn kdf_params(&self) -> KdfParams {
        self.wrap.kdf
    }

    /// Encrypts the records under a fresh nonce and writes them as the new newest copy.
    /// `Full` is returned before anything is written; after any error the previous copy is still
    /// the newest good one on the device and the in-memory records are kept, so a retry is safe.
    pub fn save<E: Entropy + ?Sized>(&mut self, entropy: &mut E) -> Result<(), VaultError> {
        let mut body = self.records.encode();
        if body.len() > self.geo.capacity {
            return Err(VaultError::Full {
                needed: body.len(),
                capacity: self.geo.capacity,
            });
        }
        let body_nonce = nonce(entropy);
        let mut ad = [0u8; BODY_AD_END];
        ad[..8].copy_from_slice(&crate::header::MAGIC);
        ad[8..].copy_from_slice(&crate::header::VERSION.to_le_bytes());
        let tag = XChaCha20Poly1305::new(body_key(&self.data_key).as_ref().into())
            .encrypt_in_place_detached(XNonce::from_slice(&body_nonce), &ad, body.as_mut_slice())
            .map_err(|_| VaultError::Full {
                needed: body.len(),
                capacity: self.geo.capacity,
            })?;
        let sealed = Sealed {
            nonce: body_nonce,
            tag: tag.into(),
            ciphertext: body.to_vec(),
        };
        let wrap = self.wrap;
        self.write_next(wrap, sealed)
    }

    /// Re-wraps the data key under `new_passphrase` (fresh salt) and writes the last saved body
    /// unchanged beside it: the body is not re-encrypted. Unsaved record changes stay unsaved.
    pub fn change_passphrase<E: Entropy + ?Sized>(
        &mut self,
        new_passphrase: &[u8],
        kdf: KdfParams,
        entropy: &mut E,
    ) -> Result<(), VaultError> {
        let wrap = wrap_key(&self.data_key, new_passphrase, kdf, entropy)?;
        let sealed = Sealed {
            nonce: self.sealed.nonce,
            tag: self.sealed.tag,
            ciphertext: self.sealed.ciphertext.clone(),
        };
        self.write_next(wrap, sealed)
    }

    /// Ends the session: keys and records are zeroized, the device is handed back.
    pub fn close(self) -> D {
        self.dev
    }

    /// Writes a complete slot image into the slot not holding the newest copy, flushes, then
    /// switches to it. On any failure the newest copy stays where it was.
    fn write_next(&mut self, wrap: Wrap, sealed: Sealed) -> Result<(), VaultError> {
        let sequence = self
            .sequence
            .checked_add(1)
            .ok_or(VaultError::SequenceExhausted)?;
        let body_len = sealed.ciphertext.len();
        if body_len > self.geo.capacity {
            return Err(VaultError::Full {
                needed: body_len,
                capacity: self.geo.capacity,
            });
        }
        let mut header = Header {
            wrap,
            sequence,
            body_len: u32::try_from(body_len).map_err(|_| VaultError::Full {
                needed: body_len,
                capacity: self.geo.capacity,
            })?,
            body_nonce: sealed.nonce,
            body_tag: sealed.tag,
            mac: [0; 32],
            checksum: [0; 32],
        };
        header.mac = header_mac(&self.data_key, &header.encode());
        header.checksum = checksum(&header.encode(), &sealed.ciphertext);
        let mut image = vec![0u8; self.geo.round_up(HEADER_LEN + body_len)];
        image[..HEADER_LEN].copy_from_slice(&header.encode());
        image[HEADER_LEN..HEADER_LEN + body_len].copy_from_slice(&sealed.ciphertext);

        let target = self.current.other();
        let lba = self.geo.lba(target);
        let ss = self.geo.sector_size;
        // Body sectors first, header sector last: a torn save most often leaves no magic-bearing
        // header at all; the checksum catches every other ordering the device may apply.
        let result = (|| {
            if image.len() > ss {
                self.dev.write(lba + 1, &image[ss..])?;
            }
            self.dev.write(lba, &image[..ss])?;
            self.dev.flush()
        })();
        if let Err(e) = result {
            self.other = SlotStatus::Damaged;
            return Err(e.into());
        }
        self.other = SlotStatus::Older(self.sequence);
        self.current = target;
        self.sequence = sequence;
        self.wrap = wrap;
        self.sealed = sealed;
        Ok(())
    }
}

fn status(r: &SlotRead) -> SlotStatus {
    match r {
        SlotRead::Empty => SlotStatus::Empty,
        SlotRead::Good(i) => SlotStatus::Older(i.header.sequence),
        SlotRead::Damaged(_) => SlotStatus::Damaged,
    }
}

fn nothing_good(a: &SlotRead, b: &SlotRead) -> VaultError {
    match (a, b) {
        (SlotRead::Damaged(Some(v)), _) | (_, SlotRead::Damaged(Some(v))) => {
            VaultError::UnsupportedVersion(*v)
        }
        (SlotRead::Damaged(None), _) | (_, SlotRead::Damaged(None)) => VaultError::Corrupt,
        _ => VaultError::NotFormatted,
    }
}
