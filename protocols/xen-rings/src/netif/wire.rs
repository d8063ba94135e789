//! netif.h ring entries as plain values: TX/RX requests and responses, extra-info slots.
//! Every bit pattern parses (fixed sizes, no lengths); the machines validate the values.

use platform_api::GrantRef;

/// `NETTXF_csum_blank`: the packet's checksum is not yet computed.
pub const NETTXF_CSUM_BLANK: u16 = 1;
/// `NETTXF_data_validated`: the checksum was validated.
pub const NETTXF_DATA_VALIDATED: u16 = 2;
/// `NETTXF_more_data`: another slot of this packet follows.
pub const NETTXF_MORE_DATA: u16 = 4;
/// `NETTXF_extra_info`: the next slot is a [`ExtraInfo`].
pub const NETTXF_EXTRA_INFO: u16 = 8;

/// `NETRXF_data_validated`.
pub const NETRXF_DATA_VALIDATED: u16 = 1;
/// `NETRXF_csum_blank`.
pub const NETRXF_CSUM_BLANK: u16 = 2;
/// `NETRXF_more_data`: another slot of this packet follows.
pub const NETRXF_MORE_DATA: u16 = 4;
/// `NETRXF_extra_info`: the next slot is a [`ExtraInfo`].
pub const NETRXF_EXTRA_INFO: u16 = 8;
/// `NETRXF_gso_prefix`.
pub const NETRXF_GSO_PREFIX: u16 = 16;

/// `NETIF_RSP_DROPPED`.
pub const NETIF_RSP_DROPPED: i16 = -2;
/// `NETIF_RSP_ERROR`.
pub const NETIF_RSP_ERROR: i16 = -1;
/// `NETIF_RSP_OKAY`.
pub const NETIF_RSP_OKAY: i16 = 0;
/// `NETIF_RSP_NULL`: the answer to an extra-info slot.
pub const NETIF_RSP_NULL: i16 = 1;

/// `XEN_NETIF_NR_SLOTS_MIN`: slots per packet every backend must accept.
pub const NR_SLOTS_MIN: usize = 18;
/// `XEN_NETIF_MAX_TX_SIZE`.
pub const MAX_TX_SIZE: usize = 65535;

/// `XEN_NETIF_EXTRA_TYPE_GSO`.
pub const EXTRA_TYPE_GSO: u8 = 1;
/// `XEN_NETIF_EXTRA_TYPE_MCAST_ADD`.
pub const EXTRA_TYPE_MCAST_ADD: u8 = 2;
/// `XEN_NETIF_EXTRA_TYPE_MCAST_DEL`.
pub const EXTRA_TYPE_MCAST_DEL: u8 = 3;
/// `XEN_NETIF_EXTRA_TYPE_HASH`.
pub const EXTRA_TYPE_HASH: u8 = 4;
/// `XEN_NETIF_EXTRA_TYPE_MAX`: types are `1..MAX`.
pub const EXTRA_TYPE_MAX: u8 = 5;
/// `XEN_NETIF_EXTRA_FLAG_MORE`: another extra-info slot follows.
pub const EXTRA_FLAG_MORE: u8 = 1;
/// `XEN_NETIF_GSO_TYPE_TCPV4`.
pub const GSO_TYPE_TCPV4: u8 = 1;
/// `XEN_NETIF_GSO_TYPE_TCPV6`.
pub const GSO_TYPE_TCPV6: u8 = 2;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// `struct netif_tx_request` (12 bytes), netif.h \[X\].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxRequest {
    /// Grant of the page holding this slot's data.
    pub gref: GrantRef,
    /// Offset of the data in that page.
    pub offset: u16,
    /// `NETTXF_*`.
    pub flags: u16,
    /// Echoed in the response.
    pub id: u16,
    /// First slot: the whole packet's size; later slots: this slot's bytes.
    pub size: u16,
}

impl TxRequest {
    /// Bytes on the wire.
    pub const SIZE: usize = 12;

    /// Decodes the 12 bytes of one slot.
    pub fn parse(b: &[u8; Self::SIZE]) -> Self {
        Self {
            gref: GrantRef(u32_at(b, 0)),
            offset: u16_at(b, 4),
            flags: u16_at(b, 6),
            id: u16_at(b, 8),
            size: u16_at(b, 10),
        }
    }

    /// Encodes into 12 bytes.
    pub fn emit(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..4].copy_from_slice(&self.gref.0.to_le_bytes());
        b[4..6].copy_from_slice(&self.offset.to_le_bytes());
        b[6..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..10].copy_from_slice(&self.id.to_le_bytes());
        b[10..12].copy_from_slice(&self.size.to_le_bytes());
        b
    }
}

/// `struct netif_tx_response` (4 bytes), netif.h \[X\].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TxResponse {
    /// The request's id.
    pub id: u16,
    /// `NETIF_RSP_*`.
    pub status: i16,
}

impl TxResponse {
    /// Bytes on the wire.
    pub const SIZE: usize = 4;

    /// Decodes 4 bytes.
    pub fn parse(b: &[u8; Self::SIZE]) -> Self {
        Self {
            id: u16_at(b, 0),
            status: u16_at(b, 2) as i16,
        }
    }

    /// Encodes into 4 bytes.
    pub fn emit(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..2].copy_from_slice(&self.id.to_le_bytes());
        b[2..4].copy_from_slice(&self.status.to_le_bytes());
        b
    }
}

/// `struct netif_rx_request` (8 bytes): an empty page the backend may fill, netif.h \[X\].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxRequest {
    /// Echoed in the response.
    pub id: u16,
    /// Grant of the page to fill.
    pub gref: GrantRef,
}

