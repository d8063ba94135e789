//! Hostile bytes into the xs_wire decoders (header, every request and reply shape): no panic,
//! `len` above the payload maximum refused, and whatever decodes re-encodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xen_store::wire::{
    Header, MsgHeader, MsgType, Reply, ReplyMsg, Request, RequestMsg, WireError, PAYLOAD_MAX,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = Header::parse_prefix(data) {
        assert!(h.len as usize <= PAYLOAD_MAX);
    }
    let Ok(view) = MsgHeader::new_checked(data) else {
        // Also drive the payload decoders directly with every type.
        if let Some((&t, payload)) = data.split_first() {
            let _ = Request::parse_payload(MsgType::from(u32::from(t % 30)), payload);
            let _ = Reply::parse_payload(MsgType::from(u32::from(t % 30)), payload);
        }
        return;
    };
    assert!(view.total_len() <= data.len());
    if let Ok(req) = RequestMsg::parse(&view) {
        let bytes = req.to_vec().expect("a decoded request re-encodes");
        let again = RequestMsg::parse(&MsgHeader::new_checked(&bytes[..]).unwrap()).unwrap();
        assert_eq!(again, req);
    }
    match ReplyMsg::parse(&view) {
        Ok(rep) => {
            let bytes = rep.to_vec().expect("a decoded reply re-encodes");
            let again = ReplyMsg::parse(&MsgHeader::new_checked(&bytes[..]).unwrap()).unwrap();
            assert_eq!(again, rep);
        }
        Err(WireError::PayloadTooLong { .. }) => panic!("checked view cannot be too long"),
        Err(_) => {}
    }
});