impl RxRequest {
    /// Bytes on the wire.
    pub const SIZE: usize = 8;

    /// Decodes 8 bytes (the pad is ignored).
    pub fn parse(b: &[u8; Self::SIZE]) -> Self {
        Self {
            id: u16_at(b, 0),
            gref: GrantRef(u32_at(b, 4)),
        }
    }

    /// Encodes into 8 bytes with a zero pad.
    pub fn emit(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..2].copy_from_slice(&self.id.to_le_bytes());
        b[4..8].copy_from_slice(&self.gref.0.to_le_bytes());
        b
    }
}

/// `struct netif_rx_response` (8 bytes), netif.h \[X\].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RxResponse {
    /// The request's id.
    pub id: u16,
    /// Offset of the data in the page.
    pub offset: u16,
    /// `NETRXF_*`.
    pub flags: u16,
    /// Bytes in this slot when `>= 0`, else `NETIF_RSP_*`.
    pub status: i16,
}

impl RxResponse {
    /// Bytes on the wire.
    pub const SIZE: usize = 8;

    /// Decodes 8 bytes.
    pub fn parse(b: &[u8; Self::SIZE]) -> Self {
        Self {
            id: u16_at(b, 0),
            offset: u16_at(b, 2),
            flags: u16_at(b, 4),
            status: u16_at(b, 6) as i16,
        }
    }

    /// Encodes into 8 bytes.
    pub fn emit(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..2].copy_from_slice(&self.id.to_le_bytes());
        b[2..4].copy_from_slice(&self.offset.to_le_bytes());
        b[4..6].copy_from_slice(&self.flags.to_le_bytes());
        b[6..8].copy_from_slice(&self.status.to_le_bytes());
        b
    }
}

/// The body of a `struct netif_extra_info`, by type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extra {
    /// `XEN_NETIF_EXTRA_TYPE_GSO`.
    Gso {
        /// MSS.
        size: u16,
        /// `XEN_NETIF_GSO_TYPE_*`.
        gso_type: u8,
        /// `features` (none defined).
        features: u16,
    },
    /// `XEN_NETIF_EXTRA_TYPE_MCAST_ADD`.
    McastAdd([u8; 6]),
    /// `XEN_NETIF_EXTRA_TYPE_MCAST_DEL`.
    McastDel([u8; 6]),
    /// `XEN_NETIF_EXTRA_TYPE_HASH`.
    Hash {
        /// `_XEN_NETIF_CTRL_HASH_TYPE_*`.
        hash_type: u8,
        /// `XEN_NETIF_CTRL_HASH_ALGORITHM_*`.
        algorithm: u8,
        /// The hash value, as stored (`uint8_t value[4]`).
        value: [u8; 4],
    },
    /// Any other type (0 and `>= EXTRA_TYPE_MAX` included), body kept raw.
    Unknown {
        /// The type byte.
        kind: u8,
        /// The 6 body bytes.
        raw: [u8; 6],
    },
}

/// `struct netif_extra_info` (8 bytes; it occupies a whole ring slot), netif.h \[X\].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtraInfo {
    /// `XEN_NETIF_EXTRA_FLAG_*`.
    pub flags: u8,
    /// Type and body.
    pub body: Extra,
}

impl ExtraInfo {
    /// Bytes on the wire.
    pub const SIZE: usize = 8;

    /// The type byte.
    pub fn kind(&self) -> u8 {
        match self.body {
            Extra::Gso { .. } => EXTRA_TYPE_GSO,
            Extra::McastAdd(_) => EXTRA_TYPE_MCAST_ADD,
            Extra::McastDel(_) => EXTRA_TYPE_MCAST_DEL,
            Extra::Hash { .. } => EXTRA_TYPE_HASH,
            Extra::Unknown { kind, .. } => kind,
        }
    }

    /// Whether another extra-info slot follows.
    pub fn more(&self) -> bool {
        self.flags & EXTRA_FLAG_MORE != 0
    }

    /// Decodes 8 bytes (the GSO pad byte is ignored).
    pub fn parse(b: &[u8; Self::SIZE]) -> Self {
        let mut six = [0u8; 6];
        six.copy_from_slice(&b[2..8]);
        let body = match b[0] {
            EXTRA_TYPE_GSO => Extra::Gso {
                size: u16_at(b, 2),
                gso_type: b[4],
                features: u16_at(b, 6),
            },
            EXTRA_TYPE_MCAST_ADD => Extra::McastAdd(six),
            EXTRA_TYPE_MCAST_DEL => Extra::McastDel(six),
            EXTRA_TYPE_HASH => Extra::Hash {
                hash_type: b[2],
                algorithm: b[3],
                value: [b[4], b[5], b[6], b[7]],
            },
            kind => Extra::Unknown { kind, raw: six },
        };
        Self { flags: b[1], body }
    }

    /// Encodes into 8 bytes.
    pub fn emit(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0] = self.kind();
        b[1] = self.flags;
        match self.body {
            Extra::Gso {
                size,
                gso_type,
                features,
            } => {
                b[2..4].copy_from_slice(&size.to_le_bytes());
                b[4] = gso_type;
                b[6..8].copy_from_slice(&features.to_le_bytes());
            }
            Extra::McastAdd(a) | Extra::McastDel(a) => b[2..8].copy_from_slice(&a),
            Extra::Hash {
                hash_type,
                algorithm,
                value,
            } => {
                b[2] = hash_type;
                b[3] = algorithm;
                b[4..8].copy_from_slice(&value);
            }
            Extra::Unknown { raw, .. } => b[2..8].copy_from_slice(&raw),
        }
        b
    }
}
